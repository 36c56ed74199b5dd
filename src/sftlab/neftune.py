"""NEFTune (Jain et al. 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning"): during
training, uniform noise is added to the input embeddings,

    e' = e + (alpha / sqrt(L * d)) * u,   u ~ Uniform(-1, 1) elementwise,

d the hidden size, L the sequence length. `train.neftune_alpha` turns it on (the paper uses 5-15).

Which L in a packed row? The paper (and TRL / transformers' `neftune_post_forward_hook`, which
takes L = the padded width of the batch) had one example per row. sftlab packs many examples into
one row of up to train.tokens_per_batch tokens, where the row length would shrink the noise by
sqrt(examples per row) and tie it to the packing budget. Here L is the length of the example the
token belongs to: a packed row's examples are found where position_ids restart at 0; in padded
batches (data.packing: false) L counts the example's real tokens (its attention_mask), not the
padding. So an example gets the same noise scale packed or padded, whatever tokens_per_batch is.

Only training forwards get noise: the embedding module must be in training mode (model.train();
evaluation and generation run under model.eval()), and a forward that uses a KV cache (generation,
`use_cache=True` or past_key_values given) gets none even in training mode. alpha 0 adds nothing
and draws no random numbers, so the run is bit-identical to one without the hook.

Implementation: a forward pre-hook (with kwargs) on the model the loop calls records each forward's
position_ids / attention_mask / cache use; a forward hook on the input embeddings adds the noise.
The noise comes from torch's global RNG (seeded by train.seed, saved in checkpoints: exact resume).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


def example_lengths(position_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, shape: tuple[int, int]) -> torch.Tensor:
    """[B, T] float tensor: for each token, the number of (real) tokens of the example it belongs to.

    Examples are the runs of a row that start where position_ids is 0 (a packed row: several; a
    padded row: one). With an attention_mask only its 1 tokens count. Without position_ids each row
    is one example (its real tokens, or its full width)."""
    B, T = shape
    real = torch.ones(B, T) if attention_mask is None else attention_mask.to(torch.float32).cpu()
    if position_ids is None:
        return real.sum(-1, keepdim=True).clamp(min=1).expand(B, T)
    pos = position_ids.cpu().expand(B, T)
    starts = pos == 0
    starts[:, 0] = True  # a row always starts an example (also a row cut mid-example)
    seg = starts.long().cumsum(-1) - 1  # [B, T] example index within the row
    counts = torch.zeros(B, T).scatter_add_(1, seg, real)  # real tokens per example index
    return counts.gather(1, seg).clamp(min=1)


@dataclass
class NEFTune:
    """The noise state of one model: alpha, what the current forward was called with, the hook handles."""

    alpha: float
    position_ids: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    cached: bool = False  # this forward uses a KV cache (generation): no noise
    handles: list = field(default_factory=list)

    def record_inputs(self, _module, args, kwargs):
        self.position_ids = kwargs.get("position_ids")
        self.attention_mask = kwargs.get("attention_mask")
        self.cached = bool(kwargs.get("use_cache")) or kwargs.get("past_key_values") is not None
        return None

    def add_noise(self, module, _inputs, output):
        if not module.training or self.cached or self.alpha == 0 or output.dim() != 3:
            return output
        B, T, d = output.shape
        pos, att = self.position_ids, self.attention_mask
        if (pos is not None and pos.shape[-1] != T) or (att is not None and tuple(att.shape) != (B, T)):
            pos = att = None  # the recorded inputs are not this forward's: fall back to the row width
        L = example_lengths(pos, att, (B, T)).to(device=output.device, dtype=output.dtype)
        bound = (self.alpha / torch.sqrt(L * d)).unsqueeze(-1)  # [B, T, 1]
        return output + torch.empty_like(output).uniform_(-1, 1) * bound

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()


def attach(model, alpha: float) -> NEFTune:
    """Add NEFTune noise of `alpha` to `model`'s input embeddings in its training forwards. `model`
    is what the training loop calls (a transformers model or a peft model around one); returns the
    state, whose `remove()` takes the hooks off again."""
    state = NEFTune(float(alpha))
    embeddings = model.get_input_embeddings()
    state.handles.append(model.register_forward_pre_hook(state.record_inputs, with_kwargs=True))
    state.handles.append(embeddings.register_forward_hook(state.add_noise))
    model._sftlab_neftune = state
    return state
