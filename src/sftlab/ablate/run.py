"""Train and evaluate every variant (reusing finished ones), then write the reports."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sftlab.ablate.config import AblationConfig, load_ablation_config, run_config, with_seed
from sftlab.ablate.report import compare, composition_block, results_blocks, write_reports
from sftlab.ablate.variants import VariantData, build_variants, composition
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

    rows, merged = compare([v.name for v in variants], evals, cfg.baseline)
    comps = {vd.name: composition(vd) for vd in variants}
    rc = run_config(cfg, base, variants[0].path, out / "variants" / variants[0].name / "run")
    recipe = (f"{rc.model.name}, " + (f"LoRA r={rc.lora.r} alpha={rc.lora.alpha}" if rc.lora.enabled else "full fine-tuning")
              + f", lr {rc.train.lr}, {rc.train.max_steps} steps x {rc.train.tokens_per_batch} tokens x "
              f"{rc.train.grad_accum} accum, seed {rc.train.seed}")
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
    markdown = write_reports(out, blocks, rows, merged)
    return AblationResult(out, rows, result_json, markdown, reused)
