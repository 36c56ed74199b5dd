"""Cluster 'letters' of the FLAN-style mixture: letter-level transformations of one word or phrase.

(See sftlab.builtin.flan.base for how families and templates are written.)"""

from __future__ import annotations

from random import Random

from sftlab.builtin.flan.base import Family, T, family
from sftlab.builtin.tasks import gen_remove_vowels, gen_reverse_word, gen_uppercase
from sftlab.builtin.words import COMMON_WORDS

CLUSTER = "letters"
# Held out inside the trained cluster: it needs the letter-level skills of reverse_word / uppercase /
# replace_letter, but no trained family ever deletes letters.
HELDOUT_FAMILY: str | None = "remove_vowels"

_ALPHABET = "abcdefghijklmnopqrstuvwxyz"


def _reverse(rng: Random):
    fields, answer = gen_reverse_word(rng)
    return {**fields, "reversed": answer}, answer


def _uppercase(rng: Random):
    fields, answer = gen_uppercase(rng)
    return {**fields, "upper": answer}, answer


def _remove_vowels(rng: Random):
    # Redraw words with a "y": whether y is a vowel is exactly the kind of doubt that gives a second
    # defensible answer ("happy" -> "hppy" or "hpp").
    while True:
        fields, answer = gen_remove_vowels(rng)
        if "y" not in fields["word"]:
            return fields, answer


def _capitalise(rng: Random):
    text = " ".join(rng.sample(COMMON_WORDS, rng.randint(2, 4)))
    title = " ".join(w.capitalize() for w in text.split())
    return {"text": text, "title": title}, title


def _acronym(rng: Random):
    text = " ".join(rng.sample(COMMON_WORDS, rng.randint(3, 5)))
    return {"text": text}, "".join(w[0] for w in text.split()).upper()


def _swap_case(rng: Random):
    word = rng.choice(COMMON_WORDS)
    while True:  # both cases present, else swapping is just upper- or lower-casing
        mixed = "".join(c.upper() if rng.random() < 0.5 else c for c in word)
        if mixed != mixed.lower() and mixed != mixed.upper():
            return {"word": mixed}, mixed.swapcase()


def _double_letters(rng: Random):
    word = rng.choice(COMMON_WORDS)
    doubled = "".join(c + c for c in word)
    return {"word": word, "doubled": doubled}, doubled


def _replace_letter(rng: Random):
    word = rng.choice(COMMON_WORDS)
    old = rng.choice(word)
    # The new letter is not already in the word, so the answer shows every replacement plainly.
    new = rng.choice([c for c in _ALPHABET if c not in word])
    return {"word": word, "old": old, "new": new}, word.replace(old, new)


def _last_letter(rng: Random):
    word = rng.choice(COMMON_WORDS)
    return {"word": word, "spelled": "-".join(word.upper())}, word[-1]


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
    family("uppercase", CLUSTER, "Convert text to upper case.", _uppercase,
           T("Convert to uppercase: {text}"),
           T("Rewrite '{text}' in capital letters."),
           T("Write the following text in all caps.\nInput: {text}"),
           T("Change every letter of this text to upper case.\n\nInput: {text}"),
           T("Make this uppercase: \"{text}\""),
           T("{text}\n\nShout the line above: the same words, every letter a capital. Output only that line.",
             states_format=True),
           T("Q: What does \"{text}\" look like with the caps lock key on?\nA:"),
           T("Text: {text}\nTask: capitalise all letters. Keep the spaces as they are and add nothing else.",
             states_format=True),
           T("Someone typed \"{upper}\" with caps lock stuck on. Write it in lowercase letters.",
             answer="{text}", inverted=True),
           compare="text_cs"),
    family("remove_vowels", CLUSTER, "Delete the vowels a, e, i, o, u from a word.", _remove_vowels,
           T("Remove all vowels from the word '{word}'."),
           T("Write {word} without its vowels (a, e, i, o, u)."),
           T("Delete every vowel from the following word.\nInput: {word}"),
           T("What is left of '{word}' after taking out the vowels?"),
           T("Strip the vowels from this word.\n\nInput: {word}"),
           T("Q: Which letters remain if you cross out every a, e, i, o and u in \"{word}\"?\n"
             "A (the remaining letters as one word):", states_format=True),
           T("{word}\n\nKeep only the consonants of the word above, in their original order. "
             "Reply with those letters and nothing else.", states_format=True),
           T("Disemvowel this word: {word}"),
           T("Word: {word}\nRule: drop a, e, i, o and u; keep every other letter.\nResult:"),
           compare="text"),
    family("capitalise_words", CLUSTER, "Capitalise the first letter of every word.", _capitalise,
           T("Capitalise each word in: {text}"),
           T("Write '{text}' in title case, with every word starting with a capital letter."),
           T("Make the first letter of every word upper case.\nInput: {text}"),
           T("Q: How is \"{text}\" written if each word begins with a capital?\nA:"),
           T("{text}\n\nRewrite that so every word starts with a capital letter and the other letters stay "
             "lowercase. Give only the rewritten text.", states_format=True),
           T("Turn this into a title by capitalising every word.\n\nInput: {text}"),
           T("Input: {text}\nOutput format: the same words, separated by single spaces, each with an initial "
             "capital.\nOutput:", states_format=True),
           T("Give each word of \"{text}\" a capital first letter."),
           T("Write \"{title}\" entirely in lowercase.", answer="{text}", inverted=True),
           compare="text_cs"),
    family("acronym", CLUSTER, "Join the first letters of the words into an acronym.", _acronym,
           T("Make an acronym from: {text}"),
           T("What are the initials of '{text}'? Write them as one word in capitals, e.g. BRD for "
             "'big red dog'.", states_format=True),
           T("Take the first letter of each word and join them together.\nInput: {text}"),
           T("Q: What acronym do the words \"{text}\" form?\nA:"),
           T("{text}\n\nForm an abbreviation from the first letter of every word above."),
           T("Input: {text}\nOutput: the first letters of the words, in order, as capital letters with no "
             "spaces or dots.", states_format=True),
           T("Abbreviate \"{text}\" to its initial letters."),
           T("Write the acronym of this phrase.\n\nInput: {text}"),
           compare="text"),
    family("swap_case", CLUSTER, "Swap upper and lower case in a word.", _swap_case,
           T("Swap the case of every letter in '{word}'."),
           T("Invert the capitalisation of {word}: capitals become small letters and small letters become "
             "capitals."),
           T("Flip the case of each letter.\nInput: {word}"),
           T("Q: What is \"{word}\" with its upper and lower case letters exchanged?\nA:"),
           T("{word}\n\nChange each uppercase letter above to lowercase and each lowercase one to uppercase. "
             "Reply with the new word only.", states_format=True),
           T("Toggle the case of all letters in this word.\n\nInput: {word}"),
           T("Word: {word}\nSwap its case, keeping the letters in the same order. Output just the word.",
             states_format=True),
           T("Write {word} with every letter's case reversed."),
           compare="text_cs"),
    family("double_letters", CLUSTER, "Write every letter of a word twice.", _double_letters,
           T("Double every letter in the word '{word}'."),
           T("Write {word} with each letter repeated twice, e.g. 'cat' becomes 'ccaatt'.", states_format=True),
           T("Repeat each letter of the following word two times.\nInput: {word}"),
           T("Q: What does \"{word}\" look like if you write every letter twice in a row?\nA:"),
           T("{word}\n\nStutter that word: write each of its letters two times, in order. Give only the result.",
             states_format=True),
           T("Duplicate each character of this word.\n\nInput: {word}"),
           T("In '{doubled}' every letter was written twice. What is the original word?", answer="{word}",
             inverted=True),
           T("Undo the doubling: each letter of \"{doubled}\" appears twice in a row. Write each one once.\n"
             "Reply with the word only.", answer="{word}", inverted=True, states_format=True),
           T("Word: {word}\nTransformation: every letter doubled.\nResult:"),
           compare="text"),
    family("replace_letter", CLUSTER, "Replace every occurrence of one letter with another.", _replace_letter,
           T("Replace every '{old}' in '{word}' with '{new}'."),
           T("In the word {word}, change each letter {old} to {new}."),
           T("Substitute the letter {new} for the letter {old} everywhere in the following word.\n"
             "Input: {word}"),
           T("Q: What do you get if you swap each \"{old}\" in \"{word}\" for \"{new}\"?\nA:"),
           T("{word}\n\nWrite the word above again, but with every {old} turned into {new}. Only the new word, "
             "please.", states_format=True),
           T("Letter to replace: {old}\nReplacement: {new}\nWord: {word}\nNew word:"),
           T("Change all {old}'s to {new}'s.\n\nInput: {word}"),
           T("Rewrite '{word}' using '{new}' wherever it has '{old}'. Reply with a single word.",
             states_format=True),
           compare="text"),
    family("last_letter", CLUSTER, "Name the last letter of a word.", _last_letter,
           T("What is the last letter of '{word}'?"),
           T("Which letter does the word {word} end with?"),
           T("Give the final letter of the following word.\nInput: {word}"),
           T("Q: What letter comes at the end of \"{word}\"?\nA:"),
           T("{word}\n\nWhat is the last letter of that word? Reply with the single letter only.",
             states_format=True),
           T("Word: {word}\nLast letter:"),
           T(("Spell the word {word} for me, letter by letter.", "{spelled}", "Which letter does it end with?")),
           T(("I'm going to ask you about the word '{word}'.", "Sure, go ahead - the word is '{word}'.",
              "What is its last letter? Answer with one letter."), states_format=True),
           T("Tell me the letter at the very end of {word}."),
           compare="text"),
)
