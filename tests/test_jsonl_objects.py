"""read_jsonl_objects: the one small-JSONL reader used by the built-in general-text corpus and the
IFEval prompt set (both used to carry their own copy). Bad lines name file:line and say how to fix."""

from __future__ import annotations

import pytest

from sftlab.data.readers import read_jsonl_objects
from sftlab.errors import DataError


def test_good_lines_come_back_with_file_line_and_bad_lines_as_problems(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"a": 1}\n'  # BOM on line 1 is allowed
        b"\n"  # blank: not a row
        b"{oops\n"
        b"[1, 2]\n"
        b'{"a": "caf\xe9"}\n'  # latin-1 byte
        b'{"a": 2}'  # no newline at the end
    )
    rows, problems = read_jsonl_objects(path, '{"a": ...}')
    assert rows == [(f"{path}:1", {"a": 1}), (f"{path}:6", {"a": 2})]
    assert [p.where for p in problems] == [f"{path}:3", f"{path}:4", f"{path}:5"]
    assert "not valid JSON" in problems[0].message and problems[0].fix
    assert problems[1].message == "expected a JSON object, got list"
    assert problems[1].fix == 'write one object per line: {"a": ...}'
    assert "not valid UTF-8" in problems[2].message


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot open"):
        read_jsonl_objects(tmp_path / "nope.jsonl", "{}")


def test_builtin_readers_use_it_and_report_every_line(tmp_path):
    from sftlab.builtin.general_text import load_general_text_records
    from sftlab.evaluate.ifeval import load_prompts

    g = tmp_path / "g.jsonl"
    g.write_text('{"id": "a", "topic": "t", "text": "fine"}\n["not", "an", "object"]\n{bad\n')
    with pytest.raises(DataError) as info:
        load_general_text_records(g)
    assert [(p.where, p.field) for p in info.value.problems] == [(f"{g}:2", ""), (f"{g}:3", "")]
    assert "expected a JSON object, got list" in str(info.value)

    p = tmp_path / "p.jsonl"
    p.write_text('{"id": "x", "prompt": "p", "constraints": [{"id": "punctuation:no_comma"}]}\n'
                 '{"id": "x", "prompt": "q", "constraints": [{"id": "punctuation:no_comma"}]}\n')
    with pytest.raises(DataError) as info:
        load_prompts(p)
    assert f"duplicate id 'x' (first at {p}:1)" in str(info.value)
