"""Per-example attention for packed rows (sftlab.speed.packed_attention) equals transformers' masked sdpa
and the one-example-at-a-time forward, in outputs and gradients, and really splits the row."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from sftlab.pack import collate_packed, collate_padded
from sftlab.speed.packed_attention import NAME, example_spans, packed_attention
from sftlab.train import accumulate_gradients, enable_gradient_checkpointing
from helpers import random_rendered
from tiny import make_model


def _pos(*lengths):
    return torch.cat([torch.arange(n) for n in lengths])[None]


def test_example_spans_finds_each_packed_example_and_refuses_anything_else():
    assert example_spans(_pos(3, 2, 4), 9, 9, 1) == [(0, 3), (3, 5), (5, 9)]
    assert example_spans(_pos(5), 5, 5, 1) == [(0, 5)], "one example: one span"
    assert example_spans(_pos(3, 2), 5, 5, 2) is None, "batch > 1 (padded batches)"
    assert example_spans(_pos(3, 2), 1, 5, 1) is None, "decoding with a cache (queries != keys)"
    assert example_spans(torch.tensor([[1, 2, 0, 1]]), 4, 4, 1) is None, "must start at 0"
    assert example_spans(torch.tensor([[0, 1, 3, 0, 1]]), 5, 5, 1) is None, "a gap is not a packed row"
    assert example_spans(None, 5, 5, 1) is None


def _forward_backward(model, batch, packed: bool):
    model.zero_grad(set_to_none=True)
    with packed_attention(model, packed) as on:
        assert on == packed
        logits = model(**batch.model_inputs()).logits
        (logits.float().square().mean()).backward()  # a loss that reaches every position
    grads = {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}
    return logits.detach(), grads


@pytest.mark.parametrize("checkpointing", [False, True])
def test_packed_attention_equals_masked_sdpa_in_logits_and_gradients(checkpointing):
    model = make_model()  # 4 query heads, 2 kv heads: the GQA path
    if checkpointing:
        enable_gradient_checkpointing(model)  # recompute inside the backward must take the same path
    model.train()
    exs = random_rendered(5, seed=3)
    batch = collate_packed(exs)
    calls = []
    import sftlab.speed.packed_attention as pa

    real = pa.packed_sdpa
    pa_spy = lambda *a, **k: calls.append(len(example_spans(k.get("position_ids"), a[1].shape[2], a[2].shape[2], 1) or [])) or real(*a, **k)  # noqa: E731
    from transformers import AttentionInterface

    pa.register()
    AttentionInterface.register(NAME, pa_spy)
    try:
        masked, g_masked = _forward_backward(model, batch, packed=False)
        assert calls == []
        per_example, g_packed = _forward_backward(model, batch, packed=True)
    finally:
        AttentionInterface.register(NAME, real)
    assert calls and all(c == 5 for c in calls), "each layer split the row into its 5 examples"
    assert model.config._attn_implementation == "sdpa", "restored after the block"
    torch.testing.assert_close(per_example, masked, atol=1e-5, rtol=1e-4)
    assert g_packed.keys() == g_masked.keys() and g_packed
    for k in g_packed:
        torch.testing.assert_close(g_packed[k], g_masked[k], atol=1e-6, rtol=1e-4, msg=k)


@pytest.mark.parametrize("n_examples", [1, 4])
def test_query_chunked_attention_of_long_examples_equals_masked_sdpa(monkeypatch, n_examples):
    """Examples of >= 2 * QUERY_CHUNK tokens attend in query chunks with lower-right causal masks
    (here QUERY_CHUNK = 3, so every example of >= 6 tokens is chunked, a lone example included)."""
    import transformers.integrations.sdpa_attention as sdpa_mod

    import sftlab.speed.packed_attention as pa

    monkeypatch.setattr(pa, "QUERY_CHUNK", 3)
    masked_chunks = []
    real = sdpa_mod.sdpa_attention_forward
    monkeypatch.setattr(sdpa_mod, "sdpa_attention_forward",
                        lambda m, q, k, v, mask, **kw: masked_chunks.append(mask is not None and q.shape[2] < k.shape[2]) or real(m, q, k, v, mask, **kw))
    model = make_model()
    model.train()
    exs = random_rendered(n_examples, seed=7)
    assert max(len(r) for r in exs) >= 6
    batch = collate_packed(exs)
    masked, g_masked = _forward_backward(model, batch, packed=False)
    masked_chunks.clear()
    got, g_got = _forward_backward(model, batch, packed=True)
    # per layer and long example: ceil(len / 3) chunks, all but the first with a mask over a longer key prefix
    assert sum(masked_chunks) == 2 * sum((len(r) + 2) // 3 - 1 for r in exs if len(r) >= 6) > 0
    torch.testing.assert_close(got, masked, atol=1e-5, rtol=1e-4)
    assert g_got.keys() == g_masked.keys() and g_got
    for k in g_masked:
        torch.testing.assert_close(g_got[k], g_masked[k], atol=1e-6, rtol=1e-4, msg=k)


def test_packed_attention_equals_one_example_at_a_time():
    model = make_model()
    exs = random_rendered(4, seed=5)
    with torch.no_grad(), packed_attention(model):
        packed = model(**collate_packed(exs).model_inputs()).logits[0]
    off = 0
    for r in exs:
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([r.input_ids]), use_cache=False).logits[0]
        torch.testing.assert_close(packed[off : off + len(r)], alone, atol=1e-5, rtol=1e-4)
        off += len(r)


def test_padded_batches_and_other_kernels_are_left_alone():
    exs = random_rendered(3, seed=6)
    padded = collate_padded(exs, pad_id=0)
    model = make_model()
    with torch.no_grad():
        ref = model(**padded.model_inputs()).logits
        with packed_attention(model):
            got = model(**padded.model_inputs()).logits
    keep = padded.attention_mask.bool()
    torch.testing.assert_close(got[keep], ref[keep])
    eager = make_model(attn="eager")
    with packed_attention(eager) as on:
        assert not on and eager.config._attn_implementation == "eager"


def test_the_training_step_gives_the_same_loss_and_gradients_either_way():
    batches = [collate_packed(random_rendered(4, seed=s)) for s in (1, 2)]
    out = []
    for per_example in (False, True):
        model = make_model()
        model.train()
        with packed_attention(model, per_example):  # the backward inside too, as speed.enabled() does
            loss, n, _ = accumulate_gradients(model, batches, Accelerator(cpu=True))
        out.append((loss, {k: p.grad for k, p in model.named_parameters()}))
    assert out[1][0] == pytest.approx(out[0][0], rel=1e-6)
    for k in out[0][1]:
        torch.testing.assert_close(out[1][1][k], out[0][1][k], atol=1e-6, rtol=1e-4, msg=k)
