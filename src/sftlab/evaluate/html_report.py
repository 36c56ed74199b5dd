"""One self-contained HTML file: tables, plots (base64 PNG, matplotlib Agg), examples, notes.

No external CSS, JS or fonts: the file opens offline and can be attached to an issue.
The same numbers go to report.json via EvalReport.to_json() (the CLI writes both).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from sftlab.evaluate.results import NAN, EvalReport, Metric, _fmt_diff, _fmt_value
from sftlab.html_page import figure_png as _png
from sftlab.html_page import img as _img
from sftlab.html_page import page, pyplot

COLORS = ["#8c8c8c", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"]

CSS = """
.better{color:#137333;font-weight:600} .worse{color:#b3261e;font-weight:600}
pre{white-space:pre-wrap;margin:0;font-size:12px} .ok{color:#137333} .bad{color:#b3261e}
"""


def read_metrics_jsonl(path: str | Path) -> list[dict]:
    """Training log rows ({"step", "loss", "eval_loss"?, ...}); a bad line is an error naming it."""
    from sftlab.errors import DataError, Problem

    rows, problems = [], []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(Problem(f"{path}:{n}", "", f"not JSON ({e.msg})", "each line must be one JSON object"))
            continue
        if not isinstance(rec, dict) or "step" not in rec:
            problems.append(Problem(f"{path}:{n}", "step", "row has no 'step'", "use the metrics.jsonl written by `sftlab train`"))
            continue
        rows.append(rec)
    if problems:
        raise DataError(problems, header=f"cannot read the training log {path}:")
    return rows


def _plot_loss(rows: list[dict]) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    tr = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    ev = [(r["step"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
    if tr:
        ax.plot(*zip(*tr), color=COLORS[1], lw=1.2, label="train loss")
    if ev:
        ax.plot(*zip(*ev), "o-", color=COLORS[2], lw=1.5, ms=4, label="eval loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (mean CE per trained token)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def _bars(metrics: list[Metric], models: list[str], title: str, pct: bool, figsize=(7, 3.2), horizontal=False) -> str:
    """Grouped bars per metric, one colour per model, 95% CI as error bars."""
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [m.name.replace("task: ", "").replace("task cluster: ", "cluster ").replace("task accuracy: ", "") for m in metrics]
    n = len(models)
    width = 0.8 / n
    x = np.arange(len(metrics))
    fig, ax = plt.subplots(figsize=figsize)
    scale = 100.0 if pct else 1.0
    for k, model in enumerate(models):
        vals = [m.values[model].value * scale for m in metrics]
        lo = [max(0.0, (m.values[model].value - m.values[model].low) * scale) if not math.isnan(m.values[model].low) else 0 for m in metrics]
        hi = [max(0.0, (m.values[model].high - m.values[model].value) * scale) if not math.isnan(m.values[model].high) else 0 for m in metrics]
        vals = [0 if math.isnan(v) else v for v in vals]
        pos = x + (k - (n - 1) / 2) * width
        if horizontal:
            ax.barh(pos, vals, height=width, xerr=[lo, hi], color=COLORS[k % len(COLORS)], label=model, capsize=2, error_kw={"lw": 0.8})
        else:
            ax.bar(pos, vals, width=width, yerr=[lo, hi], color=COLORS[k % len(COLORS)], label=model, capsize=2, error_kw={"lw": 0.8})
    if horizontal:
        ax.set_yticks(x, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("%" if pct else "")
        ax.grid(axis="x", alpha=0.3)
        if pct:
            ax.set_xlim(0, 105)
    else:
        ax.set_xticks(x, labels, rotation=20 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center", fontsize=9)
        ax.set_ylabel("%" if pct else "")
        ax.grid(axis="y", alpha=0.3)
        if pct:
            ax.set_ylim(0, 105)
    ax.set_title(title, fontsize=11)
    ax.legend(fontsize=8)
    return _png(fig)


def _metric_table(metrics: list[Metric], models: list[str], baseline: str) -> str:
    others = [m for m in models if m != baseline]
    head = "".join(f"<th>{html.escape(m)}</th>" for m in models) + "".join(
        f"<th>{html.escape(m)} &minus; {html.escape(baseline)} [95% CI]</th>" for m in others
    )
    rows = []
    for r in metrics:
        cells = "".join(f'<td class="num">{html.escape(_fmt_value(r.values[m], r.pct))}</td>' for m in models)
        for m in others:
            text = _fmt_diff(r.diffs.get(m, NAN), r.pct, r.higher_is_better)
            cls = "better" if text.endswith("*+") else "worse" if text.endswith("*-") else ""
            cells += f'<td class="num {cls}">{html.escape(text)}</td>'
        arrow = "&uarr;" if r.higher_is_better else "&darr;"
        rows.append(f"<tr><td>{html.escape(r.name)} {arrow}</td>{cells}</tr>")
    return f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>"


def _constraint_plot(report: EvalReport) -> str | None:
    rates = report.constraint_pass_rates()
    if not rates:
        return None
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(rates)
    models = report.models
    fig, ax = plt.subplots(figsize=(7.5, max(3.0, 0.22 * len(names) * max(1, len(models) / 2) + 1)))
    y = np.arange(len(names))
    h = 0.8 / len(models)
    for k, m in enumerate(models):
        vals = [100 * rates[n][m][0] / rates[n][m][1] if m in rates[n] and rates[n][m][1] else 0 for n in names]
        ax.barh(y + (k - (len(models) - 1) / 2) * h, vals, height=h, color=COLORS[k % len(COLORS)], label=m)
    ax.set_yticks(y, [f"{n} (n={max(v[1] for v in rates[n].values())})" for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel("strict pass rate, %")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("IFEval: pass rate per instruction type", fontsize=11)
    return _png(fig)


def render_html(report: EvalReport, metrics_jsonl: str | Path | None = None) -> str:
    pyplot()  # the Agg backend: no display, PNGs only
    metrics = report.metrics()
    models, base = report.models, report.baseline
    parts = [f"<h1>sftlab eval: {html.escape(' vs '.join(models))}</h1>",
             f"<p class='note'>Baseline: <b>{html.escape(base)}</b>. Every value has a 95% percentile-bootstrap interval "
             "(1000 resamples over prompts, seed 0); differences are paired on the same prompts. "
             "<span class='better'>green</span>/<span class='worse'>red</span>: the interval of the difference excludes 0.</p>"]
    headline = [m for m in metrics if not m.name.startswith(("task: ", "task cluster: "))]  # per-family/cluster rows: tasks section
    parts.append("<h2>Summary</h2>" + _metric_table(headline, models, base))
    if metrics_jsonl:
        rows = read_metrics_jsonl(metrics_jsonl)
        parts.append(f"<h2>Training loss</h2><p class='note'>{html.escape(str(metrics_jsonl))}: {len(rows)} logged steps</p>")
        if rows:
            parts.append(_img(_plot_loss(rows), "training loss curve"))
    ppl = [m for m in metrics if m.group == "perplexity" and not m.name.startswith("ratio")]
    if ppl:
        parts.append("<h2>Perplexity (lower is better)</h2><p class='note'>Response PPL: only response tokens of held-out "
                     "instruction data are scored. General-text PPL: plain documents; a rise after tuning means forgetting.</p>")
        parts.append(_img(_bars(ppl, models, "perplexity", pct=False), "perplexities"))
    task_rows = [m for m in metrics if m.group == "tasks"]
    if task_rows:
        overall = [m for m in task_rows if m.name.startswith("task accuracy")]
        fam = [m for m in task_rows if m.name.startswith("task: ")]
        clusters = [m for m in task_rows if m.name.startswith("task cluster: ")]
        parts.append("<h2>Built-in tasks</h2><p class='note'>Greedy answers, max_new_tokens="
                     f"{report.settings.get('task_max_new_tokens')}; seen = families in the training mix, "
                     "held-out = families never trained on.</p>")
        parts.append(_img(_bars(overall, models, "task accuracy", pct=True), "task accuracy seen vs held-out"))
        if clusters:
            parts.append(_metric_table(clusters, models, base))
        if fam:
            parts.append(_metric_table(fam, models, base))
            parts.append(_img(_bars(fam, models, "accuracy per task family", pct=True, figsize=(7.5, 0.32 * len(fam) * max(1, len(models) / 2) + 1.2), horizontal=True), "per-family accuracy"))
    if_rows = [m for m in metrics if m.group == "ifeval"]
    if if_rows:
        parts.append(f"<h2>Instruction following (IFEval)</h2><p class='note'>{len(report.ifeval.ids) if report.ifeval else 0} prompts, "
                     f"max_new_tokens={report.settings.get('ifeval_max_new_tokens')}.</p>")
        parts.append(_img(_bars(if_rows, models, "IFEval accuracy", pct=True), "ifeval accuracy"))
        c = _constraint_plot(report)
        if c:
            parts.append(_img(c, "constraint pass rates"))
    ex = report.examples(8)
    if ex:
        head = "".join(f"<th>{html.escape(m)}</th>" for m in models)
        rows = []
        for e in ex:
            cells = "".join(
                f"<td><pre class='{'ok' if e['passed'].get(m) else 'bad'}'>{html.escape(e['answers'].get(m, ''))}</pre></td>" for m in models
            )
            rows.append(f"<tr><td>{html.escape(e['why'])}</td><td>{html.escape(e['family'] or e['set'])}</td>"
                        f"<td><pre>{html.escape(e['prompt'])}</pre></td><td><pre>{html.escape(e['gold'])}</pre></td>{cells}</tr>")
        parts.append("<h2>Examples</h2><p class='note'>Picked by outcome (the same picks as the terminal).</p>"
                     "<table><tr><th>picked</th><th>family</th><th>prompt</th><th>gold</th>" + head + "</tr>" + "".join(rows) + "</table>")
    if report.decontam is not None:
        d = report.decontam
        parts.append(f"<h2>Decontamination</h2><p>{html.escape(d.summary())}</p>")
        if d.contaminated:
            rows = "".join(
                f"<tr><td>{html.escape(c.where)}</td><td>{html.escape(c.id)}</td><td>{html.escape(c.ngram)}</td><td><pre>{html.escape(c.prompt)}</pre></td></tr>"
                for c in d.contaminated
            )
            parts.append(f"<table><tr><th>set</th><th>id</th><th>matching n-gram</th><th>prompt</th></tr>{rows}</table>")
    settings = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v))}</td></tr>" for k, v in report.settings.items())
    parts.append(f"<h2>Settings</h2><table>{settings}</table>")
    if report.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul>")
    return page(f"sftlab eval: {' vs '.join(models)}", "\n".join(parts), CSS)


def write_report_html(report: EvalReport, path: str | Path, metrics_jsonl: str | Path | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(report, metrics_jsonl), encoding="utf-8")
    return path
