"""The built-in FLAN-style task suite: many small task families whose answers code can check.

Each `TaskFamily` has a kind (transformation, extraction, classification, arithmetic,
formatting, rewriting), at least four phrasings of its instruction (some inline, some after
"Input:") and a generator that draws a random input and its one gold answer. The answer a model
should give is JUST that short answer, so a ~135M model can learn many families in a few hundred
steps, and `check_answer` can grade a response without a judge.

Families are split into SEEN (trained on) and HELDOUT (never trained on). Each held-out family
resembles a seen one of the same kind, so generalisation is plausible:
  remove_vowels   ~ reverse_word / uppercase   (letter-level transformation of one word)
  sort_numbers    ~ sort_words                 (same output format, numbers instead of words)
  extract_names   ~ extract_email              (pull spans out of a sentence)
  is_prime        ~ parity                     (a property of a number, yes/no style label)
  subtract        ~ add                        (two-number arithmetic)
  count_words     ~ count_items / count_letter (counting)
  format_date     ~ extract_date / csv_to_json (reformat a value)
  swap_first_last ~ plural / past_tense         (rewrite the input)

Everything is deterministic given `seed`: each family draws from its own `random.Random`
seeded with the string "<seed>:<family>" (str seeds are hashed with SHA-512, stable across runs
and Python versions), so adding a family never changes the examples of another.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from random import Random
from typing import Any

from sftlab.builtin.general_text import load_general_text  # noqa: F401  (re-exported for callers)
from sftlab.builtin.words import (
    CATEGORIES,
    COMMON_WORDS,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    NEGATIVE_ADJECTIVES,
    PAST_TENSE,
    PLACES,
    PLURALS,
    POSITIVE_ADJECTIVES,
    REVIEWED_THINGS,
)
from sftlab.conversation import Conversation, Message

Fields = dict[str, str]
Generator = Callable[[Random], tuple[Fields, str]]

KINDS = ("transformation", "extraction", "classification", "arithmetic", "formatting", "rewriting")

# How a response is compared with the gold answer (after `normalise_response`):
#   text     exact string, case-insensitive        number   same integer value
#   text_cs  exact string, case-sensitive          list     same items, same order (", " or spaces)
#   set      same items, any order                 json     parses to the same JSON value
COMPARATORS = ("text", "text_cs", "number", "list", "set", "json")


@dataclass(frozen=True)
class TaskFamily:
    name: str
    kind: str
    description: str
    phrasings: tuple[str, ...]  # str.format templates over the generator's fields
    generator: Generator
    compare: str

    def example(self, rng: Random) -> tuple[str, str, int]:
        """One (instruction, answer, phrasing index) drawn from `rng`."""
        fields, answer = self.generator(rng)
        index = rng.randrange(len(self.phrasings))
        return self.phrasings[index].format(**fields), answer, index

    def check(self, response: str, answer: str) -> bool:
        return _COMPARE[self.compare](response, answer)


# ---------------------------------------------------------------- response normalisation

# Prefixes a model may put before the answer; dropping them cannot change which answer was given.
# "answer"/"output"/"result" only count with a colon, so a bare word answer is never eaten.
_ANSWER_PREFIX = re.compile(r"^\s*(?:the\s+answer\s+is\s*:?|(?:answer|output|result)\s*:)\s*", re.IGNORECASE)
_QUOTE_PAIRS = (('"', '"'), ("'", "'"), ("`", "`"), ("\u201c", "\u201d"), ("\u2018", "\u2019"))


def normalise_response(response: str) -> str:
    """Strip whitespace, an "The answer is"/"Answer:" prefix, one trailing period and quotes.

    Only changes that cannot turn a wrong answer into a right one: the gold answers never end in
    a period and never start with these prefixes or quotes.
    """
    text = response.strip()
    text = _ANSWER_PREFIX.sub("", text, count=1).strip()
    for _ in range(2):  # e.g. '"elppa".' -> '"elppa"' -> 'elppa'
        if text.endswith(".") and not text.endswith(".."):
            text = text[:-1].rstrip()
        for left, right in _QUOTE_PAIRS:
            if len(text) >= 2 and text.startswith(left) and text.endswith(right):
                text = text[1:-1].strip()
    return re.sub(r"\s+", " ", text)


def _items(text: str) -> list[str]:
    """Split a list answer on commas, "and", or whitespace (all unambiguous for one-word items)."""
    text = re.sub(r"\band\b", ",", text, flags=re.IGNORECASE)
    return [t for t in re.split(r"[,\s]+", text.strip()) if t]


def _as_int(text: str) -> int | None:
    text = text.strip()
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+", text):  # "1,234" is unambiguous thousands grouping
        text = text.replace(",", "")
    return int(text) if re.fullmatch(r"-?\d+", text) else None


def _strip_fence(text: str) -> str:
    fenced = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, flags=re.DOTALL)
    return fenced.group(1) if fenced else text


def _cmp_json(response: str, answer: str) -> bool:
    text = _ANSWER_PREFIX.sub("", _strip_fence(response.strip()), count=1)
    try:
        return json.loads(_strip_fence(text)) == json.loads(answer)
    except json.JSONDecodeError:
        return False


_COMPARE: dict[str, Callable[[str, str], bool]] = {
    "text": lambda r, a: normalise_response(r).lower() == a.lower(),
    "text_cs": lambda r, a: normalise_response(r) == a,
    "number": lambda r, a: _as_int(normalise_response(r)) == int(a),
    "list": lambda r, a: [t.lower() for t in _items(normalise_response(r))] == [t.lower() for t in _items(a)],
    "set": lambda r, a: sorted(t.lower() for t in _items(normalise_response(r))) == sorted(t.lower() for t in _items(a)),
    "json": _cmp_json,
}


# ---------------------------------------------------------------- generators

def _word(rng: Random) -> str:
    return rng.choice(COMMON_WORDS)


def _words(rng: Random, lo: int, hi: int) -> list[str]:
    return rng.sample(COMMON_WORDS, rng.randint(lo, hi))


def _date(rng: Random) -> tuple[int, int, int]:
    year, month = rng.randint(1950, 2030), rng.randint(1, 12)
    days = [31, 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28,
            31, 30, 31, 30, 31, 31, 30, 31, 30, 31][month - 1]
    return rng.randint(1, days), month, year


def _is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def gen_reverse_word(rng: Random) -> tuple[Fields, str]:
    w = _word(rng)
    return {"word": w}, w[::-1]


def gen_uppercase(rng: Random) -> tuple[Fields, str]:
    phrase = " ".join(_words(rng, 1, 4))
    return {"text": phrase}, phrase.upper()


def gen_sort_words(rng: Random) -> tuple[Fields, str]:
    ws = _words(rng, 3, 6)
    return {"items": ", ".join(ws)}, ", ".join(sorted(ws))


def gen_sort_numbers(rng: Random) -> tuple[Fields, str]:
    ns = rng.sample(range(1, 100), rng.randint(3, 6))
    return {"items": ", ".join(map(str, ns))}, ", ".join(map(str, sorted(ns)))


def gen_remove_vowels(rng: Random) -> tuple[Fields, str]:
    w = _word(rng)
    return {"word": w}, re.sub(r"[aeiou]", "", w)


_EMAIL_SENTENCES = (
    "You can reach {name} at {email} for more details.",
    "Please send the report to {email} before Friday.",
    "For questions about the {noun}, write to {email} and mention your order.",
    "My new address is {email}, so please update your contacts.",
    "The form was sent from {email} late last night.",
    "Contact {email} if the {noun} arrives damaged.",
)


def gen_extract_email(rng: Random) -> tuple[Fields, str]:
    name = rng.choice(FIRST_NAMES)
    local = rng.choice([name.lower(), f"{name.lower()}.{_word(rng)}", f"{name.lower()}{rng.randint(1, 99)}"])
    email = f"{local}@{rng.choice(EMAIL_DOMAINS)}"
    sentence = rng.choice(_EMAIL_SENTENCES).format(name=name, email=email, noun=_word(rng))
    return {"text": sentence}, email


_NUMBER_SENTENCES = (
    "The library has {n} books about the {noun}.",
    "We walked {n} metres to reach the {place}.",
    "A ticket to the {place} costs {n} cents.",
    "There were {n} people waiting at the {place} this morning.",
    "The farmer sold {n} baskets of fruit at the market.",
    "Our team scored {n} points in the final game.",
    "The old {noun} weighs about {n} grams.",
)


def gen_extract_number(rng: Random) -> tuple[Fields, str]:
    n = str(rng.randint(2, 9999))
    sentence = rng.choice(_NUMBER_SENTENCES).format(n=n, noun=_word(rng), place=rng.choice(PLACES))
    return {"text": sentence}, n


_DATE_SENTENCES = (
    "The meeting was moved to {date} because of the storm.",
    "{name} was born on {date} in a small village.",
    "The museum reopens on {date} after the repairs.",
    "Please return the {noun} by {date} at the latest.",
    "Our records show a payment made on {date}.",
    "The contract was signed on {date} by both parties.",
)


def gen_extract_date(rng: Random) -> tuple[Fields, str]:
    d, m, y = _date(rng)
    date = f"{d:02d}/{m:02d}/{y}"
    sentence = rng.choice(_DATE_SENTENCES).format(date=date, name=rng.choice(FIRST_NAMES), noun=_word(rng))
    return {"text": sentence}, date


def gen_format_date(rng: Random) -> tuple[Fields, str]:
    d, m, y = _date(rng)
    return {"date": f"{d:02d}/{m:02d}/{y}"}, f"{y}-{m:02d}-{d:02d}"


_NAME_SENTENCES = (
    ("{a} and {b} walked to the {place} after lunch.", 2),
    ("{a} gave the {noun} to {b} yesterday.", 2),
    ("{a} asked {b} about the {noun}.", 2),
    ("{a}, {b} and {c} shared a {noun} at the {place}.", 3),
    ("{a} met {b} near the {place}.", 2),
    ("{a} painted the {noun} while {b} and {c} watched.", 3),
)


def gen_extract_names(rng: Random) -> tuple[Fields, str]:
    template, k = rng.choice(_NAME_SENTENCES)
    names = rng.sample(FIRST_NAMES, k)
    sentence = template.format(a=names[0], b=names[1], c=names[-1], noun=_word(rng), place=rng.choice(PLACES))
    return {"text": sentence}, ", ".join(names)


_REVIEWS = {
    "positive": (
        "This {thing} was {adj} and {adj2}.",
        "What a {adj} {thing}! I loved every minute of it.",
        "I really enjoyed the {thing}; it was {adj}.",
        "The {thing} was {adj}, and I will happily come back.",
        "A {adj} {thing}. I would recommend it to anyone.",
    ),
    "negative": (
        "This {thing} was {adj} and {adj2}.",
        "What a {adj} {thing}! I hated every minute of it.",
        "I really regret the {thing}; it was {adj}.",
        "The {thing} was {adj}, and I will never come back.",
        "A {adj} {thing}. I would not recommend it to anyone.",
    ),
}


def gen_sentiment(rng: Random) -> tuple[Fields, str]:
    label = rng.choice(("positive", "negative"))
    adjs = POSITIVE_ADJECTIVES if label == "positive" else NEGATIVE_ADJECTIVES
    adj, adj2 = rng.sample(adjs, 2)
    review = rng.choice(_REVIEWS[label]).format(thing=rng.choice(REVIEWED_THINGS), adj=adj, adj2=adj2)
    return {"text": review}, label


def gen_parity(rng: Random) -> tuple[Fields, str]:
    n = rng.randint(1, 9999)
    return {"n": str(n)}, "even" if n % 2 == 0 else "odd"


_PRIMES_TO_100 = tuple(n for n in range(2, 101) if _is_prime(n))
_COMPOSITES_TO_100 = tuple(n for n in range(4, 101) if not _is_prime(n))


def gen_is_prime(rng: Random) -> tuple[Fields, str]:
    # Half primes, half composites: drawing uniformly from 2..100 would give 75% "no".
    prime = rng.random() < 0.5
    n = rng.choice(_PRIMES_TO_100 if prime else _COMPOSITES_TO_100)
    return {"n": str(n)}, "yes" if prime else "no"


def gen_odd_one_out(rng: Random) -> tuple[Fields, str]:
    main, other = rng.sample(sorted(CATEGORIES), 2)
    group = rng.sample(CATEGORIES[main], 3)
    odd = rng.choice(CATEGORIES[other])
    items = group + [odd]
    rng.shuffle(items)
    return {"items": ", ".join(items)}, odd


def gen_add(rng: Random) -> tuple[Fields, str]:
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    return {"a": str(a), "b": str(b)}, str(a + b)


def gen_subtract(rng: Random) -> tuple[Fields, str]:
    a = rng.randint(10, 99)
    b = rng.randint(1, a)  # never negative: the seen "add" family never produces a minus sign
    return {"a": str(a), "b": str(b)}, str(a - b)


def gen_multiply(rng: Random) -> tuple[Fields, str]:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return {"a": str(a), "b": str(b)}, str(a * b)


def gen_count_letter(rng: Random) -> tuple[Fields, str]:
    w = _word(rng)
    # 80% a letter of the word, 20% any letter (so "0" is sometimes right).
    letter = rng.choice(w) if rng.random() < 0.8 else rng.choice("abcdefghijklmnopqrstuvwxyz")
    return {"word": w, "letter": letter}, str(w.count(letter))


def gen_count_items(rng: Random) -> tuple[Fields, str]:
    ws = _words(rng, 2, 9)
    return {"items": ", ".join(ws)}, str(len(ws))


def gen_count_words(rng: Random) -> tuple[Fields, str]:
    ws = [rng.choice(COMMON_WORDS) for _ in range(rng.randint(3, 12))]
    return {"text": " ".join(ws)}, str(len(ws))


def gen_csv_to_json(rng: Random) -> tuple[Fields, str]:
    ws = _words(rng, 2, 5)
    return {"items": ", ".join(ws)}, json.dumps(ws)


def gen_plural(rng: Random) -> tuple[Fields, str]:
    noun = rng.choice(sorted(PLURALS))
    return {"word": noun}, PLURALS[noun]


def gen_past_tense(rng: Random) -> tuple[Fields, str]:
    verb = rng.choice(sorted(PAST_TENSE))
    return {"word": verb}, PAST_TENSE[verb]


def gen_swap_first_last(rng: Random) -> tuple[Fields, str]:
    ws = _words(rng, 3, 7)
    swapped = [ws[-1], *ws[1:-1], ws[0]]
    return {"text": " ".join(ws)}, " ".join(swapped)


# ---------------------------------------------------------------- the families

def _family(name: str, kind: str, description: str, compare: str, generator: Generator,
            *phrasings: str) -> TaskFamily:
    return TaskFamily(name, kind, description, tuple(phrasings), generator, compare)


_ALL = (
    _family("reverse_word", "transformation", "Spell a word backwards.", "text", gen_reverse_word,
            "Reverse the word '{word}'.",
            "Write the word {word} backwards.",
            "Spell the following word in reverse order.\nInput: {word}",
            "What is '{word}' spelled backwards? Reply with the reversed word only.",
            "Reverse the letters of this word.\n\nInput: {word}"),
    _family("uppercase", "transformation", "Convert text to upper case.", "text_cs", gen_uppercase,
            "Convert to uppercase: {text}",
            "Rewrite '{text}' in capital letters.",
            "Write the following text in all caps.\nInput: {text}",
            "Change every letter of this text to upper case.\n\nInput: {text}",
            "Make this uppercase: \"{text}\""),
    _family("sort_words", "transformation", "Sort words alphabetically.", "list", gen_sort_words,
            "Sort these words alphabetically: {items}",
            "Put the following words in alphabetical order.\nInput: {items}",
            "Arrange {items} from A to Z, separated by commas.",
            "Alphabetise this list of words.\n\nInput: {items}",
            "Order the words alphabetically and list them with commas: {items}"),
    _family("sort_numbers", "transformation", "Sort numbers ascending.", "list", gen_sort_numbers,
            "Sort these numbers from smallest to largest: {items}",
            "Put the following numbers in ascending order.\nInput: {items}",
            "Arrange {items} in increasing order, separated by commas.",
            "Order this list of numbers from low to high.\n\nInput: {items}",
            "List the numbers sorted ascending: {items}"),
    _family("remove_vowels", "transformation", "Delete the vowels a, e, i, o, u from a word.", "text", gen_remove_vowels,
            "Remove all vowels from the word '{word}'.",
            "Write {word} without its vowels (a, e, i, o, u).",
            "Delete every vowel from the following word.\nInput: {word}",
            "What is left of '{word}' after taking out the vowels?",
            "Strip the vowels from this word.\n\nInput: {word}"),
    _family("extract_email", "extraction", "Find the email address in a sentence.", "text", gen_extract_email,
            "Extract the email address from this sentence: {text}",
            "What email address is mentioned here? {text}",
            "Find the email address in the following text.\nInput: {text}",
            "Return only the email address.\n\nInput: {text}",
            "Which email address appears in \"{text}\"?"),
    _family("extract_number", "extraction", "Find the number in a sentence.", "number", gen_extract_number,
            "Extract the number from this sentence: {text}",
            "What number is mentioned here? {text}",
            "Find the number in the following text.\nInput: {text}",
            "Return only the number that appears in the text.\n\nInput: {text}",
            "Which number appears in \"{text}\"?"),
    _family("extract_date", "extraction", "Find the DD/MM/YYYY date in a sentence.", "text", gen_extract_date,
            "Extract the date from this sentence: {text}",
            "What date is mentioned here? {text}",
            "Find the date in the following text.\nInput: {text}",
            "Return only the date, exactly as written.\n\nInput: {text}",
            "Which date appears in \"{text}\"?"),
    _family("extract_names", "extraction", "List the people's names in a sentence.", "set", gen_extract_names,
            "List the names of the people in this sentence: {text}",
            "Which people are mentioned here? Give their names separated by commas. {text}",
            "Extract the person names from the following text.\nInput: {text}",
            "Return only the names of the people, comma-separated.\n\nInput: {text}",
            "Who is mentioned in \"{text}\"? List the names."),
    _family("sentiment", "classification", "Is a short review positive or negative?", "text", gen_sentiment,
            "Is this review positive or negative? {text}",
            "Classify the sentiment of the following review as positive or negative.\nInput: {text}",
            "Review: {text}\nAnswer with positive or negative.",
            "What is the sentiment (positive/negative) of this text?\n\nInput: {text}",
            "Does the writer of \"{text}\" feel positive or negative?"),
    _family("parity", "classification", "Is a number even or odd?", "text", gen_parity,
            "Is {n} even or odd?",
            "Tell me whether the number {n} is odd or even.",
            "Classify the following number as even or odd.\nInput: {n}",
            "Even or odd?\n\nInput: {n}",
            "Answer even or odd: is {n} divisible by two?"),
    _family("is_prime", "classification", "Is a number prime? (yes/no)", "text", gen_is_prime,
            "Is {n} a prime number? Answer yes or no.",
            "Answer yes or no: is the number {n} prime?",
            "Decide whether the following number is prime. Reply yes or no.\nInput: {n}",
            "Prime or not? Say yes if it is prime and no otherwise.\n\nInput: {n}",
            "Yes or no: does {n} have exactly two divisors?"),
    _family("odd_one_out", "classification", "Which word does not belong with the others?", "text", gen_odd_one_out,
            "Which word is the odd one out: {items}?",
            "Find the word that does not belong: {items}",
            "One of these words belongs to a different category. Which one?\nInput: {items}",
            "Name the odd one out.\n\nInput: {items}",
            "Three of {items} belong together. Which word is different?"),
    _family("add", "arithmetic", "Add two numbers.", "number", gen_add,
            "What is {a} plus {b}?",
            "Add {a} and {b}.",
            "Compute the sum of the following numbers.\nInput: {a}, {b}",
            "Calculate {a} + {b}.",
            "Find the total.\n\nInput: {a} + {b}"),
    _family("subtract", "arithmetic", "Subtract one number from another.", "number", gen_subtract,
            "What is {a} minus {b}?",
            "Subtract {b} from {a}.",
            "Compute the difference of the following numbers (first minus second).\nInput: {a}, {b}",
            "Calculate {a} - {b}.",
            "Find the difference.\n\nInput: {a} - {b}"),
    _family("multiply", "arithmetic", "Multiply two numbers.", "number", gen_multiply,
            "What is {a} times {b}?",
            "Multiply {a} by {b}.",
            "Compute the product of the following numbers.\nInput: {a}, {b}",
            "Calculate {a} x {b}.",
            "Find the product.\n\nInput: {a} * {b}"),
    _family("count_letter", "arithmetic", "Count a letter in a word.", "number", gen_count_letter,
            "How many times does the letter '{letter}' appear in '{word}'?",
            "Count the letter {letter} in the word {word}.",
            "Count how often the given letter occurs in the word.\nInput: letter={letter}, word={word}",
            "In the word \"{word}\", how many '{letter}'s are there?",
            "Number of '{letter}' characters?\n\nInput: {word}"),
    _family("count_items", "arithmetic", "Count the items in a list.", "number", gen_count_items,
            "How many items are in this list: {items}?",
            "Count the items in the following list.\nInput: {items}",
            "How long is the list {items}? Give the number of items.",
            "Tell me the number of entries.\n\nInput: {items}",
            "Count the comma-separated items: {items}"),
    _family("count_words", "arithmetic", "Count the words in a text.", "number", gen_count_words,
            "How many words are in this text: {text}?",
            "Count the words in the following text.\nInput: {text}",
            "How many words does \"{text}\" contain?",
            "Tell me the number of words.\n\nInput: {text}",
            "Count the space-separated words: {text}"),
    _family("csv_to_json", "formatting", "Turn a comma-separated list into a JSON array.", "json", gen_csv_to_json,
            "Convert this comma-separated list to a JSON array: {items}",
            "Write the following list as a JSON array of strings.\nInput: {items}",
            "Format {items} as a JSON list.",
            "Turn the comma-separated values into JSON.\n\nInput: {items}",
            "Give a JSON array containing: {items}"),
    _family("format_date", "formatting", "Rewrite DD/MM/YYYY as YYYY-MM-DD.", "text", gen_format_date,
            "Convert the date {date} from DD/MM/YYYY to YYYY-MM-DD.",
            "Rewrite the following DD/MM/YYYY date in ISO format (YYYY-MM-DD).\nInput: {date}",
            "Format {date} as YYYY-MM-DD.",
            "Change this date to year-month-day format.\n\nInput: {date}",
            "What is {date} (day/month/year) in ISO 8601 form?"),
    _family("plural", "rewriting", "Give the plural of a noun.", "text", gen_plural,
            "What is the plural of '{word}'?",
            "Write the plural form of the noun {word}.",
            "Give the plural of the following word.\nInput: {word}",
            "One {word}, two what?",
            "Pluralise this noun.\n\nInput: {word}"),
    _family("past_tense", "rewriting", "Give the simple past of a verb.", "text", gen_past_tense,
            "What is the past tense of '{word}'?",
            "Write the simple past form of the verb {word}.",
            "Give the past tense of the following verb.\nInput: {word}",
            "Fill in the blank with the past tense of '{word}': Yesterday I ___.",
            "Put this verb in the past tense.\n\nInput: {word}"),
    _family("swap_first_last", "rewriting", "Swap the first and last words.", "text", gen_swap_first_last,
            "Swap the first and last words of: {text}",
            "Exchange the first word and the last word in the following text.\nInput: {text}",
            "Rewrite \"{text}\" with its first and last words swapped.",
            "Move the last word to the front and the first word to the end.\n\nInput: {text}",
            "Switch the positions of the first and final words: {text}"),
)

FAMILIES: dict[str, TaskFamily] = {f.name: f for f in _ALL}

SEEN_FAMILIES: tuple[str, ...] = (
    "reverse_word", "uppercase", "sort_words", "extract_email", "extract_number", "extract_date",
    "sentiment", "parity", "odd_one_out", "add", "multiply", "count_letter", "count_items",
    "csv_to_json", "plural", "past_tense",
)
HELDOUT_FAMILIES: tuple[str, ...] = (
    "remove_vowels", "sort_numbers", "extract_names", "is_prime", "subtract", "count_words",
    "format_date", "swap_first_last",
)


def _split_of(family: str) -> str:
    return "seen" if family in SEEN_FAMILIES else "heldout"


# ---------------------------------------------------------------- building examples

def _unique_examples(family: str, n: int, seed: int) -> list[tuple[str, str, int]]:
    """`n` examples of `family` with pairwise different instructions, in a deterministic order.

    Raises ValueError when the family cannot yield `n` distinct instructions (e.g. `plural` has
    80 nouns x 5 phrasings = 400 at most) instead of silently returning fewer or repeating.
    """
    fam = FAMILIES[family]
    rng = Random(f"{seed}:{family}")
    seen: set[str] = set()
    out: list[tuple[str, str, int]] = []
    # Give up after 5,000 draws in a row bring nothing new: even the 399th of plural's 400
    # instructions takes ~200 draws on average, so this only triggers past a family's capacity.
    attempts, stale = 0, 0
    while len(out) < n and stale < 5000:
        attempts += 1
        instruction, answer, index = fam.example(rng)
        if instruction in seen:
            stale += 1
            continue
        stale = 0
        seen.add(instruction)
        out.append((instruction, answer, index))
    if len(out) < n:
        raise ValueError(
            f"task family {family!r}: only {len(out)} distinct instructions found in {attempts} draws, "
            f"{n} requested; fix: ask for at most {len(out)} examples of this family"
        )
    return out


def _conversation(family: str, index: int, instruction: str, answer: str, phrasing: int) -> Conversation:
    fam = FAMILIES[family]
    return Conversation(
        messages=(Message("user", instruction), Message("assistant", answer)),
        source=f"builtin:{family}[{index}]",
        meta={"family": family, "kind": fam.kind, "split": _split_of(family), "answer": answer,
              "phrasing": phrasing},
    )


def _check_names(families: Iterable[str]) -> list[str]:
    names = list(families)
    unknown = [f for f in names if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown task families {unknown}; fix: use names from {sorted(FAMILIES)}")
    return names


def build_suite(n_per_family: int, *, families: Iterable[str] | None = None, seed: int = 0) -> list[Conversation]:
    """`n_per_family` examples of each family (all families by default), family by family."""
    names = _check_names(FAMILIES if families is None else families)
    return [
        _conversation(name, i, instr, ans, ph)
        for name in names
        for i, (instr, ans, ph) in enumerate(_unique_examples(name, n_per_family, seed))
    ]


def train_eval_split(seed: int = 0, n_train_per_family: int = 200,
                     n_eval_per_family: int = 40) -> tuple[list[Conversation], list[Conversation]]:
    """Train on SEEN families; evaluate on unseen examples of SEEN families and on HELDOUT families.

    Each seen family draws one pool of n_train + n_eval distinct instructions: the first
    n_train train, the rest evaluate, so no eval instruction string equals a train one.
    Eval examples of seen families keep meta split="seen"; held-out families have split="heldout".
    """
    train: list[Conversation] = []
    evaluation: list[Conversation] = []
    for name in SEEN_FAMILIES:
        pool = _unique_examples(name, n_train_per_family + n_eval_per_family, seed)
        for i, (instr, ans, ph) in enumerate(pool):
            (train if i < n_train_per_family else evaluation).append(_conversation(name, i, instr, ans, ph))
    for name in HELDOUT_FAMILIES:
        for i, (instr, ans, ph) in enumerate(_unique_examples(name, n_eval_per_family, seed)):
            evaluation.append(_conversation(name, i, instr, ans, ph))
    return train, evaluation


# ---------------------------------------------------------------- checking answers

def check(family: str, response: str, example_meta: Mapping[str, Any]) -> bool:
    """True when `response` gives the gold answer in `example_meta["answer"]` for `family`."""
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; fix: use one of {sorted(FAMILIES)}")
    return FAMILIES[family].check(response, str(example_meta["answer"]))


def check_answer(conversation_or_meta: Conversation | Mapping[str, Any], response: str) -> bool:
    """Grade a model response against a built-in example (a Conversation or its meta dict)."""
    meta = conversation_or_meta.meta if isinstance(conversation_or_meta, Conversation) else conversation_or_meta
    missing = [k for k in ("family", "answer") if k not in meta]
    if missing:
        raise ValueError(f"example meta lacks {missing}; fix: pass a Conversation made by build_suite "
                         f"or train_eval_split (its meta has 'family' and 'answer')")
    return check(str(meta["family"]), response, meta)
