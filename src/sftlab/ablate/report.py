"""Comparing the variants: rows with 95% CIs and paired differences vs the baseline, the report as
markdown and HTML (from one list of blocks), the accuracy plot, and pooling replicate seeds."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from sftlab.errors import SftlabError

# A report is a list of blocks, rendered to markdown and to HTML:
# ("h2", text) | ("p", text) | ("table", header, rows) | ("ul", items)
Block = tuple
TABLE_HEADER = ["variant", "seen-family acc", "held-out-family acc", "all acc", "response loss"]


def split_masks(splits: list[str]) -> dict[str, np.ndarray]:
    """The prompt subsets every ablation table reports: seen families, held-out families, all."""
    sp = np.asarray(splits)
    return {"seen": sp == "seen", "held-out": sp == "held-out", "all": np.ones(len(sp), bool)}


def compare(names: list[str], evals: dict[str, dict], baseline: str) -> tuple[list[dict], Any]:
    """Rows per variant (baseline first): seen / held-out / all accuracy and response loss with 95%
    CIs, and paired differences vs `baseline`. Also returns the merged EvalReport (per-family HTML)."""
    from sftlab.evaluate.bootstrap import mean_ci, paired_diff_ci, ratio_of_sums_ci, ratio_of_sums_diff_ci

    names = [baseline] + [n for n in names if n != baseline]
    ref = evals[baseline]
    for n in names:
        for key in ("tasks", "response_loss"):
            if evals[n][key]["ids"] != ref[key]["ids"]:
                raise SftlabError(f"variant {n!r} was evaluated on other {key} prompts than {baseline!r}; "
                                  "fix: delete its eval.json and rerun so every variant sees the same prompts")
    subsets = split_masks(ref["tasks"]["splits"])
    nt = np.asarray(ref["response_loss"]["n_tokens"], dtype=float)
    base_passed = np.asarray(ref["tasks"]["passed"], dtype=float)
    base_loss = np.asarray(ref["response_loss"]["loss_sums"], dtype=float)
    rows = []
    for n in names:
        passed = np.asarray(evals[n]["tasks"]["passed"], dtype=float)
        loss = np.asarray(evals[n]["response_loss"]["loss_sums"], dtype=float)
        row: dict[str, Any] = {"variant": n, "n_prompts": {k: int(m.sum()) for k, m in subsets.items()},
                               "n_loss_conversations": len(nt)}
        for k, m in subsets.items():
            row[f"{k}_acc"] = mean_ci(passed[m]).to_json()
            if n != baseline:
                row[f"{k}_acc_diff"] = paired_diff_ci(base_passed[m], passed[m]).to_json()
        row["response_loss"] = ratio_of_sums_ci(loss, nt).to_json()
        if n != baseline:
            row["response_loss_diff"] = ratio_of_sums_diff_ci(base_loss, loss, nt).to_json()
        rows.append(row)

    return rows, merged_report(names, evals, ref["tasks"]["splits"])


def merged_report(names: list[str], evals: dict[str, dict], splits: list[str], clusters: list[str] | None = None,
                  settings: dict | None = None):
    """One EvalReport of every variant's saved answers (names[0] is the baseline), for eval_report.html's
    per-family (and per-cluster) rows with paired differences; `splits` labels the prompts for every model."""
    from sftlab.evaluate.perplexity import ExampleLosses
    from sftlab.evaluate.results import EvalReport, GenerationSet

    t = evals[names[0]]["tasks"]
    gs = GenerationSet(name="tasks", ids=t["ids"], prompts=[[{"role": "user", "content": p}] for p in t["prompts"]],
                       gold=t["gold"], groups=t["groups"], splits=splits, max_new_tokens=t["max_new_tokens"],
                       clusters=clusters or [])
    report = EvalReport(models=names, settings={"baseline": names[0], "decoding": "greedy",
                                                 "bootstrap": "percentile, 1000 resamples, seed 0, 95%; diffs paired on the same prompts",
                                                 **(settings or {})})
    for n in names:
        gs.answers[n], gs.passed[n] = evals[n]["tasks"]["answers"], evals[n]["tasks"]["passed"]
        rl = evals[n]["response_loss"]
        report.perplexity[n] = {"response": ExampleLosses(rl["ids"], np.asarray(rl["loss_sums"]), np.asarray(rl["n_tokens"]),
                                                          rl["truncated"], rl["skipped"]), "general": None}
    report.tasks = gs
    return report


def _estimate(value: float | None, low: float | None, high: float | None, *, pct: bool, diff: bool) -> str:
    """'41.2% [30.0, 52.5]', or for a difference '+3.1 pp [-1.0, +7.2]' with ' *' when the CI excludes 0."""
    if value is None:
        return "n/a"
    scale, unit, digits = (100, (" pp" if diff else "%"), 1) if pct else (1, "", 3)
    sign = "+" if diff else ""
    text = f"{value * scale:{sign}.{digits}f}{unit}"
    if low is not None:
        text += f" [{low * scale:{sign}.{digits}f}, {high * scale:{sign}.{digits}f}]"
        if diff and (low > 0 or high < 0):
            text += " *"
    return text


def _cells(e: dict, pct: bool, diff: bool = False) -> str:
    return _estimate(e.get("value"), e.get("ci_low"), e.get("ci_high"), pct=pct, diff=diff)


def results_blocks(rows: list[dict], baseline: str) -> list[Block]:
    """The table of values and the table of paired differences vs the baseline."""
    values = [[r["variant"], _cells(r["seen_acc"], True), _cells(r["held-out_acc"], True), _cells(r["all_acc"], True),
               _cells(r["response_loss"], False)] for r in rows]
    diffs = [[r["variant"], *(_cells(r[f"{k}_acc_diff"], True, True) for k in ("seen", "held-out", "all")),
              _cells(r["response_loss_diff"], False, True)] for r in rows if r["variant"] != baseline]
    return [("table", TABLE_HEADER, values),
            ("p", f"**Paired differences vs `{baseline}`** (variant − {baseline}; '*' = 95% CI excludes 0; "
                  "for response loss lower is better)"),
            ("table", TABLE_HEADER, diffs)]


def composition_block(comps: dict[str, dict]) -> Block:
    kinds = sorted({k for c in comps.values() for k in c["noise"]}, key=lambda k: (k != "clean", k))
    header = ["variant", "rows", "distinct prompts", "clean share of response words", *kinds]
    rows = [[name, c["rows"], c["distinct_prompts"], f"{c['clean_response_word_share']:.0%}",
             *(c["noise"].get(k, 0) for k in kinds)] for name, c in comps.items()]
    return ("table", header, rows)


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b[0] == "h2":
            out.append(f"## {b[1]}")
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "ul":
            out.append("\n".join(f"- {x}" for x in b[1]))
        else:
            header, rows = b[1], b[2]
            out.append("\n".join([f"| {' | '.join(header)} |", "|---" * len(header) + "|",
                                  *(f"| {' | '.join(str(c) for c in r)} |" for r in rows)]))
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[Block]) -> str:
    from sftlab.html_page import table

    def inline(text: str) -> str:  # the markdown's **bold** and `code` marks, dropped
        return html.escape(text.replace("**", "").replace("`", ""))

    out = []
    for b in blocks:
        if b[0] == "h2":
            out.append(f"<h2>{inline(b[1])}</h2>")
        elif b[0] == "p":
            out.append(f"<p>{inline(b[1])}</p>")
        elif b[0] == "ul":
            out.append("<ul>" + "".join(f"<li>{inline(x)}</li>" for x in b[1]) + "</ul>")
        else:
            out.append(table(b[1], b[2]))
    return "\n".join(out)


def accuracy_figure(rows: list[dict]):
    """Held-out and seen task accuracy per variant, 95% CIs as error bars."""
    from sftlab.html_page import pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    names = [r["variant"] for r in rows]
    for ax, key, title in ((axes[0], "held-out_acc", "held-out families"), (axes[1], "seen_acc", "seen families")):
        vals = [r[key]["value"] * 100 for r in rows]
        lo = [(r[key]["value"] - (r[key]["ci_low"] if r[key]["ci_low"] is not None else r[key]["value"])) * 100 for r in rows]
        hi = [((r[key]["ci_high"] if r[key]["ci_high"] is not None else r[key]["value"]) - r[key]["value"]) * 100 for r in rows]
        ax.bar(names, vals, yerr=[lo, hi], capsize=6, color=["#8aa" if i == 0 else "#48c" for i in range(len(names))])
        ax.set_title(f"task accuracy, {title} (95% CI)", fontsize=9)
        ax.set_ylabel("% correct")
        ax.set_ylim(0, max(50, max(v + h for v, h in zip(vals, hi)) + 5))
    fig.tight_layout()
    return fig


def write_reports(out: Path, blocks: list[Block], figure, alt: str, merged_eval) -> str:
    """ablation.md, ablation.png (the matplotlib `figure`), ablation.html and eval_report.html in `out`;
    returns the markdown."""
    from sftlab.evaluate.html_report import write_report_html
    from sftlab.html_page import figure_png, img, write_page

    markdown = to_markdown(blocks)
    (out / "ablation.md").write_text(markdown, encoding="utf-8")
    png = figure_png(figure)
    (out / "ablation.png").write_bytes(base64.b64decode(png))
    write_page(out / "ablation.html", "sftlab ablation", to_html(blocks) + img(png, alt))
    write_report_html(merged_eval, out / "eval_report.html")
    return markdown


def pooled_over_seeds(out_dirs: list[str | Path], baseline: str) -> dict[str, dict[str, Any]]:
    """Paired differences vs `baseline`, pooled over replicate ablations (one folder per seed, the
    same eval prompts in each): per prompt, each variant's pass minus the baseline's, averaged over
    the seeds; 95% percentile bootstrap over prompts (prompts are shared by the seeds, so they are
    the resampling unit). Response loss likewise, per eval conversation. {variant: {key: Estimate}}."""
    from sftlab.evaluate.bootstrap import mean_ci, ratio_of_sums_ci

    evals = [{p.parent.name: json.loads(p.read_text()) for p in sorted(Path(d, "variants").glob("*/eval.json"))} for d in out_dirs]
    names = sorted(set.intersection(*(set(e) for e in evals)) - {baseline})
    if not evals or any(baseline not in e for e in evals) or not names:
        raise SftlabError(f"pooling needs finished evaluations of {baseline!r} and at least one other variant in every folder "
                          f"of {[str(d) for d in out_dirs]}")
    ref = evals[0][baseline]
    for e in evals:
        for key in ("tasks", "response_loss"):
            if any(e[n][key]["ids"] != ref[key]["ids"] for n in [baseline, *names]):
                raise SftlabError(f"the folders were evaluated on different {key} prompts; pool only replicates of one ablation")
    subsets = split_masks(ref["tasks"]["splits"])
    nt = np.asarray(ref["response_loss"]["n_tokens"], dtype=float)
    out: dict[str, dict[str, Any]] = {}
    for n in names:
        acc = np.mean([np.asarray(e[n]["tasks"]["passed"], float) - np.asarray(e[baseline]["tasks"]["passed"], float)
                       for e in evals], axis=0)
        loss = np.mean([np.asarray(e[n]["response_loss"]["loss_sums"], float) - np.asarray(e[baseline]["response_loss"]["loss_sums"], float)
                        for e in evals], axis=0)
        out[n] = {f"{k}_acc_diff": mean_ci(acc[m]) for k, m in subsets.items()} | {"response_loss_diff": ratio_of_sums_ci(loss, nt)}
    return out


def pooled_markdown(pooled: dict[str, dict[str, Any]], out_dirs: list[str | Path], baseline: str) -> str:
    rows = [[n, *(_estimate(r[k].value, r[k].low, r[k].high, pct=True, diff=True)
                  for k in ("seen_acc_diff", "held-out_acc_diff", "all_acc_diff")),
             _estimate(r["response_loss_diff"].value, r["response_loss_diff"].low, r["response_loss_diff"].high,
                       pct=False, diff=True)] for n, r in pooled.items()]
    return to_markdown([
        ("p", f"**Pooled over {len(out_dirs)} seeds** ({', '.join(str(d) for d in out_dirs)}): variant − {baseline}, "
              "per prompt averaged over the seeds, 95% bootstrap CI over prompts; '*' = CI excludes 0"),
        ("table", TABLE_HEADER, rows)]).rstrip("\n")
