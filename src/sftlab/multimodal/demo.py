"""`sftlab quickstart --vision`: the built-in two-stage LLaVA-style demo, end to end on CPU.

1. stage 1 (configs/vlm-stage1.yaml): a new LLaVA = embedded SmolLM2-135M-Instruct + a small SigLIP
   tower built here (seeded random weights: nothing pretrained can be downloaded here) + a fresh
   projector; only the projector trains, on captions of procedurally drawn shapes.
2. stage 2 (configs/vlm-stage2.yaml): from stage 1's model, LoRA on the language model's upper half
   (projector frozen after stage 1), on questions of 5 seen families about the training images.
3. evaluation on held-out images: the stage-1-only model vs the tuned one on the 5 seen families
   and 3 never-trained ones, accuracy with 95% intervals and paired differences, response
   perplexity, and an HTML report with the images next to both models' answers.
Each stage is reused when its final/ exists (resumed when it has checkpoints); --overwrite retrains.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


def train_stage(config_name: str, out: Path, overrides: list[str], overwrite: bool, log=print):
    from sftlab.checkpoint import list_checkpoints
    from sftlab.config import load_config
    from sftlab.configs import shipped_config
    from sftlab.train import train

    cfg = load_config(shipped_config(config_name), [f"train.output_dir={out}", *overrides])
    if (out / "final").is_dir() and (out / "run.json").is_file() and not overwrite:
        log(f"{out}/final exists: reusing it (--overwrite retrains)")
        return out / "final"
    resume = bool(list_checkpoints(out)) and not overwrite
    result = train(cfg, resume=resume, overwrite=overwrite or (out.exists() and not resume))
    if result.stopped_early:
        raise SystemExit(f"training stopped early: {result.stopped_early}")
    return result.final_dir


def run_demo(out: str | Path = "runs/vlm-quickstart", *, overwrite: bool = False, stage1_steps: int | None = None,
             stage2_steps: int | None = None, eval_per_family: int | None = None, seed: int = 0,
             stage1_overrides: list[str] = (), stage2_overrides: list[str] = (), log=print) -> dict:
    """`seed` seeds both stages' training (data order, LoRA init) and the new LLaVA's fresh weights
    (tower, projector): another seed is another independent run of the same recipe."""
    from sftlab.builtin.shapes import check_answer, load_set
    from sftlab.multimodal.evaluate import evaluate_vision, write_report
    from sftlab.multimodal.use import load_vlm_model

    from sftlab.host_steal import StealMeter

    out = Path(out)
    t0, steal = time.time(), StealMeter()
    log(f"sftlab quickstart --vision -> {out}\n[1/3] stage 1: feature alignment (projector only, captions)")
    seeds = [f"train.seed={seed}"]
    s1 = train_stage("vlm-stage1", out / "stage1", seeds + [f"multimodal.seed={seed}", *stage1_overrides]
                     + ([f"train.max_steps={stage1_steps}"] if stage1_steps else []), overwrite, log)
    t1 = time.time()
    log("\n[2/3] stage 2: visual instruction tuning (LoRA on the language model's upper layers, question families)")
    s2 = train_stage("vlm-stage2", out / "stage2", [f"model.name={s1}", *seeds, *stage2_overrides]
                     + ([f"train.max_steps={stage2_steps}"] if stage2_steps else []), overwrite, log)
    t2 = time.time()
    log("\n[3/3] evaluating stage 1 only vs tuned on held-out images (5 seen + 3 never-trained question families)")
    convs = load_set("shapes-eval")
    if eval_per_family:
        kept, seen = [], {}
        for c in convs:
            f = c.meta.get("family")
            if seen.get(f, 0) < eval_per_family:
                kept.append(c)
                seen[f] = seen.get(f, 0) + 1
        convs = kept
    models = {"stage1-only": load_vlm_model(str(s1)), "tuned": load_vlm_model(str(s2), merge_adapter=True)}
    # 12 new tokens hold any gold answer (<= 4 tokens) and the start of a stage-1 caption, whose first
    # colour/shape/number/position is what the checker reads; 24 made the stage-1 model's captions the
    # slowest part of the demo
    ev = evaluate_vision(models, convs, check_answer, max_new_tokens=12, log=log)
    report = out / "report.html"
    write_report(ev, report, title="sftlab quickstart --vision: stage 1 only vs tuned",
                 notes="A LLaVA assembled from the embedded SmolLM2-135M-Instruct and a small SigLIP tower with random "
                       "(untrained, frozen) weights, tuned on procedurally drawn shapes; held-out images; families marked "
                       "held-out were never trained.",
                 metrics={"stage 1": out / "stage1" / "metrics.jsonl", "stage 2": out / "stage2" / "metrics.jsonl"})
    result = ev.to_json()
    result["seconds"] = {"stage1": round(t1 - t0, 1), "stage2": round(t2 - t1, 1), "eval": round(time.time() - t2, 1),
                         "total": round(time.time() - t0, 1), "host_steal_fraction": steal.fraction()}
    (out / "report.json").write_text(json.dumps(result, indent=2))
    log("\n" + ev.summary_table())
    log(f"\nwall time: {(time.time() - t0) / 60:.1f} min (stage 1 {(t1 - t0) / 60:.1f}, stage 2 {(t2 - t1) / 60:.1f}, "
        f"eval {(time.time() - t2) / 60:.1f}){steal.note()}")
    log(f"report: {report.resolve()}")
    log(f"chat about an image: sftlab chat {s2} --image PATH")
    return result
