"""Verifiable instruction-following checks: each checker passes and fails on hand-written text,
loose scoring follows IFEval's variants, and accuracies match hand-computed values."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from sftlab.errors import DataError
from sftlab.evaluate.ifeval import (
    CHECKERS,
    IFEvalPrompt,
    count_words,
    default_prompts_path,
    evaluate_responses,
    load_prompts,
    loose_variants,
    split_sentences,
)

# constraint id -> (kwargs, a response that satisfies it, a response that does not)
CASES: dict[str, tuple[dict, str, str]] = {
    "length_constraints:number_words": (
        {"num_words": 5, "relation": "at least"}, "one two three four five", "one two three four"),
    "length_constraints:number_sentences": (
        {"num_sentences": 2, "relation": "exactly"},
        "Dr. Smith arrived at 3.5 p.m. on Monday. He left soon after!",
        "One. Two. Three."),
    "length_constraints:number_paragraphs": (
        {"num_paragraphs": 2}, "First part here.\n***\nSecond part here.",
        "First part.\n***\n\n***\nSecond part."),  # an empty paragraph in the middle fails
    "keywords:existence": (
        {"keywords": ["durable", "light weight"]}, "A Durable bottle, light weight too.", "A durable bottle."),
    "keywords:forbidden_words": (
        {"forbidden_words": ["sun", "hot"]}, "A sunny, shot-free day.", "The Sun was out."),
    "keywords:frequency": (
        {"keyword": "team", "frequency": 3, "relation": "at least"},
        "Team spirit: our team is a great TEAM.", "Our team and our teammates."),
    "keywords:letter_frequency": (
        {"letter": "z", "let_frequency": 2, "let_relation": "at least"}, "Zany zebra.", "A zebra."),
    "detectable_format:json_format": (
        {}, '```json\n{"title": "Dune", "year": 1965}\n```', 'Here it is: {"title": "Dune"}'),
    "detectable_format:number_bullet_lists": (
        {"num_bullets": 3}, "Tips:\n* save\n- spend less\n  + plan\n---", "* one\n* two\n*not a bullet*"),
    "detectable_format:title": ({}, "<<Autumn Leaves>>\nRed and gold.", "<< >> Autumn Leaves"),
    "detectable_format:multiple_sections": (
        {"num_sections": 2, "section_spliter": "Section"},
        "Section 1\nDig.\n## SECTION 2\nPlant.", "Section 1\nDig, as in Section 2 we plant."),
    "detectable_format:number_highlighted_sections": (
        {"num_highlights": 2}, "This is *key* and **also key**.", "Only *one* here, and ** ** is empty."),
    "detectable_content:postscript": (
        {"postscript_marker": "P.S."}, "See you soon.\n\nP.S. bring cake", "See you soon. The P.S. is missing"),
    "detectable_content:number_placeholders": (
        {"num_placeholders": 2}, "Dear [name], meet at [address].", "Dear [name], meet at []."),
    "startend:starts_with": (
        {"phrase": "Once upon a time"}, "  once upon a time, a fox...", "There once upon a time was a fox."),
    "startend:end_checker": (
        {"end_phrase": "Any other questions?"}, "\"Rainbows are light. Any other questions?\"",
        "Any other questions? Rainbows are light."),
    "startend:quotation": ({}, '  "I love autumn."  ', '"I love autumn." she said.'),
    "change_case:english_lowercase": ({}, "a quiet weekend, 2 walks.", "a quiet Weekend."),
    "change_case:english_capital": ({}, "BAKE SALE ON SUNDAY, 10 AM!", "BAKE SALE on Sunday."),
    "punctuation:no_comma": ({}, "No commas here. None at all.", "Well, one comma."),
}


def test_every_checker_has_cases_and_there_are_at_least_15():
    assert len(CHECKERS) >= 15
    assert set(CASES) == set(CHECKERS)


@pytest.mark.parametrize("cid", sorted(CASES))
def test_checker_passes_and_fails(cid):
    kwargs, good, bad = CASES[cid]
    assert CHECKERS[cid](good, **kwargs) is True
    assert CHECKERS[cid](bad, **kwargs) is False


def test_relations_and_word_counting():
    check = CHECKERS["length_constraints:number_words"]
    assert count_words("don't stop 3.5") == 5  # IFEval's \w+ tokens
    assert check("a b c", num_words=3, relation="at most")
    assert not check("a b c d", num_words=3, relation="at most")
    assert check("a b", num_words=3, relation="less than")
    assert not check("a b c", num_words=3, relation="less than")
    with pytest.raises(ValueError, match="relation"):
        check("a", num_words=1, relation="about")


def test_sentence_splitter():
    assert split_sentences("Hi there. How are you? Fine!") == ["Hi there.", "How are you?", "Fine!"]
    assert len(split_sentences("Mr. J. Smith paid 3.50 e.g. for tea. Then he left.")) == 2
    assert len(split_sentences("\"Stop!\" she said. He stopped.")) == 2
    assert len(split_sentences("A line without a full stop\n\nAnother paragraph.")) == 2
    assert split_sentences("***\n - \n") == []


def test_loose_variants_are_ifevals_eight():
    variants = loose_variants("Sure!\n*bold* answer\nBye")
    assert variants == [
        "Sure!\n*bold* answer\nBye", "*bold* answer\nBye", "Sure!\n*bold* answer", "*bold* answer",
        "Sure!\nbold answer\nBye", "bold answer\nBye", "Sure!\nbold answer", "bold answer",
    ]


def _prompt(pid: str, *constraints: tuple[str, dict]) -> IFEvalPrompt:
    return IFEvalPrompt(pid, "prompt " + pid, tuple(constraints))


def test_aggregation_matches_hand_computed_values():
    prompts = [
        _prompt("a", ("punctuation:no_comma", {}), ("change_case:english_lowercase", {})),
        _prompt("b", ("detectable_format:json_format", {})),
        _prompt("c", ("startend:starts_with", {"phrase": "yes"}), ("punctuation:no_comma", {}),
                ("detectable_format:title", {})),
    ]
    responses = [
        "all lowercase and no comma",                 # a: 2/2 strict
        'Sure, here it is:\n{"k": 1}',                # b: strict fails; loose (first line removed) passes
        "Yes I agree, <<Title>>",                     # c: starts ok, comma fails, title ok -> 2/3
    ]
    result = evaluate_responses(prompts, responses)
    assert [d.strict for d in result.details] == [[True, True], [False], [True, False, True]]
    assert [d.loose for d in result.details] == [[True, True], [True], [True, False, True]]
    assert result.n_prompts == 3 and result.n_instructions == 6
    assert result.prompt_strict == pytest.approx(1 / 3)
    assert result.instruction_strict == pytest.approx(4 / 6)
    assert result.prompt_loose == pytest.approx(2 / 3)
    assert result.instruction_loose == pytest.approx(5 / 6)
    assert result.per_constraint["punctuation:no_comma"] == {"n": 2, "strict": 0.5, "loose": 0.5}
    assert result.per_constraint["detectable_format:json_format"] == {"n": 1, "strict": 0.0, "loose": 1.0}
    as_dict = result.to_dict()
    json.dumps(as_dict)  # report-ready
    assert [d["strict_all"] for d in as_dict["details"]] == [True, False, False]


def test_empty_response_never_passes_and_lengths_must_match():
    prompts = [_prompt("a", ("punctuation:no_comma", {}))]
    result = evaluate_responses(prompts, ["   "])
    assert result.prompt_strict == 0.0 and result.prompt_loose == 0.0
    with pytest.raises(ValueError, match="1 prompts but 2 responses"):
        evaluate_responses(prompts, ["x", "y"])


def test_shipped_prompts_load_and_cover_every_constraint_three_times():
    path = default_prompts_path()
    assert path.is_file(), f"package data missing: {path}"
    prompts = load_prompts()
    assert len(prompts) >= 60
    assert len({p.id for p in prompts}) == len(prompts)
    assert all(1 <= len(p.constraints) <= 3 for p in prompts)
    counts = Counter(cid for p in prompts for cid, _ in p.constraints)
    assert set(counts) == set(CHECKERS)
    assert min(counts.values()) >= 3, counts


def test_shipped_prompts_mention_their_keywords_and_phrases():
    # a cheap consistency check that the prompt text states what the checker tests
    for p in load_prompts():
        for cid, kw in p.constraints:
            for key in ("phrase", "end_phrase", "keyword", "letter"):
                if key in kw:
                    assert kw[key].lower() in p.prompt.lower(), (p.id, cid, kw)
            for word in kw.get("keywords", []) + kw.get("forbidden_words", []):
                assert word.lower() in p.prompt.lower(), (p.id, cid, word)


def test_load_prompts_reports_every_problem_with_line_and_field(tmp_path):
    lines = [
        json.dumps({"id": "ok", "prompt": "p", "constraints": [{"id": "punctuation:no_comma"}]}),
        "{not json",
        json.dumps({"id": "x", "prompt": "p", "constraints": [{"id": "nope:nothing", "kwargs": {}}]}),
        json.dumps({"id": "y", "prompt": "p", "constraints": [
            {"id": "length_constraints:number_words", "kwargs": {"num_words": 5, "relation": "roughly"}}]}),
        json.dumps({"id": "z", "prompt": "p", "constraints": [
            {"id": "keywords:letter_frequency", "kwargs": {"letter": "z"}}]}),
        json.dumps({"id": "ok", "prompt": "", "constraints": []}),
    ]
    bad = tmp_path / "prompts.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        load_prompts(bad)
    where = [(p.where.rsplit(":", 1)[1], p.field) for p in info.value.problems]
    assert where == [
        ("2", ""),
        ("3", "constraints[0].id"),
        ("4", "constraints[0].kwargs"),
        ("5", "constraints[0].kwargs"),
        ("6", "prompt"),
        ("6", "constraints"),
        ("6", "id"),
    ]
    assert "roughly" in str(info.value) and "let_frequency" in str(info.value)
