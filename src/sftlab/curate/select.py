"""Selecting a subset to a budget: Deita-style score-first with a representation filter, and the
random baseline of the same size (compare the two by training on each).

Deita (Liu et al. 2024): sort by score (e.g. complexity x quality), walk down the list, and take an
example only if its cosine distance to EVERY already-selected example is above `min_distance`,
until `budget` examples are taken. The result keeps high scores without near-copies of them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import numpy as np
from pydantic import Field

from sftlab.conversation import Conversation
from sftlab.curate.blocks import Block, BlockConfig, BlockStats
from sftlab.errors import DataError, Problem


def random_subset(convs: Sequence[Conversation], budget: int, seed: int = 0) -> list[Conversation]:
    """`budget` examples drawn without replacement (all of them if fewer), in input order."""
    if budget >= len(convs):
        return list(convs)
    picked = sorted(random.Random(seed).sample(range(len(convs)), budget))
    return [convs[i] for i in picked]


def score_of(conv: Conversation, keys: Sequence[str]) -> float:
    """Product of meta[key] for key in keys; a missing or non-numeric key is a DataError."""
    total = 1.0
    for key in keys:
        value = conv.meta.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool) or math.isnan(value):
            raise DataError(Problem(conv.source or conv.id, f"meta.{key}", f"score {key!r} is {value!r}, not a number",
                                    f"run a block that writes meta[{key!r}] (e.g. complexity_score) before select, "
                                    "or choose score keys that every example has"))
        total *= float(value)
    return total


def select_diverse(convs: Sequence[Conversation], budget: int, score_keys: Sequence[str] = ("complexity",),
                   min_distance: float = 0.1, embedder=None,
                   stats: BlockStats | None = None) -> list[Conversation]:
    """Deita selection. Returns the chosen examples in input order. Ties in score keep input order.

    min_distance is a cosine DISTANCE (1 - cosine similarity): 0.1 means no two selected examples
    have cosine similarity >= 0.9 in MiniLM space.
    """
    from sftlab.curate.embed import GrowingMatrix, get_embedder

    stats = stats if stats is not None else BlockStats("select")
    scores = [score_of(c, score_keys) for c in convs]
    order = sorted(range(len(convs)), key=lambda i: -scores[i])
    emb = embedder or get_embedder()
    vecs = emb.encode(list(convs))
    chosen: list[int] = []
    picked = GrowingMatrix(emb.dim)
    for rank, i in enumerate(order):
        if len(chosen) == budget:
            for j in order[rank:]:
                stats.drop(convs[j], "over_budget", f"score {scores[j]:.3f}; budget {budget} reached")
            break
        if picked.n:
            sims = picked.rows @ vecs[i]
            k = int(np.argmax(sims))
            if 1.0 - sims[k] <= min_distance:
                stats.drop(convs[i], "too_similar",
                           f"cosine distance {1 - sims[k]:.3f} <= {min_distance} to {convs[chosen[k]].id}")
                continue
        chosen.append(i)
        picked.append(vecs[i])
    stats.notes.update(budget=budget, selected=len(chosen), score_keys=list(score_keys),
                       min_score_selected=min((scores[i] for i in chosen), default=None))
    return [convs[i] for i in sorted(chosen)]


class SelectConfig(BlockConfig):
    type: Literal["select"] = "select"
    budget: int = Field(..., ge=1)
    method: Literal["deita", "random"] = "deita"
    score_keys: list[str] = Field(default_factory=lambda: ["complexity"],
                                  description="meta keys multiplied into the score, e.g. [complexity, quality]")
    min_distance: float = Field(0.1, ge=0, lt=2, description="cosine distance every pair of selected rows exceeds")
    seed: int = 0


class Select(Block):
    """Holds the whole input (it must see every score before choosing)."""

    Config = SelectConfig
    cfg: SelectConfig
    needs_all = True

    def __init__(self, config: SelectConfig | None = None, embedder=None, **kw):
        super().__init__(config, **kw)
        self.embedder = embedder

    def run(self, conversations: Iterable[Conversation]) -> Iterator[Conversation]:
        convs = list(conversations)
        self.stats.seen = len(convs)
        if self.cfg.method == "random":
            out = random_subset(convs, self.cfg.budget, self.cfg.seed)
            chosen = {id(c) for c in out}
            for c in convs:
                if id(c) not in chosen:
                    self.stats.drop(c, "not_sampled", f"random subset of {self.cfg.budget}")
        else:
            out = select_diverse(convs, self.cfg.budget, self.cfg.score_keys, self.cfg.min_distance,
                                 self.embedder, self.stats)
        if len(out) < self.cfg.budget:
            self.stats.notes["short_of_budget"] = self.cfg.budget - len(out)
        yield from out
