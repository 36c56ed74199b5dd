"""Cluster 'classification' of the FLAN-style mixture: put one input (a number, a word, a sentence, a
review, a group of words) into one of a few named classes, or pick the member that does not belong.

(See sftlab.builtin.flan.base for how families and templates are written.)"""

from __future__ import annotations

from collections.abc import Callable
from random import Random

from sftlab.builtin.flan.base import Family, T, family
from sftlab.builtin.tasks import _is_prime, gen_odd_one_out, gen_parity, gen_sentiment
from sftlab.builtin.words import CATEGORIES, COMMON_WORDS, FIRST_NAMES, PALINDROMES, PLACES, PLURALS

CLUSTER = "classification"
# is_prime resembles parity (a property of a number, one-word label) without being trained, as in
# the older suite's split.
HELDOUT_FAMILY: str | None = "is_prime"


def label_misses(*labels: str) -> Callable[[str], list[str]]:
    """Near-misses of a label answer: every other label. The comparator's default near-misses only
    mutate characters ("ye", "yesx"), which no model writes; the real mistake is the other label."""
    return lambda answer: [label for label in labels if label.lower() != answer.lower()]


# ---------------------------------------------------------------- generators

def _odd_one_out(rng: Random):
    fields, odd = gen_odd_one_out(rng)
    items = fields["items"].split(", ")
    # the category the other three share, for the multi-turn follow-up; options listed in the prompt
    # so "colour" vs "color" or "fruits" is never the question
    main = next(cat for cat, words in CATEGORIES.items() if all(w in words for w in items if w != odd))
    options = sorted(CATEGORIES)
    rng.shuffle(options)
    return {**fields, "odd": odd, "main": main, "options": ", ".join(options)}, odd


def _word_category(rng: Random):
    category = rng.choice(sorted(CATEGORIES))  # uniform over labels, not over words
    options = sorted(CATEGORIES)
    rng.shuffle(options)  # the option order is not a hint
    return {"word": rng.choice(CATEGORIES[category]), "options": ", ".join(options)}, category


# Not the older suite's gen_is_prime (2..100): its 25 primes x 9 templates give too few distinct
# "yes" prompts, and de-duplicated samples drift to 60% "no"; up to 200 they stay near 47% "yes".
_PRIMES = tuple(n for n in range(2, 201) if _is_prime(n))
_COMPOSITES = tuple(n for n in range(4, 201) if not _is_prime(n))
_ODD_COMPOSITES = tuple(n for n in _COMPOSITES if n % 2)


def _prime(rng: Random):
    prime = rng.random() < 0.5  # a uniform draw would be 77% "no"
    # half the composites are odd, so "ends in an even digit" is not the whole test
    pool = _PRIMES if prime else _ODD_COMPOSITES if rng.random() < 0.5 else _COMPOSITES
    return {"n": str(rng.choice(pool))}, "yes" if prime else "no"


def _palindrome(rng: Random):
    # Half words, half numbers: the few dozen palindromic words alone repeat quickly, and
    # de-duplication would then tilt the samples towards "no".
    yes = rng.random() < 0.5
    if rng.random() < 0.5:
        return {"text": rng.choice(PALINDROMES) if yes else rng.choice(COMMON_WORDS)}, "yes" if yes else "no"
    half = str(rng.randint(10, 999))
    text = half + half[-2::-1] if rng.random() < 0.5 else half + half[::-1]  # odd or even length
    if not yes:  # one digit changed in the second half: looks like a palindrome, is not one
        i = rng.randrange(len(half), len(text))
        text = text[:i] + rng.choice([d for d in "0123456789" if d != text[i]]) + text[i + 1:]
    return {"text": text}, "yes" if yes else "no"


# Questions are marked by their word order (a question word or an inverted auxiliary first), so the
# label stays unique when the final punctuation is dropped, which half the examples do.
_QUESTIONS = (
    "Where is the {place}?", "Did {name} see the {noun}?", "Can you open the {noun}?",
    "Is the {place} open today?", "Why did {name} leave the {place}?", "Who painted the {noun}?",
    "When does the {place} close?", "Have you seen {name} at the {place}?", "Will {name} visit the {place}?",
    "What did {name} buy at the {place}?", "Does {name} like the {noun}?", "How far is the {place}?",
)
_STATEMENTS = (
    "{name} is at the {place}.", "The {place} closes at six.", "{name} found the {noun} near the {place}.",
    "We saw {name} at the {place} yesterday.", "I left the {noun} at the {place}.",
    "The {noun} is on the table.", "{name} will visit the {place} tomorrow.", "You can open the {noun}.",
    "{name} painted the {noun} last week.", "The {place} is open today.", "{name} likes the {noun}.",
    "The {place} is far from here.",
)


_NOUNS = tuple(sorted(PLURALS))  # COMMON_WORDS mixes in adjectives and verbs ("the happy")


def _question_or_statement(rng: Random):
    label = rng.choice(("question", "statement"))
    sentence = rng.choice(_QUESTIONS if label == "question" else _STATEMENTS).format(
        place=rng.choice(PLACES), name=rng.choice(FIRST_NAMES), noun=rng.choice(_NOUNS))
    if rng.random() < 0.5:
        sentence = sentence[:-1]
    return {"text": sentence}, label


# Nouns whose plural equals the singular (sheep, deer, aircraft) have no single label.
_SINGULARS = tuple(sorted(s for s, p in PLURALS.items() if s != p))
_PLURAL_FORMS = tuple(sorted(PLURALS[s] for s in _SINGULARS))


def _singular_or_plural(rng: Random):
    label = rng.choice(("singular", "plural"))
    return {"word": rng.choice(_SINGULARS if label == "singular" else _PLURAL_FORMS)}, label


def _number_sign(rng: Random):
    label = rng.choice(("positive", "negative"))
    n = rng.randint(1, 9999)  # never 0, which is neither
    return {"n": str(n if label == "positive" else -n)}, label


# ---------------------------------------------------------------- families

FAMILIES: tuple[Family, ...] = (
    family("sentiment", CLUSTER, "Is a short review positive or negative?", gen_sentiment,
           T("Is this review positive or negative? {text}"),
           T("Classify the sentiment of the following review as positive or negative.\nInput: {text}"),
           T("Review: {text}\nAnswer with positive or negative.", states_format=True),
           T("Q: Did the customer who wrote \"{text}\" have a good or a bad experience? Say positive or negative.\nA:",
             states_format=True),
           T("{text}\n\nWas the author happy or unhappy? Label it positive or negative."),
           T("Read the review and decide its tone.\n\nReview: \"{text}\"\nTone (positive/negative):",
             states_format=True),
           T("Sentiment analysis. Reply with exactly one word, positive or negative.\nText: {text}",
             states_format=True),
           T("Would you call the opinion in this review positive or negative?\n\n{text}"),
           T("Someone wrote: {text}\nHow do they feel about it: positive or negative?"),
           compare="text", near_misses=label_misses("positive", "negative")),

    family("parity", CLUSTER, "Is a number even or odd?", gen_parity,
           T("Is {n} even or odd?"),
           T("Tell me whether the number {n} is odd or even."),
           T("Classify the following number as even or odd.\nInput: {n}"),
           T("Even or odd?\n\nInput: {n}"),
           T("Q: Can {n} be split into two equal whole numbers? Answer even if it can and odd if not.\nA:",
             states_format=True),
           T("{n}\n\nIs that number even or odd? One word only.", states_format=True),
           T("Number: {n}\nParity (even/odd):", states_format=True),
           T("If you count {n} apples into pairs, is the total even or odd?"),
           T("Decide the parity of {n}."),
           compare="text", near_misses=label_misses("even", "odd")),

    family("is_prime", CLUSTER, "Is a number prime? (yes/no)", _prime,
           T("Is {n} a prime number? Answer yes or no.", states_format=True),
           T("Answer yes or no: is the number {n} prime?", states_format=True),
           T("Decide whether the following number is prime. Reply yes or no.\nInput: {n}", states_format=True),
           T("Prime or not? Say yes if it is prime and no otherwise.\n\nInput: {n}", states_format=True),
           T("Yes or no: does {n} have exactly two divisors?"),
           T("Q: Is {n} divisible only by 1 and by itself?\nA:"),
           T("{n}\n\nIs this number prime?"),
           T("Can {n} be written as a product of two whole numbers that are both bigger than 1? "
             "If it can, it is not prime. Is {n} prime?"),
           T("Number: {n}\nPrime (yes/no):", states_format=True),
           compare="text", near_misses=label_misses("yes", "no")),

    family("odd_one_out", CLUSTER, "Which word does not belong with the others?", _odd_one_out,
           T("Which word is the odd one out: {items}?"),
           T("Find the word that does not belong: {items}"),
           T("One of these words belongs to a different category. Which one?\nInput: {items}"),
           T("Name the odd one out.\n\nInput: {items}"),
           T("Three of {items} belong together. Which word is different?"),
           T("Q: {items} - which of these is not like the others?\nA:"),
           T("{items}\n\nThree of these words share a category. Write the one that does not, and nothing else.",
             states_format=True),
           T("Words: {items}\nOdd one out (one word):", states_format=True),
           T(("Which word is the odd one out: {items}?", "{odd}",
              "What category do the other three belong to? Choose from: {options}."), answer="{main}"),
           compare="text"),

    family("word_category", CLUSTER, "Which category does a word belong to?", _word_category,
           T("Which category does the word '{word}' belong to? Options: {options}."),
           T("Classify the word into one of these categories: {options}.\nInput: {word}"),
           T("Q: '{word}' names which of these: {options}?\nA:"),
           T("{word}\n\nWhat kind of thing is this? Choose one of: {options}. Reply with the category name only.",
             states_format=True),
           T("Categories: {options}\nWord: {word}\nCategory:", states_format=True),
           T("Sort the word \"{word}\" into the right group ({options})."),
           T("Here is a word: {word}. Which of the following does it name: {options}?"),
           T("Pick the category for '{word}' from this list and answer with exactly one item of the list: {options}",
             states_format=True),
           compare="text", near_misses=label_misses(*CATEGORIES)),

    family("is_palindrome", CLUSTER, "Does a word or number read the same backwards? (yes/no)", _palindrome,
           T("Is '{text}' a palindrome? Answer yes or no.", states_format=True),
           T("Does {text} read the same forwards and backwards?"),
           T("Decide whether the following is a palindrome.\nInput: {text}"),
           T("Q: If you write \"{text}\" backwards, do you get the same thing?\nA:"),
           T("{text}\n\nPalindrome or not? Reply yes if it is and no if it is not.", states_format=True),
           T("Input: {text}\nPalindrome (yes/no):", states_format=True),
           T("A palindrome is the same when reversed, like 'noon' or 1221. Is {text} one?"),
           T("Yes or no: reading '{text}' from right to left gives '{text}' again.", states_format=True),
           compare="text", near_misses=label_misses("yes", "no")),

    family("question_or_statement", CLUSTER, "Is a sentence a question or a statement?", _question_or_statement,
           T("Is the following sentence a question or a statement? {text}"),
           T("Classify this sentence as a question or a statement.\nInput: {text}"),
           T("Q: Does \"{text}\" ask something or tell something? Say question or statement.\nA:",
             states_format=True),
           T("{text}\n\nQuestion or statement?"),
           T("Sentence: {text}\nType (question/statement):", states_format=True),
           T("Someone says: \"{text}\". Are they asking a question or making a statement?"),
           T("Label the sentence below with one word, question or statement.\n\n{text}", states_format=True),
           T("Punctuation may be missing, so go by the word order. Is this a question or a statement: {text}"),
           compare="text", near_misses=label_misses("question", "statement")),

    family("singular_or_plural", CLUSTER, "Is a noun singular or plural?", _singular_or_plural,
           T("Is the noun '{word}' singular or plural?"),
           T("Tell me whether {word} is a singular or a plural form."),
           T("Classify the following noun as singular or plural.\nInput: {word}"),
           T("Q: Does \"{word}\" mean one thing or more than one? Answer singular or plural.\nA:",
             states_format=True),
           T("{word}\n\nSingular or plural? Reply with one word.", states_format=True),
           T("Noun: {word}\nNumber (singular/plural):", states_format=True),
           T("Fill in the blank with singular or plural: '{word}' is a ___ noun."),
           T("Grammatical number of the word '{word}'?"),
           compare="text", near_misses=label_misses("singular", "plural")),

    family("number_sign", CLUSTER, "Is a number positive or negative?", _number_sign,
           T("Is {n} positive or negative?"),
           T("Tell me whether the number {n} is greater or less than zero: positive or negative."),
           T("Classify the following number as positive or negative.\nInput: {n}"),
           T("Q: What is the sign of {n}?\nA:"),
           T("{n}\n\nPositive or negative? One word.", states_format=True),
           T("Number: {n}\nSign (positive/negative):", states_format=True),
           T("A bank account shows a balance of {n} euros. Is that balance positive or negative?"),
           T("Answer with positive or negative only: which side of zero is {n} on?", states_format=True),
           compare="text", near_misses=label_misses("positive", "negative")),
)
