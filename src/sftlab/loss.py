"""Cross-entropy summed over trained positions only: the textbook loss, the reference of every
equivalence test.

The lm_head runs only where a label is trained (`logits_to_keep` with an index tensor), so a
batch whose prompts make up 70% of the tokens pays for 30% of the vocabulary projection — for a
49k vocabulary that projection is the single largest matmul of a 135M model.

Normalisation lives in train.py: an optimizer step divides the summed loss of ALL its
micro-batches (on all processes) by the total number of trained tokens of the step. Faster or
leaner variants with the same value (chunked lm_head + CE) live in sftlab/speed/.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sftlab.pack import IGNORE, Batch


def trained_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence indices with at least one trained label in the batch (union over rows)."""
    return (labels != IGNORE).any(dim=0).nonzero().squeeze(-1)


def summed_loss(model, batch: Batch) -> tuple[torch.Tensor, int]:
    """(sum of token cross-entropies over trained positions, number of trained tokens)."""
    keep = trained_positions(batch.labels)
    n = int((batch.labels != IGNORE).sum())
    if n == 0:
        # still run the model so every process does the same collective work under DDP
        out = model(**batch.model_inputs(), logits_to_keep=1)
        return out.logits.sum() * 0.0, 0
    logits = model(**batch.model_inputs(), logits_to_keep=keep).logits  # [B, len(keep), V]
    targets = batch.labels[:, keep]
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE, reduction="sum")
    return loss, n


@torch.no_grad()
def per_token_losses(model, batch: Batch) -> torch.Tensor:
    """Cross-entropy of every trained token, in order (for perplexities and IFD scores)."""
    keep = trained_positions(batch.labels)
    if keep.numel() == 0:
        return torch.zeros(0)
    logits = model(**batch.model_inputs(), logits_to_keep=keep).logits
    targets = batch.labels[:, keep]
    losses = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE, reduction="none")
    return losses[targets.reshape(-1) != IGNORE]
