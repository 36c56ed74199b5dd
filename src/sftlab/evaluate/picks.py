"""Which side-by-side generations to show, picked by outcome: the terminal (quickstart, eval) and
report.html show the same picks, each with why it was picked.

Items are report.json's generations.tasks.items: {"group", "split", "prompt", "gold", "answers":
{model: text}, "passed": {model: bool}}. Picking is deterministic: file order, one family at a
time. Showing the first prompts of the first families instead would mostly show prompts both models
got wrong (in a 192-prompt quickstart run, 129 were), which says nothing of what training changed.
"""

from __future__ import annotations

SPLIT_NAMES = {"held-out": "never-seen family", "seen": "seen family", "held-out-cluster": "never-trained cluster",
               "untrained-cluster": "cluster this model did not train"}
NEVER_SEEN = ("held-out", "held-out-cluster", "untrained-cluster")  # splits a model never trained on

OUTCOME_TEXT = {
    "improved": "tuned right, base wrong",
    "worse": "tuned WRONG, base right (got worse)",
    "both_wrong": "both wrong (not learned)",
    "both_right": "both right",
}

TALLY_TEXT = {"improved": "improved (tuned right, base wrong)", "worse": "got worse", "both_wrong": "both wrong",
              "both_right": "both right"}


def outcome(item: dict, base: str, tuned: str) -> str:
    b, t = bool(item["passed"].get(base)), bool(item["passed"].get(tuned))
    return {(False, True): "improved", (True, False): "worse", (False, False): "both_wrong", (True, True): "both_right"}[(b, t)]


def pick_side_by_side(items: list[dict], base: str = "base", tuned: str = "tuned",
                      n_improved: int = 2, n: int | None = None) -> list[tuple[int, str]]:
    """Indices of generations to show, each with why it was picked, in this order:

    - up to `n_improved` where tuned is right and base wrong (never-seen families first: that is
      the generalisation claim; then seen families),
    - 1 where both are wrong (never-seen families first),
    - 1 where tuned is wrong and base right, if there is one,
    - 1 from a seen family if none of the above is one (improved > both wrong > worse > both right).

    `n`: exactly that many where there are enough items (the list above cut to n, or filled up by
    outcome in that order); None: the list above. Within a slot the first item in file order wins,
    preferring a family not shown yet.
    """
    chosen: list[tuple[int, str]] = []
    families: set[str] = set()

    def take(outcomes: tuple[str, ...], splits: tuple[str | None, ...], why: str) -> bool:
        candidates = [i for i, it in enumerate(items)
                      if i not in {c for c, _ in chosen} and it.get("split") in splits
                      and outcome(it, base, tuned) in outcomes]
        if not candidates:
            return False
        fresh = [i for i in candidates if items[i].get("group") not in families]
        i = (fresh or candidates)[0]
        families.add(items[i].get("group"))
        chosen.append((i, f"{why}; {SPLIT_NAMES.get(items[i].get('split'), 'unlabelled split')}"))
        return True

    any_split = (*NEVER_SEEN, "seen", "", None)
    for _ in range(n_improved):
        if not (take(("improved",), NEVER_SEEN, OUTCOME_TEXT["improved"])
                or take(("improved",), any_split, OUTCOME_TEXT["improved"])):
            break
    take(("both_wrong",), NEVER_SEEN, OUTCOME_TEXT["both_wrong"]) or take(("both_wrong",), any_split, OUTCOME_TEXT["both_wrong"])
    take(("worse",), any_split, OUTCOME_TEXT["worse"])
    if not any(items[i].get("split") == "seen" for i, _ in chosen):
        for o in ("improved", "both_wrong", "worse", "both_right"):
            if take((o,), ("seen",), OUTCOME_TEXT[o]):
                break
    while n is not None and len(chosen) < n:
        if not any(take((o,), any_split, OUTCOME_TEXT[o]) for o in ("improved", "both_wrong", "worse", "both_right")):
            break
    return chosen if n is None else chosen[:n]


def outcome_tally(items: list[dict], base: str = "base", tuned: str = "tuned") -> str:
    """One line per split: how many prompts fall in each outcome (the picks are not a sample)."""
    lines = []
    for split in (*NEVER_SEEN, "seen"):
        sub = [it for it in items if it.get("split") == split]
        if not sub:
            continue
        counts = {k: 0 for k in OUTCOME_TEXT}
        for it in sub:
            counts[outcome(it, base, tuned)] += 1
        lines.append(f"  {SPLIT_NAMES[split]} prompts: {len(sub)}: " + ", ".join(f"{TALLY_TEXT[k]} {v}" for k, v in counts.items()))
    return "\n".join(lines)


def prompt_text(item: dict) -> str:
    """The last message of a chat prompt, or the prompt as is."""
    return item["prompt"][-1]["content"] if isinstance(item["prompt"], list) else str(item["prompt"])


def format_picks(items: list[dict], picks: list[tuple[int, str]]) -> str:
    """The picks for a terminal: why, family, prompt, gold, and every model's answer with its verdict."""
    out = []
    for n, (i, why) in enumerate(picks, 1):
        it = items[i]
        prompt = prompt_text(it).replace("\n", "\n   ")
        out.append(f"{n}. picked: {why}\n   [{it.get('group')}] {prompt}")
        if it.get("gold"):
            out.append(f"   gold: {it['gold']}")
        for m, answer in it["answers"].items():
            mark = "ok " if it["passed"].get(m) else "BAD"
            out.append(f"   {mark} {m}: {answer!r}")
    return "\n".join(out) if out else "  (no task generations to show)"
