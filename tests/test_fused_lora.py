"""The addmm LoRA forward (sftlab.speed.fused_lora) equals peft's own forward in outputs and gradients,
falls back to peft where it does not apply, and keeps saving / merging / copying working."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora.layer import Linear as LoraLinear

from sftlab.speed.fused_lora import fuse_lora_layers, unfuse_lora_layers
from sftlab.model import add_lora
from sftlab.pack import collate_packed
from helpers import random_rendered
from tiny import make_model


def _lora(dropout=0.0, seed=0, base=None):
    """LoRA r=4 on every linear of `base` (default: a fresh tiny Llama), lora_B made non-zero."""
    model = add_lora(base if base is not None else make_model(seed=seed), r=4, alpha=8, dropout=dropout, target_modules="all-linear")
    torch.manual_seed(1)
    for name, p in model.named_parameters():  # B starts at zero: give the adapters something to add
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return model


def _run(model, batch, seed=0):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)  # same dropout masks for both forwards
    logits = model(**batch.model_inputs()).logits
    logits.float().square().mean().backward()
    return logits.detach(), {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_fused_forward_equals_peft_forward_in_outputs_and_gradients(dropout):
    model = _lora(dropout)
    model.train()
    batch = collate_packed(random_rendered(4, seed=2))
    ref, g_ref = _run(model, batch)
    n = fuse_lora_layers(model)
    assert n == 14, "7 linear layers x 2 decoder layers"
    calls = []
    for m in model.modules():
        if isinstance(m, LoraLinear):
            m.lora_B["default"].register_forward_hook(lambda *a: calls.append(1))
    got, g_got = _run(model, batch)
    assert calls == [] and all(type(m).__name__ == "FusedLoraLinear" for m in model.modules() if isinstance(m, LoraLinear)), \
        "the fast path never calls lora_B as a module (it uses its weight in addmm)"
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    assert g_got.keys() == g_ref.keys() and all("lora_" in k for k in g_got)
    for k in g_ref:
        torch.testing.assert_close(g_got[k], g_ref[k], atol=1e-6, rtol=1e-4, msg=k)
    assert unfuse_lora_layers(model) == 14 and all(type(m) is LoraLinear for m in model.modules() if isinstance(m, LoraLinear))


def test_disabled_and_merged_adapters_fall_back_to_peft():
    model = _lora()
    model.eval()
    batch = collate_packed(random_rendered(3, seed=4))
    base = make_model()
    with torch.no_grad():
        plain = base(**batch.model_inputs()).logits
        ref = model(**batch.model_inputs()).logits
        fuse_lora_layers(model)
        with model.disable_adapter():
            torch.testing.assert_close(model(**batch.model_inputs()).logits, plain)
        model.merge_adapter()
        torch.testing.assert_close(model(**batch.model_inputs()).logits, ref, atol=1e-5, rtol=1e-4)
        model.unmerge_adapter()
        torch.testing.assert_close(model(**batch.model_inputs()).logits, ref, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(plain, ref, atol=1e-4), "the adapters change the output (else this test shows nothing)"


def test_fused_model_saves_loads_merges_and_deep_copies(tmp_path):
    model = _lora()
    model.eval()
    fuse_lora_layers(model)
    batch = collate_packed(random_rendered(3, seed=5))
    with torch.no_grad():
        ref = model(**batch.model_inputs()).logits
        twin = copy.deepcopy(model)
        assert type(twin.get_base_model().model.layers[0].mlp.up_proj).__name__ == "FusedLoraLinear"
        torch.testing.assert_close(twin(**batch.model_inputs()).logits, ref)
        model.save_pretrained(tmp_path / "adapter")
        loaded = PeftModel.from_pretrained(make_model(), tmp_path / "adapter")
        torch.testing.assert_close(loaded(**batch.model_inputs()).logits, ref, atol=1e-5, rtol=1e-4)
        merged = model.merge_and_unload()
        assert not any(isinstance(m, LoraLinear) for m in merged.modules())
        torch.testing.assert_close(merged(**batch.model_inputs()).logits, ref, atol=1e-5, rtol=1e-4)


def test_train_uses_the_speed_paths_by_default_and_they_leave_losses_and_fingerprint_unchanged(tmp_path):
    """train(): LoRA layers become FusedLoraLinear, MLP blocks the memory-saving SwiGLU, the loss is
    chunked (auto) and packed rows attend per example (seen by a spy on the attention function);
    switching all off gives the same losses, and the same config fingerprint (a resume is never
    blocked by them)."""
    from transformers import AttentionInterface

    import sftlab.speed.chunked_loss as loss_mod
    import sftlab.speed.packed_attention as pa
    from sftlab.config import load_config
    from sftlab.train import train
    from helpers import losses, run_config
    from tiny import make_tokenizer

    split, chunked = [], []
    real_chunked = loss_mod.chunked_linear_cross_entropy
    loss_mod.chunked_linear_cross_entropy = lambda *a, **k: chunked.append(1) or real_chunked(*a, **k)
    pa.register()
    AttentionInterface.register(pa.NAME, lambda m, q, k, v, mask, **kw: split.append(1) or pa.packed_sdpa(m, q, k, v, mask, **kw))
    try:
        runs = {}
        for on in (True, False):
            cfg = run_config(tmp_path, out=f"on_{on}", max_steps=4, save_every=0,
                             speed={"fused_lora": on, "packed_attention": on, "fused_mlp": on, "loss_chunk_tokens": "auto" if on else None})
            cfg["lora"] = {"enabled": True, "r": 4, "alpha": 8}
            cfg["train"]["tokens_per_batch"] = 128  # several examples per packed row
            model = make_model()
            result = train(load_config(cfg), model=model, tokenizer=make_tokenizer())
            kinds = {type(m).__name__ for m in model.modules() if isinstance(m, LoraLinear) or m.__class__.__name__.endswith("MLP")}
            runs[on] = (losses(tmp_path / f"on_{on}"), load_config(cfg).fingerprint(), kinds, len(split), len(chunked))
            split.clear()
            chunked.clear()
    finally:
        AttentionInterface.register(pa.NAME, pa.packed_sdpa)
        loss_mod.chunked_linear_cross_entropy = real_chunked
    (loss_on, fp_on, kinds_on, calls_on, ch_on), (loss_off, fp_off, kinds_off, calls_off, ch_off) = runs[True], runs[False]
    assert kinds_on == {"FusedLoraLinear", "FusedLlamaMLP"} and kinds_off == {"Linear", "LlamaMLP"}
    assert ch_on >= 4 and ch_off == 0, "every training step's loss went through the chunked function"
    assert calls_on >= 4 * 2 and calls_off == 0, "2 layers x 4 steps through the per-example attention"
    assert fp_on == fp_off
    assert [s for s, _ in loss_on] == [s for s, _ in loss_off] == [1, 2, 3, 4]
    for (_, a), (_, b) in zip(loss_on, loss_off):
        assert a == pytest.approx(b, rel=1e-4)


def test_a_partitioned_lora_b_weight_goes_through_peft():
    """DeepSpeed ZeRO-3 leaves a [0]-shaped placeholder until lora_B's own forward gathers it; the
    fused path never calls lora_B, so such a layer must take peft's forward (here: lora_B is called)."""
    model = _lora()
    model.eval()
    fuse_lora_layers(model)
    layer = model.get_base_model().model.layers[0].mlp.up_proj
    called = []
    layer.lora_B["default"].register_forward_hook(lambda *a: called.append(1))
    x = torch.randn(1, 5, 64)
    with torch.no_grad():
        layer(x)
        assert called == []
        layer.lora_B["default"].weight.ds_id = 7  # what a ZeRO-3 partitioned parameter carries
        layer(x)
    assert called == [1]
