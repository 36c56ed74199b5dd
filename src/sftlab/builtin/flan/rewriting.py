"""Cluster 'rewriting' of the FLAN-style mixture: change a word's form (plural, singular, past tense,
comparative) or edit a short text at word level (swap, replace, drop, join). Word forms come from
one-to-one tables in sftlab.builtin.words, so both a form and its inverse have one right answer.

(See sftlab.builtin.flan.base for how families and templates are written.)"""

from __future__ import annotations

from random import Random

from sftlab.builtin.flan.base import Family, T, default_near_misses, family
from sftlab.builtin.tasks import gen_past_tense, gen_plural, gen_sort_words, gen_swap_first_last
from sftlab.builtin.words import COMPARATIVES, FIRST_NAMES, PAST_TENSE, PLACES, PLURALS

CLUSTER = "rewriting"
HELDOUT_FAMILY: str | None = "swap_first_last"


def _unlike(answer: str, candidates) -> list[str]:
    """The candidates the (case-insensitive) text comparator tells apart from `answer`: a generated
    near-miss can coincide with it (the plural of "sheep", the past of "put")."""
    return list(dict.fromkeys(m for m in candidates if m and m.lower() != answer.lower()))


def _inverse(table: dict[str, str]) -> dict[str, str]:
    inverse = {v: k for k, v in table.items()}
    # An inverted template ("'mice' is the plural of which noun?") needs the form to name one base word.
    if len(inverse) != len(table):
        raise ValueError("word table is not one-to-one; its inverted templates would have two answers")
    return inverse


# ---------------------------------------------------------------- word forms

def _inflection_misses(table: dict[str, str], regular: str):
    """Near-misses of a base form or an inflected one: the other form, and the base with the regular
    ending glued on ("childs", "goed", "gooder") - the over-regularisation learners make."""
    inverse = _inverse(table)

    def misses(answer: str) -> list[str]:
        out = default_near_misses("text", answer)
        if answer in table:  # the answer is a base form (an inverted template)
            out += [table[answer]]
        if answer in inverse:
            base = inverse[answer]
            out += [base, base + regular]
            if regular == "er":  # for comparatives: the other construction ("more big", "beautifuler")
                out += [f"more {base}" if not answer.startswith("more ") else base + "er"]
        return _unlike(answer, out)

    return misses


def _plural(rng: Random):
    fields, plural = gen_plural(rng)
    return {**fields, "plural": plural}, plural


def _singular(rng: Random):
    fields, plural = gen_plural(rng)
    return {**fields, "plural": plural}, fields["word"]


def _singular_misses(answer: str) -> list[str]:
    # The plural copied unchanged, and the naive singular that strips a final -s ("wolve", "glasse").
    plural = PLURALS[answer]
    naive = plural[:-1] if plural.endswith("s") else plural
    return _unlike(answer, default_near_misses("text", answer) + [plural, naive])


def _past(rng: Random):
    fields, past = gen_past_tense(rng)
    return {**fields, "past": past}, past


def _comparative(rng: Random):
    word = rng.choice(sorted(COMPARATIVES))
    return {"word": word, "comparative": COMPARATIVES[word]}, COMPARATIVES[word]


# ---------------------------------------------------------------- word-level edits of a text

def _swap_misses(answer: str) -> list[str]:
    # Swapping is its own inverse, so swapping the answer back gives the unchanged input: the miss
    # of a model that copies instead of editing.
    words = answer.split()
    return _unlike(answer, default_near_misses("text", answer) + [" ".join([words[-1], *words[1:-1], words[0]]),
                                                                  " ".join(reversed(words))])


# Short sentences with slots; a slot's word must occur once in the sentence so "replace X" is unambiguous
# (checked in _sentence, as "garden" is both a noun and a place). No final period: a gold answer never
# ends in one (normalise_response strips it from responses).
_SENTENCES = (
    "{name} found the {adj} {noun} at the {place}",
    "the {adj} {noun} stayed at the {place} all day",
    "{name} carried the {adj} {noun} to the {place}",
    "on Sunday {name} saw the {adj} {noun} near the {place}",
    "{name} left the {adj} {noun} outside the {place} again",
    "nobody at the {place} wanted the {adj} {noun}",
    "yesterday the {noun} in the {place} looked very {adj}",
)
_SLOT_POOLS = {"name": FIRST_NAMES, "adj": tuple(sorted(COMPARATIVES)), "noun": tuple(sorted(PLURALS)),
               "place": PLACES}


def _sentence(rng: Random) -> tuple[str, dict[str, str]]:
    while True:
        pattern = rng.choice(_SENTENCES)
        slots = {k: rng.choice(pool) for k, pool in _SLOT_POOLS.items()}
        sentence = pattern.format(**slots)
        tokens = sentence.split()
        used = {k: v for k, v in slots.items() if "{" + k + "}" in pattern}
        if all(tokens.count(v) == 1 for v in used.values()):
            return sentence[0].upper() + sentence[1:], used


def _replace_word(rng: Random):
    sentence, used = _sentence(rng)
    slot = rng.choice(sorted(used))
    old = used[slot]
    tokens = sentence.split()
    new = rng.choice([w for w in _SLOT_POOLS[slot] if w not in tokens])
    result = " ".join(new if t == old else t for t in tokens)
    return {"sentence": sentence, "old": old, "new": new, "result": result}, result


def _drop_first(rng: Random):
    fields, _ = gen_swap_first_last(rng)  # its input: 3-7 distinct words
    words = fields["text"].split()
    rest = " ".join(words[1:])
    return {"text": fields["text"], "first": words[0], "rest": rest}, rest


def _drop_misses(answer: str) -> list[str]:
    words = answer.split()
    # one word too many dropped, or the last word dropped instead of the first
    return _unlike(answer, default_near_misses("text", answer) + [" ".join(words[1:]), " ".join(words[:-1])])


def _hyphen_join(rng: Random):
    fields, _ = gen_sort_words(rng)  # its input: 3-6 distinct words, comma-separated, unsorted
    words = fields["items"].split(", ")
    joined = "-".join(words)
    return {"items": fields["items"], "spaced": " ".join(words), "joined": joined}, joined


def _hyphen_misses(answer: str) -> list[str]:
    words = answer.split("-")
    return _unlike(answer, default_near_misses("text", answer)
                   + [" ".join(words), "_".join(words), "".join(words), ", ".join(words),
                      "-".join(sorted(words)), "-".join(reversed(words)), "-".join(words[:-1])])


# ---------------------------------------------------------------- the families

FAMILIES: tuple[Family, ...] = (
    family("plural", CLUSTER, "Give the plural of a noun (or the singular of a plural).", _plural,
           T("What is the plural of '{word}'?"),
           T("Write the plural form of the noun {word}."),
           T("Give the plural of the following word.\nInput: {word}"),
           T("One {word}, two what?"),
           T("Pluralise this noun.\n\nInput: {word}"),
           T("Q: Which word fills the gap? \"one {word}, many ___\"\nA:"),
           T("{word}\n\nWrite the plural of this noun. Reply with one word.", states_format=True),
           T("Input: {word}\nOutput: its plural form"),
           T("'{plural}' is a plural noun. What is its singular form?", answer="{word}", inverted=True),
           compare="text", near_misses=_inflection_misses(PLURALS, "s")),

    family("past_tense", CLUSTER, "Give the simple past of a verb (or the verb of a past form).", _past,
           T("What is the past tense of '{word}'?"),
           T("Write the simple past form of the verb {word}."),
           T("Give the past tense of the following verb.\nInput: {word}"),
           T("Fill in the blank with the past tense of '{word}': Yesterday I ___."),
           T("Put this verb in the past tense.\n\nInput: {word}"),
           T("Q: Complete with one word: \"Last week they ___ (to {word}).\"\nA:", states_format=True),
           T("{word}\n\nThat is a verb in its base form. What is its simple past? One word only.",
             states_format=True),
           T("Input: {word}\nOutput: the simple past tense"),
           T("'{past}' is the simple past of which verb? Give the base form.", answer="{word}", inverted=True,
             states_format=True),
           compare="text", near_misses=_inflection_misses(PAST_TENSE, "ed")),

    family("swap_first_last", CLUSTER, "Swap the first and last words of a text.", gen_swap_first_last,
           T("Swap the first and last words of: {text}"),
           T("Exchange the first word and the last word in the following text.\nInput: {text}"),
           T("Rewrite \"{text}\" with its first and last words swapped."),
           T("Move the last word to the front and the first word to the end.\n\nInput: {text}"),
           T("Switch the positions of the first and final words: {text}"),
           T("Q: What do you get if you swap the first and the last word of \"{text}\"?\nA:"),
           T("{text}\n\nExchange the first and last words of the text above and keep everything else in place. "
             "Write only the new text.", states_format=True),
           T("Input: {text}\nOutput: the same words, with the first and the last one trading places"),
           T("Keep the middle words as they are, but swap the two words at the ends: {text}"),
           compare="text", near_misses=_swap_misses),

    family("singular", CLUSTER, "Give the singular of a plural noun.", _singular,
           T("What is the singular of '{plural}'?"),
           T("Write the singular form of the noun {plural}."),
           T("Give the singular of the following plural noun.\nInput: {plural}"),
           T("Many {plural}, but just one ... what? Answer with one word.", states_format=True),
           T("Q: What is the singular form of \"{plural}\"?\nA:"),
           T("{plural}\n\nMake this noun singular. Reply with the singular noun only.", states_format=True),
           T("Input: {plural}\nOutput: the singular form"),
           T("Turn the plural noun {plural} into its singular."),
           T("Fill in the blank: one ___, several {plural}."),
           compare="text", near_misses=_singular_misses),

    family("comparative", CLUSTER, "Give the comparative of an adjective (or the adjective of a comparative).",
           _comparative,
           T("What is the comparative form of '{word}'?"),
           T("Write the comparative of the adjective {word}."),
           T("Give the comparative form of the following adjective.\nInput: {word}"),
           T("Fill in the blank with the right form of '{word}': This one is ___ than that one."),
           T("Q: \"Mine is {word}, but yours is even ___.\" Which form of {word} goes in the gap?\nA:"),
           T("{word}\n\nGive the form of this adjective used to compare two things (as in 'neat' -> 'neater'). "
             "Only the answer, please.", states_format=True),
           T("Input: {word}\nOutput: the comparative (one or two words)", states_format=True),
           T("Compare two things using the adjective {word}: which form do you use?"),
           T("'{comparative}' is the comparative of which adjective?", answer="{word}", inverted=True),
           compare="text", near_misses=_inflection_misses(COMPARATIVES, "er")),

    family("replace_word", CLUSTER, "Replace one word of a sentence with another.", _replace_word,
           T("Replace the word '{old}' with '{new}' in this sentence: {sentence}"),
           T("In the following sentence, change \"{old}\" to \"{new}\".\nInput: {sentence}"),
           T("Q: What does \"{sentence}\" become if {old} is swapped for {new}?\nA:"),
           T("{sentence}\n\nRewrite the sentence above with {new} instead of {old}. Write only the new sentence.",
             states_format=True),
           T("Input: {sentence}\nReplace: {old} -> {new}\nOutput:"),
           T("Substitute {new} for {old} in \"{sentence}\"."),
           T("Edit this sentence so that it says '{new}' where it now says '{old}', changing nothing else.\n\n"
             "{sentence}"),
           T("Swap out one word: put {new} in place of {old}. Sentence: {sentence}"),
           T("The sentence \"{sentence}\" was edited into \"{result}\". Which word of the original was replaced? "
             "Answer with that word only.", answer="{old}", inverted=True, states_format=True),
           compare="text"),

    family("drop_first_word", CLUSTER, "Remove the first word of a text.", _drop_first,
           T("Remove the first word from: {text}"),
           T("Delete the first word of the following text.\nInput: {text}"),
           T("Q: What is left of \"{text}\" without its first word?\nA:"),
           T("{text}\n\nDrop the opening word and write out the rest unchanged. Output only the remaining words.",
             states_format=True),
           T("Input: {text}\nOutput: everything except the first word"),
           T("Rewrite '{text}' without the word it starts with."),
           T("Cut the first word off this text and give me what remains.\n\n{text}"),
           T("Which words remain after you take away the first one from {text}? Keep their order and separate "
             "them with spaces.", states_format=True),
           T("The text '{text}' lost one word and became '{rest}'. Which word was dropped?", answer="{first}",
             inverted=True),
           compare="text", near_misses=_drop_misses),

    family("hyphen_join", CLUSTER, "Join a list of words with hyphens, in order.", _hyphen_join,
           T("Join these words with hyphens: {items}"),
           T("Connect the following words with hyphens, keeping their order.\nInput: {items}"),
           T("Q: What do you get by joining {spaced} with a hyphen between each pair of neighbouring words?\nA:"),
           T("{items}\n\nWrite those words as one string joined by hyphens (-), no spaces. Only the string.",
             states_format=True),
           T("Input: {spaced}\nOutput: the words joined with '-'"),
           T("Put a hyphen between each of the words {items} and write them together."),
           T("Link the words \"{spaced}\" into a single hyphenated string."),
           T("Make one hyphen-separated string from this list, in the same order: {items}"),
           compare="text", near_misses=_hyphen_misses),
)
