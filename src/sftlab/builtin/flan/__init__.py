"""The FLAN-style built-in mixture: >= 60 task families in 12 clusters, each family with >= 8
independently written templates (one-liners, "Input:" blocks, question/answer, inverted ones, some
stating the answer format), answers checkable by code.

Splits, as FLAN makes them: whole clusters are held out (HELDOUT_CLUSTERS: never trained, the test of
"unseen tasks"); inside each trained cluster one family is held out too (its module's HELDOUT_FAMILY),
the rest are "seen". `split_of(name)` gives "seen", "heldout" (a held-out family of a trained cluster)
or "heldout_cluster".

Everything is deterministic per seed: each family draws from `Random(f"{seed}:flan:{family}")`, so
adding a family never changes another's examples.
"""

from __future__ import annotations

from importlib import import_module
from random import Random

from sftlab.builtin.flan.base import Family

CLUSTER_MODULES = ("letters", "lists", "extraction", "counting", "classification", "arithmetic", "comparison",
                   "sequences", "formatting", "rewriting", "reading", "dialogue")
# Held out whole: comparing, continuing a sequence and reading a short context each need the trained
# skills (numbers, letters, words, answering tersely) combined in a way no trained cluster asks for.
HELDOUT_CLUSTERS: tuple[str, ...] = ("comparison", "sequences", "reading")

_modules = [import_module(f"sftlab.builtin.flan.{m}") for m in CLUSTER_MODULES]
FAMILIES: dict[str, Family] = {}
CLUSTERS: dict[str, tuple[str, ...]] = {}
for _m in _modules:
    for _f in _m.FAMILIES:
        if _f.name in FAMILIES:
            raise ValueError(f"flan family {_f.name!r} defined twice (in {_m.__name__} and {FAMILIES[_f.name].cluster})")
        if _f.cluster != _m.CLUSTER:
            raise ValueError(f"flan family {_f.name!r} in module {_m.__name__} says cluster {_f.cluster!r}")
        FAMILIES[_f.name] = _f
    CLUSTERS[_m.CLUSTER] = tuple(f.name for f in _m.FAMILIES)
HELDOUT_FAMILIES: tuple[str, ...] = tuple(m.HELDOUT_FAMILY for m in _modules
                                          if m.CLUSTER not in HELDOUT_CLUSTERS and m.HELDOUT_FAMILY)


def split_of(name: str) -> str:
    fam = FAMILIES[name]
    if fam.cluster in HELDOUT_CLUSTERS:
        return "heldout_cluster"
    return "heldout" if name in HELDOUT_FAMILIES else "seen"


def distinct_examples(name: str, n: int, seed: int = 0, max_draws: int | None = None
                      ) -> list[tuple[list[tuple[str, str]], str, int]]:
    """Up to `n` examples of family `name` with pairwise different conversations, in draw order,
    deterministic per seed: the first k of a longer call are those of a shorter one. Stops after
    `max_draws` draws in all (None: after 5,000 fruitless draws in a row, i.e. past the family's capacity)."""
    fam = FAMILIES[name]
    rng = Random(f"{seed}:flan:{name}")
    seen: set[str] = set()
    out = []
    attempts = stale = 0
    while len(out) < n and stale < 5000 and (max_draws is None or attempts < max_draws):
        attempts += 1
        messages, answer, index = fam.example(rng)
        key = repr(messages)
        if key in seen:
            stale += 1
            continue
        stale = 0
        seen.add(key)
        out.append((messages, answer, index))
    return out


def unique_examples(name: str, n: int, seed: int = 0) -> list[tuple[list[tuple[str, str]], str, int]]:
    """`n` examples of family `name` with pairwise different conversations, deterministic per seed.

    Raises ValueError when the family cannot yield `n` distinct ones (instead of repeating)."""
    out = distinct_examples(name, n, seed)
    if len(out) < n:
        raise ValueError(f"flan family {name!r}: only {len(out)} distinct examples found, {n} requested; "
                         f"fix: ask for at most {len(out)}")
    return out
