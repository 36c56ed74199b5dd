"""Cluster 'letters' of the FLAN-style mixture: letter-level transformations of one word or phrase.

(See sftlab.builtin.flan.base for how families and templates are written.)"""

from __future__ import annotations

from random import Random

from sftlab.builtin.flan.base import Family, T, family
from sftlab.builtin.tasks import gen_reverse_word

CLUSTER = "letters"
HELDOUT_FAMILY: str | None = None  # set to "remove_vowels" once it is written here


def _reverse(rng: Random):
    fields, answer = gen_reverse_word(rng)
    return {**fields, "reversed": answer}, answer


FAMILIES: tuple[Family, ...] = (
    family("reverse_word", CLUSTER, "Spell a word backwards.", _reverse,
           T("Reverse the word '{word}'."),
           T("Write the word {word} backwards."),
           T("Spell the following word in reverse order.\nInput: {word}"),
           T("What is '{word}' spelled backwards? Reply with the reversed word only.", states_format=True),
           T("Reverse the letters of this word.\n\nInput: {word}"),
           T("Q: How do you write \"{word}\" from the last letter to the first?\nA:"),
           T("{word}\n\nRead that word right to left and write down what you get. Just the word, nothing else.",
             states_format=True),
           T("'{reversed}' is a word written backwards. What is the word?", answer="{word}", inverted=True),
           T("Mirror the spelling of {word} (last letter first)."),
           compare="text"),
)
