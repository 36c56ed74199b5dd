"""Cluster 'dialogue' of the FLAN-style mixture: every template is a conversation (user, assistant,
user[, assistant, user]) whose last question needs an earlier turn - a number or fact to recall, a
correction that replaces the earlier input, a total or a list built up over turns, a follow-up that
repeats the earlier task on a new input ("And in 'river'?"). The assistant turns are context, not
graded, and always correct, so the model never learns to build on a wrong earlier answer.

Several families ask different templates for different fields (the first item, the third, the
city, the pet); such a template names its answer field (`answer=`) without being an inversion.

(See sftlab.builtin.flan.base for how families and templates are written.)"""

from __future__ import annotations

from random import Random

from sftlab.builtin.flan.base import Family, T, default_near_misses, family, other_labels
from sftlab.builtin.tasks import gen_reverse_word
from sftlab.builtin.words import CATEGORIES, CITIES, COMMON_WORDS, FIRST_NAMES, GROCERIES, PETS

CLUSTER = "dialogue"
# A correction ("Actually, I meant X") turns up in no other family, so holding this one out tests
# whether following the latest user turn transfers from the recall / follow-up families.
HELDOUT_FAMILY: str | None = "chat_correction_reverse"

COLOURS = CATEGORIES["colour"]


# ---------------------------------------------------------------- a number recalled and transformed

def _recall_number(rng: Random):
    n, k = rng.randint(2, 60), rng.randint(2, 9)
    word = rng.choice(COMMON_WORDS)  # for a distractor exchange between the number and the question
    return {"n": str(n), "k": str(k), "word": word, "word_upper": word.upper()}, str(n * k)


# ---------------------------------------------------------------- a correction

def _correction(rng: Random):
    while True:
        f1, rev1 = gen_reverse_word(rng)
        f2, rev2 = gen_reverse_word(rng)
        if f1["word"] != f2["word"]:
            return {"word1": f1["word"], "rev1": rev1, "word2": f2["word"], "rev2": rev2}, rev2


def _correction_misses(answer: str) -> list[str]:
    # The corrected word left unreversed: the model noticed the correction but dropped the task.
    out = default_near_misses("text", answer) + [answer[::-1]]
    return [m for m in out if m.lower() != answer.lower()]


# ---------------------------------------------------------------- an item recalled by position

def _recall_item(rng: Random):
    a, b, c, d = rng.sample(GROCERIES, 4)
    return {"a": a, "b": b, "c": c, "d": d}, a


# ---------------------------------------------------------------- a running total

_SPENDS = ("lunch", "a taxi", "coffee", "a book", "a ticket", "groceries", "a haircut", "flowers", "a movie",
           "parking", "a gift", "a phone case")


def _running_total(rng: Random):
    a, b, c = (rng.randint(1, 40) for _ in range(3))
    x1, x2, x3 = rng.sample(_SPENDS, 3)
    return ({"a": str(a), "b": str(b), "c": str(c), "ab": str(a + b), "x1": x1, "x2": x2, "x3": x3},
            str(a + b + c))


# ---------------------------------------------------------------- a list built up, then sorted

def _sorted_list(rng: Random):
    a, b, c, d = rng.sample(COMMON_WORDS, 4)
    fields = {"a": a, "b": b, "c": c, "d": d,
              "sorted3": ", ".join(sorted((a, b, c))), "sorted4": ", ".join(sorted((a, b, c, d))),
              "rsorted4": ", ".join(sorted((a, b, c, d), reverse=True))}
    return fields, fields["sorted4"]


# ---------------------------------------------------------------- a fact about the user recalled

def _recall_fact(rng: Random):
    name = rng.choice(FIRST_NAMES)
    # every template names its answer field; the name stands as the family's default answer
    return {"name": name, "city": rng.choice(CITIES), "pet": rng.choice(PETS),
            "colour": rng.choice(COLOURS)}, name


# ---------------------------------------------------------------- a follow-up on a new input

def _follow_up(rng: Random):
    while True:
        w1, w2 = rng.sample(COMMON_WORDS, 2)
        if len(w1) != len(w2):  # so repeating the first answer is wrong
            return {"w1": w1, "n1": str(len(w1)), "w2": w2}, str(len(w2))


# ---------------------------------------------------------------- the families

FAMILIES: tuple[Family, ...] = (
    family("chat_recall_number", CLUSTER, "The user gives a number; later asks for it times k.", _recall_number,
           T(("My lucky number is {n}.", "Got it, your lucky number is {n}.", "What is my lucky number times {k}?")),
           T(("Remember this number for me: {n}.", "Okay, I'll remember {n}.",
              "What was the number I gave you, multiplied by {k}?")),
           T(("I'm thinking of the number {n}.", "Noted: {n}.", "Write '{word}' in capital letters.", "{word_upper}",
              "Now multiply the number I told you about by {k}. Reply with just the result."), states_format=True),
           T(("Here's a number: {n}", "Thanks! I have {n}.", "Q: That number times {k}?\nA:")),
           T(("Let's play a game. My secret number is {n}.", "Great, your secret number is {n}. What now?",
              "Multiply it by {k} and tell me the result.")),
           T(("Please keep {n} in mind.", "Sure, I'm keeping {n} in mind.",
              "What is {k} times that number?")),
           T(("My locker number is {n}.", "Okay, locker {n}.", "By the way, what is '{word}' in upper case?",
              "{word_upper}", "Back to my locker number: what is it times {k}? Answer with a number only."),
             states_format=True),
           T(("Store the number {n}.", "Stored: {n}.", "Input: the stored number x {k}\nOutput:")),
           compare="number"),

    family("chat_correction_reverse", CLUSTER, "The user asks to reverse a word, then corrects the word.",
           _correction,
           T(("Reverse the word '{word1}'.", "{rev1}", "Sorry, I meant '{word2}'. Reverse that one instead.")),
           T(("Spell {word1} backwards.", "{rev1}",
              "Oops, wrong word. I meant {word2}. Spell that backwards, please.")),
           T(("I need a word reversed.", "Sure, which word?", "{word1}. No wait, make that {word2}.")),
           T(("Write '{word1}' in reverse.", "'{word1}' in reverse is {rev1}.",
              "Actually, I meant '{word2}'. What is that one reversed? Reply with the reversed word only."),
             states_format=True),
           T(("Can you reverse a word for me? The word is {word1}.", "Of course: {rev1}",
              "Thanks, but I typed the wrong word - it should have been {word2}. Could you do it again?")),
           T(("Reverse the letters of: {word1}", "{rev1}", "Correction: the word is {word2}.")),
           T(("Please write the word {word1} from the last letter to the first.", "{rev1}",
              "Hmm, I meant to say {word2}. Do the same for it.")),
           T(("Reverse this word: {word1}", "Here it is reversed: {rev1}",
              "My mistake, the word should be {word2}. Reverse {word2} instead, and answer with one word."),
             states_format=True),
           compare="text", near_misses=_correction_misses),

    family("chat_recall_item", CLUSTER, "Items are listed over turns; which item was at a given position?",
           _recall_item,
           T(("I need to buy {a}, {b} and {c}.", "Okay: {a}, {b} and {c}.", "What was the first thing on my list?"),
             answer="{a}"),
           T(("Put {a} on my shopping list.", "Added {a}.", "Add {b} too.", "Added {b}. Your list: {a}, {b}.",
              "Which item did I add first?"), answer="{a}"),
           T(("For the picnic I'm bringing {a}, {b}, {c} and {d}.", "Sounds good: {a}, {b}, {c} and {d}.",
              "Remind me, what was the third thing I said I'm bringing? Just the item, please."),
             answer="{c}", states_format=True),
           T(("My shopping list: {a}, {b}, {c}.", "Got it.", "Q: What is the last item on my list?\nA:"), answer="{c}"),
           T(("Add {a} to the list.", "Done.", "And {b}.", "Done.", "What was the second item I asked you to add?"),
             answer="{b}"),
           T(("This morning I bought {a} and {b}.", "Okay, {a} and {b}.",
              "In the afternoon I bought {c}. Which was the first thing I bought today?"), answer="{a}"),
           T(("Remember these, in order: {a}, {b}, {c}, {d}.", "Remembered: {a}, {b}, {c}, {d}.",
              "Which one came right after {b}?"), answer="{c}"),
           T(("We need {a}.", "Okay, {a}.", "We also need {b} and {c}.", "Okay, {b} and {c}.",
              "Which item did I mention before {b}? One word."), answer="{a}", states_format=True),
           compare="text", near_misses=other_labels(GROCERIES)),

    family("chat_running_total", CLUSTER, "Amounts are given over turns; what is the total?", _running_total,
           T(("I spent {a} dollars on {x1}.", "Noted: {a} dollars so far.", "Then {b} dollars on {x2}.",
              "That makes {ab} dollars so far.", "And {c} dollars on {x3}. What's my total now?")),
           T(("Keep a running total for me. Start with {a}.", "Total: {a}.", "Add {b}.", "Total: {ab}.",
              "Add {c}. What is the total? Give only the number."), states_format=True),
           T(("Add {a} to my score.", "Your score is {a}.", "Add {b} and then {c}. What is my score now?")),
           T(("Today I walked {a} minutes in the morning.", "Good start: {a} minutes.",
              "And {b} minutes at lunch, and {c} minutes in the evening. How many minutes did I walk today?")),
           T(("I read {a} pages on Monday.", "Great, {a} pages.", "On Tuesday I read {b} pages.",
              "Nice, {ab} pages so far.", "On Wednesday I read {c}. How many pages have I read in total?")),
           T(("Let's count boxes. The first van had {a}.", "{a} boxes so far.",
              "The second van had {b}, the third had {c}. How many boxes altogether? Number only."),
             states_format=True),
           T(("Running total, please: {a}", "{a}", "plus {b}", "{ab}", "plus {c}")),
           T(("I paid {a} for {x1}.", "Okay.", "Then {b} for {x2}.", "Okay.",
              "Then {c} for {x3}. How much did I pay altogether?")),
           compare="number"),

    family("chat_sorted_list", CLUSTER, "Words are added to a list over turns; give the list sorted.", _sorted_list,
           T(("Start a list with {a} and {b}.", "List: {a}, {b}.",
              "Add {c}. Now show me the whole list in alphabetical order."), answer="{sorted3}"),
           T(("Add {a} to my list.", "Added {a}.", "Add {b} and {c}.", "Added {b} and {c}.",
              "Add {d}, then give me the list sorted from A to Z, separated by commas."),
             answer="{sorted4}", states_format=True),
           T(("Here are some words: {a}, {b}.", "Okay.",
              "More words: {c}, {d}. Sort all the words I gave you alphabetically."), answer="{sorted4}"),
           T(("Remember the word {a}.", "Remembered: {a}.", "And {b}.", "Remembered: {a}, {b}.",
              "And {c}. Q: What are the words I gave, in alphabetical order?\nA:"), answer="{sorted3}"),
           T(("My list: {a}, {b}, {c}.", "Your list has {a}, {b} and {c}.",
              "Please add {d} and sort the list from Z to A. Only the words, comma-separated."),
             answer="{rsorted4}", states_format=True),
           T(("I'll give you words one by one. First: {a}", "Got {a}.", "Second: {b}", "Got {b}.",
              "Third: {c}. Now list all three alphabetically."), answer="{sorted3}"),
           T(("Collect these: {a}, {b}, {c}.", "Collected.",
              "Input: everything collected so far, plus {d}\nOutput: alphabetical order"), answer="{sorted4}"),
           T(("Put {a} and {b} on the list.", "Done: {a}, {b}.", "Add {c}, then sort the list."),
             answer="{sorted3}"),
           compare="list"),

    family("chat_recall_fact", CLUSTER, "The user mentions facts about themselves; later asks for one.",
           _recall_fact,
           T(("Hi, I'm {name} and I live in {city}.", "Nice to meet you, {name}!", "Which city did I say I live in?"),
             answer="{city}"),
           T(("My favourite colour is {colour}.", "I like {colour} too.", "I also have a pet {pet}.",
              "A {pet}, how nice!", "What is my favourite colour? One word, please."),
             answer="{colour}", states_format=True),
           T(("I have a {pet} at home.", "Lovely, a {pet}.", "Q: What kind of pet did I tell you I have?\nA:"),
             answer="{pet}"),
           T(("Call me {name}.", "Okay, {name}.", "I live in {city}.", "Got it: {city}.", "What is my name?"),
             answer="{name}"),
           T(("A few facts about me: I live in {city}, my favourite colour is {colour}, and I own a {pet}.",
              "Thanks for sharing!", "Which animal do I own?"), answer="{pet}"),
           T(("I'm {name}. My favourite colour is {colour}.", "Hello {name}!",
              "Remind me - which colour did I say I like best? Reply with the colour only."),
             answer="{colour}", states_format=True),
           T(("I moved to {city} last year.", "How exciting, {city}!", "My {pet} loves it there too.",
              "I'm sure your {pet} does.", "Which city did I move to last year?"), answer="{city}"),
           T(("My name is {name} and I have a {pet}.", "Nice to meet you, {name}.",
              "Input: the name I told you\nOutput:"), answer="{name}"),
           compare="text", near_misses=other_labels(FIRST_NAMES, CITIES, PETS, COLOURS)),

    family("chat_follow_up_count", CLUSTER, "The user asks a letter count, then 'and in <word>?'.", _follow_up,
           T(("How many letters are in the word '{w1}'?", "{n1}", "And in '{w2}'?")),
           T(("Count the letters in {w1}.", "{w1} has {n1} letters.", "What about {w2}?")),
           T(("How long is the word {w1}, in letters?", "{n1} letters.",
              "Same question for {w2}. Answer with a number."), states_format=True),
           T(("Q: Number of letters in \"{w1}\"?\nA:", "{n1}", "Q: And in \"{w2}\"?\nA:")),
           T(("Tell me how many letters '{w1}' has.", "It has {n1}.", "Now do '{w2}'.")),
           T(("Letter count: {w1}", "{n1}", "Letter count: {w2}")),
           T(("I'm checking word lengths. \"{w1}\"?", "\"{w1}\": {n1} letters.", "\"{w2}\"?")),
           T(("How many characters does '{w1}' have?", "'{w1}' has {n1} characters.",
              "And the word '{w2}'? Just the number, please."), states_format=True),
           compare="number"),
)
