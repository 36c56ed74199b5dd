"""Building blocks of the FLAN-style mixture (sftlab.builtin.flan): a task family is a generator of
(fields, gold answer) plus >= 8 independently written instruction templates, grouped into a cluster
by kind of task. FLAN holds out whole clusters, so a cluster is the unit of "unseen task".

A template is
- single turn: `T("Reverse the word '{word}'.")` - the user turn, a str.format over the fields;
- multi-turn: `T(("first user turn {a}", "{reply1}", "second user turn"))` - user / assistant / ...
  / user, odd length; the assistant turns are templates too and are context (not graded);
- inverted: `T("'{reversed}' is a word written backwards. Which word?", answer="{word}", inverted=True)`:
  the answer is another field (FLAN's input inversion), graded with the family's comparator;
- `states_format=True` when the instruction says what shape the answer takes ("reply with the
  number only"); FLAN mixes templates that do and do not.

Comparators are the suite's (`sftlab.builtin.tasks`): text, text_cs, number, list, set, json; a family
may instead give its own `checker(response, answer) -> bool` for answers those cannot judge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random

from sftlab.builtin.tasks import _COMPARE, normalise_response  # one place for answer comparison

Fields = dict[str, str]
Generator = Callable[[Random], tuple[Fields, str]]
Checker = Callable[[str, str], bool]

MIN_TEMPLATES = 8


@dataclass(frozen=True)
class Template:
    turns: tuple[str, ...]  # user, assistant, user, ...: odd length, user first and last
    answer: str | None = None  # a format string over the fields; None = the generator's gold answer
    states_format: bool = False
    inverted: bool = False

    def render(self, fields: Fields, gold: str) -> tuple[list[tuple[str, str]], str]:
        """([(role, text)...], answer): the conversation up to the graded answer, and that answer."""
        roles = ["user" if i % 2 == 0 else "assistant" for i in range(len(self.turns))]
        messages = [(role, turn.format(**fields)) for role, turn in zip(roles, self.turns)]
        return messages, (self.answer.format(**fields) if self.answer is not None else gold)


def T(turns: str | tuple[str, ...], *, answer: str | None = None, states_format: bool = False,
      inverted: bool = False) -> Template:
    """A template: a user turn, or (user, assistant, ..., user) for a multi-turn one."""
    turns = (turns,) if isinstance(turns, str) else tuple(turns)
    if len(turns) % 2 == 0:
        raise ValueError(f"template {turns!r}: turns alternate user/assistant and end on a user turn (odd count)")
    if inverted and answer is None:
        raise ValueError(f"template {turns[0]!r}: an inverted template names its answer field, e.g. answer='{{word}}'")
    return Template(turns, answer, states_format, inverted)


@dataclass(frozen=True)
class Family:
    name: str
    cluster: str
    description: str
    generator: Generator
    templates: tuple[Template, ...]
    compare: str = "text"  # a key of the suite's comparators, ignored when `checker` is given
    checker: Checker | None = field(default=None, compare=False)
    # wrong answers close to the gold one, for the tests (tests/test_flan_families.py); the default
    # derives them from the comparator; a family with its own checker must give its own
    near_misses: Callable[[str], list[str]] | None = field(default=None, compare=False)

    def __post_init__(self):
        if len(self.templates) < MIN_TEMPLATES:
            raise ValueError(f"family {self.name!r}: {len(self.templates)} templates, FLAN-style needs >= {MIN_TEMPLATES}")
        if self.checker is None and self.compare not in _COMPARE:
            raise ValueError(f"family {self.name!r}: compare={self.compare!r}, one of {sorted(_COMPARE)}")
        if self.checker is not None and self.near_misses is None:
            raise ValueError(f"family {self.name!r}: a family with its own checker gives its own near_misses")

    @property
    def multi_turn(self) -> bool:
        return any(len(t.turns) > 1 for t in self.templates)

    def example(self, rng: Random) -> tuple[list[tuple[str, str]], str, int]:
        """(messages up to the graded answer, answer, template index) drawn from `rng`."""
        fields, gold = self.generator(rng)
        index = rng.randrange(len(self.templates))
        messages, answer = self.templates[index].render(fields, gold)
        return messages, answer, index

    def check(self, response: str, answer: str) -> bool:
        return self.checker(response, answer) if self.checker is not None else _COMPARE[self.compare](response, answer)

    def wrong_answers(self, answer: str) -> list[str]:
        """Near-misses of `answer` that the checker must reject (own ones, else the comparator's)."""
        misses = self.near_misses(answer) if self.near_misses is not None else default_near_misses(self.compare, answer)
        return [m for m in misses if m.strip()]


def default_near_misses(compare: str, answer: str) -> list[str]:
    """Answers one small edit away from `answer`, each wrong under comparator `compare`."""
    out: list[str] = []
    if compare == "number":
        n = int(answer)
        return [str(n + 1), str(n - 1)] + ([f"{n}0"] if n else [])  # "00" would read as 0
    if compare in ("list", "set", "json") and "," in answer:
        if compare == "json":
            import json

            value = json.loads(answer)
            return [json.dumps(value[:-1])] if isinstance(value, list) and value else [answer[:-1]]
        items = [t.strip() for t in answer.split(",")]
        out.append(", ".join(items[:-1]))  # one item missing
        if compare == "list" and len(set(items)) > 1:
            out.append(", ".join(items[1:] + items[:1]))  # same items, wrong order
        if compare == "set":
            out.append(", ".join(items + ["zzz"]))  # one item too many
        return out
    if len(answer) > 1:
        out.append(answer[:-1])  # last character missing
    out.append(answer + "x")
    if compare == "text_cs" and answer.swapcase() != answer:
        out.append(answer.swapcase())
    return out


def label_misses(*labels: str) -> Callable[[str], list[str]]:
    """Near-misses of a label answer: every other label. The comparator's default near-misses only
    mutate characters ("ye", "yesx"), which no model writes; the real mistake is the other label."""
    return lambda answer: [label for label in labels if label.lower() != answer.lower()]


def other_labels(*pools: tuple[str, ...]) -> Callable[[str], list[str]]:
    """Near-misses of an answer drawn from one of `pools` (names, cities, colours...): the other members
    of its pool - what reading the wrong fact or recalling the wrong turn gives."""
    def misses(answer: str) -> list[str]:
        for pool in pools:
            if answer in pool:
                return [x for x in pool if x != answer]
        return default_near_misses("text", answer)
    return misses


def family(name: str, cluster: str, description: str, generator: Generator, *templates: Template,
           compare: str = "text", checker: Checker | None = None,
           near_misses: Callable[[str], list[str]] | None = None) -> Family:
    return Family(name, cluster, description, generator, tuple(templates), compare, checker, near_misses)


__all__ = ["Family", "Template", "T", "family", "normalise_response", "MIN_TEMPLATES", "Fields", "Generator"]
