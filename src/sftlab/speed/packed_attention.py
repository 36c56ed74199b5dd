"""Attention within each packed example, not one masked attention over the whole row.

A packed row holds several examples back to back; position_ids restart at 0 for each. With
`attn_implementation="sdpa"`, transformers sees the restarts, builds a block-diagonal causal mask
[T, T] and runs ONE masked attention over the row: every score between two different examples is
computed and then thrown away, and a masked kernel cannot skip the upper triangle the way the
causal one does. For five ~100-token examples in a 500-token row that is ~5x the needed work.

`packed_sdpa` is registered with transformers' AttentionInterface under NAME; for a packed row
(batch 1, no KV cache, positions = a run of 0..n-1 ranges) it calls transformers' own
sdpa_attention_forward once per example, causal and unmasked, and concatenates. Anything else
(padded batches, generation with a cache, a row of one short example, sliding-window or soft-capped
attention) goes to the plain sdpa path with transformers' mask, unchanged.

Long examples (>= 2 * QUERY_CHUNK tokens, also alone in a row) attend in query chunks: chunk
[a, b) takes keys [0, b) with a lower-right causal mask. torch's CPU flash kernel splits keys in
blocks of 512, so for a 509-token example it computes every score of the square and masks half of
them; chunks of 192 queries skip most of the upper triangle. Measured (SmolLM2 attention shape, 9
query / 3 kv heads, head dim 64, forward + backward, 2 cores): 509 tokens 23.3 -> 19.1 ms, 384
tokens 13.7 -> 11.5 ms, 256 tokens 6.2 -> 6.1 ms (so shorter examples are left whole).

Same outputs and gradients as the masked path up to float rounding: tests/test_packed_attention.py.
Speed: `benchmarks/bench_train.py --techniques masked_attention` (the variant with it off).
"""

from __future__ import annotations

import contextlib

import torch

NAME = "sftlab_packed_sdpa"
QUERY_CHUNK = 192  # queries per chunk for examples of >= 2 * QUERY_CHUNK tokens (see the docstring)
_registered = False


def example_spans(position_ids: torch.Tensor | None, q_len: int, kv_len: int, batch: int) -> list[tuple[int, int]] | None:
    """[(start, end)] of each packed example's queries, or None when the row is not a plain packed row.

    Packed = one row, positions 0..a-1, 0..b-1, ... (no cache: queries == keys); a row holding one
    example (positions 0..n-1) gives one span. With a cache of P = kv_len - q_len keys (a prefix every
    example shares, speed/shared_prefix.py) the positions run P..P+a-1, P..P+b-1, ... instead, and each
    example attends to the P cached keys and then its own."""
    past = kv_len - q_len
    if position_ids is None or batch != 1 or past < 0 or position_ids.shape[-1] != q_len or q_len < 2:
        return None
    pos = position_ids.reshape(-1, q_len)[0]
    starts = (pos == past).nonzero().flatten()
    if len(starts) < 1 or int(starts[0]) != 0:
        return None
    # within an example every position is the previous + 1; at a start it is P
    step_ok = (pos[1:] == pos[:-1] + 1) | (pos[1:] == past)
    if not bool(step_ok.all()):
        return None
    bounds = starts.tolist() + [q_len]
    return list(zip(bounds[:-1], bounds[1:]))


def packed_sdpa(module, query, key, value, attention_mask, **kwargs):
    """transformers attention function: per-example causal SDPA for packed rows, else plain sdpa."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    spans = None
    plain_causal = all(kwargs.get(k) is None for k in ("sliding_window", "softcap", "position_bias")) and \
        kwargs.get("is_causal", getattr(module, "is_causal", True)) is not False
    if plain_causal:
        spans = example_spans(kwargs.get("position_ids"), query.shape[2], key.shape[2], query.shape[0])
    past = key.shape[2] - query.shape[2]  # keys of a shared prefix in the cache (0 without one)
    if spans is None or (past == 0 and len(spans) == 1 and spans[0][1] < 2 * QUERY_CHUNK):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    def own(t, s, e):  # an example's keys or values: the shared prefix's (if any), then its own
        return torch.cat([t[:, :, :past], t[:, :, past + s:past + e]], 2) if past else t[:, :, s:e]

    outs = [_example_attention(module, query[:, :, s:e], own(key, s, e), own(value, s, e), kwargs, past) for s, e in spans]
    return (torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]), None  # [B, T, heads, head_dim]


def _example_attention(module, query, key, value, kwargs, past: int = 0):
    """Causal attention of one example, whose queries follow `past` keys they all see (a shared prefix);
    long ones in query chunks with lower-right causal masks."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    n = query.shape[2]
    if past == 0 and n < 2 * QUERY_CHUNK:
        return sdpa_attention_forward(module, query, key, value, None, **kwargs)[0]
    outs = []
    for a in range(0, n, QUERY_CHUNK):
        b = min(n, a + QUERY_CHUNK)
        if past == 0 and a == 0:  # the first chunk sees only itself: plain causal
            outs.append(sdpa_attention_forward(module, query[:, :, :b], key[:, :, :b], value[:, :, :b], None, **kwargs)[0])
            continue
        # query a + i attends keys 0 .. past + a + i (True = attend)
        mask = torch.arange(past + b, device=query.device)[None, :] <= past + torch.arange(a, b, device=query.device)[:, None]
        outs.append(sdpa_attention_forward(module, query[:, :, a:b], key[:, :, :past + b], value[:, :, :past + b], mask[None, None],
                                           **{**kwargs, "is_causal": False})[0])
    return torch.cat(outs, dim=1)


def register() -> None:
    """Make NAME a valid attn_implementation (attention function + transformers' sdpa mask)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, packed_sdpa)
    # the mask is still built (it is what the fallback path needs); the packed path ignores it
    AttentionMaskInterface.register(NAME, sdpa_mask)
    _registered = True


@contextlib.contextmanager
def packed_attention(model, enabled: bool = True):
    """Within the block, a model on transformers' "sdpa" attends per packed example.

    Wrap the backward too: gradient checkpointing re-runs the forward inside it, and the recompute
    must take the same path.

    Other attention implementations (eager, flash_attention_2, which handles packing itself) and
    models whose config has no _attn_implementation are left alone. Restored on exit, so a model
    used for generation afterwards is exactly as loaded."""
    from accelerate.utils import extract_model_from_parallel

    base = extract_model_from_parallel(model)  # through DDP / torch.compile wrappers
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    config = getattr(base, "config", None)
    if not enabled or config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        yield False
        return
    register()
    config._attn_implementation = NAME
    try:
        yield True
    finally:
        config._attn_implementation = "sdpa"
