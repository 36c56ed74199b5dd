"""Mixing sources to target proportions, temperature sampling, and curriculum ordering.

Proportional mixing: a source with weight w_i and n_i rows contributes t_i rows,
t_i = total * w_i / sum(w), rounded by largest remainder so the t_i add up to `total` exactly
(each t_i is floor or ceil of the exact share). A source with t_i <= n_i is subsampled without
replacement; a source with t_i > n_i is oversampled: every row appears floor(t_i / n_i) times plus
a random t_i mod n_i of them once more (sampling with replacement only where oversampling is
needed, and never repeating a row twice more than another). Reported per source: rows available,
rows taken, and repetition factor t_i / n_i.

Temperature sampling: w_i = n_i ** (1 / T). T=1 keeps natural sizes, T -> infinity is uniform;
T=2..5 is the usual range for lifting small sources (mT5, Chung et al. 2023).
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, model_validator

from sftlab.conversation import Conversation
from sftlab.curate.blocks import Block, BlockConfig
from sftlab.errors import ConfigError, DataError, Problem


def source_name(conv: Conversation) -> str:
    """The mixing group: meta["source_name"] (set by the pipeline from the input's name), else the
    file part of conv.source ('data/a.jsonl:17' -> 'data/a.jsonl')."""
    name = conv.meta.get("source_name")
    if name:
        return str(name)
    return conv.source.rsplit(":", 1)[0] if conv.source else "(unknown)"


def apportion(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Integer shares of `total` proportional to weights, summing to total (largest remainder)."""
    wsum = sum(weights.values())
    exact = {k: total * w / wsum for k, w in weights.items()}
    out = {k: math.floor(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[: total - sum(out.values())]:
        out[k] += 1
    return out


def temperature_weights(sizes: Mapping[str, int], temperature: float) -> dict[str, float]:
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    return {k: n ** (1.0 / temperature) for k, n in sizes.items()}


@dataclass
class MixReport:
    per_source: dict[str, dict[str, Any]]  # name -> {available, target, weight, share, repetition}
    total: int

    def table(self) -> str:
        lines = [f"{'source':<24} {'available':>9} {'taken':>7} {'share':>6} {'repeat':>6}"]
        for name, r in self.per_source.items():
            lines.append(f"{name:<24} {r['available']:>9,} {r['target']:>7,} {r['share']:>6.1%} {r['repetition']:>6.2f}")
        return "\n".join(lines)


def mix_sources(groups: Mapping[str, Sequence[Conversation]], weights: Mapping[str, float], total: int,
                seed: int = 0, shuffle: bool = True) -> tuple[list[Conversation], MixReport]:
    """Draw `total` rows with source shares proportional to `weights` (see module docstring)."""
    problems = [Problem("mix", f"weights.{k}", f"weight for source {k!r} but no rows came from it",
                        f"sources with rows: {', '.join(groups) or 'none'}")
                for k in weights if weights[k] > 0 and not groups.get(k)]
    problems += [Problem("mix", "weights", f"source {k!r} has rows but no weight", "add a weight for it")
                 for k in groups if k not in weights]
    if problems:
        raise DataError(problems, "mixing weights do not match the sources:")
    rng = random.Random(seed)
    targets = apportion(total, {k: w for k, w in weights.items() if w > 0})
    out: list[Conversation] = []
    report: dict[str, dict[str, Any]] = {}
    for name, rows in groups.items():
        t, n = targets.get(name, 0), len(rows)
        if t <= n:
            idx = sorted(rng.sample(range(n), t))
            out.extend(rows[i] for i in idx)
        else:
            copies, extra = divmod(t, n)
            for c in range(copies):  # meta["repeat"] = k marks the k-th extra copy of a row
                out.extend(rows if c == 0 else (r.with_meta(repeat=c) for r in rows))
            for i in rng.sample(range(n), extra):
                out.append(rows[i].with_meta(repeat=copies))
        report[name] = {"available": n, "target": t, "weight": weights.get(name, 0.0),
                        "share": t / max(1, total), "repetition": round(t / n, 4)}
    if shuffle:
        rng.shuffle(out)
    return out, MixReport(report, len(out))


def curriculum_order(convs: Iterable[Conversation], key: str, descending: bool = False) -> list[Conversation]:
    """Easy -> hard by meta[key] (stable: equal scores keep input order)."""
    rows = list(convs)
    bad = [Problem(c.source or c.id, f"meta.{key}", f"curriculum key {key!r} is {c.meta.get(key)!r}",
                   f"run a block that writes meta[{key!r}] before curriculum") for c in rows
           if not isinstance(c.meta.get(key), int | float)]
    if bad:
        raise DataError(bad, f"{len(bad)} row(s) have no numeric {key!r} to order by:")
    return sorted(rows, key=lambda c: c.meta[key], reverse=descending)


class MixConfig(BlockConfig):
    type: Literal["mix"] = "mix"
    method: Literal["weights", "temperature"] = "weights"
    weights: dict[str, float] | None = Field(None, description="source name -> weight; default: the inputs' weights")
    temperature: float = Field(2.0, gt=0)
    total: int | None = Field(None, ge=1, description="rows out; default: rows in")
    seed: int = 0

    @model_validator(mode="after")
    def _positive(self) -> MixConfig:
        if self.weights and any(w < 0 for w in self.weights.values()):
            raise ValueError("weights must be >= 0")
        return self


class Mix(Block):
    Config = MixConfig
    cfg: MixConfig
    needs_all = True

    def __init__(self, config: MixConfig | None = None, default_weights: Mapping[str, float] | None = None, **kw):
        super().__init__(config, **kw)
        self.default_weights = dict(default_weights or {})

    def run(self, conversations: Iterable[Conversation]) -> Iterator[Conversation]:
        groups: dict[str, list[Conversation]] = defaultdict(list)
        for c in conversations:
            self.stats.seen += 1
            groups[source_name(c)].append(c)
        sizes = {k: len(v) for k, v in groups.items()}
        if self.cfg.method == "temperature":
            weights = temperature_weights(sizes, self.cfg.temperature)
        else:
            weights = self.cfg.weights or self.default_weights or {k: 1.0 for k in groups}
        total = self.cfg.total or self.stats.seen
        out, report = mix_sources(groups, weights, total, self.cfg.seed)
        self.stats.notes["per_source"] = report.per_source
        undersampled = sum(max(0, r["available"] - r["target"]) for r in report.per_source.values())
        if undersampled:
            self.stats.dropped_by_reason["undersampled"] += undersampled
        self.stats.notes["added_by_oversampling"] = sum(max(0, r["target"] - r["available"])
                                                        for r in report.per_source.values())
        yield from out


class CurriculumConfig(BlockConfig):
    type: Literal["curriculum"] = "curriculum"
    key: str = "complexity"
    descending: bool = False


class Curriculum(Block):
    Config = CurriculumConfig
    cfg: CurriculumConfig
    needs_all = True

    def run(self, conversations: Iterable[Conversation]) -> Iterator[Conversation]:
        rows = list(conversations)
        self.stats.seen = len(rows)
        yield from curriculum_order(rows, self.cfg.key, self.cfg.descending)
