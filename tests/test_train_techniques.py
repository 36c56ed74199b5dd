"""Speed/memory options of the training loop give the plain loop's loss and gradients.

train.speed.loss_chunk_tokens (chunked lm_head + cross-entropy), train.gradient_checkpointing (full and
LoRA), train.autocast=bf16 (loose: bf16 matmuls), train.compile (its fallback: compiling a tiny
Llama takes ~100 s on this 2-core CPU, too slow for a unit test), and the count of steps skipped
for a non-finite loss in metrics.jsonl / run.json.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from sftlab.config import load_config
from sftlab.errors import SftlabError
from sftlab.speed.chunked_loss import chunked_linear_cross_entropy
from sftlab.speed.chunked_loss import summed_loss as chunked_summed_loss
from sftlab.model import add_lora
from sftlab.pack import collate_packed, collate_padded
from sftlab.train import accumulate_gradients, enable_gradient_checkpointing, train
from helpers import losses, random_rendered, reference_loss, run_config
from tiny import hook_training_forwards, make_model, make_tokenizer


def _grads(model) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def _assert_same_grads(a: dict, b: dict, atol=1e-6, rtol=1e-4) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=rtol, msg=k)


# ---- chunked loss -----------------------------------------------------------------------------------
@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_chunked_loss_and_gradients_equal_the_full_logits_reference(layout, tied):
    """Chunked (7 positions at a time: not a divisor of the trained count) vs each example alone with
    full logits and the classic shift (tests/test_loss.py's independent computation)."""
    model = make_model()
    if tied:
        model.config.tie_word_embeddings = True
        model.lm_head.weight = model.model.embed_tokens.weight
    exs = random_rendered(6, seed=4)
    batch = collate_packed(exs) if layout == "packed" else collate_padded(exs, pad_id=0)

    model.zero_grad(set_to_none=True)
    ref, n_ref = reference_loss(model, exs)
    ref.backward()
    g_ref = _grads(model)

    model.zero_grad(set_to_none=True)
    loss, n = chunked_summed_loss(model, batch, 7)
    loss.backward()
    assert n == n_ref and n > 7 * 3, "several chunks"
    torch.testing.assert_close(loss, ref.detach(), atol=1e-4, rtol=1e-5)
    _assert_same_grads(_grads(model), g_ref)


def test_chunked_linear_cross_entropy_with_bias_matches_autograd():
    torch.manual_seed(0)
    h = torch.randn(50, 16, requires_grad=True)
    w = torch.randn(97, 16, requires_grad=True)
    b = torch.randn(97, requires_grad=True)
    t = torch.randint(0, 97, (50,))
    ref = F.cross_entropy(F.linear(h, w, b), t, reduction="sum")
    ref_grads = torch.autograd.grad(3.0 * ref, (h, w, b))  # an upstream scale reaches every gradient
    got = chunked_linear_cross_entropy(h, w, b, t, chunk=8)
    got_grads = torch.autograd.grad(3.0 * got, (h, w, b))
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-5)
    for x, y in zip(got_grads, ref_grads):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4)
    with torch.no_grad():  # evaluation path: value only
        torch.testing.assert_close(chunked_linear_cross_entropy(h, w, b, t, chunk=8), ref.detach(), atol=1e-4, rtol=1e-5)


def test_chunked_loss_with_lora_equals_unchunked():
    """LoRA: lm_head frozen (no weight gradient is made), adapters get the same gradients."""
    model = _lora_model()
    batch = collate_packed(random_rendered(6, seed=2))
    grads = []
    for chunk in (None, 5):
        model.zero_grad(set_to_none=True)
        loss, _ = chunked_summed_loss(model, batch, chunk)
        loss.backward()
        grads.append(_grads(model))
    assert all("lora_" in k for k in grads[0])
    _assert_same_grads(grads[1], grads[0])


def test_chunked_loss_refuses_a_model_that_post_processes_its_logits():
    """Soft-capping/scaling models (Gemma 2, Cohere) compute logits != lm_head(hidden): refused, not mis-trained."""
    model = make_model()

    def scale(module, args, output):
        output.logits = output.logits * 2.0  # what a logit_scale model does after its lm_head
        return output

    model.register_forward_hook(scale)
    with pytest.raises(SftlabError, match=r"train.speed.loss_chunk_tokens: this model's logits are not lm_head"):
        chunked_summed_loss(model, collate_packed(random_rendered(3, seed=1)), 4)


def test_auto_chunked_loss_falls_back_for_such_a_model_and_chunks_a_plain_one(monkeypatch):
    """loss_chunk_tokens "auto" (the default): a post-processing model silently takes the standard
    path (same loss as chunk_tokens=None), a plain model is chunked with AUTO_CHUNK_ELEMENTS logits."""
    import sftlab.speed.chunked_loss as loss_mod

    batch = collate_packed(random_rendered(3, seed=1))
    scaled = make_model()
    scaled.register_forward_hook(lambda m, a, out: setattr(out, "logits", out.logits * 2.0) or out)
    ref, _ = chunked_summed_loss(scaled, batch, None)
    got, _ = chunked_summed_loss(scaled, batch, "auto")
    assert loss_mod.auto_chunk_tokens(scaled) is None, "refused once, remembered"
    torch.testing.assert_close(got, ref)

    plain = make_model()
    chunks = []
    real = loss_mod._linear_ce_chunks
    monkeypatch.setattr(loss_mod, "_linear_ce_chunks", lambda *a: chunks.append(a[4]) or real(*a))
    monkeypatch.setattr(loss_mod, "AUTO_CHUNK_ELEMENTS", 400 * 7)  # tiny vocabulary 400: 7 positions per chunk
    monkeypatch.setattr(loss_mod, "MIN_AUTO_CHUNK", 1)
    ref, _ = chunked_summed_loss(plain, batch, None)
    got, _ = chunked_summed_loss(plain, batch, "auto")
    assert chunks == [7]
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-5)


def test_auto_chunked_loss_leaves_a_sharded_head_to_the_standard_path():
    """ZeRO-3 marks partitioned weights with ds_id (FSDP2 makes them DTensors): the chunked path would
    read a shard outside the forward, so auto takes the standard path and an explicit size is refused."""
    import sftlab.speed.chunked_loss as loss_mod

    model = make_model()
    model.lm_head.weight.ds_id = 7
    batch = collate_packed(random_rendered(3, seed=1))
    assert loss_mod.auto_chunk_tokens(model) is None
    torch.testing.assert_close(chunked_summed_loss(model, batch, "auto")[0], chunked_summed_loss(model, batch, None)[0])
    with pytest.raises(SftlabError, match="sharded outside the forward"):
        chunked_summed_loss(model, batch, 4)


# ---- gradient checkpointing ------------------------------------------------------------------------
def _lora_model(seed: int = 0):
    model = add_lora(make_model(seed=seed), r=4, alpha=8, dropout=0.0, target_modules="all-linear")
    torch.manual_seed(1)
    for name, p in model.named_parameters():  # B starts at zero, which would make every A gradient zero
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    return model


@pytest.mark.parametrize("kind", ["full", "lora"])
def test_gradient_checkpointing_gives_the_same_gradients_and_recomputes(kind):
    batches = [collate_packed(random_rendered(4, seed=s)) for s in (7, 8)]
    results = []
    for checkpointing in (False, True):
        model = _lora_model() if kind == "lora" else make_model()
        if checkpointing:
            enable_gradient_checkpointing(model)
        model.train()
        # the layer's first sub-module: transformers checkpoints the layer's forward (not its
        # __call__), so hooks on the layer itself do not run again, and torch's non-reentrant
        # recompute stops early once it has every saved tensor, so late sub-modules may not re-run
        q_proj = (model.get_base_model() if kind == "lora" else model).model.layers[0].self_attn.q_proj
        calls = []
        q_proj.register_forward_hook(lambda *a: calls.append(1))
        loss, n, _ = accumulate_gradients(model, batches, Accelerator(cpu=True))
        results.append((loss, _grads(model), len(calls)))
    (loss_a, ga, calls_a), (loss_b, gb, calls_b) = results
    assert calls_a == 2 and calls_b == 4, "checkpointing re-runs each layer's forward in the backward"
    assert loss_b == pytest.approx(loss_a, rel=1e-6)
    if kind == "lora":
        assert all("lora_" in k for k in ga) and any("lora_A" in k for k in ga)
    _assert_same_grads(gb, ga)


# ---- bf16 autocast -----------------------------------------------------------------------------------
def test_autocast_bf16_runs_the_forward_in_bf16_and_the_loss_stays_close():
    batches = [collate_packed(random_rendered(6, seed=3))]
    model = make_model()
    model.train()
    dtypes = []
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    loss32, _, _ = accumulate_gradients(model, batches, Accelerator(cpu=True))
    g32 = _grads(model)
    model.zero_grad(set_to_none=True)
    loss16, _, _ = accumulate_gradients(model, batches, Accelerator(cpu=True), autocast="bf16")
    g16 = _grads(model)
    assert dtypes == [torch.float32, torch.bfloat16]
    assert loss16 != loss32, "bf16 matmuls change the value a little"
    assert loss16 == pytest.approx(loss32, rel=2e-2)
    assert all(g.dtype == torch.float32 for g in g16.values()), "weights (and their grads) stay fp32"
    cos = F.cosine_similarity(torch.cat([g.flatten() for g in g16.values()]), torch.cat([g.flatten() for g in g32.values()]), dim=0)
    assert cos > 0.99


# ---- wiring through train() --------------------------------------------------------------------------
def test_train_with_checkpointing_chunked_loss_and_autocast_runs_them(tmp_path):
    """The options reach the loop: chunked loss asks the model for hidden states, checkpointing is on,
    autocast makes bf16 activations; the run trains to a finite loss near the plain run's."""
    plain = train(load_config(run_config(tmp_path, out="plain", max_steps=4, save_every=0)), model=make_model(), tokenizer=make_tokenizer())
    model = make_model()
    seen = {"hidden": 0, "bf16": 0}

    def pre(module, args, kwargs):
        seen["hidden"] += bool(kwargs.get("output_hidden_states"))

    model.register_forward_pre_hook(pre, with_kwargs=True)
    model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, a, out: seen.__setitem__("bf16", seen["bf16"] + (out.dtype == torch.bfloat16)))
    cfg = run_config(tmp_path, out="opts", max_steps=4, save_every=0, gradient_checkpointing=True, speed={"loss_chunk_tokens": 3}, autocast="bf16")
    result = train(load_config(cfg), model=model, tokenizer=make_tokenizer())
    assert model.model.gradient_checkpointing
    assert seen["hidden"] >= 4 and seen["bf16"] >= 4
    assert not result.stopped_early and result.steps == 4
    assert result.final_loss == pytest.approx(plain.final_loss, rel=5e-2)


def test_compile_failure_falls_back_to_eager_with_a_warning(tmp_path, monkeypatch, capsys):
    """A compiler that fails (here a dynamo backend that raises, as a missing C++ compiler makes
    inductor do) costs a warning, not the run; the step is redone eagerly, so the run equals an
    uncompiled one exactly."""
    real_compile = torch.compile

    def failing_backend(gm, example_inputs):
        raise RuntimeError("no C++ compiler found (test backend)")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: real_compile(model, backend=failing_backend))
    plain = run_config(tmp_path, out="plain", max_steps=3, save_every=0)
    train(load_config(plain), model=make_model(), tokenizer=make_tokenizer())
    cfg = run_config(tmp_path, out="compiled", max_steps=3, save_every=0, compile=True)
    result = train(load_config(cfg), model=make_model(), tokenizer=make_tokenizer())
    out = capsys.readouterr().out
    assert "warning: train.compile: torch.compile failed at step 1" in out and "continuing without compile" in out
    assert "no C++ compiler found" in out
    assert len(result.warnings) == 1 and not result.stopped_early
    run = json.loads((tmp_path / "compiled" / "run.json").read_text())
    assert run["result"]["warnings"] == result.warnings
    assert losses(tmp_path / "compiled") == losses(tmp_path / "plain")


def test_an_error_of_the_eager_model_is_not_swallowed(tmp_path):
    """Without compile, errors propagate unchanged (the fallback only guards compiled models)."""
    model = make_model()

    def boom(module, args, output):
        raise ValueError("real bug in the forward")

    model.model.layers[0].register_forward_hook(boom)
    with pytest.raises(ValueError, match="real bug"):
        train(load_config(run_config(tmp_path, max_steps=2, save_every=0)), model=model, tokenizer=make_tokenizer())


# ---- non-finite steps are counted -------------------------------------------------------------------
def _poison_third(out, k):
    if k == 3:  # the 3rd training forward (= step 3, one micro-batch per step) gives a nan loss
        out.logits = out.logits * float("nan")
    return out


def _metrics(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_skipped_nonfinite_steps_are_counted_in_metrics_and_run_json(tmp_path):
    model = make_model()
    hook_training_forwards(model, _poison_third)
    result = train(load_config(run_config(tmp_path, max_steps=6, save_every=0)), model=model, tokenizer=make_tokenizer())
    lines = _metrics(tmp_path / "run")
    assert [x["step"] for x in lines] == [1, 2, 4, 5, 6]
    assert [x["nonfinite_skipped"] for x in lines] == [0, 0, 1, 1, 1]
    assert result.nonfinite_skipped_steps == 1
    assert json.loads((tmp_path / "run" / "run.json").read_text())["result"]["nonfinite_skipped_steps"] == 1


def test_skipped_count_survives_a_resume(tmp_path):
    """Stopped (SIGINT) after step 4, with step 3 skipped; the resumed run still reports 1 skipped."""
    cfg = run_config(tmp_path, max_steps=6, save_every=0)
    model = make_model()

    def poison_then_stop(out, k):
        if k == 4:
            os.kill(os.getpid(), signal.SIGINT)  # finishes step 4, checkpoints, stops
        return _poison_third(out, k)

    hook_training_forwards(model, poison_then_stop)
    first = train(load_config(cfg), model=model, tokenizer=make_tokenizer())
    assert first.stopped_early.startswith("stopped by SIGINT after step 4") and first.nonfinite_skipped_steps == 1
    second = train(load_config(cfg), resume=True)
    assert second.steps == 6 and second.nonfinite_skipped_steps == 1
    assert [x["nonfinite_skipped"] for x in _metrics(tmp_path / "run")] == [0, 0, 1, 1, 1]
