"""Per-example summed losses on packed rows: the raw material of every perplexity in the report.

Response perplexity: chat conversations rendered by the training Renderer, so only the response
tokens (the trained positions, stop token included) are scored — exactly what SFT optimises.
General-text perplexity: plain documents as text rows (every token but the first is scored);
a rise after tuning is forgetting.

Examples are packed best-fit-decreasing into rows of `token_budget` tokens (no padding; the
packing is proven equal to one-at-a-time scoring in tests/test_pack.py), and per_token_losses
returns the scored tokens in row order, which is split back into examples by their counts. The rows
attend per example (speed.scoring: one masked attention over a 4096-token row of short examples is
mostly wasted work; the same losses, tests/test_packed_attention.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from sftlab import speed
from sftlab.conversation import Conversation
from sftlab.loss import per_token_losses
from sftlab.pack import apply_length_policy, collate_packed, pack_bins
from sftlab.render import Renderer


@dataclass
class ExampleLosses:
    """Summed cross-entropy and scored-token count per example (aligned with `ids`)."""

    ids: list[str]
    loss_sums: np.ndarray
    n_tokens: np.ndarray
    truncated: int = 0  # examples longer than the model's context, scored on their first max_len tokens
    skipped: list[str] = field(default_factory=list)  # examples with nothing to score (e.g. no assistant turn)

    @property
    def mean_loss(self) -> float:
        return float(self.loss_sums.sum() / max(1, self.n_tokens.sum()))

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.mean_loss))


def text_rows(texts: list[str], source: str = "general_text") -> list[Conversation]:
    """Plain documents as text rows (the Renderer trains, i.e. scores, every token)."""
    return [Conversation.document(t, source=f"{source}[{i}]") for i, t in enumerate(texts)]


def _max_len(model, token_budget: int) -> int:
    ctx = getattr(getattr(model, "config", None), "max_position_embeddings", None) or token_budget
    return min(int(ctx), token_budget)


def packed_loss_sums(model, rows: list, token_budget: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(summed cross-entropy, number of scored targets) per rendered row, in float64. Rows are
    packed into forward passes of at most `token_budget` tokens (position ids restart per row, so
    rows never see each other); per_token_losses returns the scored tokens in position order,
    split back per row by its count (shifted labels: a row's first token is never a target)."""
    import torch

    counts = np.asarray([sum(r.loss_mask[1:]) for r in rows], dtype=np.int64)
    sums = np.zeros(len(rows))
    bins = pack_bins([len(r) for r in rows], token_budget)
    with torch.no_grad(), speed.scoring(model):
        for b in tqdm(bins, desc="perplexity", unit="row", disable=not progress, leave=False):
            losses = per_token_losses(model, collate_packed([rows[i] for i in b])).double().numpy()
            offsets = np.cumsum([0] + [int(counts[i]) for i in b])
            if offsets[-1] != losses.size:
                raise RuntimeError(f"scored {losses.size} tokens, expected {offsets[-1]} (label layout changed?)")
            for k, i in enumerate(b):
                sums[i] = losses[offsets[k] : offsets[k + 1]].sum()
    return sums, counts


def example_losses(
    model, renderer: Renderer, conversations: list[Conversation], token_budget: int = 2048, progress: bool = False
) -> ExampleLosses:
    """Score every conversation; one forward pass per packed row of <= token_budget tokens."""
    max_len = _max_len(model, token_budget)
    keep: list = []
    skipped: list[str] = []
    truncated = 0
    for conv in conversations:
        r = renderer.render(conv)
        if len(r) > max_len:  # longer than the context: score the first max_len tokens, counted
            pieces, _ = apply_length_policy([r], max_len, "truncate")
            truncated += 1
            r = pieces[0] if pieces else None
        if r is None or sum(r.loss_mask[1:]) == 0:
            skipped.append(conv.source or conv.id)  # nothing to score (no response within max_len)
            continue
        keep.append(r)
    was_training = model.training
    model.eval()
    loss_sums, counts = packed_loss_sums(model, keep, max_len, progress)
    if was_training:
        model.train()
    return ExampleLosses(
        ids=[r.id for r in keep],
        loss_sums=loss_sums,
        n_tokens=counts.astype(float),
        truncated=truncated,
        skipped=skipped,
    )
