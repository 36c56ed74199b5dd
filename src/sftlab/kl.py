"""KL pull toward the base model (`train.kl_to_base.beta`): a forgetting control for plain SFT.

    loss of a step = ( sum over trained positions of  CE(tuned, target)  +  beta * KL(tuned || base) )
                     / number of trained tokens of the whole step

KL(p || q) = sum_v p_v (log p_v - log q_v) with p the tuned model's next-token distribution and q the
base model's, at the same positions as the cross-entropy (trained labels only), summed and normalised
exactly like it (train.py: summed per micro-batch here, divided by the step's trained tokens there),
so batch 8 x 1 still equals batch 1 x 8 accumulated (tests/test_kl.py).

Where the base distribution comes from:
- LoRA: the same model with its adapters switched off (peft's `disable_adapter()`, under no_grad):
  no second model in memory, one extra forward without gradients per micro-batch.
- full fine-tuning: a frozen copy of the starting weights (`reference_copy`, made before training
  and before a resume loads the checkpoint's weights).

Memory: like speed/chunked_loss.py the model returns its last hidden states and lm_head runs at the
trained positions only, `chunk` positions at a time; each chunk (tuned + base logits, their
log-softmax) is wrapped in activation checkpointing, so at most one chunk's [chunk, vocab] tensors
exist and the backward recomputes that chunk. Models whose logits are not lm_head(last hidden
state) (soft-capping, scaling) or whose lm_head is not a plain nn.Linear (lm_head adapted by LoRA)
take the plain path: full logits at the trained positions for both models.
With beta = 0 none of this runs: training uses the loss of speed.enabled() unchanged.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from sftlab.loss import trained_positions
from sftlab.pack import IGNORE, Batch

AUTO_CHUNK_ELEMENTS = 2**24  # two [chunk, V] fp32 log-softmaxes per chunk (tuned and base): half chunked_loss's chunk


def reference_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen copy of `model` (full fine-tuning's base distribution): eval mode, no gradients."""
    ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


def is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


class KLToBase:
    """The loss function of a run with beta > 0: `kl(model, batch)` -> (summed CE + beta * summed KL,
    trained tokens), the same contract as loss.summed_loss. The KL and CE sums of the calls since
    `reset()` are kept (detached) for the metrics log: `step_record()`."""

    def __init__(self, beta: float, reference: torch.nn.Module | None = None, chunk_tokens: int | str | None = "auto"):
        self.beta = beta
        self.reference = reference
        self.chunk_tokens = chunk_tokens
        self.path = ""  # "chunked" or "plain": what the last call used
        self.reset()

    def reset(self) -> None:
        self.kl_sum = torch.zeros((), dtype=torch.float64)
        self.ce_sum = torch.zeros((), dtype=torch.float64)

    def __call__(self, model, batch: Batch) -> tuple[torch.Tensor, int]:
        ce, kl, n = kl_summed_loss(model, batch, reference=self.reference, chunk_tokens=self.chunk_tokens, owner=self)
        self.kl_sum += kl.detach().double().cpu()
        self.ce_sum += ce.detach().double().cpu()
        return ce + self.beta * kl, n

    def step_record(self, accelerator, n_step: int) -> dict:
        """{"kl_to_base": mean KL per trained token, "ce_loss": mean CE} of the step (all processes)."""
        dev = accelerator.device
        kl = float(accelerator.reduce(self.kl_sum.float().to(dev), reduction="sum")) / max(1, n_step)
        ce = float(accelerator.reduce(self.ce_sum.float().to(dev), reduction="sum")) / max(1, n_step)
        return {"ce_loss": round(ce, 6), "kl_to_base": round(kl, 6)}


def _unwrap(model):
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model)  # through DDP / torch.compile


@torch.no_grad()
def _base_forward(model, reference, batch: Batch, **kw):
    """The base model's forward (no gradients): the reference copy, or the peft model with its adapters off."""
    if reference is not None:
        return reference(**batch.model_inputs(), **kw)
    base = _unwrap(model)
    if not is_peft(base):
        from sftlab.errors import SftlabError

        raise SftlabError("train.kl_to_base: full fine-tuning needs a frozen reference copy of the base model "
                          "(train() makes one); a LoRA model gives the base distribution by switching its adapters off")
    with base.disable_adapter():
        return base(**batch.model_inputs(), **kw)


def kl_summed_loss(model, batch: Batch, *, reference=None, chunk_tokens: int | str | None = "auto", owner=None
                   ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(summed CE over trained positions, summed KL(tuned || base) over the same positions, trained tokens)."""
    keep = trained_positions(batch.labels)
    n = int((batch.labels != IGNORE).sum())
    if n == 0:
        out = model(**batch.model_inputs(), logits_to_keep=1)
        zero = out.logits.sum() * 0.0
        return zero, zero.detach(), 0
    targets = batch.labels[:, keep]
    trained = targets != IGNORE
    head = _plain_head(model)
    ref_head = _plain_head(reference) if reference is not None else head
    if head is not None and ref_head is not None:
        out = model(**batch.model_inputs(), logits_to_keep=keep[-1:], output_hidden_states=True)
        hidden = out.hidden_states[-1]
        base_out = _base_forward(model, reference, batch, logits_to_keep=keep[-1:], output_hidden_states=True)
        base_hidden = base_out.hidden_states[-1]
        if _head_reproduces(head, hidden[:, keep[-1:]], out.logits) and _head_reproduces(ref_head, base_hidden[:, keep[-1:]], base_out.logits):
            if owner is not None:
                owner.path = "chunked"
            h = hidden[:, keep][trained]
            hb = base_hidden[:, keep][trained].detach()
            chunk = _chunk_size(chunk_tokens, head.out_features, h.size(0))
            ce, kl = chunked_ce_kl(h, hb, head, ref_head, targets[trained], chunk)
            tie = out.logits.sum() * 0.0  # the one-position logits joined no loss: weight 0 so DDP sees every output used
            return ce + tie, kl, n
    if owner is not None:
        owner.path = "plain"
    logits = model(**batch.model_inputs(), logits_to_keep=keep).logits[trained]  # [n, V]
    base_logits = _base_forward(model, reference, batch, logits_to_keep=keep).logits[trained]
    ce, kl = ce_kl(logits, base_logits, targets[trained])
    return ce, kl, n


def ce_kl(logits: torch.Tensor, base_logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum CE(logits, targets), sum KL(softmax(logits) || softmax(base_logits))) over rows."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    lq = torch.log_softmax(base_logits.detach().float(), dim=-1)
    ce = -lp.gather(-1, targets[:, None]).sum()
    kl = (lp.exp() * (lp - lq)).sum()
    return ce, kl


def chunked_ce_kl(h, hb, head, ref_head, targets, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ce_kl over lm_head(h) and ref_head(hb), `chunk` rows at a time; with gradients each chunk is
    checkpointed (its logits are recomputed in the backward, never kept)."""
    ce = kl = None

    def one(hc, hbc, tc):
        return ce_kl(F.linear(hc, head.weight, head.bias), F.linear(hbc, ref_head.weight, ref_head.bias), tc)

    grad = torch.is_grad_enabled() and (h.requires_grad or head.weight.requires_grad)
    for start in range(0, h.size(0), chunk):
        args = (h[start : start + chunk], hb[start : start + chunk], targets[start : start + chunk])
        c, k = checkpoint(one, *args, use_reentrant=False) if grad else one(*args)
        ce, kl = (c, k) if ce is None else (ce + c, kl + k)
    return ce, kl


def _chunk_size(chunk_tokens, vocab: int, n: int) -> int:
    if chunk_tokens is None:
        return max(1, n)
    if chunk_tokens == "auto":
        return max(64, AUTO_CHUNK_ELEMENTS // vocab)
    return int(chunk_tokens)


def _plain_head(model):
    from sftlab.speed.chunked_loss import _plain_head as plain

    return plain(model)


@torch.no_grad()
def _head_reproduces(head, hidden, logits) -> bool:
    """Are the model's logits lm_head(last hidden state)? (false for soft-capping / scaling heads)"""
    mine = F.linear(hidden, head.weight, head.bias).float()
    ref = logits.float()
    return float((mine - ref).abs().max()) <= 1e-3 * (1.0 + float(ref.abs().max()))
