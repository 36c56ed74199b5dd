"""The forgetting trade-off (docs/forgetting.md): a stronger-than-quickstart LoRA run (--full: full
fine-tuning) on the embedded SmolLM2, then the same with replay of general text (data.replay) and with a KL pull toward the base
(train.kl_to_base), all evaluated against the base model in ONE evaluate_models call (general-text
perplexity, task accuracy on the built-in suite, 95% bootstrap CIs, paired diffs vs the base).

    python benchmarks/bench_forgetting.py --out runs/forget-full --full --steps 40 --lr 1e-3 --per-family 4   # forgets: docs/forgetting.md

The built-in general text (42 paragraphs) is split: even-numbered paragraphs are the replay text,
odd-numbered ones the general-text perplexity set, so replay is never scored on what it trained on.
A variant whose OUT/<name>/final exists is not trained again (delete it to retrain).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = {
    "plain": [],
    "replay10": ["data.replay={path: REPLAY, fraction: 0.1}"],
    "replay30": ["data.replay={path: REPLAY, fraction: 0.3}"],
    "kl0.1": ["train.kl_to_base.beta=0.1"],
    "kl0.5": ["train.kl_to_base.beta=0.5"],
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/forgetting")
    p.add_argument("--steps", type=int, default=72, help="training steps (quickstart: 24)")
    p.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (quickstart: 5e-4)")
    p.add_argument("--per-family", type=int, default=4, help="task examples per family to evaluate (24 families)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of the quickstart's LoRA (KL then keeps a "
                   "frozen copy of the starting weights)")
    p.add_argument("--seed", type=int, default=0, help="training seed (data order, LoRA init)")
    args = p.parse_args()

    from sftlab.builtin.tasks import load_general_text, train_eval_split
    from sftlab.config import load_config
    from sftlab.configs import quickstart_config_path
    from sftlab.evaluate import evaluate_models
    from sftlab.model import load_model, load_tokenizer
    from sftlab.train import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = load_general_text()
    replay_file = out / "replay_general_text.jsonl"
    replay_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in text[0::2]))
    held_out_text = text[1::2]

    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    timings = {}
    for name in names:
        run_dir = out / name
        if (run_dir / "final" / ("config.json" if args.full else "adapter_config.json")).exists():
            print(f"{name}: {run_dir}/final exists, not retrained")
            continue
        overrides = [f"train.output_dir={run_dir}", f"train.max_steps={args.steps}", f"train.lr={args.lr}", "train.save_every=0",
                     f"train.seed={args.seed}", "data.eval=[]",
                     # the 24-family suite, which the evaluation below scores (the quickstart itself now trains on builtin:flan-train)
                     "data.train=[{path: builtin:tasks-train}]"]  # no end-of-run eval loss: the evaluation below measures what matters
        overrides += ["lora.enabled=false"] if args.full else []
        overrides += [o.replace("REPLAY", str(replay_file.resolve())) for o in VARIANTS[name]]
        print(f"\n== {name}: {' '.join(overrides[1:])}")
        t0 = time.time()
        result = train(load_config(quickstart_config_path(), overrides), overwrite=run_dir.exists())
        timings[name] = round(time.time() - t0, 1)
        if result.stopped_early:
            raise SystemExit(f"{name}: stopped early: {result.stopped_early}")

    cfg = load_config(quickstart_config_path())
    tok = load_tokenizer(cfg.model.name)
    models = {"base": (load_model(cfg.model.name), tok)}
    models.update({name: (load_model(str(out / name / "final")), tok) for name in names})
    train_convs, eval_convs = train_eval_split(seed=0)
    report = evaluate_models(models, eval_conversations=eval_convs[::8], general_text=held_out_text, task_eval=True,
                             ifeval=False, max_task_examples_per_family=args.per_family, train_conversations=train_convs)
    table = report.summary_table() + "\n\n" + _vs_plain(report.to_json(), names)
    kind = "full fine-tuning" if args.full else "LoRA"
    header = (f"forgetting trade-off: SmolLM2-135M-Instruct {kind} (quickstart config), {args.steps} steps, lr {args.lr}, seed {args.seed}; "
              f"general-text PPL on {len(held_out_text)} held-out paragraphs (replay trains on the other {len(text[0::2])}); "
              f"tasks: {args.per_family} per family\ncommand: python benchmarks/bench_forgetting.py --out {args.out} "
              f"--steps {args.steps} --lr {args.lr} --per-family {args.per_family} --variants {','.join(names)}"
              f"{' --full' if args.full else ''} --seed {args.seed}\n"
              f"training seconds: {timings}\n")
    (out / "table.txt").write_text(header + "\n" + table + "\n")
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2))
    print("\n" + header + "\n" + table)


def _vs_plain(report: dict, names: list[str]) -> str:
    """Task accuracy of each control minus the plain run's, paired over the same prompts: does the control
    keep the instruction gain? (The table above compares every run with the base.)"""
    from sftlab.evaluate.bootstrap import paired_diff_ci

    if "plain" not in names:
        return ""
    items = report["generations"].get("tasks", {}).get("items", [])
    lines = ["task accuracy, variant - plain (paired bootstrap over the same prompts, 95% CI, pp):"]
    for name in names:
        if name == "plain":
            continue
        cells = []
        for label, keep in (("all", lambda it: True), ("seen", lambda it: it["split"] == "seen"),
                            ("held-out", lambda it: it["split"] != "seen")):
            rows = [it for it in items if keep(it)]
            e = paired_diff_ci([it["passed"]["plain"] for it in rows], [it["passed"][name] for it in rows])
            star = " *" if e.excludes_zero() else ""
            cells.append(f"{label} {100 * e.value:+.1f} [{100 * e.low:+.1f}, {100 * e.high:+.1f}]{star} (n={e.n})")
        lines.append(f"  {name:<9} " + "   ".join(cells))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
