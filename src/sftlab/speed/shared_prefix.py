"""A frozen language model reads the prompt prefix every example shares once per run, not once per example.

Stage 1 of LLaVA-style training (feature alignment) trains only the projector (and perhaps the vision
tower): the language model's weights never change, and every token before an example's first image
token is fixed text through fixed weights. Chat data without a system message all start with the same
tokens: SmolLM2's template writes its default system prompt and "<|im_start|>user\\n", 24 of the ~68
tokens of a built-in caption example (35% of stage 1's tokens; measured 1.08x per step:
benchmarks/bench_shared_prefix.py).

So those P tokens' keys and values are computed once (no gradients, in the training forward's own
autocast and kernels) and every packed row keeps only its examples' remaining tokens: positions
continue from P, the prefix enters each layer as a KV cache, and each example attends to [prefix; its
own tokens] (speed/packed_attention.py; a 4D mask says the same for any other attention path). Labels
of the dropped positions are never trained (checked), so the loss and the gradients are those of the
full rows up to float rounding: tests/test_shared_prefix.py compares both against the plain loss.

Applies only where it is exact and safe: nothing in the language model trains (no LoRA, embeddings
and lm_head frozen), packed rows, per-example attention on, no gradient checkpointing (its recompute
would append the prefix to the cache a second time). A row whose examples do not all start with the
prefix takes the plain loss. Measured: benchmarks/bench_shared_prefix.py.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch

from sftlab.pack import IGNORE, Batch

MIN_PREFIX = 4  # shorter shared prefixes are not worth a second code path


def common_prefix(examples) -> int:
    """Tokens every example starts with that can be skipped: before any image token, and none of their
    labels trained (label t is token t + 1, so the first trained token itself stays). 0 if none."""
    if not examples:
        return 0
    first = examples[0].input_ids
    n = min(len(r) for r in examples)
    for r in examples:
        limit = min([len(r) - 1] + [i - 1 for i, m in enumerate(r.loss_mask) if m][:1] + [s for s, _ in r.image_spans[:1]])
        n = min(n, max(0, limit))
        ids = r.input_ids
        i = 0
        while i < n and ids[i] == first[i]:
            i += 1
        n = i
        if n == 0:
            return 0
    return n


def shared_prefix_ids(examples) -> list[int]:
    """The token ids every example starts with that can be read once ([] when fewer than MIN_PREFIX)."""
    P = common_prefix(examples)
    return list(examples[0].input_ids[:P]) if P >= MIN_PREFIX else []


def why_not(model, cfg) -> str | None:
    """Why the shared prefix cannot be used for this run (None: it can)."""
    from sftlab.speed.packed_attention import NAME

    base = extract_base(model)
    if not getattr(base.config, "vision_config", None):
        return "not a vision-language model"
    from sftlab.multimodal.setup import part_of

    lm_trained = [n for n, p in base.named_parameters() if p.requires_grad and part_of(n) in ("language_model", None)]
    if lm_trained:
        return f"the language model trains ({lm_trained[0]}, ...)"
    if not cfg.data.packing:
        return "data.packing is off"
    if cfg.train.gradient_checkpointing:
        return "train.gradient_checkpointing is on"
    if cfg.train.neftune_alpha:
        return "train.neftune_alpha noises every input embedding, the prefix's too"
    if getattr(base.config, "_attn_implementation", None) != NAME:
        return "per-example attention (train.speed.packed_attention with sdpa) is off"
    return None


class SharedPrefix:
    """Packed rows without the prefix every example shares; the prefix's keys and values computed once."""

    def __init__(self, prefix: list[int]):
        self.prefix = torch.tensor(prefix, dtype=torch.long)
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.cache_arg = ""  # the forward's name for the cache, found with kv
        self.rows_shortened = self.rows_plain = 0

    def prepare(self, model, batch: Batch) -> Batch:
        """The row shortened, with the prefix cache and the mask as model inputs; or `batch` itself
        when its examples do not all start with the prefix (then the model reads it whole)."""
        short = strip_prefix(batch, self.prefix)
        if short is None:
            self.rows_plain += 1
            return batch
        if self.kv is None:  # lazily: in a training run, inside the forward's autocast and kernels
            self.kv = prefix_kv(model, self.prefix.to(batch.input_ids.device))
            self.cache_arg = cache_argument(model)
        self.rows_shortened += 1
        short.extra = {**short.extra, self.cache_arg: prefix_cache(self.kv),
                       "attention_mask": prefix_mask(short.position_ids, len(self.prefix))}
        return short


class SharedPrefixLoss(SharedPrefix):
    """loss_fn(model, batch) over the rows without their shared prefix; `inner` is the plain or fast loss."""

    def __init__(self, inner: Callable, prefix: list[int]):
        super().__init__(prefix)
        self.inner = inner

    def __call__(self, model, batch: Batch):
        return self.inner(model, self.prepare(model, batch))


def strip_prefix(batch: Batch, prefix: torch.Tensor) -> Batch | None:
    """The packed row without each example's first P tokens (positions then start at P), or None when
    the batch is not one packed row whose every example starts with `prefix` and trains none of it."""
    from sftlab.speed.packed_attention import example_spans

    P, (B, L) = len(prefix), batch.input_ids.shape
    spans = example_spans(batch.position_ids, L, L, B) if batch.attention_mask is None else None
    if spans is None:
        return None
    pos, ids, labels = batch.position_ids[0], batch.input_ids[0], batch.labels[0]
    prefix = prefix.to(ids.device)
    for s, e in spans:
        if e - s <= P or not torch.equal(ids[s:s + P], prefix) or bool((labels[s:s + P] != IGNORE).any()):
            return None
    keep = pos >= P
    return Batch(ids[keep][None], labels[keep][None], pos[keep][None], None, batch.n_examples,
                 int(keep.sum()), dict(batch.extra))


@torch.no_grad()
def prefix_kv(model, prefix: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's (keys, values) of the prefix, computed by the model itself with its cache."""
    out = extract_base(model)(input_ids=prefix[None], position_ids=torch.arange(len(prefix), device=prefix.device)[None],
                use_cache=True, logits_to_keep=1)
    cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
    return [(layer.keys.detach(), layer.values.detach()) for layer in cache.layers]


def prefix_cache(kv):
    """A fresh cache holding the prefix: the forward appends each layer's new keys to it."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=kv)


def cache_argument(model) -> str:
    """The forward's name for the KV cache: `cache` (transformers >= 5.24) or `past_key_values`."""
    base = extract_base(model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def prefix_mask(position_ids: torch.Tensor, P: int) -> torch.Tensor:
    """[1, 1, L, P + L] bool, True = attend: every query sees the prefix, then its own example causally."""
    pos = position_ids[0]
    example = torch.cumsum((pos == P).long(), 0)  # which example each remaining token belongs to
    L = len(pos)
    own = (example[:, None] == example[None, :]) & (torch.arange(L)[None, :] <= torch.arange(L)[:, None])
    return torch.cat([torch.ones(L, P, dtype=torch.bool), own], dim=1)[None, None].to(position_ids.device)


def wrap(inner: Callable, model, cfg, examples, log=print) -> Callable:
    """`inner` itself, or a SharedPrefixLoss when the run qualifies (see the module docstring)."""
    if not cfg.train.speed.shared_prefix:
        return inner
    reason = why_not(model, cfg)
    prefix = [] if reason else shared_prefix_ids(examples)
    if reason is None and not prefix:
        reason = f"the examples share fewer than {MIN_PREFIX} leading tokens"
    if reason:
        if getattr(extract_base(model).config, "vision_config", None):  # text runs: never applies, say nothing
            log(f"shared prefix: not used ({reason})")
        return inner
    n, P = sum(len(r) for r in examples), len(prefix)
    log(f"shared prefix: the {P} tokens every example starts with run once (frozen language model): "
        f"{P * len(examples):,} of {n:,} training tokens ({P * len(examples) / n:.0%}) not recomputed each step")
    return SharedPrefixLoss(inner, prefix)


def extract_base(model):
    """The model inside DDP / torch.compile wrappers."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model)
