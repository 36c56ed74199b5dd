"""Chunked lm_head + cross-entropy (`train.speed.loss_chunk_tokens`, "auto" by default).

Even at trained positions only (loss.py), the logits are [trained tokens, vocab] floats — 700
trained tokens x 49k vocab = 138 MB in fp32, and training holds two or three tensors of that size
at once (the logits, the log-softmax kept for the backward, their gradient; plus an fp32 copy under
bf16). With a chunk size the model returns its last hidden states instead, and
`chunked_linear_cross_entropy` runs lm_head + cross-entropy a chunk at a time, computing the
gradients of each chunk right away (the logits of one chunk are freed before the next is made), so
the peak is one chunk's logits. Measured on SmolLM2-135M LoRA, one 509-token row (401 trained):
peak RSS 2129 -> 2053 MB and 2139 -> 2091 MB in two runs, step time within noise (3.51 vs 3.47 s,
3.39 vs 3.45 s); "auto" is the default for that reason, and falls back to the plain path for heads
it cannot reproduce. Same loss and gradients as loss.summed_loss up to float summation order:
tests/test_train_techniques.py.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

from sftlab.loss import summed_loss as plain_summed_loss
from sftlab.loss import trained_positions
from sftlab.pack import IGNORE, Batch
from sftlab.speed import cpu_blas

# "auto" chunks: 2^25 fp32 logits (128 MB) per chunk; the chunk's log-softmax is a second such
# tensor. SmolLM2 (49k vocabulary): 682 positions per chunk, so a 512-token row is one chunk.
AUTO_CHUNK_ELEMENTS = 2**25
MIN_AUTO_CHUNK = 64


def summed_loss(model, batch: Batch, chunk_tokens: int | str | None) -> tuple[torch.Tensor, int]:
    """loss.summed_loss with lm_head + cross-entropy `chunk_tokens` trained positions at a time
    (memory; same value and gradients up to float summation order). "auto": chunks of
    AUTO_CHUNK_ELEMENTS logits where the model allows it (a plain nn.Linear head that makes the
    model's logits), the plain path elsewhere; an explicit number refuses such models with an error
    instead. None: the plain path."""
    keep = trained_positions(batch.labels)
    strict = chunk_tokens != "auto"
    if chunk_tokens == "auto":
        chunk_tokens = auto_chunk_tokens(model)
    if chunk_tokens and keep.numel():
        loss = _chunked_summed_loss(model, batch, keep, chunk_tokens, strict)
        if loss is not None:
            return loss, int((batch.labels != IGNORE).sum())
    return plain_summed_loss(model, batch)


def auto_chunk_tokens(model) -> int | None:
    """Positions per chunk for loss_chunk_tokens: auto, or None where the chunked path cannot run."""
    head = _plain_head(model)
    if head is None or head in _refused_heads:
        return None
    return max(MIN_AUTO_CHUNK, AUTO_CHUNK_ELEMENTS // head.out_features)


def _chunked_summed_loss(model, batch: Batch, keep: torch.Tensor, chunk_tokens: int, strict: bool) -> torch.Tensor | None:
    # The model still runs its own lm_head on ONE position (keep[-1:]): those logits check, once
    # per head, that logits == lm_head(last hidden state). That is false for models that soft-cap
    # or scale their logits (Gemma 2, Cohere, Granite): refused with an error (strict), or left to
    # the standard path (auto, returns None).
    out = model(**batch.model_inputs(), logits_to_keep=keep[-1:], output_hidden_states=True)
    hidden = out.hidden_states[-1]  # [B, T, d] after the final norm: transformers ties it to last_hidden_state
    head = output_head(model) if strict else _plain_head(model)
    if not _check_head_once(head, hidden[:, keep[-1:]], out.logits, strict):
        return None
    targets = batch.labels[:, keep]
    trained = targets != IGNORE
    loss = chunked_linear_cross_entropy(hidden[:, keep][trained], head.weight, head.bias, targets[trained], chunk_tokens)
    # the one-position logits joined no loss; tie them in with weight 0 so DDP sees every output used
    return loss + out.logits.sum() * 0.0


def _plain_head(model) -> torch.nn.Linear | None:
    from accelerate.utils import extract_model_from_parallel

    head = extract_model_from_parallel(model).get_output_embeddings()
    if type(head) is not torch.nn.Linear or _sharded(head.weight):
        return None
    return head


def _sharded(w: torch.Tensor) -> bool:
    """True for a weight that is not whole outside its module's forward: DeepSpeed ZeRO-3 (empty,
    `ds_id`), FSDP1 (empty after resharding), FSDP2 (a DTensor shard)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        DTensor = ()
    return w.numel() == 0 or hasattr(w, "ds_id") or isinstance(w, DTensor)


def output_head(model) -> torch.nn.Linear:
    """The model's lm_head as a plain nn.Linear (through DDP / torch.compile / peft wrappers)."""
    from accelerate.utils import extract_model_from_parallel

    from sftlab.errors import SftlabError

    head = extract_model_from_parallel(model).get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        raise SftlabError(
            f"train.speed.loss_chunk_tokens needs the model's output layer to be a plain torch.nn.Linear; it is "
            f"{type(head).__module__}.{type(head).__name__} (is lm_head in lora.target_modules?). "
            "Set train.speed.loss_chunk_tokens: null, or leave lm_head out of the LoRA targets."
        )
    if _sharded(head.weight):
        raise SftlabError(
            "train.speed.loss_chunk_tokens: the lm_head weight is sharded outside the forward (DeepSpeed ZeRO-3 / FSDP); "
            "chunked loss needs the whole weight. Set train.speed.loss_chunk_tokens: null (or auto, which falls back)."
        )
    return head


_checked_heads: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()
_refused_heads: "weakref.WeakSet[torch.nn.Module]" = weakref.WeakSet()


@torch.no_grad()
def _check_head_once(head: torch.nn.Linear, hidden: torch.Tensor, logits: torch.Tensor, strict: bool = True) -> bool:
    if head in _checked_heads:
        return True
    from sftlab.errors import SftlabError

    mine = F.linear(hidden, head.weight, head.bias).float()
    ref = logits.float()
    diff = float((mine - ref).abs().max())
    # the same matmul on the same inputs: any difference beyond rounding means the model post-
    # processes its logits (soft-capping, scaling)
    if diff > 1e-3 * (1.0 + float(ref.abs().max())):
        if not strict:
            _refused_heads.add(head)
            return False
        raise SftlabError(
            f"train.speed.loss_chunk_tokens: this model's logits are not lm_head(last hidden state) (max difference "
            f"{diff:.3g}); it post-processes them (e.g. soft-capping or scaling), which the chunked loss does not "
            "reproduce. Set train.speed.loss_chunk_tokens: null."
        )
    _checked_heads.add(head)
    return True


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                                 targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """sum_i CE(hidden_i @ weight^T + bias, targets_i), `chunk` rows at a time.

    hidden [n, d], weight [V, d], targets [n] (all trained). With autograd on, each chunk's
    gradients (for hidden, weight, bias) are computed right after its loss and its logits freed,
    so at most [chunk, V] logits exist; the backward only scales the stored gradients."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias)):
        return _LinearCrossEntropy.apply(hidden, weight, bias, targets, chunk)
    return _linear_ce_chunks(hidden, weight, bias, targets, chunk, False, False, False)[0]


def _linear_ce_chunks(hidden, weight, bias, targets, chunk, need_h, need_w, need_b):
    loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
    grad_h = torch.empty_like(hidden) if need_h else None
    # weight/bias gradients are summed over chunks in fp32 whatever the weights' dtype
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
    grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
    for start in range(0, hidden.size(0), chunk):
        h = hidden[start : start + chunk]
        t = targets[start : start + chunk]
        logits_lp = cpu_blas.linear(h, weight, bias)  # autocast (if on) makes this bf16, as in the unchunked path
        # one fused log-softmax pass (logsumexp would make two full-size temporaries), then the
        # logits are dropped: at most two [chunk, V] tensors exist at a time
        lp_dtype = logits_lp.dtype
        lsm = torch.log_softmax(logits_lp.float(), dim=-1)
        del logits_lp
        rows = torch.arange(t.numel(), device=t.device)
        loss -= lsm[rows, t].sum()
        if not (need_h or need_w or need_b):
            continue
        # d(sum CE)/d logits = softmax - one_hot(target), made in place over the fp32 log-softmax
        g = lsm.exp_()
        g[rows, t] -= 1.0
        g_lp = g.to(lp_dtype)  # the unchunked backward also sends the logits' gradient in their dtype
        if need_h:
            grad_h[start : start + chunk] = cpu_blas.matmul(g_lp, weight.to(g_lp.dtype))
        if need_w:
            grad_w += cpu_blas.matmul(g_lp.t(), h.to(g_lp.dtype)).float()
        if need_b:
            grad_b += g.sum(0)
    return loss, grad_h, grad_w, grad_b


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk):
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        loss, grad_h, grad_w, grad_b = _linear_ce_chunks(hidden, weight, bias, targets, chunk, need_h, need_w, need_b)
        ctx.weight_dtype = weight.dtype
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        return (
            None if grad_h is None else grad_h * grad_loss.to(grad_h.dtype),
            None if grad_w is None else (grad_w * grad_loss).to(ctx.weight_dtype),
            None if grad_b is None else (grad_b * grad_loss).to(ctx.weight_dtype),
            None,
            None,
        )
