"""Cluster 'lists' of the FLAN-style mixture: operations on a comma-separated list of words or numbers.

(See sftlab.builtin.flan.base for how families and templates are written.) Every list is drawn without
repeats (except in remove_duplicates, where repeats are the point), so sorting, the largest item and
"the item called X" each have exactly one answer."""

from __future__ import annotations

from random import Random

from sftlab.builtin.flan.base import Family, T, family
from sftlab.builtin.tasks import gen_sort_numbers, gen_sort_words
from sftlab.builtin.words import COMMON_WORDS

CLUSTER = "lists"
# Held out inside the trained cluster: same output format as sort_words, and largest/smallest_number
# train reading the numbers, but no trained family orders numbers.
HELDOUT_FAMILY: str | None = "sort_numbers"

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")


def _numbers(rng: Random) -> list[int]:
    return rng.sample(range(1, 1000), rng.randint(4, 7))


def _largest(rng: Random):
    ns = _numbers(rng)
    return {"items": ", ".join(map(str, ns)), "count": str(len(ns))}, str(max(ns))


def _smallest(rng: Random):
    ns = _numbers(rng)
    return {"items": ", ".join(map(str, ns)), "count": str(len(ns))}, str(min(ns))


def _last_item(rng: Random):
    ws = rng.sample(COMMON_WORDS, rng.randint(3, 7))
    return {"items": ", ".join(ws), "first": ws[0]}, ws[-1]


def _remove_duplicates(rng: Random):
    distinct = rng.sample(COMMON_WORDS, rng.randint(3, 5))
    ws = distinct + [rng.choice(distinct) for _ in range(rng.randint(1, 3))]  # at least one repeat
    rng.shuffle(ws)
    return {"items": ", ".join(ws)}, ", ".join(dict.fromkeys(ws))  # first appearances, in order


def _reverse_list(rng: Random):
    ws = rng.sample(COMMON_WORDS, rng.randint(3, 7))
    reversed_items = ", ".join(reversed(ws))
    return {"items": ", ".join(ws), "reversed": reversed_items}, reversed_items


def _item_at(rng: Random):
    ws = rng.sample(COMMON_WORDS, rng.randint(4, 8))
    k = rng.randrange(len(ws))
    return ({"items": ", ".join(ws), "count": str(len(ws)), "k": str(k + 1), "ordinal": _ORDINALS[k],
             "item": ws[k]}, ws[k])


FAMILIES: tuple[Family, ...] = (
    family("sort_words", CLUSTER, "Sort words alphabetically.", gen_sort_words,
           T("Sort these words alphabetically: {items}"),
           T("Put the following words in alphabetical order.\nInput: {items}"),
           T("Arrange {items} from A to Z, separated by commas.", states_format=True),
           T("Alphabetise this list of words.\n\nInput: {items}"),
           T("Order the words alphabetically and list them with commas: {items}", states_format=True),
           T("Q: In what order would \"{items}\" appear in a dictionary?\nA:"),
           T("{items}\n\nRewrite the list above in alphabetical order. Output the words separated by commas and "
             "nothing else.", states_format=True),
           T("Words: {items}\nSorted A-Z:"),
           T("Which order do these words come in alphabetically? {items}"),
           compare="list"),
    family("sort_numbers", CLUSTER, "Sort numbers ascending.", gen_sort_numbers,
           T("Sort these numbers from smallest to largest: {items}"),
           T("Put the following numbers in ascending order.\nInput: {items}"),
           T("Arrange {items} in increasing order, separated by commas.", states_format=True),
           T("Order this list of numbers from low to high.\n\nInput: {items}"),
           T("List the numbers sorted ascending: {items}"),
           T("Q: What is {items} in increasing order?\nA:"),
           T("{items}\n\nReorder those numbers so that each is bigger than the one before it. Reply with the "
             "numbers separated by commas only.", states_format=True),
           T("Numbers: {items}\nSmallest first:"),
           compare="list"),
    family("largest_number", CLUSTER, "Find the largest number in a list.", _largest,
           T("What is the largest number in this list: {items}?"),
           T("Which of these numbers is the biggest? {items}"),
           T("Find the maximum of the following numbers.\nInput: {items}"),
           T("Q: Out of {items}, which number is greatest?\nA:"),
           T("{items}\n\nPick the highest number from the list above. Reply with that number only.",
             states_format=True),
           T("Return the maximum value.\n\nInput: {items}"),
           T("Numbers: {items}\nLargest:"),
           T(("Here are some numbers: {items}", "Thanks, that's {count} numbers.", "Which one is the largest?")),
           T("Tell me which number in {items} is larger than all the others. Give just the number.",
             states_format=True),
           compare="number"),
    family("smallest_number", CLUSTER, "Find the smallest number in a list.", _smallest,
           T("What is the smallest number in this list: {items}?"),
           T("Which of these numbers is the lowest? {items}"),
           T("Find the minimum of the following numbers.\nInput: {items}"),
           T("Q: Out of {items}, which number is least?\nA:"),
           T("{items}\n\nPick the smallest number from the list above. Reply with that number only.",
             states_format=True),
           T("Return the minimum value.\n\nInput: {items}"),
           T("Numbers: {items}\nSmallest:"),
           T(("I have {count} numbers: {items}", "All right, I have your {count} numbers.",
              "Which of them is the smallest? Just the number, please."), states_format=True),
           T("Which number in {items} is smaller than every other number in the list?"),
           compare="number"),
    family("last_item", CLUSTER, "Name the last item of a list.", _last_item,
           T("What is the last item in this list: {items}?"),
           T("Which word comes at the end of the list {items}?"),
           T("Return the final element of the following list.\nInput: {items}"),
           T("Q: In the list {items}, what is the last entry?\nA:"),
           T("{items}\n\nWhich item of that list comes last? Answer with the item only.", states_format=True),
           T("The list starts with {first}. What does it end with?\n\nInput: {items}"),
           T("List: {items}\nLast item:"),
           T("Give me the item at the very end: {items}"),
           compare="text"),
    family("remove_duplicates", CLUSTER, "Drop repeated items, keeping the first occurrence of each.",
           _remove_duplicates,
           T("Remove the duplicates from this list, keeping the order of first appearance: {items}"),
           T("Write the list {items} with each word only once, in the order the words first appear."),
           T("Delete every repeated item from the following list. Keep the first occurrence of each word where "
             "it is.\nInput: {items}"),
           T("Q: What is left of \"{items}\" when every word after its first occurrence is dropped?\nA:"),
           T("{items}\n\nSome words above appear more than once. List each word once, in order of first "
             "appearance, separated by commas, and nothing else.", states_format=True),
           T("Deduplicate this list without changing the order of first appearance.\n\nInput: {items}"),
           T("List: {items}\nSame list, repeats removed (first occurrences kept):"),
           T("Keep only the first copy of each word in: {items}. Reply with the words separated by commas.",
             states_format=True),
           compare="list"),
    family("reverse_list", CLUSTER, "Reverse the order of a list.", _reverse_list,
           T("Reverse the order of this list: {items}"),
           T("Write the list {items} backwards, last item first."),
           T("Put the following items in the opposite order.\nInput: {items}"),
           T("Q: What is the list \"{items}\" in reverse order?\nA:"),
           T("{items}\n\nRead that list from the end to the beginning and write the items in that order, "
             "separated by commas. Nothing else.", states_format=True),
           T("Flip this list so that the last item comes first.\n\nInput: {items}"),
           T("List: {items}\nReversed:"),
           T("Someone wrote a list in reverse order: {reversed}. What was the original order?",
             answer="{items}", inverted=True),
           T("Here is a list read from end to start: {reversed}\nRestore the original list. Reply with the items "
             "separated by commas.", answer="{items}", inverted=True, states_format=True),
           compare="list"),
    family("item_at_position", CLUSTER, "Name the item at a given position of a list.", _item_at,
           T("What is the {ordinal} item in this list: {items}?"),
           T("Which word is at position {k} in the list {items}? Count from 1."),
           T("Return item number {k} of the following list (the first item is number 1).\nInput: {items}"),
           T("Q: In the list {items}, which word comes {ordinal}?\nA:"),
           T("{items}\n\nWhat is the {ordinal} word in that list? Answer with the word only.", states_format=True),
           T("List: {items}\nPosition: {k}\nItem:"),
           T(("Remember this list: {items}", "Got it. The list has {count} items.",
              "Which item is in position {k}?")),
           T("At which position is '{item}' in the list {items}? Count from 1 and reply with the number only.",
             answer="{k}", inverted=True, states_format=True),
           T("Tell me the {ordinal} entry of {items}."),
           compare="text"),
)
