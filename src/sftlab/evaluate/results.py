"""What an evaluation produced, and the numbers derived from it (every one with a 95% CI).

EvalReport holds the raw material (per-example losses, every generation and its verdict) and
derives the metric rows from it, so the JSON, the text table and the HTML report always agree.
The first model is the baseline; each other model gets `diff vs baseline` with a PAIRED
bootstrap interval (same prompts / same tokens for both models).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sftlab.evaluate.bootstrap import (
    Estimate,
    mean_ci,
    paired_diff_ci,
    perplexity_ci,
    perplexity_diff_ci,
    perplexity_ratio_ci,
    ratio_of_sums_ci,
    ratio_of_sums_diff_ci,
)
from sftlab.evaluate.decontam import DecontamReport
from sftlab.evaluate.perplexity import ExampleLosses

NAN = Estimate(math.nan, math.nan, math.nan, 0)
# GenerationSet split label -> the title of its accuracy row ("task accuracy: <title>"), in report order
SPLIT_TITLES = {"seen": "seen families", "held-out": "held-out families",
                "held-out-cluster": "held-out clusters (never trained)",
                "untrained-cluster": "clusters this model did not train"}


@dataclass
class GenerationSet:
    """Prompts answered by every model, with a pass/fail verdict per answer."""

    name: str  # "tasks" | "ifeval"
    ids: list[str]
    prompts: list[list[dict]]
    gold: list[str]
    groups: list[str]  # task family (tasks) or "" (ifeval)
    # per prompt: "seen" | "held-out" (a held-out family) | "" (ifeval); flan suite also "held-out-cluster"
    # (a cluster in HELDOUT_CLUSTERS) | "untrained-cluster" (a trainable cluster the model did not train)
    splits: list[str]
    max_new_tokens: int
    answers: dict[str, list[str]] = field(default_factory=dict)
    passed: dict[str, list[bool]] = field(default_factory=dict)
    # ifeval only: per model, per prompt, the loose verdict and the (passed, total) instruction counts
    passed_loose: dict[str, list[bool]] = field(default_factory=dict)
    instructions: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    instructions_loose: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    instruction_ids: list[list[str]] = field(default_factory=list)  # per prompt (ifeval)
    instruction_passed: dict[str, list[list[bool]]] = field(default_factory=dict)  # strict, per model
    conversations: list | None = None  # tasks: the eval conversations (check_answer reads their meta)
    clusters: list[str] = field(default_factory=list)  # flan suite: the cluster per prompt; else empty


@dataclass
class Metric:
    name: str
    group: str  # "perplexity" | "tasks" | "ifeval"
    higher_is_better: bool
    values: dict[str, Estimate]
    diffs: dict[str, Estimate]  # model -> (model - baseline), absent for the baseline
    pct: bool = False  # accuracies are shown as percentages

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "group": self.group,
            "higher_is_better": self.higher_is_better,
            "unit": "fraction" if self.pct else "value",
            "values": {k: v.to_json() for k, v in self.values.items()},
            "diff_vs_baseline": {k: v.to_json() for k, v in self.diffs.items()},
        }


@dataclass
class EvalReport:
    models: list[str]
    settings: dict
    perplexity: dict[str, dict[str, ExampleLosses | None]] = field(default_factory=dict)
    tasks: GenerationSet | None = None
    ifeval: GenerationSet | None = None
    ifeval_results: dict[str, dict] = field(default_factory=dict)  # ifeval.py's own summary per model
    decontam: DecontamReport | None = None
    notes: list[str] = field(default_factory=list)
    timings_s: dict[str, float] = field(default_factory=dict)

    @property
    def baseline(self) -> str:
        return self.models[0]

    # ---- metrics ---------------------------------------------------------------------------
    def metrics(self) -> list[Metric]:
        rows: list[Metric] = []
        rows += self._perplexity_metrics()
        if self.tasks is not None:
            rows += self._accuracy_metrics(self.tasks)
        if self.ifeval is not None:
            rows += self._ifeval_metrics(self.ifeval)
        return rows

    def _perplexity_metrics(self) -> list[Metric]:
        rows = []
        base = self.baseline
        for kind, title in (("response", "response PPL (held-out instructions)"), ("general", "general-text PPL")):
            if not any(self.perplexity.get(m, {}).get(kind) for m in self.models):
                continue
            values, diffs = {}, {}
            for m in self.models:
                el = self.perplexity.get(m, {}).get(kind)
                values[m] = perplexity_ci(el.loss_sums, el.n_tokens) if el else NAN
                b = self.perplexity.get(base, {}).get(kind)
                if m != base:
                    diffs[m] = _ppl_diff(b, el)
            rows.append(Metric(title, "perplexity", False, values, diffs))
        if any(self.perplexity.get(m, {}).get("response") and self.perplexity[m].get("general") for m in self.models):
            values, diffs = {}, {}
            for m in self.models:
                r, g = self.perplexity.get(m, {}).get("response"), self.perplexity.get(m, {}).get("general")
                values[m] = perplexity_ratio_ci(r.loss_sums, r.n_tokens, g.loss_sums, g.n_tokens) if r and g else NAN
                if m != base:
                    b = values[base]
                    diffs[m] = Estimate(values[m].value - b.value, math.nan, math.nan, values[m].n)
            rows.append(Metric("ratio response PPL / general PPL", "perplexity", False, values, diffs))
        return rows

    def _accuracy_metrics(self, gs: GenerationSet) -> list[Metric]:
        subsets: list[tuple[str, list[int]]] = [("task accuracy: all", list(range(len(gs.ids))))]
        titles = dict(SPLIT_TITLES, **({"held-out": "held-out families of trained clusters"} if gs.clusters else {}))
        for split, title in titles.items():
            idx = [i for i, s in enumerate(gs.splits) if s == split]
            if idx:
                subsets.append((f"task accuracy: {title}", idx))
        if "untrained-cluster" in gs.splits and "held-out-cluster" in gs.splits:
            subsets.append(("task accuracy: every cluster not trained (held-out + not trained)",
                            [i for i, s in enumerate(gs.splits) if s in ("held-out-cluster", "untrained-cluster")]))
        for cluster in sorted(set(gs.clusters)):
            subsets.append((f"task cluster: {cluster}", [i for i, c in enumerate(gs.clusters) if c == cluster]))
        for fam in sorted(set(gs.groups)):
            subsets.append((f"task: {fam}", [i for i, g in enumerate(gs.groups) if g == fam]))
        return [self._accuracy_row(name, "tasks", gs.passed, idx) for name, idx in subsets]

    def _accuracy_row(self, name: str, group: str, passed: dict[str, list[bool]], idx: list[int]) -> Metric:
        values, diffs = {}, {}
        base = self.baseline
        for m in self.models:
            if m not in passed:
                values[m] = NAN
                continue
            x = np.asarray(passed[m], dtype=float)[idx]
            values[m] = mean_ci(x)
            if m != base and base in passed:
                diffs[m] = paired_diff_ci(np.asarray(passed[base], dtype=float)[idx], x)
        return Metric(name, group, True, values, diffs, pct=True)

    def _ifeval_metrics(self, gs: GenerationSet) -> list[Metric]:
        idx = list(range(len(gs.ids)))
        rows = [
            self._accuracy_row("IFEval prompt-level strict", "ifeval", gs.passed, idx),
            self._accuracy_row("IFEval prompt-level loose", "ifeval", gs.passed_loose, idx),
        ]
        base = self.baseline
        for name, counts in (("IFEval instruction-level strict", gs.instructions), ("IFEval instruction-level loose", gs.instructions_loose)):
            if not counts:
                continue
            values, diffs = {}, {}
            for m in self.models:
                if m not in counts:
                    values[m] = NAN
                    continue
                ok, tot = np.asarray(counts[m], dtype=float).T
                values[m] = ratio_of_sums_ci(ok, tot)
                if m != base and base in counts:
                    bok, _ = np.asarray(counts[base], dtype=float).T
                    diffs[m] = ratio_of_sums_diff_ci(bok, ok, tot)
            rows.append(Metric(name, "ifeval", True, values, diffs, pct=True))
        return rows

    def constraint_pass_rates(self) -> dict[str, dict[str, tuple[int, int]]]:
        """IFEval instruction id -> model -> (passed, total), strict."""
        out: dict[str, dict[str, tuple[int, int]]] = {}
        gs = self.ifeval
        if gs is None:
            return out
        for m, per_prompt in gs.instruction_passed.items():
            for ids, oks in zip(gs.instruction_ids, per_prompt):
                for iid, ok in zip(ids, oks):
                    p, t = out.setdefault(iid, {}).get(m, (0, 0))
                    out[iid][m] = (p + int(ok), t + 1)
        return dict(sorted(out.items()))

    # ---- views -----------------------------------------------------------------------------
    def summary_table(self) -> str:
        """Plain text: metric | model... | diff vs baseline [95% CI] per other model."""
        rows = self.metrics()
        others = [m for m in self.models if m != self.baseline]
        header = ["metric", *self.models] + [f"{m} - {self.baseline} [95% CI]" for m in others]
        table = [header]
        for r in rows:
            line = [r.name] + [_fmt_value(r.values[m], r.pct) for m in self.models]
            line += [_fmt_diff(r.diffs.get(m, NAN), r.pct, r.higher_is_better) for m in others]
            table.append(line)
        widths = [max(len(row[i]) for row in table) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
        lines.insert(1, "  ".join("-" * w for w in widths))
        foot = [
            "values: point estimate, 95% percentile-bootstrap CI in brackets (1000 resamples, seed 0); "
            "diffs: paired bootstrap on the same prompts. '*' marks a diff whose CI excludes 0 "
            "(+ better / - worse).",
        ]
        if self.decontam is not None:
            foot.append(self.decontam.summary())
        foot += self.notes
        return "\n".join(lines + [""] + foot)

    def examples(self, n: int = 5) -> list[dict]:
        """Side-by-side generations of n task prompts (else IFEval prompts), picked by outcome of the
        second model vs the baseline (evaluate/picks.py): report.json's items with the prompt as
        text, plus "family", "set" and "why" (picked because)."""
        from sftlab.evaluate.picks import pick_side_by_side, prompt_text

        gs = self.tasks if self.tasks is not None and self.tasks.ids else self.ifeval
        if gs is None:
            return []
        items = _generations_json(gs)["items"]
        other = self.models[1] if len(self.models) > 1 else self.baseline
        return [{**items[i], "prompt": prompt_text(items[i]), "family": items[i]["group"], "set": gs.name, "why": why}
                for i, why in pick_side_by_side(items, self.baseline, other, n=n)]

    def format_examples(self, n: int = 5) -> str:
        from sftlab.evaluate.picks import format_picks

        ex = self.examples(n)
        return format_picks(ex, [(k, e["why"]) for k, e in enumerate(ex)])

    def to_json(self) -> dict:
        ppl = {}
        for m, kinds in self.perplexity.items():
            ppl[m] = {
                k: None if el is None else {
                    "perplexity": round(el.perplexity, 6),
                    "mean_loss": round(el.mean_loss, 6),
                    "examples": len(el.ids),
                    "scored_tokens": int(el.n_tokens.sum()),
                    "truncated_examples": el.truncated,
                    "skipped_examples": el.skipped,
                }
                for k, el in kinds.items()
            }
        return {
            "models": self.models,
            "baseline": self.baseline,
            "settings": self.settings,
            "metrics": [r.to_json() for r in self.metrics()],
            "perplexity": ppl,
            "ifeval": self.ifeval_results,
            "constraint_pass_rates": {k: {m: list(v) for m, v in d.items()} for k, d in self.constraint_pass_rates().items()},
            "decontamination": None if self.decontam is None else self.decontam.to_json(),
            "generations": {gs.name: _generations_json(gs) for gs in (self.tasks, self.ifeval) if gs is not None},
            "notes": self.notes,
            "timings_s": {k: round(v, 2) for k, v in self.timings_s.items()},
        }


def _generations_json(gs: GenerationSet) -> dict:
    return {
        "max_new_tokens": gs.max_new_tokens,
        "items": [
            {
                "id": gs.ids[i],
                "group": gs.groups[i],
                "split": gs.splits[i],
                **({"cluster": gs.clusters[i]} if gs.clusters else {}),
                "prompt": gs.prompts[i],
                "gold": gs.gold[i],
                "answers": {m: a[i] for m, a in gs.answers.items()},
                "passed": {m: bool(p[i]) for m, p in gs.passed.items()},
            }
            for i in range(len(gs.ids))
        ],
    }


def _ppl_diff(base: ExampleLosses | None, other: ExampleLosses | None) -> Estimate:
    if base is None or other is None:
        return NAN
    same_tokens = base.ids == other.ids and np.array_equal(base.n_tokens, other.n_tokens)
    if same_tokens:
        return perplexity_diff_ci(base.loss_sums, other.loss_sums, base.n_tokens)
    # different tokenizers score different tokens: no pairing possible, point difference only
    return Estimate(other.perplexity - base.perplexity, math.nan, math.nan, len(other.ids))


def _fmt_value(e: Estimate, pct: bool) -> str:
    return e.format(1 if pct else 3, pct)


def _fmt_diff(e: Estimate, pct: bool, higher_is_better: bool) -> str:
    if math.isnan(e.value):
        return "n/a"
    sign = "+" if e.value >= 0 else ""
    scale, unit, digits = (100.0, "pp", 1) if pct else (1.0, "", 3)
    text = f"{sign}{e.value * scale:.{digits}f}{unit}"
    if not math.isnan(e.low):
        text += f" [{e.low * scale:+.{digits}f}, {e.high * scale:+.{digits}f}]"
        if e.excludes_zero():
            better = (e.value > 0) == higher_is_better
            text += " *" + ("+" if better else "-")
    return text
