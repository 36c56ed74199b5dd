"""DoRA (lora.use_dora), NEFTune (train.neftune_alpha) and QLoRA (model.load_in_4bit): each changes
what it should and nothing else.

- DoRA: peft's DoRA layers; the fused LoRA path steps aside for them (same loss and gradients as
  peft's own DoRA forward), in train() too, and the multimodal LoRA gets DoRA as well.
- NEFTune: noise within alpha/sqrt(L*d) (L = the token's example length) in training forwards only;
  none at eval or generation; alpha 0 bit-identical to no hook.
- QLoRA: the BitsAndBytesConfig it builds, the errors without the backend (no bitsandbytes needed);
  with bitsandbytes installed, a tiny run in 4 bits (pytest.importorskip).
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from peft.tuners.lora.layer import Linear as LoraLinear

from helpers import losses, make_model_folder, random_rendered, run_config
from sftlab import neftune
from sftlab.config import RunConfig, load_config
from sftlab.errors import ModelLoadError
from sftlab.loss import summed_loss
from sftlab.model import add_lora
from sftlab.pack import collate_packed, collate_padded
from sftlab.speed.fused_lora import fuse_lora_layers, vanilla_lora_parts
from tiny import make_model, make_tokenizer


def _adapted(use_dora: bool, seed: int = 0):
    model = add_lora(make_model(seed=seed), r=4, alpha=8, dropout=0.0, target_modules="all-linear", use_dora=use_dora)
    torch.manual_seed(1)
    for name, p in model.named_parameters():  # lora_B starts at zero: give the adapters something to add
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return model


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss, n = summed_loss(model, batch)
    (loss / n).backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


# ---- DoRA -------------------------------------------------------------------------------------------
def test_dora_layers_take_peft_forward_under_the_fused_path_with_equal_loss_and_gradients():
    model = _adapted(use_dora=True)
    model.train()
    layers = [m for m in model.modules() if isinstance(m, LoraLinear)]
    assert layers and all("default" in m.lora_variant for m in layers), "use_dora builds peft's DoRA layers"
    assert any("lora_magnitude_vector" in n for n, p in model.named_parameters() if p.requires_grad)
    reference = copy.deepcopy(model)  # peft's own DoRA forward, never fused
    batch = collate_packed(random_rendered(4, seed=2))
    ref_loss, ref_grads = _loss_and_grads(reference, batch)

    fuse_lora_layers(model)
    x = torch.randn(1, 3, 64)
    assert all(vanilla_lora_parts(m, x) is None for m in layers), "no DoRA layer qualifies for the addmm path"
    fused_calls = []
    import sftlab.speed.fused_lora as fl

    real = fl._LoraLinear.apply
    fl._LoraLinear.apply = lambda *a: fused_calls.append(1) or real(*a)
    try:
        loss, grads = _loss_and_grads(model, batch)
    finally:
        fl._LoraLinear.apply = real
    assert fused_calls == []
    assert torch.equal(loss, ref_loss), "peft's own forward, so exactly equal"
    assert grads.keys() == ref_grads.keys() and any("lora_magnitude_vector" in k for k in grads)
    for k in grads:
        assert torch.equal(grads[k], ref_grads[k]), k


def test_dora_changes_the_output_of_the_same_adapter_weights():
    """DoRA rescales each output row by magnitude / ||W + s B A||: with the same A and B it is not LoRA."""
    lora, dora = _adapted(use_dora=False), _adapted(use_dora=True)
    batch = collate_packed(random_rendered(2, seed=3))
    with torch.no_grad():
        assert not torch.allclose(summed_loss(lora, batch)[0], summed_loss(dora, batch)[0])
        # with B = 0 the direction is W itself and the magnitude its norm: both are the base model
        for m in (lora, dora):
            for name, p in m.named_parameters():
                if "lora_B" in name:
                    p.zero_()
        base = make_model()
        torch.testing.assert_close(summed_loss(dora, batch)[0], summed_loss(base, batch)[0], atol=1e-4, rtol=1e-5)


def test_train_with_dora_equal_with_speed_paths_on_and_off(tmp_path):
    runs = {}
    for on in (True, False):
        cfg = run_config(tmp_path, out=f"dora_{on}", max_steps=3, save_every=0,
                         speed={"fused_lora": on, "fused_mlp": on, "packed_attention": on, "loss_chunk_tokens": "auto" if on else None})
        cfg["lora"] = {"enabled": True, "r": 4, "alpha": 8, "use_dora": True}
        cfg["train"]["tokens_per_batch"] = 128
        model = make_model()
        result = train_run(cfg, model)
        assert any("lora_magnitude_vector" in n for n, _ in model.named_parameters())
        runs[on] = losses(tmp_path / f"dora_{on}")
        adapter = json.loads((result.final_dir / "adapter_config.json").read_text())
        assert adapter["use_dora"] is True
    assert [s for s, _ in runs[True]] == [1, 2, 3]
    for (_, a), (_, b) in zip(runs[True], runs[False]):
        assert a == pytest.approx(b, rel=1e-4)


def train_run(cfg: dict, model=None):
    from sftlab.train import train

    return train(load_config(cfg), model=model, tokenizer=make_tokenizer())


def test_multimodal_lora_gets_dora(tmp_path):
    from PIL import Image

    from sftlab.train import setup_data, setup_model

    img = tmp_path / "red.png"
    Image.new("RGB", (32, 32), (220, 30, 30)).save(img)
    data = tmp_path / "mm.jsonl"
    row = {"messages": [{"role": "user", "content": "<image>\nColour?"}, {"role": "assistant", "content": "red"}], "images": [str(img)]}
    data.write_text(json.dumps(row) + "\n")
    cfg = load_config({
        "model": {"name": str(make_model_folder(tmp_path))},
        "lora": {"enabled": True, "r": 4, "alpha": 8, "use_dora": True},
        "multimodal": {"vision_encoder": "builtin:tiny-siglip", "image_size": 32, "patch_size": 16,
                       "trainable": ["projector", "language_model"]},
        "data": {"train": [{"path": str(data)}], "max_len": 128, "cache": False},
        "train": {"output_dir": str(tmp_path / "out")},
    })
    tokenizer, processor, added, _ = setup_data(cfg, None)
    model = setup_model(cfg, None, tokenizer, added, processor)
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLinear)]
    assert layers and all("language_model" in n and "default" in m.lora_variant for n, m in layers)


# ---- NEFTune ----------------------------------------------------------------------------------------
def test_example_lengths_of_packed_and_padded_rows():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert neftune.example_lengths(pos, None, (1, 9)).tolist() == [[3, 3, 3, 2, 2, 4, 4, 4, 4]]
    padded = collate_padded(random_rendered(2, seed=1)[:2], pad_id=0)
    n = padded.attention_mask.sum(-1)
    L = neftune.example_lengths(padded.position_ids, padded.attention_mask, tuple(padded.input_ids.shape))
    assert L[:, 0].tolist() == n.tolist() and (L == n[:, None]).all(), "padding does not count"
    assert neftune.example_lengths(None, None, (2, 5)).tolist() == [[5] * 5] * 2


def _embedded(model, batch):
    """The input embeddings as the decoder receives them (captured after every forward hook)."""
    seen = []
    h = model.get_input_embeddings().register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    try:
        model(**batch.model_inputs())
    finally:
        h.remove()
    return seen[0]


@pytest.mark.parametrize("lora", [False, True])
def test_neftune_noise_in_training_within_the_per_example_bound(lora):
    model = _adapted(False) if lora else make_model()
    exs = random_rendered(5, seed=7)
    batch = collate_packed(exs)
    model.train()
    clean = _embedded(model, batch)
    alpha, d = 5.0, clean.shape[-1]
    state = neftune.attach(model, alpha)
    noisy = _embedded(model, batch)
    diff = (noisy - clean)[0]
    start = 0
    for r in exs:  # each example's noise is bounded by alpha / sqrt(len(example) * d), and reaches near it
        bound = alpha / (len(r.input_ids) * d) ** 0.5
        part = diff[start:start + len(r.input_ids)].abs()
        assert part.max() <= bound * (1 + 1e-5) and part.max() > 0.8 * bound
        start += len(r.input_ids)
    # the uniform noise's mean square is bound^2 / 3
    per_token_bound = alpha / (neftune.example_lengths(batch.position_ids, None, tuple(batch.input_ids.shape))[0] * d).sqrt()
    ratio = (diff.square().mean(-1) / (per_token_bound.square() / 3)).mean()
    assert 0.8 < float(ratio) < 1.2
    # eval mode: no noise
    model.eval()
    torch.testing.assert_close(_embedded(model, batch), clean, rtol=0, atol=0)
    state.remove()
    model.train()
    assert torch.equal(_embedded(model, batch), clean)


def test_neftune_no_noise_in_generation_eval_or_train_mode():
    model = make_model()
    ids = torch.tensor([[5, 17, 42, 9, 88, 3]])
    model.eval()
    with torch.no_grad():
        ref = model.generate(input_ids=ids, max_new_tokens=8, do_sample=False)
        logits = model(input_ids=ids).logits
        state = neftune.attach(model, 15.0)
        assert torch.equal(model.generate(input_ids=ids, max_new_tokens=8, do_sample=False), ref)
        assert torch.equal(model(input_ids=ids).logits, logits)
        model.train()  # a generate() call in training mode uses the KV cache: no noise either
        assert torch.equal(model.generate(input_ids=ids, max_new_tokens=8, do_sample=False), ref)
        assert not torch.equal(model(input_ids=ids, use_cache=False).logits, logits), "a training forward is noisy"
    state.remove()


def test_neftune_alpha_zero_is_bit_identical_and_draws_no_random_numbers():
    model = _adapted(False)
    model.train()
    batch = collate_packed(random_rendered(4, seed=5))
    torch.manual_seed(3)
    ref_loss, ref_grads = _loss_and_grads(model, batch)
    rng = torch.get_rng_state()
    neftune.attach(model, 0.0)
    torch.manual_seed(3)
    loss, grads = _loss_and_grads(model, batch)
    assert torch.equal(loss, ref_loss) and all(torch.equal(grads[k], ref_grads[k]) for k in ref_grads)
    assert torch.equal(torch.get_rng_state(), rng)


def test_train_neftune_key(tmp_path):
    """null and 0 give the same losses (and fingerprint); alpha 5 changes the training losses, not the
    final eval loss's definition (eval runs without noise: evaluating the final model twice agrees)."""
    runs = {}
    for name, alpha in (("off", None), ("zero", 0), ("on", 5.0)):
        cfg = run_config(tmp_path, out=name, max_steps=3, save_every=0)
        cfg["lora"] = {"enabled": True, "r": 4, "alpha": 8}
        cfg["train"]["neftune_alpha"] = alpha
        result = train_run(cfg, make_model())
        runs[name] = (losses(tmp_path / name), load_config(cfg).fingerprint(), result)
    assert runs["off"][0] == runs["zero"][0] and runs["off"][1] == runs["zero"][1]
    assert runs["on"][0][0] != runs["off"][0][0] and runs["on"][1] != runs["off"][1]


# ---- QLoRA: config, errors (no bitsandbytes needed) -------------------------------------------------
def test_new_keys_off_keep_the_fingerprint_of_older_runs():
    """A config without the new keys hashes as sftlab did before they existed (value computed then)."""
    cfg = RunConfig.model_validate({"model": {"name": "some/model"}, "lora": {"r": 8}, "data": {"train": [{"path": "train.jsonl"}]},
                                    "train": {"lr": 1e-4, "max_steps": 5}})
    assert cfg.fingerprint() == "516913a9bef434cc"
    for key, value in (("model.load_in_4bit", True), ("lora.use_dora", True), ("lora.layers", [1]), ("train.neftune_alpha", 5.0)):
        section, name = key.split(".")
        changed = cfg.model_copy(update={section: getattr(cfg, section).model_copy(update={name: value})})
        assert changed.fingerprint() != cfg.fingerprint(), key


def test_4bit_needs_lora(tmp_path):
    cfg = run_config(tmp_path)
    cfg["model"]["load_in_4bit"] = True
    with pytest.raises(Exception, match="lora.enabled: true"):
        load_config(cfg)


def test_qlora_quantization_config_is_nf4_with_double_quantization():
    from sftlab.model import qlora_quantization_config

    q = qlora_quantization_config("bfloat16")
    assert q.load_in_4bit and not q.load_in_8bit
    assert q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant is True
    assert q.bnb_4bit_compute_dtype == torch.bfloat16
    assert qlora_quantization_config().bnb_4bit_compute_dtype == torch.float32


def test_4bit_without_bitsandbytes_refuses_naming_the_backend_and_the_fix(tmp_path, monkeypatch):
    import importlib.util

    import sftlab.model as model_mod

    real = importlib.util.find_spec
    monkeypatch.setattr(model_mod.importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(ModelLoadError, match=r"needs the 4-bit backend bitsandbytes, which is not installed[\s\S]*sftlab\[qlora\]"):
        model_mod.load_model(str(make_model_folder(tmp_path)), load_in_4bit=True)
    monkeypatch.setattr(model_mod.importlib.util, "find_spec", real)
    monkeypatch.setattr(model_mod, "_bnb_version", lambda: "0.42.0")
    if real("bitsandbytes") is not None:
        with pytest.raises(ModelLoadError, match=r"needs bitsandbytes >= 0.50 .*found 0.42.0"):
            model_mod.check_4bit_backend()


def test_qlora_lists_the_extra_in_pyproject():
    import tomllib
    from pathlib import Path

    meta = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert any(d.startswith("bitsandbytes") for d in meta["optional-dependencies"]["qlora"])
    assert not any(d.startswith("bitsandbytes") for d in meta["dependencies"]), "optional, never required"


# ---- QLoRA with the backend installed ---------------------------------------------------------------
def test_qlora_tiny_run_trains_adapters_on_a_4bit_base(tmp_path):
    pytest.importorskip("bitsandbytes")
    from sftlab.model import load_model

    folder = make_model_folder(tmp_path)
    base = load_model(str(folder), load_in_4bit=True)
    linear4 = [m for m in base.modules() if type(m).__name__ == "Linear4bit"]
    assert len(linear4) == 14 and all(m.weight.quant_type == "nf4" and m.weight.quant_state.nested for m in linear4)

    cfg = run_config(tmp_path, out="qlora", max_steps=4, save_every=0)
    cfg["model"]["load_in_4bit"] = True
    cfg["lora"] = {"enabled": True, "r": 4, "alpha": 8}
    result = train_run(cfg)
    got = losses(tmp_path / "qlora")
    assert [s for s, _ in got] == [1, 2, 3, 4] and got[-1][1] < got[0][1]
    adapter = json.loads((result.final_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(folder)
    # the adapter loads onto the full-precision base (how QLoRA adapters are used and merged)
    tuned = load_model(str(result.final_dir))
    assert not any(type(m).__name__ == "Linear4bit" for m in tuned.modules())


def test_merge_adapter_folds_lora_in_with_the_same_logits(tmp_path):
    """Inference paths (eval, quickstart, chat, serve) load adapters merged; the merged plain model must give the
    adapter model's logits, and the adapter must matter (random lora_B, not peft's zero init)."""
    from sftlab.model import load_model, save_model

    folder = make_model_folder(tmp_path)
    torch.manual_seed(0)
    adapted = add_lora(make_model(), r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    save_model(adapted, make_tokenizer(), tmp_path / "adapter", base_model=str(folder))
    ids = torch.randint(0, 400, (2, 24))
    separate = load_model(str(tmp_path / "adapter")).eval()
    merged = load_model(str(tmp_path / "adapter"), merge_adapter=True).eval()
    base = load_model(str(folder)).eval()
    assert any(isinstance(m, LoraLinear) for m in separate.modules())
    assert not any(isinstance(m, LoraLinear) for m in merged.modules())
    with torch.no_grad():
        a, b, c = separate(ids).logits, merged(ids).logits, base(ids).logits
    assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()
    assert (a - c).abs().max() > 1e-2
