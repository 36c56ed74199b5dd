"""`sftlab quickstart`: the main job on a fresh machine, end to end on CPU.

LoRA-tunes the embedded SmolLM2-135M-Instruct on the built-in FLAN-style mixture (seen families of 9
clusters), then evaluates base vs tuned side by side: held-out response loss/perplexity, accuracy on
seen families, held-out families and 3 held-out clusters with confidence intervals, general-text perplexity (forgetting), and a
few generations. Re-running it resumes/reuses the finished run instead of training again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path


# Eval prompts per family, by split: 9 held-out families x 16 = 144 (a 95% interval of about +-5 pp on the
# question the quickstart answers: does tuning help on families it never trained?), 18 families of the
# held-out clusters x 4 = 72, 66 seen families x 1 = 66: 282 prompts per model. (3 per seen family, 450 prompts,
# took the evaluation to 7.6 of the run's 14 minutes; 6 per held-out-cluster family gave +22.2 pp [+13.9, +31.5]
# there, an interval 4 per family keeps clear of 0 at that gain, for ~30 s less of a run that must fit 10 min.)
QUICKSTART_EVAL_PER_FAMILY = {"seen": 1, "heldout": 16, "heldout_cluster": 4}
# --long asks about held-out clusters above all: 18 families x 12 = 216 prompts there (about +-6 pp), the
# held-out families as in the quickstart (144), 2 per seen family (132): 492 prompts per model
LONG_EVAL_PER_FAMILY = {"seen": 2, "heldout": 16, "heldout_cluster": 12}
# The flan eval set's longest gold answer is 22 SmolLM2 tokens (sort_numbers); 32 new tokens let the base model
# ramble a third longer for nothing. 48 prompts per generate call: 96 prompts took 30 s vs 38 s at 16 (2 cores).
FLAN_MAX_NEW_TOKENS = 24
GENERATE_BATCH = 48


def register(sub) -> None:
    p = sub.add_parser("quickstart", help="tune the embedded SmolLM2 on the built-in FLAN-style mixture and compare base vs tuned (CPU, 6-9 min on 2 cores)")
    p.add_argument("--out", default="runs/quickstart", help="output folder (model in OUT/final, report in OUT/report.html)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: from the quickstart config)")
    p.add_argument("--eval-per-family", type=int, default=None, help="task examples per family to evaluate (default: 1 per seen family, 16 per held-out family, "
                   "4 per family of a held-out cluster)")
    p.add_argument("--ifeval", action="store_true", help="also run the verifiable instruction-following prompts (slower)")
    p.add_argument("--overwrite", action="store_true", help="retrain from scratch even if OUT holds a run")
    p.add_argument("--long", action="store_true", help="the stronger recipe: 5x the steps on the same mixture, scored above all on "
                   "the 3 held-out clusters (src/sftlab/configs/quickstart-long.yaml; default --out runs/quickstart-long; "
                   "~25 min on 2 cores)")
    p.add_argument("--vision", action="store_true", help="the two-stage LLaVA-style demo instead: SmolLM2 + a small vision tower "
                   "on procedurally drawn shapes, stage 1 only vs tuned on held-out images (default --out runs/vlm-quickstart; "
                   "--steps applies to stage 2; 11.5-19 min on 2 cores, with the host)")
    p.add_argument("--vision-encoder", default=None, help="--vision: the stage-1 vision tower instead of the config's "
                   "builtin:tiny-siglip (random, frozen), e.g. builtin:tiny-siglip-shapes (pretrained here on the shapes; docs/multimodal.md)")
    p.add_argument("--seed", type=int, default=None, help="training seed (another seed = another independent run of the same "
                   "recipe): train.seed (data order, LoRA init; default: the config's, 0); with --vision, both stages' and the new "
                   "model's fresh weights (default 0)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.vision_encoder and not args.vision:
        raise SystemExit("sftlab quickstart: --vision-encoder applies to --vision only")
    if args.long and args.vision:
        raise SystemExit("sftlab quickstart: --long and --vision are two different demos; pick one")
    if args.vision:
        from sftlab.multimodal.demo import run_demo

        out = "runs/vlm-quickstart" if args.out == "runs/quickstart" else args.out
        run_demo(out, overwrite=args.overwrite, stage2_steps=args.steps, eval_per_family=args.eval_per_family,
                 seed=args.seed or 0, stage1_overrides=[f"multimodal.vision_encoder={args.vision_encoder}"] if args.vision_encoder else [])
        return 0
    from sftlab.builtin.flan.mixture import train_eval_split
    from sftlab.builtin.general_text import load_general_text
    from sftlab.checkpoint import list_checkpoints
    from sftlab.config import load_config
    from sftlab.configs import quickstart_config_path, shipped_config
    from sftlab.evaluate import evaluate_models, write_report_html
    from sftlab.evaluate.picks import format_picks, outcome_tally, pick_side_by_side
    from sftlab.model import load_model, load_tokenizer
    from sftlab.train import train

    from sftlab.host_steal import StealMeter

    t0, steal = time.time(), StealMeter()
    out_dir = "runs/quickstart-long" if args.long and args.out == "runs/quickstart" else args.out
    overrides = [f"train.output_dir={out_dir}"] + ([f"train.max_steps={args.steps}"] if args.steps else []) \
        + ([f"train.seed={args.seed}"] if args.seed is not None else [])
    cfg = load_config(shipped_config("quickstart-long") if args.long else quickstart_config_path(), overrides)
    eval_caps = args.eval_per_family or (LONG_EVAL_PER_FAMILY if args.long else QUICKSTART_EVAL_PER_FAMILY)
    out = Path(cfg.train.output_dir)
    print(f"sftlab quickstart: LoRA r={cfg.lora.r} on {cfg.model.name}, built-in FLAN-style mixture, {cfg.train.max_steps} steps -> {out}\n")

    finished = (out / "final" / "adapter_config.json").exists()
    if finished and not args.overwrite:
        print(f"[1/2] {out}/final exists: reusing the trained model (pass --overwrite to retrain)")
    else:
        resume = bool(list_checkpoints(out)) and not args.overwrite
        print("[1/2] training" + (" (resuming)" if resume else ""))
        result = train(cfg, resume=resume, overwrite=args.overwrite or (out.exists() and not resume))
        if result.stopped_early:
            print(f"training stopped early: {result.stopped_early}")
            return 3
    t_train = time.time() - t0

    print("\n[2/2] evaluating base vs tuned (generation on CPU takes a few minutes)")
    tok = load_tokenizer(cfg.model.name)
    base = load_model(cfg.model.name)
    tuned = load_model(str(out / "final"), merge_adapter=True)  # inference only: LoRA folded in
    train_convs, eval_convs = train_eval_split(seed=0)
    report = evaluate_models(
        {"base": (base, tok), "tuned": (tuned, tok)},
        # every 64th eval conversation: 59 examples, 59 families (response perplexity; every 32nd, 117
        # examples, gave base 28.5 -> tuned 5.79, a difference 40x its interval's distance from 0)
        eval_conversations=eval_convs[::64],
        general_text=load_general_text(),
        task_eval=True,
        task_suite="flan",
        ifeval=args.ifeval,
        max_task_examples_per_family=eval_caps,
        task_max_new_tokens=FLAN_MAX_NEW_TOKENS,
        batch_size=GENERATE_BATCH,
        max_ifeval_prompts=30,
        ifeval_max_new_tokens=192,
        train_conversations=train_convs,
    )
    report_html = out / "report.html"
    write_report_html(report, report_html, metrics_jsonl=out / "metrics.jsonl")
    report_json = report.to_json()
    (out / "report.json").write_text(json.dumps(report_json, indent=2))

    print("\n" + report.summary_table())
    items = report_json["generations"].get("tasks", {}).get("items", [])
    base_name, tuned_name = report.models[0], report.models[1]
    print("\nside by side (held-out prompts, picked to show what improved and what did not):")
    print(outcome_tally(items, base_name, tuned_name))
    print(format_picks(items, pick_side_by_side(items, base_name, tuned_name)))
    total = time.time() - t0
    print(f"\nwall time: {total / 60:.1f} min (training {t_train / 60:.1f} min){steal.note()}")
    print(f"report: {report_html.resolve()}")
    print(f"chat with the tuned model: sftlab chat {out / 'final'}")
    return 0
