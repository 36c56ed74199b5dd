"""The built-in task suite: determinism, splits, disjointness, and the answer checker."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from sftlab.builtin.tasks import (
    FAMILIES,
    HELDOUT_FAMILIES,
    KINDS,
    SEEN_FAMILIES,
    build_suite,
    check,
    check_answer,
    normalise_response,
    train_eval_split,
)
from sftlab.builtin.words import CATEGORIES, COMMON_WORDS, PAST_TENSE, PLURALS
from sftlab.conversation import Conversation


def test_family_inventory():
    assert len(FAMILIES) >= 14
    assert len(SEEN_FAMILIES) >= 9 and len(HELDOUT_FAMILIES) >= 4
    assert set(SEEN_FAMILIES).isdisjoint(HELDOUT_FAMILIES)
    assert set(SEEN_FAMILIES) | set(HELDOUT_FAMILIES) == set(FAMILIES)
    assert {f.kind for f in FAMILIES.values()} == set(KINDS)
    # every held-out family has a seen family of the same kind (generalisation is plausible)
    seen_kinds = {FAMILIES[f].kind for f in SEEN_FAMILIES}
    assert all(FAMILIES[f].kind in seen_kinds for f in HELDOUT_FAMILIES)
    for fam in FAMILIES.values():
        assert len(fam.phrasings) >= 4, fam.name
        assert any("Input:" in p for p in fam.phrasings), fam.name
        assert any("Input:" not in p for p in fam.phrasings), fam.name


def test_word_lists_have_a_few_hundred_words_and_unambiguous_tables():
    assert len(COMMON_WORDS) >= 250 and len(set(COMMON_WORDS)) == len(COMMON_WORDS)
    all_category_words = [w for ws in CATEGORIES.values() for w in ws]
    assert len(all_category_words) == len(set(all_category_words))  # odd one out is unique
    assert len(PLURALS) >= 60 and len(PAST_TENSE) >= 60


def test_build_suite_is_deterministic_and_well_formed():
    a = build_suite(30, seed=7)
    b = build_suite(30, seed=7)
    c = build_suite(30, seed=8)
    assert [x.to_json() for x in a] == [x.to_json() for x in b]
    assert [x.messages for x in a] != [x.messages for x in c]
    assert len(a) == 30 * len(FAMILIES)
    counts = Counter(x.meta["family"] for x in a)
    assert set(counts.values()) == {30}
    for conv in a:
        assert isinstance(conv, Conversation)
        assert [m.role for m in conv.messages] == ["user", "assistant"]
        fam = conv.meta["family"]
        assert conv.meta["kind"] == FAMILIES[fam].kind
        assert conv.meta["split"] == ("seen" if fam in SEEN_FAMILIES else "heldout")
        assert conv.meta["answer"] == conv.messages[1].content
        assert 0 <= conv.meta["phrasing"] < len(FAMILIES[fam].phrasings)
        assert re.fullmatch(rf"builtin:{fam}\[\d+\]", conv.source)
        assert check_answer(conv, conv.messages[1].content), conv.to_json()


def test_families_are_diverse():
    suite = build_suite(100, seed=0)
    for fam in FAMILIES:
        examples = [c for c in suite if c.meta["family"] == fam]
        assert len({c.messages[0].content for c in examples}) == 100, fam
        assert len({c.meta["phrasing"] for c in examples}) == len(FAMILIES[fam].phrasings), fam
        # answers vary too (classification families have 2 labels, the rest many)
        assert len({c.meta["answer"] for c in examples}) >= 2, fam
    labels = Counter(c.meta["answer"] for c in suite if c.meta["family"] == "is_prime")
    assert min(labels.values()) >= 30  # balanced yes/no, not 75% "no"


def test_family_subset_and_unknown_family():
    only = build_suite(5, families=["add", "plural"], seed=0)
    assert [c.meta["family"] for c in only] == ["add"] * 5 + ["plural"] * 5
    with pytest.raises(ValueError, match="unknown task families"):
        build_suite(1, families=["nope"])


def test_requesting_more_than_a_family_can_make_raises_instead_of_repeating():
    with pytest.raises(ValueError, match="distinct instructions"):
        build_suite(10_000, families=["plural"])  # 80 nouns x 5 phrasings = 400 possible


def test_train_eval_split_is_disjoint_and_covers_both_kinds_of_eval():
    train, evaluation = train_eval_split(seed=0, n_train_per_family=120, n_eval_per_family=25)
    assert {c.meta["family"] for c in train} == set(SEEN_FAMILIES)
    assert all(c.meta["split"] == "seen" for c in train)
    assert len(train) == 120 * len(SEEN_FAMILIES)
    eval_families = Counter(c.meta["family"] for c in evaluation)
    assert set(eval_families) == set(SEEN_FAMILIES) | set(HELDOUT_FAMILIES)
    assert set(eval_families.values()) == {25}
    train_prompts = {c.messages[0].content for c in train}
    eval_prompts = [c.messages[0].content for c in evaluation]
    assert train_prompts.isdisjoint(eval_prompts)
    assert len(set(eval_prompts)) == len(eval_prompts)
    assert len({c.id for c in train + evaluation}) == len(train) + len(evaluation)
    again = train_eval_split(seed=0, n_train_per_family=120, n_eval_per_family=25)
    assert [c.to_json() for c in again[1]] == [c.to_json() for c in evaluation]


GOLD_CASES = [
    # family, fields of a hand-made example, gold, responses accepted, responses rejected
    ("reverse_word", "elppa", ["elppa", " Elppa. ", '"elppa"', "The answer is elppa", "Answer: elppa"],
     ["apple", "elpa", "elppa elppa", ""]),
    ("uppercase", "GREEN TREE", ["GREEN TREE", "GREEN TREE.", "'GREEN TREE'"], ["green tree", "Green Tree", "GREEN"]),
    ("sort_words", "apple, cherry, lemon", ["apple, cherry, lemon", "apple cherry lemon", "Apple, Cherry and Lemon"],
     ["cherry, apple, lemon", "apple, cherry", "apple, cherry, lemon, lemon"]),
    ("sort_numbers", "3, 17, 42", ["3, 17, 42", "3 17 42"], ["42, 17, 3", "3, 17"]),
    ("extract_email", "tom.rain@mail.org", ["tom.rain@mail.org", "Tom.Rain@mail.org."], ["tom@mail.org", "mail.org"]),
    ("extract_number", "1234", ["1234", "1,234", "The answer is 1234."], ["123", "1234 5", "12.34"]),
    ("extract_names", "Maria, Tom", ["Maria, Tom", "Tom, Maria", "Maria and Tom"], ["Maria", "Maria, Tom, Anna"]),
    ("sentiment", "positive", ["positive", "Positive.", "The answer is positive"], ["negative", "positive or negative"]),
    ("parity", "odd", ["odd", "Odd"], ["even", "odd even"]),
    ("is_prime", "no", ["no", "No."], ["yes", "not"]),
    ("add", "95", ["95", " 95 "], ["59", "95 apples", "ninety-five"]),
    ("subtract", "0", ["0"], ["-0.5", "1"]),
    ("count_letter", "2", ["2", "Answer: 2"], ["3", "two"]),
    ("csv_to_json", '["red", "blue"]', ['["red", "blue"]', '["red","blue"]', '```json\n["red", "blue"]\n```'],
     ['["blue", "red"]', "red, blue", '["red"]']),
    ("format_date", "2021-03-14", ["2021-03-14"], ["14/03/2021", "2021-14-03"]),
    ("plural", "children", ["children", "Children"], ["childs", "child"]),
    ("past_tense", "went", ["went"], ["goed", "gone"]),
    ("swap_first_last", "down cat sat the", ["down cat sat the", "Down cat sat the."], ["the cat sat down"]),
]


@pytest.mark.parametrize("family,gold,accepted,rejected", GOLD_CASES, ids=[c[0] for c in GOLD_CASES])
def test_check_accepts_only_the_gold_answer(family, gold, accepted, rejected):
    meta = {"family": family, "answer": gold}
    for r in accepted:
        assert check(family, r, meta), (family, r)
        assert check_answer(meta, r), (family, r)
    for r in rejected:
        assert not check(family, r, meta), (family, r)


def test_check_answer_errors_are_actionable():
    with pytest.raises(ValueError, match="lacks"):
        check_answer({"answer": "x"}, "x")
    with pytest.raises(ValueError, match="unknown task family"):
        check("nope", "x", {"answer": "x"})


def test_normalise_response_only_removes_wrappers():
    assert normalise_response('  The answer is "42".  ') == "42"
    assert normalise_response("Answer: yes") == "yes"
    assert normalise_response("answers") == "answers"  # no colon: not a prefix
    assert normalise_response("a  b\n c") == "a b c"


def test_gold_answers_are_short_and_json_is_valid():
    for conv in build_suite(40, seed=3):
        answer = conv.meta["answer"]
        assert 0 < len(answer) <= 80 and "\n" not in answer
        if conv.meta["family"] == "csv_to_json":
            assert isinstance(json.loads(answer), list)


# ---------------------------------------------------------------- general-text corpus

def test_general_text_corpus_ships_and_is_varied():
    from importlib import resources

    from sftlab.builtin.general_text import load_general_text, load_general_text_records
    from sftlab.builtin.tasks import load_general_text as reexported

    assert (resources.files("sftlab.builtin") / "general_text.jsonl").is_file()
    records = load_general_text_records()
    texts = load_general_text()
    assert reexported() == texts == [r["text"] for r in records]
    assert len(texts) >= 40 and len(set(texts)) == len(texts)
    assert len({r["id"] for r in records}) == len(records)
    topics = Counter(r["topic"] for r in records)
    assert set(topics) == {"science", "history", "geography", "cooking", "sports", "technology", "nature"}
    assert min(topics.values()) >= 5
    for text in texts:
        assert 100 <= len(text.split()) <= 200, text[:60]
        assert text.isascii() or all(ord(c) < 0x2000 for c in text)  # plain prose, no odd symbols


def test_general_text_errors_name_line_and_field(tmp_path):
    from sftlab.builtin.general_text import load_general_text
    from sftlab.errors import DataError

    bad = tmp_path / "g.jsonl"
    bad.write_text('{"id": "a", "topic": "x", "text": "fine"}\n{oops\n{"id": "b", "topic": "x"}\n')
    with pytest.raises(DataError) as info:
        load_general_text(bad)
    assert [(p.where.rsplit(":", 1)[1], p.field) for p in info.value.problems] == [("2", ""), ("3", "text")]
