"""Cluster 'counting' of the FLAN-style mixture: how many letters, digits, words, items or sentences.

(See sftlab.builtin.flan.base for how families and templates are written.)"""

from __future__ import annotations

from random import Random

from sftlab.builtin.flan.base import Family, T, default_near_misses, family
from sftlab.builtin.tasks import _COMPARE, gen_count_items, gen_count_letter, gen_count_words
from sftlab.builtin.words import CATEGORIES, COMMON_WORDS, FIRST_NAMES, PLACES

CLUSTER = "counting"
# Held out inside the trained cluster: count_items counts comma-separated entries and
# count_occurrences counts words in running text; counting all the words of a text is neither.
HELDOUT_FAMILY: str | None = "count_words"

_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def _count_misses(answer: str) -> list[str]:
    # base.default_near_misses adds "{n}0", which for a count of 0 is "00" - the same number.
    n = int(answer)
    return [str(n + 1), str(n + 10)] + ([str(n - 1)] if n > 0 else [])


def _count_letter(rng: Random):
    fields, answer = gen_count_letter(rng)
    return {**fields, "length": str(len(fields["word"]))}, answer


# No words with a "y": whether it counts as a vowel would give two defensible answers.
_WORDS_WITHOUT_Y = tuple(w for w in COMMON_WORDS if "y" not in w)


def _count_vowels(rng: Random):
    word = rng.choice(_WORDS_WITHOUT_Y)
    return {"word": word}, str(sum(c in "aeiou" for c in word))


def _count_digits(rng: Random):
    length = rng.randint(6, 12)
    digits = set(rng.sample(range(length), rng.randint(1, length - 1)))
    code = "".join(rng.choice("0123456789") if i in digits else rng.choice(_ALPHABET) for i in range(length))
    return {"code": code}, str(len(digits))


# No abbreviations or decimals, so every ".", "!" and "?" ends a sentence. The nouns are objects, so
# the sentences make sense ("Where is the violin?", not "Where is the teach?").
_OBJECTS = tuple(w for cat in ("furniture", "tool", "instrument", "vehicle") for w in CATEGORIES[cat] if w != "pliers")
_SENTENCES = (
    "The {noun} is still here.",
    "{name} went to the {place}.",
    "It was a quiet morning.",
    "Where is the {noun}?",
    "What a lovely day!",
    "{name} bought a new {noun}.",
    "We waited near the {place} for an hour.",
    "The weather was cold.",
    "Did {name} call you?",
    "I like the {noun} very much.",
    "Nobody knew where the {noun} had gone.",
)


def _count_sentences(rng: Random):
    n = rng.randint(1, 6)
    text = " ".join(rng.choice(_SENTENCES).format(noun=rng.choice(_OBJECTS), name=rng.choice(FIRST_NAMES),
                                                  place=rng.choice(PLACES)) for _ in range(n))
    return {"text": text}, str(n)


_CATEGORY_PLURALS = {"fruit": "fruits", "animal": "animals", "colour": "colours", "vehicle": "vehicles",
                     "instrument": "musical instruments", "body part": "body parts",
                     "furniture": "pieces of furniture", "tool": "tools"}
# Words with a second reading in another category (a kiwi is also a bird; peach, plum and cherry are
# also colours) would make the count depend on the reading.
_TWO_READINGS = {"kiwi", "peach", "plum", "cherry"}
_MEMBERS = {cat: tuple(w for w in words if w not in _TWO_READINGS) for cat, words in CATEGORIES.items()}


def _count_category(rng: Random):
    category = rng.choice(sorted(_MEMBERS))
    k = rng.randint(0, 4)
    others = [w for cat in sorted(_MEMBERS) if cat != category for w in _MEMBERS[cat]]
    items = rng.sample(_MEMBERS[category], k) + rng.sample(others, rng.randint(max(2, 4 - k), 8 - k))
    rng.shuffle(items)
    return {"items": ", ".join(items), "category": _CATEGORY_PLURALS[category]}, str(k)


def _count_occurrences(rng: Random):
    # The target appears 2-5 times and every other word once, so "which word is repeated" (the
    # inverted templates) has one answer too.
    target, *others = rng.sample(COMMON_WORDS, rng.randint(4, 8))
    n = rng.randint(2, 5)
    ws = [target] * n + others
    rng.shuffle(ws)
    return {"text": " ".join(ws), "target": target, "n": str(n)}, str(n)


def _count_or_word(response: str, answer: str) -> bool:
    """A count, or (inverted templates) the repeated word."""
    return _COMPARE["number" if answer.isdigit() else "text"](response, answer)


def _count_or_word_misses(answer: str) -> list[str]:
    return _count_misses(answer) if answer.isdigit() else default_near_misses("text", answer)


FAMILIES: tuple[Family, ...] = (
    family("count_letter", CLUSTER, "Count a letter in a word.", _count_letter,
           T("How many times does the letter '{letter}' appear in '{word}'?"),
           T("Count the letter {letter} in the word {word}."),
           T("Count how often the given letter occurs in the word.\nInput: letter={letter}, word={word}"),
           T("In the word \"{word}\", how many '{letter}'s are there?"),
           T("Number of '{letter}' characters?\n\nInput: {word}"),
           T("Q: How often does \"{letter}\" occur in the word \"{word}\"?\nA:"),
           T("{word}\n\nHow many letters in the word above are '{letter}'? Reply with a number only.",
             states_format=True),
           T(("Let's look at the word '{word}'.", "Sure. '{word}' has {length} letters.",
              "How many of them are '{letter}'?")),
           T("Word: {word}\nLetter: {letter}\nCount (write 0 if it does not appear):", states_format=True),
           compare="number", near_misses=_count_misses),
    family("count_items", CLUSTER, "Count the items in a list.", gen_count_items,
           T("How many items are in this list: {items}?"),
           T("Count the items in the following list.\nInput: {items}"),
           T("How long is the list {items}? Give the number of items.", states_format=True),
           T("Tell me the number of entries.\n\nInput: {items}"),
           T("Count the comma-separated items: {items}"),
           T("Q: How many things are listed in \"{items}\"?\nA:"),
           T("{items}\n\nHow many words does the list above contain? Answer with a single number.",
             states_format=True),
           T(("Here is my shopping list: {items}", "Got it, I have your shopping list.",
              "How many things are on it?")),
           T("List: {items}\nNumber of items:"),
           compare="number"),
    family("count_words", CLUSTER, "Count the words in a text.", gen_count_words,
           T("How many words are in this text: {text}?"),
           T("Count the words in the following text.\nInput: {text}"),
           T("How many words does \"{text}\" contain?"),
           T("Tell me the number of words.\n\nInput: {text}"),
           T("Count the space-separated words: {text}"),
           T("Q: What is the word count of \"{text}\"?\nA:"),
           T("{text}\n\nHow many words are in the line above? Reply with the number only.", states_format=True),
           T("Text: {text}\nWord count:"),
           compare="number"),
    family("count_vowels", CLUSTER, "Count the vowels (a, e, i, o, u) in a word.", _count_vowels,
           T("How many vowels are in the word '{word}'?"),
           T("Count the vowels (a, e, i, o, u) in {word}."),
           T("Count the vowels in the following word.\nInput: {word}"),
           T("Q: How many of the letters in \"{word}\" are vowels?\nA:"),
           T("{word}\n\nHow many times does a, e, i, o or u occur in that word? Give just the number.",
             states_format=True),
           T("Number of vowels?\n\nInput: {word}"),
           T("Word: {word}\nVowel count:"),
           T("Tell me how many vowel letters the word \"{word}\" has. Answer with a digit.", states_format=True),
           compare="number"),
    family("count_digits", CLUSTER, "Count the digits in a string of letters and digits.", _count_digits,
           T("How many digits are in '{code}'?"),
           T("Count the numerals (0-9) in the code {code}."),
           T("Count the digit characters in the following string.\nInput: {code}"),
           T("Q: How many of the characters in \"{code}\" are digits?\nA:"),
           T("{code}\n\nIgnore the letters in the string above and count the digits. Reply with the count only.",
             states_format=True),
           T("My password is {code}. How many numbers does it contain, counting each digit separately?"),
           T("String: {code}\nNumber of digits:"),
           T("How many characters of \"{code}\" are 0, 1, 2, 3, 4, 5, 6, 7, 8 or 9? Give a number.",
             states_format=True),
           compare="number"),
    family("count_sentences", CLUSTER, "Count the sentences in a short text.", _count_sentences,
           T("How many sentences are in this text? {text}"),
           T("Count the sentences in the following text.\nInput: {text}"),
           T("Q: How many sentences does \"{text}\" have?\nA:"),
           T("{text}\n\nHow many sentences are there in the text above? Reply with a number only.",
             states_format=True),
           T("Tell me the number of sentences.\n\nInput: {text}"),
           T("Text: {text}\nSentence count:"),
           T("Each sentence ends with a full stop, a question mark or an exclamation mark. How many sentences "
             "are in: {text}"),
           T("Read this and say how many separate sentences it contains, as a digit: {text}", states_format=True),
           compare="number"),
    family("count_category", CLUSTER, "Count the items of one category in a list.", _count_category,
           T("How many {category} are in this list: {items}?"),
           T("Count the {category} in the following list.\nInput: {items}"),
           T("Q: In the list {items}, how many words name {category}?\nA:"),
           T("{items}\n\nHow many of the words above are {category}? Reply with a number only (0 if none).",
             states_format=True),
           T("List: {items}\nNumber of {category}:"),
           T("Some of these words are {category} and some are not. How many are?\n\nInput: {items}"),
           T("Tell me how many {category} appear in {items}."),
           T("Look at this list: {items}. Count only the {category} and answer with a single number.",
             states_format=True),
           compare="number", near_misses=_count_misses),
    family("count_occurrences", CLUSTER, "Count how often a word occurs in a text.", _count_occurrences,
           T("How many times does the word '{target}' appear in this text: {text}"),
           T("Count the occurrences of \"{target}\" in the following text.\nInput: {text}"),
           T("Q: How often is the word {target} used in \"{text}\"?\nA:"),
           T("{text}\n\nHow many times does '{target}' occur above? Reply with the number only.",
             states_format=True),
           T("Text: {text}\nWord: {target}\nOccurrences:"),
           T("Tell me how many times '{target}' occurs.\n\nInput: {text}"),
           T("One word in \"{text}\" appears more than once. Which word is it?", answer="{target}", inverted=True),
           T("{text}\n\nWhich word occurs exactly {n} times in the text above? Reply with that word only.",
             answer="{target}", inverted=True, states_format=True),
           T("In the text \"{text}\", count every '{target}'."),
           checker=_count_or_word, near_misses=_count_or_word_misses),
)
