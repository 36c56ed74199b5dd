"""Cluster 'comparison' of the FLAN-style mixture: given two things (numbers, words, dates, bags of
stated weight), name the one that is larger, longer, earlier, heavier..., or say whether two words
are anagrams. Held out whole (see sftlab.builtin.flan.HELDOUT_CLUSTERS). Every pair is drawn without
ties, so exactly one of the two is the answer.

(See sftlab.builtin.flan.base for how families and templates are written.)"""

from __future__ import annotations

from calendar import monthrange
from random import Random

from sftlab.builtin.flan.base import Family, T, family
from sftlab.builtin.flan.classification import label_misses
from sftlab.builtin.tasks import _date
from sftlab.builtin.words import ANAGRAM_GROUPS, COMMON_WORDS, FIRST_NAMES, MONTHS

CLUSTER = "comparison"
HELDOUT_FAMILY: str | None = None  # a held-out cluster: every family is unseen already


# ---------------------------------------------------------------- generators

def _larger_number(rng: Random):
    a = rng.randint(1, 999)
    # half the pairs lie in the same hundred, so the first digit alone does not decide
    if rng.random() < 0.5:
        b = rng.randint(a // 100 * 100 or 1, a // 100 * 100 + 99)
    else:
        b = rng.randint(1, 999)
    if a == b:
        b = a + 1 if a < 999 else a - 1
    hi, lo = max(a, b), min(a, b)
    return {"a": str(a), "b": str(b), "larger": str(hi), "smaller": str(lo)}, str(hi)


def _longer_word(rng: Random):
    a = rng.choice(COMMON_WORDS)
    b = rng.choice([w for w in COMMON_WORDS if len(w) != len(a)])  # equal lengths would be a tie
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    return {"a": a, "b": b, "longer": longer, "shorter": shorter, "n": str(len(longer))}, longer


def _alphabetical_first(rng: Random):
    a = rng.choice(COMMON_WORDS)
    # half the pairs start with the same letter, so the first letter alone does not decide
    same = [w for w in COMMON_WORDS if w[0] == a[0] and w != a]
    b = rng.choice(same if same and rng.random() < 0.5 else [w for w in COMMON_WORDS if w != a])
    first, last = sorted((a, b))
    return {"a": a, "b": b, "first": first, "last": last}, first


def _written(date: tuple[int, int, int]) -> str:
    d, m, y = date
    return f"{d} {MONTHS[m - 1]} {y}"  # spelled-out month: "03/04/2001" reads differently in the US and UK


def _earlier_date(rng: Random):
    a = _date(rng)
    kind = rng.randrange(3)  # a third each: any two dates, same year, same year and month
    b = a
    while b == a:
        if kind == 0:
            b = _date(rng)
        elif kind == 1:
            month = rng.randint(1, 12)
            b = (rng.randint(1, monthrange(a[2], month)[1]), month, a[2])
        else:
            b = (rng.randint(1, monthrange(a[2], a[1])[1]), a[1], a[2])
    earlier, later = sorted((a, b), key=lambda d: (d[2], d[1], d[0]))
    fields = {"a": _written(a), "b": _written(b), "earlier": _written(earlier), "later": _written(later)}
    return fields, fields["earlier"]


def _anagrams(rng: Random):
    group = rng.choice([g for g in ANAGRAM_GROUPS if len(g) >= 2])
    if rng.random() < 0.5:
        a, b = rng.sample(group, 2)
    else:
        a = rng.choice(group)
        # same length, so the length alone does not give "no" away
        pool = [w for g in ANAGRAM_GROUPS for w in g] + list(COMMON_WORDS)
        b = rng.choice([w for w in pool if len(w) == len(a) and sorted(w) != sorted(a)])
    return {"a": a, "b": b}, "yes" if sorted(a) == sorted(b) else "no"


def _heavier(rng: Random):
    x, y = rng.sample(FIRST_NAMES, 2)  # x carries the heavier bag
    wx = rng.randint(3, 25)
    wy = rng.randint(1, wx - 1)
    # the fact states the order in one of several ways; the names are mentioned in either order
    facts = (
        f"{x}'s bag weighs {wx} kg and {y}'s bag weighs {wy} kg.",
        f"{y}'s bag weighs {wy} kg and {x}'s bag weighs {wx} kg.",
        f"{x}'s bag is heavier than {y}'s bag.",
        f"{y}'s bag is lighter than {x}'s bag.",
        f"{y}'s bag weighs {wy} kg; {x}'s bag weighs {wx - wy} kg more.",
        f"{x}'s bag weighs {wx} kg; {y}'s bag weighs {wx - wy} kg less.",
    )
    first, second = (x, y) if rng.random() < 0.5 else (y, x)
    return {"fact": rng.choice(facts), "first": first, "second": second, "heavier": x, "lighter": y}, x


# ---------------------------------------------------------------- families

FAMILIES: tuple[Family, ...] = (
    family("larger_number", CLUSTER, "The larger of two numbers.", _larger_number,
           T("Which is larger, {a} or {b}?"),
           T("Tell me the bigger number: {a} or {b}."),
           T("Return the larger of the two numbers.\nInput: {a}, {b}"),
           T("Q: {a} and {b} - which one is greater?\nA:"),
           T("{a}\n{b}\n\nWrite the greater of these two numbers and nothing else.", states_format=True),
           T("Numbers: {a}, {b}\nMaximum:", states_format=True),
           T("Two players scored {a} and {b} points. What was the higher score?"),
           T(("Which is larger, {a} or {b}?", "{larger}", "And which is the smaller one?"), answer="{smaller}"),
           T("Write down whichever of {a} and {b} is greater. Reply with the number only.", states_format=True),
           compare="number"),

    family("longer_word", CLUSTER, "The longer of two words.", _longer_word,
           T("Which word is longer, '{a}' or '{b}'?"),
           T("Tell me which of these two words has more letters: {a}, {b}."),
           T("Return the longer of the following two words.\nInput: {a}, {b}"),
           T("Q: \"{a}\" or \"{b}\": which word is spelled with more letters?\nA:"),
           T("{a}\n{b}\n\nWrite the longer of these two words, and only that word.", states_format=True),
           T("Words: {a}, {b}\nLonger word:", states_format=True),
           T("Count the letters of {a} and of {b}. Which word has the larger count?"),
           T(("Which word is shorter, '{a}' or '{b}'?", "{shorter}", "And which one is longer?")),
           T("One of '{a}' and '{b}' has {n} letters and is the longer word. Which one?"),
           compare="text"),

    family("alphabetical_first", CLUSTER, "Which of two words comes first alphabetically?", _alphabetical_first,
           T("Which word comes first in alphabetical order: '{a}' or '{b}'?"),
           T("Tell me which of {a} and {b} would appear earlier in a dictionary."),
           T("Return the word that comes first alphabetically.\nInput: {a}, {b}"),
           T("Q: Sorting \"{a}\" and \"{b}\" from A to Z, which word is first?\nA:"),
           T("{a}\n{b}\n\nWhich of these two words is alphabetically earlier? Reply with that word only.",
             states_format=True),
           T("Words: {a}, {b}\nFirst in alphabetical order:", states_format=True),
           T(("Which word comes first alphabetically, '{a}' or '{b}'?", "{first}",
              "And which one comes last?"), answer="{last}"),
           T("In a dictionary, which entry would you find before the other: {a} or {b}?"),
           compare="text"),

    family("earlier_date", CLUSTER, "The earlier of two dates.", _earlier_date,
           T("Which date is earlier, {a} or {b}?"),
           T("Tell me which of these two dates comes first: {a}; {b}."),
           T("Return the earlier of the following two dates, written as in the input.\nInput: {a} | {b}",
             states_format=True),
           T("Q: One event happened on {a} and another on {b}. Which date came first?\nA:"),
           T("{a}\n{b}\n\nWhich of these dates is earlier? Copy it exactly as written above.", states_format=True),
           T("Dates: {a}; {b}\nEarliest:", states_format=True),
           T(("Which date is earlier, {a} or {b}?", "{earlier}", "And which is the later date?"), answer="{later}"),
           T("Two letters were posted on {a} and {b}. On which date was the first one posted?"),
           compare="text"),

    family("are_anagrams", CLUSTER, "Are two words anagrams of each other? (yes/no)", _anagrams,
           T("Are '{a}' and '{b}' anagrams? Answer yes or no.", states_format=True),
           T("Can the letters of {a} be rearranged to spell {b}?"),
           T("Decide whether the two words below are anagrams of each other.\nInput: {a}, {b}"),
           T("Q: Do \"{a}\" and \"{b}\" use exactly the same letters?\nA:"),
           T("{a}\n{b}\n\nAnagrams or not? Reply yes or no.", states_format=True),
           T("Words: {a}, {b}\nAnagrams (yes/no):", states_format=True),
           T("An anagram is a word made by reordering all the letters of another word, like 'listen' and "
             "'silent'. Are {a} and {b} anagrams?"),
           T("Yes or no: shuffling the letters of '{a}' can give '{b}'.", states_format=True),
           compare="text", near_misses=label_misses("yes", "no")),

    family("heavier_bag", CLUSTER, "Whose bag is heavier, from a stated fact?", _heavier,
           T("{fact} Whose bag is heavier?"),
           T("{fact} Who is carrying the heavier bag, {first} or {second}?"),
           T("Read the fact and name the person with the heavier bag.\nFact: {fact}"),
           T("Q: {fact} Which bag weighs more, {first}'s or {second}'s? Give the owner's name.\nA:",
             states_format=True),
           T("{fact}\n\nWhose bag is heavier? Reply with a name only.", states_format=True),
           T("Fact: {fact}\nOwner of the heavier bag:", states_format=True),
           T("{fact} Whose bag is lighter?", answer="{lighter}"),
           T(("{fact} Whose bag is heavier?", "{heavier}", "And whose bag is the lighter one?"), answer="{lighter}"),
           T("{first} and {second} each carry a bag. {fact} Who has to carry more weight?"),
           compare="text"),
)
