"""Cluster 'sequences' of the FLAN-style mixture: continue or complete a short, regular sequence
(numbers with a constant step, letters, a repeating pattern, days and months). Held out whole (see
sftlab.builtin.flan.HELDOUT_CLUSTERS). Every sequence shows enough of itself (two or more steps, two
or more full cycles of a pattern) that the simplest rule, and so the answer, is unique.

(See sftlab.builtin.flan.base for how families and templates are written.)"""

from __future__ import annotations

from random import Random
from string import ascii_lowercase

from sftlab.builtin.flan.base import Family, T, family
from sftlab.builtin.words import MONTHS, WEEKDAYS

CLUSTER = "sequences"
HELDOUT_FAMILY: str | None = None  # a held-out cluster: every family is unseen already


def _neighbour_letters(answer: str) -> list[str]:
    """The letters either side of the gold one: an off-by-one step is the likely slip."""
    return [chr(ord(answer) + d) for d in (-1, 1) if chr(ord(answer) + d).isalpha()]


def _other_names(answer: str) -> list[str]:
    """Every other weekday or month name: the real mistakes, not character edits."""
    return [n for n in (*WEEKDAYS, *MONTHS) if n.lower() != answer.lower()]


def _join(values) -> str:
    return ", ".join(map(str, values))


# ---------------------------------------------------------------- generators

def _arithmetic_terms(rng: Random, n: int) -> list[int]:
    """n terms of an arithmetic sequence with a non-zero step, all of them >= 0."""
    step = rng.choice([s for s in range(-9, 13) if s != 0])
    start = rng.randint(abs(step) * n if step < 0 else 0, abs(step) * n + 40 if step < 0 else 60)
    return [start + i * step for i in range(n)]


def _next_number(rng: Random):
    terms = _arithmetic_terms(rng, rng.randint(4, 5) + 2)
    shown, nxt, after = terms[:-2], terms[-2], terms[-1]
    return {"items": _join(shown), "next": str(nxt), "next2": str(after), "step": str(terms[1] - terms[0])}, str(nxt)


def _missing_number(rng: Random):
    terms = _arithmetic_terms(rng, rng.randint(5, 6))
    gap = rng.randrange(1, len(terms) - 1)  # inside, so a neighbour on each side pins it down
    blank = [str(t) for t in terms]
    blank[gap] = "_"
    return {"items": ", ".join(blank), "items_q": ", ".join(blank).replace("_", "?")}, str(terms[gap])


def _next_letter(rng: Random):
    step = rng.randint(1, 3)
    n = rng.randint(3, 5)  # letters shown; at least two steps, so the step is not a guess
    start = rng.randint(0, 25 - step * n)  # no wrapping past z
    letters = [ascii_lowercase[start + i * step] for i in range(n + 1)]
    return {"items": _join(letters[:-1]), "rest": _join(letters[1:-1]), "first": letters[0],
            "next": letters[-1]}, letters[-1]


def _previous_letter(rng: Random):
    i = rng.randint(1, 25)
    letter, prev = ascii_lowercase[i], ascii_lowercase[i - 1]
    if rng.random() < 0.5:  # the case of the shown letter varies; the comparator ignores case anyway
        letter, prev = letter.upper(), prev.upper()
    # a short descending run ending at `letter`, for the templates that show one
    k = rng.randint(min(2, 26 - i), min(4, 26 - i))  # only "z" itself when the letter is z
    run = [chr(ord(letter) + j) for j in range(k - 1, -1, -1)]
    return {"letter": letter, "prev": prev, "run": _join(run)}, prev


# Patterns by the positions of their distinct items (AB, ABC, AAB, ABB, ABCD, AABB): each one's
# shortest period is its own length, so two shown cycles fix the continuation.
_SHAPES = ((0, 1), (0, 1, 2), (0, 0, 1), (0, 1, 1), (0, 1, 2, 3), (0, 0, 1, 1))
_PATTERN_ITEMS = (
    ("red", "blue", "green", "yellow", "white", "black"),
    ("circle", "square", "triangle", "star", "heart"),
    ("cat", "dog", "bird", "fish", "frog"),
    ("up", "down", "left", "right"),
    ("A", "B", "C", "D", "X", "Y", "Z"),
)


def _repeating_pattern(rng: Random):
    shape = rng.choice(_SHAPES)
    vocab = rng.sample(rng.choice(_PATTERN_ITEMS), max(shape) + 1)
    unit = [vocab[i] for i in shape]
    n = rng.randint(2 * len(unit), 3 * len(unit) - 1)  # two full cycles, then part of a third
    items = [unit[i % len(unit)] for i in range(n + 2)]
    return {"items": _join(items[:n]), "next": items[n], "next2": items[n + 1]}, items[n]


def _next_in_cycle(rng: Random):
    names, unit, units = (WEEKDAYS, "day", "days") if rng.random() < 0.5 else (MONTHS, "month", "months")
    i = rng.randrange(len(names))
    k = rng.randint(1, 4)
    count = ("one", "two", "three", "four")[k - 1]
    after = names[(i + k) % len(names)]  # wraps: the day after Sunday is Monday
    return {"start": names[i], "unit": unit, "units": units,
            "k_units": f"one {unit}" if k == 1 else f"{count} {units}",
            "k_steps": "one step" if k == 1 else f"{count} steps",
            "next1": names[(i + 1) % len(names)], "next2": names[(i + 2) % len(names)], "end": after}, after


# ---------------------------------------------------------------- families

FAMILIES: tuple[Family, ...] = (
    family("next_number", CLUSTER, "The next term of an arithmetic sequence.", _next_number,
           T("What number comes next: {items}, ...?"),
           T("Continue the sequence with one more number: {items}"),
           T("Give the next number in the following sequence.\nInput: {items}"),
           T("Q: The numbers go {items}. What is the next one?\nA:"),
           T("{items}, ?\n\nFill in the question mark. Reply with the number only.", states_format=True),
           T("Sequence: {items}\nNext term:", states_format=True),
           T("Each number below differs from the one before it by the same amount. "
             "What comes after the last one? {items}"),
           T(("What number comes next: {items}?", "{next}", "And the number after that?"), answer="{next2}"),
           T("A counter showed {items}, changing by the same amount each time. What will it show next?"),
           compare="number"),

    family("missing_number", CLUSTER, "The missing term of an arithmetic sequence.", _missing_number,
           T("What number is missing: {items}?"),
           T("Fill in the blank in this sequence: {items}"),
           T("The following sequence changes by the same amount each step. Give the missing number.\nInput: {items}"),
           T("Q: Which number belongs in place of the question mark: {items_q}?\nA:"),
           T("{items_q}\n\nReplace the ? with the right number. Answer with that number only.", states_format=True),
           T("Sequence with a gap: {items}\nMissing number:", states_format=True),
           T("A page of a puzzle book shows {items}. The _ hides one number. Which?"),
           T("Complete the pattern by giving the number that goes where the ? is: {items_q}"),
           compare="number"),

    family("next_letter", CLUSTER, "The next letter of a regular letter sequence.", _next_letter,
           T("What letter comes next: {items}, ...?"),
           T("Continue the letter sequence with one letter: {items}"),
           T("Give the next letter in the following sequence.\nInput: {items}"),
           T("Q: The letters go {items}. What is the next one?\nA:"),
           T("{items}, ?\n\nWhich letter replaces the question mark? Reply with a single letter.", states_format=True),
           T("Letters: {items}\nNext:", states_format=True),
           T("Each letter below skips the same number of alphabet places. Which letter follows? {items}"),
           T("A letter sequence continues as ?, {rest}, {next}. Which letter stands at the start?",
             answer="{first}", inverted=True),
           T("Q: Fill in the first letter: _, {rest}, {next}\nA:", answer="{first}", inverted=True),
           compare="text", near_misses=_neighbour_letters),

    family("previous_letter", CLUSTER, "The letter just before another in the alphabet.", _previous_letter,
           T("Which letter comes right before {letter} in the alphabet?"),
           T("Name the letter that precedes '{letter}'."),
           T("Give the letter immediately before the following one in the alphabet.\nInput: {letter}"),
           T("Q: What letter comes before {letter}?\nA:"),
           T("{run}, ?\n\nThe letters go backwards through the alphabet. Which letter comes next? One letter only.",
             states_format=True),
           T("Letter: {letter}\nPrevious letter:", states_format=True),
           T("Counting the alphabet backwards: {run}... What comes next?"),
           T("{prev} is the letter just before which letter?", answer="{letter}", inverted=True),
           T("Q: Which letter comes right after {prev}? Reply with one letter.\nA:", answer="{letter}",
             inverted=True, states_format=True),
           compare="text", near_misses=_neighbour_letters),

    family("repeating_pattern", CLUSTER, "The next item of a repeating pattern.", _repeating_pattern,
           T("What comes next in the pattern: {items}, ...?"),
           T("Continue this repeating pattern with one more item: {items}"),
           T("The following list repeats a pattern. Give the next item.\nInput: {items}"),
           T("Q: A row of beads goes {items}. Which bead comes next?\nA:"),
           T("{items}, ?\n\nWhat replaces the question mark? Reply with one item only.", states_format=True),
           T("Pattern: {items}\nNext item:", states_format=True),
           T("Someone repeats the same short sequence over and over: {items}. What do they say next?"),
           T(("What comes next in the pattern {items}?", "{next}", "And the item after that?"), answer="{next2}"),
           compare="text"),

    family("next_day_or_month", CLUSTER, "The weekday or month a few steps after another.", _next_in_cycle,
           T("Which {unit} comes {k_units} after {start}?"),
           T("Count {k_units} forward from {start}. Where do you land?"),
           T("Give the {unit} that is {k_units} after the following one.\nInput: {start}"),
           T("Q: If it is {start} now, which {unit} will it be {k_units} later?\nA:"),
           T("Start: {start}\nStep forward: {k_units}\nResult ({unit} name only):", states_format=True),
           T("{start} + {k_units} = ?\nAnswer with the name of the {unit} only.", states_format=True),
           T("Which {unit} comes {k_units} before {end}?", answer="{start}", inverted=True),
           T(("What {unit} comes after {start}?", "{next1}", "And the {unit} after that?"), answer="{next2}"),
           T("Going through the {units} in calendar order, what comes {k_steps} after {start}?"),
           compare="text", near_misses=_other_names),
)
