"""Data ablations: train the SAME small probe on several data variants and compare them with CIs.

    result = run_ablation("ablation-curated-vs-random.yaml")
    print(result.markdown)

Every variant is the same size (the `size_from` variant's size sets the random subsets' size;
a data or curate variant of another size is an error), is trained with the same recipe (model,
steps, seed, LoRA, lr, tokens per step), and is evaluated on the SAME prompts: the built-in
suite's held-out families plus held-out examples of the seen families (task accuracy), and the
suite's eval split (response loss). Differences vs the baseline variant are PAIRED bootstrap
intervals over those prompts/conversations.

Layout of the output folder (resumable per variant: a variant with final/ and eval.json is reused):

    pool.jsonl                       the pool (noisy_pool config, or a copy of pool_path)
    variants/<name>/data.jsonl       the variant's training data (+ curate stats for curate variants)
    variants/<name>/run/             training run (final/ = the trained adapter)
    variants/<name>/eval.json        per-prompt verdicts and per-conversation losses
    ablation.json / ablation.md / ablation.html / ablation.png / eval_report.html
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sftlab.builtin.noisy_pool import NoisyPoolConfig, build_noisy_pool, noise_counts
from sftlab.conversation import Conversation
from sftlab.errors import ConfigError, SftlabError


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VariantConfig(Strict):
    """One data variant: exactly one of data / curate / random_subset."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="folder-safe name")
    data: str | None = Field(None, description="a data file/folder used as is")
    curate: str | None = Field(None, description="a curate pipeline YAML applied to the pool (its inputs/output are replaced)")
    random_subset: bool = Field(False, description="a random subset of the pool, of the common size")
    seed: int = Field(0, description="random_subset: which rows")

    @model_validator(mode="after")
    def _one_kind(self) -> VariantConfig:
        kinds = [k for k in ("data", "curate", "random_subset") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(f"variant {self.name!r} sets {kinds or 'none'} of data / curate / random_subset; set exactly one")
        return self

    @property
    def kind(self) -> str:
        return "data" if self.data else "curate" if self.curate else "random_subset"


class AblationEval(Strict):
    max_task_examples_per_family: int = Field(8, ge=1, description="task prompts per family (24 families)")
    response_loss_every: int = Field(4, ge=1, description="response loss on every k-th eval-split conversation")
    batch_size: int = Field(16, ge=1)
    task_max_new_tokens: int = Field(16, ge=1, description="task answers are a word or a short list")


class AblationConfig(Strict):
    train: str = Field("quickstart", description="run config YAML (relative to this file) or 'quickstart'; "
                                                 "its data.train / data.eval / output_dir are replaced per variant")
    overrides: list[str] = Field(default_factory=list, description="dotted overrides of the run config, e.g. train.max_steps=25")
    output_dir: str = Field("runs/ablation", description="relative to the current directory")
    pool: NoisyPoolConfig | None = Field(None, description="build the built-in noisy pool")
    pool_path: str | None = Field(None, description="or: a data file as the pool")
    variants: list[VariantConfig] = Field(..., min_length=2)
    size_from: str = Field(..., description="the variant whose size every variant has")
    baseline: str = Field(..., description="differences are reported vs this variant")
    eval: AblationEval = AblationEval()

    @model_validator(mode="after")
    def _check(self) -> AblationConfig:
        names = [v.name for v in self.variants]
        problems = []
        if len(set(names)) != len(names):
            problems.append(f"variant names repeat: {names}")
        for key in ("size_from", "baseline"):
            if getattr(self, key) not in names:
                problems.append(f"{key} {getattr(self, key)!r} is not a variant name ({names})")
        if self.size_from in names and next(v for v in self.variants if v.name == self.size_from).random_subset:
            problems.append(f"size_from {self.size_from!r} is a random subset: it must be a data or curate variant")
        needs_pool = any(v.kind != "data" for v in self.variants)
        if needs_pool and (self.pool is None) == (self.pool_path is None):
            problems.append("set exactly one of pool (the built-in noisy pool) and pool_path (curate/random variants need a pool)")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# ---------------------------------------------------------------------------------------- config

def config_path(name_or_path: str | Path) -> Path:
    """A path, or the name of a config shipped in sftlab/configs (with or without .yaml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    folder = resources.files("sftlab.configs")
    shipped = Path(str(folder.joinpath(p.name if p.suffix == ".yaml" else p.name + ".yaml")))
    if shipped.is_file():
        return shipped
    names = sorted(x.name.removesuffix(".yaml") for x in folder.iterdir() if x.name.startswith("ablation-"))
    raise ConfigError(f"{name_or_path}: no such config file (nor a shipped config of that name)\n"
                      f"    fix: give a path, or one of {names}")


def load_ablation_config(path: str | Path) -> tuple[AblationConfig, Path]:
    path = config_path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML: {getattr(e, 'problem', e)}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping (train, variants, size_from, baseline, ...)")
    try:
        return AblationConfig.model_validate(raw), path.parent
    except ValidationError as e:
        lines = [f"{path}: {e.error_count()} problem(s):"]
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
            lines.append(f"  - {loc}: {err['msg']}; got {err.get('input')!r}")
        raise ConfigError("\n".join(lines)) from e


def _resolve(base: Path, p: str) -> str:
    return p if Path(p).is_absolute() or p.startswith(("hf:", "builtin:")) else str(base / p)


def run_config(cfg: AblationConfig, base: Path, data_file: Path, out: Path):
    """The probe's RunConfig for one variant: same recipe, this variant's data, no eval-loss data."""
    from sftlab.config import load_config

    if cfg.train == "quickstart":
        from sftlab.commands.quickstart_cmd import quickstart_config_path

        train_path = quickstart_config_path()
    else:
        train_path = Path(_resolve(base, cfg.train))
    if not train_path.is_file():
        raise ConfigError(f"train: {train_path}: no such run config\n    fix: a run config YAML relative to the ablation config, or 'quickstart'")
    raw = yaml.safe_load(train_path.read_text(encoding="utf-8")) or {}
    raw.setdefault("data", {})
    # the evaluation below replaces the run's own eval loss (its eval data would cost time per variant)
    raw["data"].update(train=[{"path": str(data_file)}], eval=[], eval_fraction=0.0)
    raw.setdefault("train", {})["output_dir"] = str(out)
    return load_config(raw, cfg.overrides)


# ------------------------------------------------------------------------------------------ data

@dataclass
class VariantData:
    name: str
    kind: str
    path: Path
    conversations: list[Conversation]
    note: str
    curate_stats: list[dict] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for c in self.conversations:
            h.update(json.dumps(c.to_dicts(), ensure_ascii=False).encode())
        return h.hexdigest()[:16]


def build_pool(cfg: AblationConfig, base: Path, out: Path) -> tuple[list[Conversation], Path, str]:
    from sftlab.data import load_conversations, save_conversations

    path = out / "pool.jsonl"
    if cfg.pool is not None:
        pool = build_noisy_pool(cfg.pool)
        note = f"built-in noisy pool: {len(pool)} rows, seed {cfg.pool.seed}"
    else:
        pool = load_conversations(_resolve(base, cfg.pool_path), on_error="raise").conversations
        note = f"{cfg.pool_path}: {len(pool)} rows"
    save_conversations(pool, path)
    return pool, path, note


def build_variants(cfg: AblationConfig, base: Path, out: Path) -> tuple[list[VariantData], int, str]:
    """Every variant's training data, all of one size (the size_from variant's)."""
    from sftlab.curate.config import CurateInput, load_curate_config
    from sftlab.curate.pipeline import run_pipeline
    from sftlab.curate.select import random_subset
    from sftlab.data import load_conversations, save_conversations

    pool, pool_path, pool_note = (build_pool(cfg, base, out) if any(v.kind != "data" for v in cfg.variants)
                                  else ([], None, "no pool"))
    order = sorted(cfg.variants, key=lambda v: v.name != cfg.size_from)  # size_from first
    built: dict[str, VariantData] = {}
    size = None
    for v in order:
        vdir = out / "variants" / v.name
        vdir.mkdir(parents=True, exist_ok=True)
        data_path = vdir / "data.jsonl"
        stats: list[dict] = []
        if v.kind == "data":
            convs = load_conversations(_resolve(base, v.data), on_error="raise").conversations
            save_conversations(convs, data_path)
            note = f"data file {v.data}"
        elif v.kind == "curate":
            ccfg = load_curate_config(_resolve(base, v.curate))
            ccfg = ccfg.model_copy(update={"inputs": [CurateInput(path=str(pool_path), name="pool")],
                                           "output": str(data_path), "stats": str(vdir / "curate.stats.json")})
            res = run_pipeline(ccfg)
            stats = [b.to_json() for b in res.blocks]
            for s in stats:  # the dropped samples and dedup pairs stay in curate.stats.json
                del s["samples"], s["pairs"]
            convs = load_conversations(str(data_path), on_error="raise").conversations
            steps = ", ".join(f"{s['name']} -{s['dropped']}" for s in stats)
            note = f"curate {v.curate} on the pool ({steps})"
        else:
            assert size is not None  # size_from is never a random subset (validated)
            convs = random_subset(pool, size, seed=v.seed)
            save_conversations(convs, data_path)
            note = f"random subset of the pool, seed {v.seed}"
        if size is None:
            size = len(convs)
        if len(convs) != size:
            raise SftlabError(
                f"variant {v.name!r} has {len(convs)} examples but {cfg.size_from!r} has {size}: an ablation compares "
                f"variants of the same size\n    fix: make {v.name!r} {size} rows (e.g. a select block with budget: {size} "
                f"in its curate pipeline), or make it a random_subset")
        built[v.name] = VariantData(v.name, v.kind, data_path, convs, note, stats)
    assert size is not None
    return [built[v.name] for v in cfg.variants], size, pool_note


# ---------------------------------------------------------------------------------- train + eval

def eval_conversations(every: int) -> list[Conversation]:
    from sftlab.builtin.tasks import train_eval_split

    return train_eval_split(seed=0)[1][::every]


def train_variant(cfg: AblationConfig, base: Path, vd: VariantData, vdir: Path, log=print) -> tuple[Path, bool]:
    """Train the probe on the variant's data; (final model folder, True if a finished run was reused)."""
    from sftlab.checkpoint import list_checkpoints
    from sftlab.train import train

    run_dir = vdir / "run"
    final = run_dir / "final"
    rc = run_config(cfg, base, vd.path, run_dir)
    if (final / "config.json").exists() or (final / "adapter_config.json").exists():
        meta = json.loads((run_dir / "ablation_variant.json").read_text()) if (run_dir / "ablation_variant.json").exists() else {}
        now = {"data_fingerprint": vd.fingerprint, "config_fingerprint": rc.fingerprint()}
        changed = [k for k, v in now.items() if meta.get(k) != v]
        if changed:
            raise SftlabError(f"[{vd.name}] {final} was trained with another {' and '.join(k.split('_')[0] for k in changed)} "
                              f"({ {k: meta.get(k) for k in changed} } != { {k: now[k] for k in changed} })"
                              f"\n    fix: delete {run_dir} (or use another --out) to retrain")
        log(f"[{vd.name}] reusing trained model {final}")
        return final, True
    resume = bool(list_checkpoints(run_dir)) if run_dir.exists() else False
    log(f"[{vd.name}] training {rc.train.max_steps} steps on {len(vd.conversations)} examples" + (" (resuming)" if resume else ""))
    res = train(rc, resume=resume, overwrite=run_dir.exists() and not resume)
    if res.stopped_early:
        raise SftlabError(f"[{vd.name}] training stopped early: {res.stopped_early}; rerun `sftlab ablate` to resume")
    (run_dir / "ablation_variant.json").write_text(json.dumps({"data_fingerprint": vd.fingerprint, "config_fingerprint": rc.fingerprint(),
                                                              "examples": len(vd.conversations)}))
    return res.final_dir, False


def eval_variant(cfg: AblationConfig, base: Path, vd: VariantData, final: Path, vdir: Path, retrained: bool,
                 log=print) -> tuple[dict, bool]:
    """Per-prompt verdicts and per-conversation response losses, written to vdir/eval.json;
    (results, True if a saved evaluation of this same model and data was reused)."""
    from sftlab.curate.pipeline import write_json_atomic
    from sftlab.evaluate.runner import evaluate_models
    from sftlab.model import load_model, load_tokenizer
    from sftlab.templates import apply_template

    path = vdir / "eval.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if not retrained and saved.get("data_fingerprint") == vd.fingerprint and saved.get("eval_settings") == cfg.eval.model_dump():
            log(f"[{vd.name}] reusing evaluation {path}")
            return saved, True
        log(f"[{vd.name}] {path} is from other data or eval settings: evaluating again")
    rc = run_config(cfg, base, vd.path, vdir / "run")
    tok = load_tokenizer(rc.model.name, trust_remote_code=rc.model.trust_remote_code)
    apply_template(tok, rc.model.template, add_missing_tokens=rc.model.add_special_tokens)
    model = load_model(str(final), dtype=rc.model.dtype)
    t0 = time.time()
    e = cfg.eval
    report = evaluate_models({vd.name: (model, tok)}, eval_conversations=eval_conversations(e.response_loss_every),
                             general_text=[], task_eval=True, ifeval=False,
                             max_task_examples_per_family=e.max_task_examples_per_family, batch_size=e.batch_size,
                             task_max_new_tokens=e.task_max_new_tokens, progress=True)
    gs, el = report.tasks, report.perplexity[vd.name]["response"]
    saved = {
        "variant": vd.name, "data_fingerprint": vd.fingerprint, "eval_settings": e.model_dump(),
        "seconds": round(time.time() - t0, 1), "notes": report.notes,
        "tasks": {"ids": gs.ids, "groups": gs.groups, "splits": gs.splits, "gold": gs.gold,
                  "prompts": [p[-1]["content"] for p in gs.prompts],
                  "answers": gs.answers[vd.name], "passed": gs.passed[vd.name], "max_new_tokens": gs.max_new_tokens},
        "response_loss": {"ids": el.ids, "loss_sums": el.loss_sums.tolist(), "n_tokens": el.n_tokens.tolist(),
                          "truncated": el.truncated, "skipped": el.skipped},
    }
    write_json_atomic(saved, path)
    return saved, False



# ---------------------------------------------------------------------------------------- results

@dataclass
class AblationResult:
    out: Path
    table: list[dict[str, Any]]
    json: dict[str, Any]
    markdown: str
    reused: list[str]


def _est(e) -> dict:
    return e.to_json()


def split_masks(splits: list[str]) -> dict[str, np.ndarray]:
    """The prompt subsets every ablation table reports: seen families, held-out families, all."""
    sp = np.asarray(splits)
    return {"seen": sp == "seen", "held-out": sp == "held-out", "all": np.ones(len(sp), bool)}


def compare(variants: list[VariantData], evals: dict[str, dict], baseline: str) -> tuple[list[dict], Any]:
    """Rows per variant: seen / held-out / all accuracy and response loss with 95% CIs, and paired
    differences vs `baseline`. Also returns the merged EvalReport (for the per-family HTML)."""
    from sftlab.evaluate.bootstrap import mean_ci, paired_diff_ci, ratio_of_sums_ci, ratio_of_sums_diff_ci
    from sftlab.evaluate.perplexity import ExampleLosses
    from sftlab.evaluate.results import EvalReport, GenerationSet

    names = [baseline] + [v.name for v in variants if v.name != baseline]
    ref = evals[baseline]
    for n in names:
        for key in ("tasks", "response_loss"):
            if evals[n][key]["ids"] != ref[key]["ids"]:
                raise SftlabError(f"variant {n!r} was evaluated on other {key} prompts than {baseline!r}; "
                                  "fix: delete its eval.json and rerun so every variant sees the same prompts")
    subsets = split_masks(ref["tasks"]["splits"])
    nt = np.asarray(ref["response_loss"]["n_tokens"], dtype=float)
    rows = []
    for n in names:
        passed = np.asarray(evals[n]["tasks"]["passed"], dtype=float)
        base_passed = np.asarray(ref["tasks"]["passed"], dtype=float)
        loss = np.asarray(evals[n]["response_loss"]["loss_sums"], dtype=float)
        base_loss = np.asarray(ref["response_loss"]["loss_sums"], dtype=float)
        row: dict[str, Any] = {"variant": n, "n_prompts": {k: int(m.sum()) for k, m in subsets.items()},
                               "n_loss_conversations": len(nt)}
        for k, m in subsets.items():
            row[f"{k}_acc"] = _est(mean_ci(passed[m]))
            if n != baseline:
                row[f"{k}_acc_diff"] = _est(paired_diff_ci(base_passed[m], passed[m]))
        row["response_loss"] = _est(ratio_of_sums_ci(loss, nt))
        if n != baseline:
            row["response_loss_diff"] = _est(ratio_of_sums_diff_ci(base_loss, loss, nt))
        rows.append(row)

    gs = GenerationSet(name="tasks", ids=ref["tasks"]["ids"], prompts=[[{"role": "user", "content": p}] for p in ref["tasks"]["prompts"]],
                       gold=ref["tasks"]["gold"], groups=ref["tasks"]["groups"], splits=ref["tasks"]["splits"],
                       max_new_tokens=ref["tasks"]["max_new_tokens"])
    report = EvalReport(models=names, settings={"baseline": baseline, "decoding": "greedy",
                                                 "bootstrap": "percentile, 1000 resamples, seed 0, 95%; diffs paired on the same prompts"})
    for n in names:
        gs.answers[n], gs.passed[n] = evals[n]["tasks"]["answers"], evals[n]["tasks"]["passed"]
        rl = evals[n]["response_loss"]
        report.perplexity[n] = {"response": ExampleLosses(rl["ids"], np.asarray(rl["loss_sums"]), np.asarray(rl["n_tokens"]),
                                                          rl["truncated"], rl["skipped"]), "general": None}
    report.tasks = gs
    return rows, report


def composition(vd: VariantData) -> dict[str, Any]:
    from sftlab.curate.blocks import normalise

    prompts = [normalise(c.messages[0].content) for c in vd.conversations if c.messages]
    # Response words by kind: the loss is a mean over trained (response) tokens, so a few long junk
    # answers (a 30x repeated answer) weigh more in training than many one-word clean ones.
    words: dict[str, int] = {}
    for c in vd.conversations:
        k = str(c.meta.get("noise", "unknown"))
        words[k] = words.get(k, 0) + sum(len(m.content.split()) for m in c.messages if m.role == "assistant")
    total = max(1, sum(words.values()))
    return {"rows": len(vd.conversations), "noise": noise_counts(vd.conversations),
            "distinct_prompts": len(set(prompts)), "response_words": total,
            "clean_response_word_share": round(words.get("clean", 0) / total, 4),
            "response_word_share": {k: round(v / total, 4) for k, v in sorted(words.items())}}


def _pct(e: dict, diff: bool = False) -> str:
    if e.get("value") is None:
        return "n/a"
    v = e["value"] * 100
    lo, hi = e.get("ci_low"), e.get("ci_high")
    text = f"{v:+.1f} pp" if diff else f"{v:.1f}%"
    if lo is not None:
        text += f" [{lo * 100:+.1f}, {hi * 100:+.1f}]" if diff else f" [{lo * 100:.1f}, {hi * 100:.1f}]"
        if diff and (lo > 0 or hi < 0):
            text += " *"
    return text


def _num(e: dict, diff: bool = False) -> str:
    if e.get("value") is None:
        return "n/a"
    text = f"{e['value']:+.3f}" if diff else f"{e['value']:.3f}"
    if e.get("ci_low") is not None:
        text += f" [{e['ci_low']:+.3f}, {e['ci_high']:+.3f}]" if diff else f" [{e['ci_low']:.3f}, {e['ci_high']:.3f}]"
        if diff and (e["ci_low"] > 0 or e["ci_high"] < 0):
            text += " *"
    return text


def markdown_table(rows: list[dict], baseline: str) -> str:
    head = ("| variant | seen-family acc | held-out-family acc | all acc | response loss |\n"
            "|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r['variant']} | {_pct(r['seen_acc'])} | {_pct(r['held-out_acc'])} | {_pct(r['all_acc'])} "
                     f"| {_num(r['response_loss'])} |")
    diff_lines = [f"\n**Paired differences vs `{baseline}`** (variant − {baseline}; '*' = 95% CI excludes 0; "
                  "for response loss lower is better)\n",
                  "| variant | seen-family acc | held-out-family acc | all acc | response loss |", "|---|---|---|---|---|"]
    for r in rows:
        if r["variant"] == baseline:
            continue
        diff_lines.append(f"| {r['variant']} | {_pct(r['seen_acc_diff'], True)} | {_pct(r['held-out_acc_diff'], True)} "
                          f"| {_pct(r['all_acc_diff'], True)} | {_num(r['response_loss_diff'], True)} |")
    return "\n".join(lines + diff_lines)


def composition_table(comps: dict[str, dict]) -> str:
    kinds = sorted({k for c in comps.values() for k in c["noise"]}, key=lambda k: (k != "clean", k))
    lines = ["| variant | rows | distinct prompts | clean share of response words | " + " | ".join(kinds) + " |",
             "|---" * (4 + len(kinds)) + "|"]
    for name, c in comps.items():
        lines.append(f"| {name} | {c['rows']} | {c['distinct_prompts']} | {c['clean_response_word_share']:.0%} | "
                     + " | ".join(str(c["noise"].get(k, 0)) for k in kinds) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    names = [r["variant"] for r in rows]
    for ax, key, title in ((axes[0], "held-out_acc", "held-out families"), (axes[1], "seen_acc", "seen families")):
        vals = [r[key]["value"] * 100 for r in rows]
        lo = [(r[key]["value"] - (r[key]["ci_low"] if r[key]["ci_low"] is not None else r[key]["value"])) * 100 for r in rows]
        hi = [((r[key]["ci_high"] if r[key]["ci_high"] is not None else r[key]["value"]) - r[key]["value"]) * 100 for r in rows]
        ax.bar(names, vals, yerr=[lo, hi], capsize=6, color=["#8aa" if i == 0 else "#48c" for i in range(len(names))])
        ax.set_title(f"task accuracy, {title} (95% CI)", fontsize=9)
        ax.set_ylabel("% correct")
        ax.set_ylim(0, max(100 / 2, max(v + h for v, h in zip(vals, hi)) + 5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_html(path: Path, title: str, markdown: str, png: Path) -> None:
    import base64
    import html

    img = base64.b64encode(png.read_bytes()).decode()
    body = []
    in_table = False
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{c}</th>" for c in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            body.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    if in_table:
        body.append("</table>")
    body.append(f'<img alt="held-out and seen accuracy per variant with 95% CIs" src="data:image/png;base64,{img}">')
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%}")
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"<style>{style}</style></head><body>{''.join(body)}</body></html>", encoding="utf-8")


# ---------------------------------------------------------------------------------------- driver

def with_seed(cfg: AblationConfig, seed: int) -> AblationConfig:
    """The same ablation replicated with another seed: the probe's train.seed (init, data order)
    and every random_subset variant's draw; pool and curate pipelines are unchanged."""
    return cfg.model_copy(update={
        "overrides": [*cfg.overrides, f"train.seed={seed}"],
        "variants": [v.model_copy(update={"seed": seed}) if v.random_subset else v for v in cfg.variants]})


def run_ablation(config: str | Path, out: str | Path | None = None, *, steps: int | None = None,
                 eval_per_family: int | None = None, loss_every: int | None = None, seed: int | None = None,
                 log=print) -> AblationResult:
    """Build every variant's data, train + evaluate each (reusing finished ones), write the report.
    steps / eval_per_family / loss_every override the config (a smaller budget on a busy machine);
    seed replicates it with another training seed and random draw (use another --out)."""
    from sftlab.curate.pipeline import write_json_atomic
    from sftlab.evaluate.html_report import write_report_html

    cfg, base = load_ablation_config(config)
    if seed is not None:
        cfg = with_seed(cfg, seed)
    if steps is not None:
        cfg = cfg.model_copy(update={"overrides": [*cfg.overrides, f"train.max_steps={steps}"]})
    ev = {k: v for k, v in (("max_task_examples_per_family", eval_per_family), ("response_loss_every", loss_every)) if v}
    if ev:
        cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update=ev)})
    out = Path(out or cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    variants, size, pool_note = build_variants(cfg, base, out)
    log(f"{len(variants)} variants of {size} examples each ({pool_note})")
    evals, reused, seconds = {}, [], {}
    for vd in variants:
        vdir = out / "variants" / vd.name
        t1 = time.time()
        final, trained_before = train_variant(cfg, base, vd, vdir, log)
        evals[vd.name], evaluated_before = eval_variant(cfg, base, vd, final, vdir, not trained_before, log)
        if trained_before and evaluated_before:
            reused.append(vd.name)
        seconds[vd.name] = round(time.time() - t1, 1)

    rows, merged = compare(variants, evals, cfg.baseline)
    comps = {vd.name: composition(vd) for vd in variants}
    rc = run_config(cfg, base, variants[0].path, out / "variants" / variants[0].name / "run")
    recipe = (f"{rc.model.name}, " + (f"LoRA r={rc.lora.r} alpha={rc.lora.alpha}" if rc.lora.enabled else "full fine-tuning")
              + f", lr {rc.train.lr}, {rc.train.max_steps} steps x {rc.train.tokens_per_batch} tokens x "
              f"{rc.train.grad_accum} accum, seed {rc.train.seed}")
    n = rows[0]["n_prompts"]
    md = [f"## Ablation: {', '.join(v.name for v in variants)} (baseline `{cfg.baseline}`)", "",
          f"All variants have the same size: **{size} examples** (set by `{cfg.size_from}`; random subsets drawn to that size).",
          f"Same probe for every variant: {recipe}.",
          f"Same eval prompts for every variant: {n['held-out']} held-out-family prompts, {n['seen']} held-out examples of "
          f"seen families ({cfg.eval.max_task_examples_per_family} per family, greedy, max {cfg.eval.task_max_new_tokens} new "
          f"tokens); response loss on {rows[0]['n_loss_conversations']} eval-split conversations (mean per response token).",
          "Values: 95% percentile-bootstrap CIs (1000 resamples); differences: paired bootstrap on the same prompts.", "",
          markdown_table(rows, cfg.baseline), "", "**What each variant trained on** (pool rows by planted noise kind):", "",
          composition_table(comps), "", f"Pool: {pool_note}. A kept row labelled *_duplicate is the first copy in pool "
          "order (its clean twin was the one removed); 'distinct prompts' counts prompts after normalisation.", ""]
    for vd in variants:
        md.append(f"- `{vd.name}`: {vd.note}")
    markdown = "\n".join(md) + "\n"
    result_json = {"size": size, "size_from": cfg.size_from, "baseline": cfg.baseline, "recipe": recipe,
                   "pool": pool_note, "rows": rows, "composition": comps,
                   "variants": {vd.name: {"kind": vd.kind, "note": vd.note, "data": str(vd.path), "fingerprint": vd.fingerprint,
                                          "curate_blocks": vd.curate_stats, "seconds_this_invocation": seconds[vd.name]} for vd in variants},
                   "eval": cfg.eval.model_dump(), "reused": reused, "seconds_this_invocation": round(time.time() - t0, 1)}
    write_json_atomic(result_json, out / "ablation.json")
    (out / "ablation.md").write_text(markdown, encoding="utf-8")
    png = plot(rows, out / "ablation.png")
    write_html(out / "ablation.html", "sftlab ablation", markdown, png)
    write_report_html(merged, out / "eval_report.html")
    return AblationResult(out, rows, result_json, markdown, reused)


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
    lines = [f"**Pooled over {len(out_dirs)} seeds** ({', '.join(str(d) for d in out_dirs)}): variant − {baseline}, "
             "per prompt averaged over the seeds, 95% bootstrap CI over prompts; '*' = CI excludes 0", "",
             "| variant | seen-family acc | held-out-family acc | all acc | response loss |", "|---|---|---|---|---|"]
    for n, r in pooled.items():
        cells = []
        for key in ("seen_acc_diff", "held-out_acc_diff", "all_acc_diff"):
            e = r[key]
            cells.append(f"{100 * e.value:+.1f} pp [{100 * e.low:+.1f}, {100 * e.high:+.1f}]" + (" *" if e.excludes_zero() else ""))
        e = r["response_loss_diff"]
        cells.append(f"{e.value:+.3f} [{e.low:+.3f}, {e.high:+.3f}]" + (" *" if e.excludes_zero() else ""))
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
