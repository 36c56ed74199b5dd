"""Train and evaluate every variant (reusing finished ones), then write the reports."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftlab.ablate.config import FLAN_SPLIT_CAPS, AblationConfig, load_ablation_config, run_config, with_seed
from sftlab.ablate.report import accuracy_figure, compare, composition_block, merged_report, results_blocks, write_reports
from sftlab.ablate.variants import VariantData, build_variants, composition, probe_tokenizer
from sftlab.atomic import atomic_write_json
from sftlab.conversation import Conversation
from sftlab.errors import SftlabError


@dataclass
class AblationResult:
    out: Path
    table: list[dict[str, Any]]
    json: dict[str, Any]
    markdown: str
    reused: list[str]


def eval_conversations(suite: str, every: int) -> list[Conversation]:
    """Every k-th conversation of the suite's eval set (seed 0), for the response loss."""
    from sftlab.evaluate.runner import suite_eval_set

    return suite_eval_set(suite)[::every]


def train_variant(cfg: AblationConfig, base: Path, vd: VariantData, vdir: Path, log=print) -> tuple[Path, bool]:
    """Train the probe on the variant's data; (final model folder, True if a finished run was reused)."""
    from sftlab.checkpoint import list_checkpoints
    from sftlab.train import train

    run_dir = vdir / "run"
    final = run_dir / "final"
    rc = run_config(cfg, base, vd.path, run_dir, vd.train_seed)
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
    from sftlab.evaluate.runner import evaluate_models
    from sftlab.model import load_model

    path = vdir / "eval.json"
    e = cfg.eval
    # flan: the splits depend on the clusters this run trained (its other clusters are "untrained-cluster")
    trained = list(vd.trained_clusters) if vd.trained_clusters is not None else None
    settings = {**e.model_dump(), "task_suite": cfg.task_suite, "trained_clusters": trained}
    if path.exists():
        saved = json.loads(path.read_text())
        if not retrained and saved.get("data_fingerprint") == vd.fingerprint and saved.get("eval_settings") == settings:
            log(f"[{vd.name}] reusing evaluation {path}")
            return saved, True
        log(f"[{vd.name}] {path} is from other data or eval settings: evaluating again")
    rc = run_config(cfg, base, vd.path, vdir / "run", vd.train_seed)
    tok = probe_tokenizer(rc)
    model = load_model(str(final), dtype=rc.model.dtype, merge_adapter=True)
    t0 = time.time()
    report = evaluate_models({vd.name: (model, tok)}, eval_conversations=eval_conversations(cfg.task_suite, e.response_loss_every),
                             general_text=[], task_eval=True, ifeval=False,
                             max_task_examples_per_family=e.max_task_examples_per_family, batch_size=e.batch_size,
                             task_max_new_tokens=e.task_max_new_tokens, progress=True, task_suite=cfg.task_suite,
                             trained_clusters=trained)
    gs, el = report.tasks, report.perplexity[vd.name]["response"]
    saved = {
        "variant": vd.name, "data_fingerprint": vd.fingerprint, "eval_settings": settings,
        "seconds": round(time.time() - t0, 1), "notes": report.notes,
        "tasks": {"ids": gs.ids, "groups": gs.groups, "splits": gs.splits, "clusters": gs.clusters, "gold": gs.gold,
                  "prompts": [p[-1]["content"] for p in gs.prompts],
                  "answers": gs.answers[vd.name], "passed": gs.passed[vd.name], "max_new_tokens": gs.max_new_tokens},
        "response_loss": {"ids": el.ids, "loss_sums": el.loss_sums.tolist(), "n_tokens": el.n_tokens.tolist(),
                          "truncated": el.truncated, "skipped": el.skipped},
    }
    atomic_write_json(path, saved)
    return saved, False


def run_ablation(config: str | Path, out: str | Path | None = None, *, steps: int | None = None,
                 eval_per_family: int | None = None, loss_every: int | None = None, seed: int | None = None,
                 log=print) -> AblationResult:
    """Build every variant's data, train + evaluate each (reusing finished ones), write the report.
    steps / eval_per_family / loss_every override the config (a smaller budget on a busy machine);
    seed replicates it with another training seed and random draw (use another --out)."""
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
    log(f"{len(variants)} runs: {pool_note}" if cfg.task_suite == "flan" else f"{len(variants)} variants of {size} examples each ({pool_note})")
    evals, reused, seconds = {}, [], {}
    for vd in variants:
        vdir = out / "variants" / vd.name
        t1 = time.time()
        final, trained_before = train_variant(cfg, base, vd, vdir, log)
        evals[vd.name], evaluated_before = eval_variant(cfg, base, vd, final, vdir, not trained_before, log)
        if trained_before and evaluated_before:
            reused.append(vd.name)
        seconds[vd.name] = round(time.time() - t1, 1)

    rc = run_config(cfg, base, variants[0].path, out / "variants" / variants[0].name / "run")
    recipe = (f"{rc.model.name}, " + (f"LoRA r={rc.lora.r} alpha={rc.lora.alpha}" if rc.lora.enabled else "full fine-tuning")
              + f", lr {rc.train.lr}, {rc.train.max_steps} steps x {rc.train.tokens_per_batch} tokens x "
              f"{rc.train.grad_accum} accum, "
              + ("train.seed = the run's seed" if variants[0].train_seed is not None else f"seed {rc.train.seed}"))
    if cfg.task_suite == "flan":
        return flan_report(cfg, out, variants, evals, recipe, reused, seconds, time.time() - t0)
    rows, merged = compare([v.name for v in variants], evals, cfg.baseline)
    comps = {vd.name: composition(vd) for vd in variants}
    n = rows[0]["n_prompts"]
    blocks = [
        ("h2", f"Ablation: {', '.join(v.name for v in variants)} (baseline `{cfg.baseline}`)"),
        ("p", f"All variants have the same size: **{size} examples** (set by `{cfg.size_from}`; random subsets drawn to that size).\n"
              f"Same probe for every variant: {recipe}.\n"
              f"Same eval prompts for every variant: {n['held-out']} held-out-family prompts, {n['seen']} held-out examples of "
              f"seen families ({cfg.eval.max_task_examples_per_family} per family, greedy, max {cfg.eval.task_max_new_tokens} new "
              f"tokens); response loss on {rows[0]['n_loss_conversations']} eval-split conversations (mean per response token).\n"
              "Values: 95% percentile-bootstrap CIs (1000 resamples); differences: paired bootstrap on the same prompts."),
        *results_blocks(rows, cfg.baseline),
        ("p", "**What each variant trained on** (pool rows by planted noise kind):"),
        composition_block(comps),
        ("p", f"Pool: {pool_note}. A kept row labelled *_duplicate is the first copy in pool order (its clean twin was "
              "the one removed); 'distinct prompts' counts prompts after normalisation."),
        ("ul", [f"`{vd.name}`: {vd.note}" for vd in variants]),
    ]
    result_json = {"size": size, "size_from": cfg.size_from, "baseline": cfg.baseline, "recipe": recipe,
                   "pool": pool_note, "rows": rows, "composition": comps,
                   "variants": {vd.name: {"kind": vd.kind, "note": vd.note, "data": str(vd.path), "fingerprint": vd.fingerprint,
                                          "curate_blocks": vd.curate_stats, "seconds_this_invocation": seconds[vd.name]} for vd in variants},
                   "eval": cfg.eval.model_dump(), "reused": reused, "seconds_this_invocation": round(time.time() - t0, 1)}
    atomic_write_json(out / "ablation.json", result_json)
    markdown = write_reports(out, blocks, accuracy_figure(rows), "held-out and seen accuracy per variant with 95% CIs", merged)
    return AblationResult(out, rows, result_json, markdown, reused)


def flan_report(cfg: AblationConfig, out: Path, variants: list[VariantData], evals: dict[str, dict], recipe: str,
                reused: list[str], seconds: dict[str, float], elapsed: float) -> AblationResult:
    """The flan ablation's report: the scaling table and plot (ablate.scaling), what each run trained,
    eval_report.html with every run's per-cluster and per-family accuracy."""
    from sftlab.ablate.scaling import scaling_blocks, scaling_figure, scaling_rows
    from sftlab.builtin import flan
    from sftlab.evaluate.runner import FLAN_SPLIT_LABELS

    rows = scaling_rows(variants, evals, cfg.baseline)
    mixes = {vd.name: vd.mix for vd in variants}
    m0 = variants[0].mix
    base_run = next(vd.name for vd in variants if vd.group == cfg.baseline)
    t = evals[base_run]["tasks"]
    e = cfg.eval
    cap = e.max_task_examples_per_family
    caps = str(cap)
    if isinstance(cap, dict):  # a split it does not name is not capped
        caps = ", ".join(f"{k} {cap.get(k, 'all')}" for k in FLAN_SPLIT_CAPS)
    blocks = [
        ("h2", f"Flan ablation: {', '.join(dict.fromkeys(vd.group for vd in variants))} (baseline `{cfg.baseline}`)"),
        ("p", f"Every run trains on a FLAN mixture of the same budget: **{m0['budget']} {m0['budget_unit']}** (counted under "
              f"the probe's tokenizer and chat template), drawn from the seen families of its clusters only; cluster order "
              f"{cfg.flan.cluster_order if isinstance(cfg.flan.cluster_order, str) else list(cfg.flan.cluster_order)} "
              f"(`first_clusters: k` takes the first k, so for one seed the subsets are nested).\n"
              f"Same probe for every run: {recipe}.\n"
              f"Same eval prompts for every run: the flan eval set (builtin:flan-eval), {len(t['ids'])} prompts "
              f"({caps} per family, greedy, max {e.task_max_new_tokens} new tokens); "
              f"response loss on {len(evals[base_run]['response_loss']['ids'])} of its conversations."),
        *scaling_blocks(rows, cfg.baseline, mixes),
        ("ul", [f"`{vd.name}`: {vd.note}" for vd in variants]),
    ]
    names = [base_run] + [vd.name for vd in variants if vd.name != base_run]
    splits = [FLAN_SPLIT_LABELS[flan.split_of(f)] for f in t["groups"]]
    merged = merged_report(names, evals, splits, t.get("clusters"), settings={
        "splits": "seen / held-out rows use the registry's splits (a model trained on every trainable cluster); "
                  "each run's own splits are in ablation.html"})
    result_json = {"budget": m0["budget"], "budget_unit": m0["budget_unit"], "baseline": cfg.baseline, "recipe": recipe,
                   "seeds": cfg.seeds, "cluster_order": cfg.flan.cluster_order, "rows": rows,
                   "runs": {vd.name: {"variant": vd.group, "seed": vd.seed, "note": vd.note, "data": str(vd.path),
                                      "fingerprint": vd.fingerprint, "mixture": vd.mix,
                                      "seconds_this_invocation": seconds[vd.name]} for vd in variants},
                   "eval": e.model_dump(), "reused": reused, "seconds_this_invocation": round(elapsed, 1)}
    atomic_write_json(out / "ablation.json", result_json)
    markdown = write_reports(out, blocks, scaling_figure(rows, cfg.baseline),
                             "held-out-cluster accuracy vs number of training clusters, each seed and the mean with "
                             "95% CIs; paired differences vs the baseline", merged)
    return AblationResult(out, rows, result_json, markdown, reused)
