"""Cluster 'arithmetic' of the FLAN-style mixture: one small calculation on two or a few whole
numbers; the answer is one integer, graded by value ("1,234" and "The answer is 12." are accepted).

(See sftlab.builtin.flan.base for how families and templates are written.)"""

from __future__ import annotations

from random import Random

from sftlab.builtin.flan.base import Family, T, family
from sftlab.builtin.tasks import gen_add, gen_multiply, gen_subtract

CLUSTER = "arithmetic"
# subtract resembles add (two-number arithmetic) without being trained, as in the older suite's split.
HELDOUT_FAMILY: str | None = "subtract"


def _off_by_one(answer: str) -> list[str]:
    """Near-misses for answers that can be 0: base.default_near_misses appends a digit ("0" -> "00"),
    which for 0 is the same number and so not a miss."""
    return [str(int(answer) + 1), str(int(answer) - 1)]


def _numbers(values) -> str:
    return ", ".join(map(str, values))


# ---------------------------------------------------------------- generators
# Each generator returns, besides the inputs, the result under its own name: inverted templates ask
# for an input given the result, multi-turn ones show an intermediate result in the assistant turn.

def _add(rng: Random):
    fields, total = gen_add(rng)
    return {**fields, "sum": total}, total


def _subtract(rng: Random):
    fields, diff = gen_subtract(rng)
    return {**fields, "diff": diff}, diff


def _multiply(rng: Random):
    fields, product = gen_multiply(rng)
    return {**fields, "product": product}, product


def _remainder(rng: Random):
    b = rng.randint(2, 9)
    a = rng.randint(b + 1, 99)
    return {"a": str(a), "b": str(b), "q": str(a // b), "r": str(a % b)}, str(a % b)


def _double(rng: Random):
    n = rng.randint(1, 500)
    return {"n": str(n), "double": str(2 * n)}, str(2 * n)


def _half(rng: Random):
    n = 2 * rng.randint(1, 500)  # even only: the half is a whole number
    return {"n": str(n), "half": str(n // 2)}, str(n // 2)


def _sum_list(rng: Random):
    ns = [rng.randint(1, 50) for _ in range(rng.randint(3, 6))]
    return {"items": _numbers(ns), "count": str(len(ns)), "sum": str(sum(ns))}, str(sum(ns))


def _add_three(rng: Random):
    a, b, c = (rng.randint(1, 60) for _ in range(3))
    return {"a": str(a), "b": str(b), "c": str(c), "ab": str(a + b), "sum": str(a + b + c)}, str(a + b + c)


def _range(rng: Random):
    ns = rng.sample(range(1, 100), rng.randint(3, 6))
    hi, lo = max(ns), min(ns)
    return {"items": _numbers(ns), "max": str(hi), "min": str(lo), "range": str(hi - lo)}, str(hi - lo)


# ---------------------------------------------------------------- families

FAMILIES: tuple[Family, ...] = (
    family("add", CLUSTER, "Add two numbers.", _add,
           T("What is {a} plus {b}?"),
           T("Add {a} and {b}."),
           T("Compute the sum of the following numbers.\nInput: {a}, {b}"),
           T("Calculate {a} + {b}. Reply with the number only.", states_format=True),
           T("Q: I had {a} marbles and a friend gave me {b} more. How many marbles do I have now?\nA:"),
           T("{a} + {b} =\n\nGive just the result.", states_format=True),
           T("Find the total.\n\nInput: {a} + {b}"),
           T("x + {b} = {sum}. What is x?", answer="{a}", inverted=True),
           T("Which number must be added to {a} to get {sum}? Answer with a number.", answer="{b}",
             inverted=True, states_format=True),
           compare="number"),

    family("subtract", CLUSTER, "Subtract one number from another.", _subtract,
           T("What is {a} minus {b}?"),
           T("Subtract {b} from {a}."),
           T("Compute the difference of the following numbers (first minus second).\nInput: {a}, {b}"),
           T("Calculate {a} - {b}. Reply with the number only.", states_format=True),
           T("Q: There were {a} birds on a wire and {b} flew away. How many are left?\nA:"),
           T("{a} - {b} =\n\nJust the number, please.", states_format=True),
           T("Take {b} away from {a}. What remains?"),
           T("{a} - x = {diff}. What is x?", answer="{b}", inverted=True),
           T("Q: After subtracting {b} from a number the result is {diff}. What was the number?\nA:",
             answer="{a}", inverted=True),
           compare="number", near_misses=_off_by_one),

    family("multiply", CLUSTER, "Multiply two numbers.", _multiply,
           T("What is {a} times {b}?"),
           T("Multiply {a} by {b}."),
           T("Compute the product of the following numbers.\nInput: {a}, {b}"),
           T("Calculate {a} x {b}. Answer with a single number.", states_format=True),
           T("Q: A box holds {a} rows of {b} eggs. How many eggs are in the box?\nA:"),
           T("{a} * {b}\n\nEvaluate the expression above and write only the result.", states_format=True),
           T("Find the product.\n\nInput: {a} * {b}"),
           T("{a} times what number equals {product}?", answer="{b}", inverted=True),
           T("Q: x * {b} = {product}. Solve for x.\nA:", answer="{a}", inverted=True),
           compare="number"),

    family("remainder", CLUSTER, "The remainder of a whole-number division.", _remainder,
           T("What is the remainder when {a} is divided by {b}?"),
           T("Compute {a} mod {b}."),
           T("Divide the first number by the second and give the remainder.\nInput: {a}, {b}"),
           T("Q: {a} sweets are shared equally among {b} children, each getting as many as possible. "
             "How many sweets are left over?\nA:"),
           T("{a} % {b} = ?\nReply with the number only.", states_format=True),
           T("Find the remainder of {a} divided by {b}. Write just the remainder.", states_format=True),
           T("Input: {a} / {b}\n\nWhat is left over after the whole-number division?"),
           T(("How many times does {b} go into {a} completely?", "{q}",
              "And what is left over?")),
           T("If you pack {a} cups into boxes of {b}, how many cups do not fill a whole box?"),
           compare="number", near_misses=_off_by_one),

    family("double", CLUSTER, "Double a number.", _double,
           T("What is double {n}?"),
           T("Double the number {n}."),
           T("Multiply the following number by two.\nInput: {n}"),
           T("Q: What is twice {n}?\nA:"),
           T("{n}\n\nWhat do you get when you double it? Give only the number.", states_format=True),
           T("Number: {n}\nDoubled:", states_format=True),
           T("I have {n} coins and my sister has twice as many. How many coins does my sister have?"),
           T("Doubling a number gives {double}. What was the number?", answer="{n}", inverted=True),
           T("Q: Which number, added to itself, makes {double}?\nA:", answer="{n}", inverted=True),
           compare="number"),

    family("half", CLUSTER, "Halve an even number.", _half,
           T("What is half of {n}?"),
           T("Divide {n} by two."),
           T("Halve the following number.\nInput: {n}"),
           T("Q: Two friends share {n} stickers equally. How many does each get?\nA:"),
           T("{n} / 2 = ?\nAnswer with a whole number only.", states_format=True),
           T("Number: {n}\nHalf of it:", states_format=True),
           T("Split {n} into two equal parts. How big is each part?"),
           T("Half of a number is {half}. What is the number?", answer="{n}", inverted=True),
           T("Q: {half} is half of which number? Reply with the number only.\nA:", answer="{n}",
             inverted=True, states_format=True),
           compare="number"),

    family("sum_list", CLUSTER, "Add up a list of numbers.", _sum_list,
           T("What is the sum of {items}?"),
           T("Add up these numbers: {items}"),
           T("Compute the total of the following list.\nInput: {items}"),
           T("Q: Over {count} days a shop sold these numbers of apples: {items}. "
             "How many apples did it sell in all?\nA:"),
           T("{items}\n\nWhat do these numbers add up to? Reply with the total only.", states_format=True),
           T("Numbers: {items}\nSum:", states_format=True),
           T("Find the sum of all {count} numbers in this list and give just that number: {items}",
             states_format=True),
           T(("I am going to give you some numbers: {items}.", "I have the {count} numbers {items}.",
              "What do they add up to?")),
           compare="number"),

    family("add_three", CLUSTER, "Add three numbers.", _add_three,
           T("What is {a} + {b} + {c}?"),
           T("Add {a}, {b} and {c}."),
           T("Compute the sum of the three numbers below.\nInput: {a}, {b}, {c}"),
           T("Q: Anna has {a} beads, Ben has {b} and Cleo has {c}. How many beads do they have together?\nA:"),
           T("{a} + {b} + {c} =\nWrite only the result.", states_format=True),
           T(("What is {a} plus {b}?", "{ab}", "Now add {c} to that.")),
           T(("Add {a} and {b}, please.", "{a} + {b} = {ab}.", "And if I add {c} more, what is the total? "
              "Reply with the number only."), states_format=True),
           T("Total of {a}, {b} and {c}?"),
           T("x - {c} = {a} + {b}. What is x?"),
           compare="number"),

    family("range_of_list", CLUSTER, "The largest minus the smallest number of a list.", _range,
           T("What is the difference between the largest and the smallest number in {items}?"),
           T("Subtract the smallest of these numbers from the largest: {items}"),
           T("Compute the range (maximum minus minimum) of the following list.\nInput: {items}"),
           T("Q: The temperatures this week were {items}. How far apart were the highest and the lowest?\nA:"),
           T("{items}\n\nBy how much does the biggest number exceed the smallest? Give only the number.",
             states_format=True),
           T("Numbers: {items}\nMax - min:", states_format=True),
           T(("What is the largest number in this list: {items}?", "{max}",
              "And how much larger is it than the smallest number in the list?")),
           T(("Find the smallest number among {items}.", "The smallest is {min}.",
              "What is the largest minus the smallest? Just the number."), states_format=True),
           compare="number"),
)
