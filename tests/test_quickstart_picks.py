"""The quickstart's side-by-side view picks generations by outcome (improved, both wrong, got worse,
a seen family), deterministically, and says why each was picked. Synthetic eval records in the
shape of report.json's generations.tasks.items; no model is run."""

from __future__ import annotations

from sftlab.evaluate.picks import format_picks, outcome_tally, pick_side_by_side


def item(group: str, split: str, base: bool, tuned: bool, n: int = 0) -> dict:
    return {
        "id": f"{group}-{n}",
        "group": group,
        "split": split,
        "prompt": [{"role": "user", "content": f"prompt {group} {n}\nsecond line"}],
        "gold": f"gold {group} {n}",
        "answers": {"base": f"base answer {n}", "tuned": f"tuned answer {n}"},
        "passed": {"base": base, "tuned": tuned},
    }


def outcome(it: dict) -> tuple[bool, bool]:
    return it["passed"]["base"], it["passed"]["tuned"]


# what each label promises, as (base passed, tuned passed)
LABEL_OUTCOME = {
    "tuned right, base wrong": (False, True),
    "both wrong (not learned)": (False, False),
    "tuned WRONG, base right (got worse)": (True, False),
    "both right": (True, True),
}

MIXED = [
    item("reverse", "seen", False, False, 0),       # 0 seen, both wrong
    item("is_prime", "held-out", False, True, 1),   # 1 held-out improved
    item("is_prime", "held-out", False, True, 2),   # 2 held-out improved, same family
    item("is_prime", "held-out", True, False, 3),   # 3 held-out got worse
    item("vowels", "held-out", False, False, 4),    # 4 held-out both wrong
    item("names", "held-out", False, True, 5),      # 5 held-out improved, new family
    item("email", "seen", False, True, 6),          # 6 seen improved
    item("upper", "seen", True, True, 7),           # 7 seen both right
]


def test_mixed_run_shows_improved_not_learned_worse_and_a_seen_family():
    picks = pick_side_by_side(MIXED)
    assert picks == [
        (1, "tuned right, base wrong; never-seen family"),
        (5, "tuned right, base wrong; never-seen family"),  # a new family beats the 2nd is_prime
        (4, "both wrong (not learned); never-seen family"),
        (3, "tuned WRONG, base right (got worse); never-seen family"),
        (6, "tuned right, base wrong; seen family"),  # seen slot: improved first, not index 0
    ]
    for i, why in picks:  # every label matches the record's own verdicts and split
        label, split = why.split("; ")
        assert outcome(MIXED[i]) == LABEL_OUTCOME[label]
        assert MIXED[i]["split"] == {"never-seen family": "held-out", "seen family": "seen"}[split]
    assert pick_side_by_side(list(MIXED)) == picks  # same records, same picks


def test_no_held_out_improvement_takes_seen_ones_and_skips_the_extra_seen_slot():
    items = [item("vowels", "held-out", False, False, 0), item("reverse", "seen", False, True, 1),
             item("reverse", "seen", False, True, 2), item("email", "seen", False, True, 3)]
    assert pick_side_by_side(items) == [
        (1, "tuned right, base wrong; seen family"),
        (3, "tuned right, base wrong; seen family"),
        (0, "both wrong (not learned); never-seen family"),
    ]


def test_all_failures_shows_one_failure_of_each_split_not_four():
    """The old view's case: every shown prompt wrong for both models."""
    items = [item(f"f{k}", "held-out" if k < 3 else "seen", False, False, k) for k in range(6)]
    assert pick_side_by_side(items) == [
        (0, "both wrong (not learned); never-seen family"),
        (3, "both wrong (not learned); seen family"),
    ]


def test_tally_counts_outcomes_per_split():
    tally = outcome_tally(MIXED)
    assert tally.splitlines() == [
        "  never-seen family prompts: 5: improved (tuned right, base wrong) 3, got worse 1, both wrong 1, both right 0",
        "  seen family prompts: 3: improved (tuned right, base wrong) 1, got worse 0, both wrong 1, both right 1",
    ]


def test_format_shows_why_gold_and_both_verdicts():
    text = format_picks(MIXED, pick_side_by_side(MIXED)[:1])
    assert text.splitlines() == [
        "1. picked: tuned right, base wrong; never-seen family",
        "   [is_prime] prompt is_prime 1",
        "   second line",
        "   gold: gold is_prime 1",
        "   BAD base: 'base answer 1'",
        "   ok  tuned: 'tuned answer 1'",
    ]
    assert pick_side_by_side([]) == [] and "no task generations" in format_picks([], [])
