"""`sftlab quickstart`: the main job on a fresh machine, end to end on CPU.

LoRA-tunes the embedded SmolLM2-135M-Instruct on the built-in task suite (seen families only),
then evaluates base vs tuned side by side: held-out response loss/perplexity, accuracy on seen and
never-seen task families with confidence intervals, general-text perplexity (forgetting), and a
few generations. Re-running it resumes/reuses the finished run instead of training again.
"""

from __future__ import annotations

import json
import time
from importlib import resources
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("quickstart", help="tune the embedded SmolLM2 on the built-in tasks and compare base vs tuned (CPU, ~12 min on 2 cores)")
    p.add_argument("--out", default="runs/quickstart", help="output folder (model in OUT/final, report in OUT/report.html)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: from the quickstart config)")
    p.add_argument("--eval-per-family", type=int, default=None, help="task examples per family to evaluate (default 8)")
    p.add_argument("--ifeval", action="store_true", help="also run the verifiable instruction-following prompts (slower)")
    p.add_argument("--overwrite", action="store_true", help="retrain from scratch even if OUT holds a run")
    p.set_defaults(func=run)


def quickstart_config_path() -> Path:
    return Path(str(resources.files("sftlab.configs").joinpath("quickstart.yaml")))


def run(args) -> int:
    from sftlab.builtin.tasks import load_general_text, train_eval_split
    from sftlab.checkpoint import list_checkpoints
    from sftlab.config import load_config
    from sftlab.evaluate import evaluate_models, write_report_html
    from sftlab.model import load_model, load_tokenizer
    from sftlab.train import train

    t0 = time.time()
    overrides = [f"train.output_dir={args.out}"] + ([f"train.max_steps={args.steps}"] if args.steps else [])
    cfg = load_config(quickstart_config_path(), overrides)
    out = Path(cfg.train.output_dir)
    print(f"sftlab quickstart: LoRA r={cfg.lora.r} on {cfg.model.name}, built-in task suite, {cfg.train.max_steps} steps -> {out}\n")

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
    tuned = load_model(str(out / "final"))
    train_convs, eval_convs = train_eval_split(seed=0)
    report = evaluate_models(
        {"base": (base, tok), "tuned": (tuned, tok)},
        # every 4th held-out conversation: 240 examples over all 24 families, ~13k tokens per model
        eval_conversations=eval_convs[::4],
        general_text=load_general_text(),
        task_eval=True,
        ifeval=args.ifeval,
        max_task_examples_per_family=args.eval_per_family or 8,
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
    print(format_picks(items, pick_side_by_side(items, base_name, tuned_name), base_name, tuned_name))
    total = time.time() - t0
    print(f"\nwall time: {total / 60:.1f} min (training {t_train / 60:.1f} min)")
    print(f"report: {report_html.resolve()}")
    print(f"chat with the tuned model: sftlab chat {out / 'final'}")
    return 0


# ---- which generations to show --------------------------------------------------------------
# The old view (the first prompt of the first 4 families) showed 4 prompts both models got wrong
# in a real quickstart run (192 prompts: 129 both wrong, 61 tuned right and base wrong, 2 base
# right and tuned wrong), so it showed nothing of what training changed. Now the examples are
# picked by outcome, deterministically (file order, one family at a time), each saying why.

SPLIT_NAMES = {"held-out": "never-seen family", "seen": "seen family"}


def _outcome(item: dict, base: str, tuned: str) -> str:
    b, t = bool(item["passed"].get(base)), bool(item["passed"].get(tuned))
    return {(False, True): "improved", (True, False): "worse", (False, False): "both_wrong", (True, True): "both_right"}[(b, t)]


OUTCOME_TEXT = {
    "improved": "tuned right, base wrong",
    "worse": "tuned WRONG, base right (got worse)",
    "both_wrong": "both wrong (not learned)",
    "both_right": "both right",
}


def pick_side_by_side(items: list[dict], base: str = "base", tuned: str = "tuned",
                      n_improved: int = 2) -> list[tuple[int, str]]:
    """Indices of task generations to show, each with why it was picked, in this order:

    - up to `n_improved` where tuned is right and base wrong (never-seen families first: that is
      the generalisation claim; then seen families),
    - 1 where both are wrong (never-seen families first),
    - 1 where tuned is wrong and base right, if there is one,
    - 1 from a seen family if none of the above is one (improved > both wrong > worse > both right).

    `items` are report.json's generations.tasks.items ({"group", "split", "passed": {model: bool}}).
    Within a slot the first item in file order wins, preferring a family not shown yet.
    """
    chosen: list[tuple[int, str]] = []
    families: set[str] = set()

    def take(outcomes: tuple[str, ...], splits: tuple[str, ...], why: str) -> bool:
        candidates = [i for i, it in enumerate(items)
                      if i not in {c for c, _ in chosen} and it.get("split") in splits
                      and _outcome(it, base, tuned) in outcomes]
        if not candidates:
            return False
        fresh = [i for i in candidates if items[i].get("group") not in families]
        i = (fresh or candidates)[0]
        families.add(items[i].get("group"))
        chosen.append((i, f"{why}; {SPLIT_NAMES.get(items[i].get('split'), 'unlabelled split')}"))
        return True

    any_split = ("held-out", "seen", "", None)
    for _ in range(n_improved):
        if not (take(("improved",), ("held-out",), OUTCOME_TEXT["improved"])
                or take(("improved",), any_split, OUTCOME_TEXT["improved"])):
            break
    take(("both_wrong",), ("held-out",), OUTCOME_TEXT["both_wrong"]) or take(("both_wrong",), any_split, OUTCOME_TEXT["both_wrong"])
    take(("worse",), any_split, OUTCOME_TEXT["worse"])
    if not any(items[i].get("split") == "seen" for i, _ in chosen):
        for outcome in ("improved", "both_wrong", "worse", "both_right"):
            if take((outcome,), ("seen",), OUTCOME_TEXT[outcome]):
                break
    return chosen


TALLY_TEXT = {"improved": "improved (tuned right, base wrong)", "worse": "got worse", "both_wrong": "both wrong",
              "both_right": "both right"}


def outcome_tally(items: list[dict], base: str = "base", tuned: str = "tuned") -> str:
    """One line per split: how many prompts fall in each outcome (the picks are not a sample)."""
    lines = []
    for split in ("held-out", "seen"):
        sub = [it for it in items if it.get("split") == split]
        if not sub:
            continue
        counts = {k: 0 for k in OUTCOME_TEXT}
        for it in sub:
            counts[_outcome(it, base, tuned)] += 1
        lines.append(f"  {SPLIT_NAMES[split]} prompts: {len(sub)}: " + ", ".join(f"{TALLY_TEXT[k]} {v}" for k, v in counts.items()))
    return "\n".join(lines)


def format_picks(items: list[dict], picks: list[tuple[int, str]], base: str = "base", tuned: str = "tuned") -> str:
    out = []
    for n, (i, why) in enumerate(picks, 1):
        it = items[i]
        prompt = it["prompt"][-1]["content"] if isinstance(it["prompt"], list) else str(it["prompt"])
        prompt = prompt.replace("\n", "\n   ")
        out.append(f"{n}. picked: {why}\n   [{it.get('group')}] {prompt}")
        if it.get("gold"):
            out.append(f"   gold: {it['gold']}")
        for m in (base, tuned):
            mark = "ok " if it["passed"].get(m) else "BAD"
            out.append(f"   {mark} {m}: {it['answers'].get(m)!r}")
    return "\n".join(out) if out else "  (no task generations to show)"
