"""Every bad-input case a user can hit when loading data: the message names the file, the
line/row and the field, and docs/bad_input.md shows the real message.

Regenerate the doc after changing a message:  python tests/test_data_bad_input.py
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sftlab.data import load_conversations
from sftlab.errors import DataError

REPO = Path(__file__).resolve().parents[1]
BAD = "tests/data/bad"
DOC = REPO / "docs" / "bad_input.md"


@dataclass
class Case:
    name: str  # what went wrong, as the doc's table says it
    file: str
    expect: list[str]  # must all appear in the message: file:line, [field], words
    kwargs: dict = field(default_factory=dict)
    skip_reason: str = ""  # the reason counted in on_error="skip" ("" = the file is skipped whole)


CASES = [
    Case("malformed JSON line", "malformed.jsonl", ["malformed.jsonl:2:", "not valid JSON", "column 59", "`{\"messages\""],
         skip_reason="malformed_json"),
    Case("content is not a string", "wrong_type.jsonl", ["wrong_type.jsonl:2 [messages[1].content]", "got int 4"],
         skip_reason="wrong_type"),
    Case("field of the wrong type (alpaca)", "alpaca_wrong_type.jsonl", ["alpaca_wrong_type.jsonl:2 [output]", "got int 4"],
         skip_reason="wrong_type"),
    Case("unknown role", "unknown_role.jsonl", ["unknown_role.jsonl:1 [messages[0].role]", "'bot'",
                                                "system, user, assistant, tool", "human->user", "gpt->assistant"],
         skip_reason="unknown_role"),
    Case("missing role", "missing_role.jsonl", ["missing_role.jsonl:1 [messages[0].role]", "no 'role'",
                                                "system, user, assistant, tool", "human->user"],
         skip_reason="missing_role"),
    Case("empty assistant content", "empty_assistant.jsonl", ["empty_assistant.jsonl:1 [messages[1].content]",
                                                              "empty assistant content"], skip_reason="empty_content"),
    Case("content part that is neither text nor an image", "unsupported_part.jsonl",
         ["unsupported_part.jsonl:1 [messages[0].content[1].type]", "'input_audio'"], skip_reason="unsupported_part"),
    Case("no assistant turn", "no_assistant.jsonl", ["no_assistant.jsonl:1 [messages]", "no assistant turn"],
         skip_reason="no_assistant"),
    Case("conversation ends on a user turn", "ends_on_user.jsonl", ["ends_on_user.jsonl:1 [messages[2]]", "ends on a user turn"],
         skip_reason="ends_on_user"),
    Case("two assistant turns in a row", "two_assistants.jsonl", ["two_assistants.jsonl:1 [messages[2]]",
                                                                  "two assistant turns in a row"],
         skip_reason="consecutive_assistant"),
    # 0xe9 is at byte 145: open("tests/data/bad/not_utf8.jsonl", "rb").read().index(b"\xe9")
    Case("bytes that are not UTF-8", "not_utf8.jsonl", ["not_utf8.jsonl:2:", "not valid UTF-8", "byte 0xe9",
                                                        "byte offset 145"], skip_reason="not_utf8"),
    Case("line over the size limit (64 MiB by default; 200 bytes here)", "long_line.jsonl",
         ["long_line.jsonl:2:", "over the limit of 200 bytes"], kwargs={"max_line_bytes": 200}, skip_reason="line_too_long"),
    Case("empty file", "empty.jsonl", ["empty.jsonl:", "no rows"]),
    Case("CSV without the columns a format needs", "missing_columns.csv",
         ["missing_columns.csv:", "columns question, answer", "alpaca needs instruction, output",
          "`format: alpaca` with `columns: {instruction: question, output: answer}`", "docs/config.md"]),
    Case("keys that match no format", "unknown_format.jsonl", ["unknown_format.jsonl:", "['question', 'reply']",
                                                              "alpaca: instruction, output", "`columns: {"]),
    Case("unreadable Parquet", "broken.parquet", ["broken.parquet:", "cannot read Parquet"]),
    Case("conversation starts with an assistant message", "starts_with_assistant.jsonl",
         ["starts_with_assistant.jsonl:1 [messages[0]]", "starts with an assistant message", "user (or system) message first",
          "`data.on_error: skip`", "`rejects: FILE`"], skip_reason="starts_with_assistant"),
    Case("two conversations in one row (`messages` and `conversations`)", "two_conversations.jsonl",
         ["two_conversations.jsonl:2 [conversations]", "'messages' (messages format) and 'conversations' (sharegpt format)",
          "`format: sharegpt`"], skip_reason="two_conversations"),
    Case("`columns` maps a column the file does not have", "missing_mapped_column.csv",
         ["missing_mapped_column.csv [columns]", "output -> 'anwser'", "its columns: answer, question",
          "`columns: {OUR_FIELD: YOUR_COLUMN}`"], kwargs={"columns": {"instruction": "question", "output": "anwser"}}),
    # multimodal rows (LLaVA / TRL / OpenAI image parts); more in tests/test_multimodal_data.py
    Case("image file that does not exist (LLaVA row, path relative to the data file)", "missing_image.jsonl",
         ["missing_image.jsonl:1 [image]", "image file not found: tests/data/bad/coco/train2017/000000033471.jpg",
          "relative to the data file's folder", "`image_dir:`"], skip_reason="missing_image"),
    Case("image file that does not decode (truncated)", "unreadable_image.jsonl",
         ["unreadable_image.jsonl:1 [messages[0].content[0].image_url.url]", "tests/data/bad/truncated.png",
          "truncated"], skip_reason="unreadable_image"),
    Case("more `<image>` placeholders than images", "too_many_placeholders.jsonl",
         ["too_many_placeholders.jsonl:1 [images]", "2 `<image>` placeholder(s)", "1 image(s) in `images`"],
         skip_reason="too_many_placeholders"),
    Case("fewer `<image>` placeholders than images", "too_few_placeholders.jsonl",
         ["too_few_placeholders.jsonl:1 [images]", "2 image(s) in `images`", "only 1 `<image>` placeholder(s)"],
         skip_reason="too_few_placeholders"),
]


def _message(case: Case) -> str:
    with pytest.raises(DataError) as info:
        load_conversations(f"{BAD}/{case.file}", **case.kwargs)
    return str(info.value)


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)  # messages show the relative paths a user would type


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_message_names_file_line_and_field(case):
    message = _message(case)
    for needle in case.expect:
        assert needle in message, f"{needle!r} not in:\n{message}"
    assert "fix:" in message  # every problem says how to fix it


@pytest.mark.parametrize("case", CASES, ids=[c.file for c in CASES])
def test_skip_mode_counts_and_writes_rejects(case, tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    good_rows = sum(1 for ln in (REPO / BAD / case.file).read_bytes().splitlines() if ln.strip()) - 1
    if good_rows <= 0 or case.file.endswith((".csv", ".parquet")):
        # nothing good is left in the file: skipping everything is still an error, with counts
        with pytest.raises(DataError) as info:
            load_conversations(f"{BAD}/{case.file}", on_error="skip", rejects_path=rejects, **case.kwargs)
        assert "no conversations were loaded" in str(info.value)
        written = [json.loads(ln) for ln in rejects.read_text().splitlines()]
        assert len(written) == 1 and written[0]["source"].startswith(f"{BAD}/{case.file}")
        return
    result = load_conversations(f"{BAD}/{case.file}", on_error="skip", rejects_path=rejects, **case.kwargs)
    assert result.stats.skipped == {case.skip_reason: 1}
    assert result.stats.loaded == good_rows == len(result.conversations)
    (reject,) = [json.loads(ln) for ln in rejects.read_text().splitlines()]
    assert reject["reason"] == case.skip_reason
    assert reject["source"].startswith(f"{BAD}/{case.file}:")
    assert any(needle in p for p in reject["problems"] for needle in case.expect[:1])


def test_empty_system_message_is_dropped_and_counted():
    result = load_conversations(f"{BAD}/empty_system.jsonl")
    assert [m.role for m in result.conversations[0].messages] == ["user", "assistant"]
    assert result.stats.dropped_empty_system == 1
    assert "dropped 1 empty system message(s)" in result.stats.summary()


def test_up_to_20_problems_of_a_file_are_collected_before_raising(tmp_path):
    bad = tmp_path / "many.jsonl"
    bad.write_text("".join('{"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]}\n'
                           for _ in range(30)))
    with pytest.raises(DataError) as info:
        load_conversations(bad)
    assert len(info.value.problems) == 20
    assert [p.where for p in info.value.problems] == [f"{bad}:{i}" for i in range(1, 21)]
    assert "stopped looking" in str(info.value)


def test_over_long_line_is_not_loaded_and_later_lines_are(tmp_path):
    path = tmp_path / "big.jsonl"
    ok = '{"text": "fine"}\n'
    path.write_text(ok + '{"text": "' + "x" * 5000 + '"}\n' + ok)
    result = load_conversations(path, on_error="skip", max_line_bytes=1000)
    assert result.stats.skipped == {"line_too_long": 1}
    assert [c.source for c in result.conversations] == [f"{path}:1", f"{path}:3"]


def test_missing_path_and_bad_arguments_are_reported(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_conversations(tmp_path / "nope.jsonl")
    from sftlab.errors import ConfigError

    with pytest.raises(ConfigError, match="format='chatml' is not one of"):
        load_conversations(f"{BAD}/empty_system.jsonl", format="chatml")
    with pytest.raises(ConfigError, match="columns key 'question' is not a field we know"):
        load_conversations(f"{BAD}/empty_system.jsonl", columns={"question": "instruction"})


def test_doc_shows_the_real_messages():
    doc = DOC.read_text()
    for case in CASES:
        assert _message(case) in doc, f"docs/bad_input.md is stale for {case.file}: run python {Path(__file__).name}"


def render_doc() -> str:
    import os

    os.chdir(REPO)
    rows = []
    blocks = []
    for i, case in enumerate(CASES, 1):
        with pytest.raises(DataError) as info:
            load_conversations(f"{BAD}/{case.file}", **case.kwargs)
        msg = str(info.value)
        first = info.value.problems[0]
        kw = ", ".join(f"{k}={v!r}" for k, v in case.kwargs.items())
        skip = f"`{case.skip_reason}` (row skipped)" if case.skip_reason else "file skipped, listed in `skipped_files`"
        rows.append(f"| {i} | {case.name} | [`{case.file}`](../{BAD}/{case.file}){' with ' + kw if kw else ''} "
                    f"| `{first.where}`{' `[' + first.field + ']`' if first.field else ''} | {skip} "
                    f"| {first.message.replace('|', '&#124;')} ([full](#case-{i})) |")
        blocks.append(f"### Case {i}\n\n{case.name} (`{BAD}/{case.file}`):\n\n```text\n{msg}\n```\n")
    return HEADER + "\n".join(rows) + "\n\n" + EMPTY_SYSTEM + "\n## The messages, exactly as printed\n\n" + "\n".join(blocks)


HEADER = """# Bad input: what you see

`load_conversations` (and `sftlab` commands that load data) check every row. Problems are raised as
one `DataError` listing up to the first 20 problems of a file, each with **where** (`file:line`,
`file:[index]` for JSON arrays, `file:row N` for CSV/Parquet), the **field**, what was wrong and a
**fix**. With `on_error="skip"` (a run config's `data.on_error: skip`, a curate config's
`on_error: skip`) bad rows are skipped instead, counted by reason in `result.stats.skipped` (and
printed by `stats.summary()`), and written with their reason and source to `rejects_path` (JSONL) when
given (a data source's `rejects: FILE`). A file that cannot be
used at all is skipped whole in skip mode and listed in `stats.skipped_files`. Loading nothing at all
is always an error.

Every row below is a real file in `tests/data/bad/`, checked by `tests/test_data_bad_input.py`, which
also checks that the messages shown here are exactly what the code prints (regenerate this file with
`python tests/test_data_bad_input.py`).

| # | case | example | where [field] | in skip mode | what you see (the problem; full text below) |
|---|------|---------|---------------|--------------|--------------|
"""

EMPTY_SYSTEM = """Not an error: an **empty system message** (`tests/data/bad/empty_system.jsonl`) is dropped, and counted
in `stats.dropped_empty_system`; the summary says `dropped 1 empty system message(s)`. Empty user or
assistant content is an error (case 6); an empty tool result is kept.
Conversations that end on a user turn or have no assistant turn are accepted with
`require_response=False` (for evaluation prompts).

Not errors, but never silent either (each is counted and printed by `stats.summary()`, which
`sftlab train` and `sftlab data inspect` show; `tests/test_reliability_inputs.py`):
- a **CSV row whose every cell is empty** (`,,,` left by a spreadsheet) is not a row of data:
  `skipped 2 empty CSV row(s) (every cell empty): data.csv:row 3, data.csv:row 6`;
- a **folder** given as a path loads its data files (recursively); `.txt` files beside structured data
  files (`.jsonl .json .csv .tsv .parquet`) are READMEs and notes, not training data, and are skipped,
  as are files of other types: `folder data: took 2 file(s) (.csv 1, .jsonl 1); skipped 1 text file(s)
  beside the structured data (data/README.txt): give a .txt file's path (or a glob) as its own source to
  train on it; skipped 1 file(s) of other types (.md 1: data/notes.md)`. A folder of only `.txt` files
  is a text corpus and is loaded;
- a `columns` mapping whose columns a file found in a folder or by a glob has none of (one mapping
  may be meant for some of the files): `columns mapping not used in data/b.jsonl: it has no column
  'question'`. For a file named on its own, or one with some of the columns, it is an error (case 19).

Not an error either: **message keys other than role and content** (`name`, `weight`, `tool_calls`,
a ShareGPT `markdown` field...) are not kept, and nothing is dropped silently: `stats.ignored_message_keys`
counts each key with the first rows that had it, `stats.summary()` prints
`ignored message keys (a message keeps only its role and content): ...`, and `sftlab data inspect`
shows them (`tests/test_data_message_keys.py`).
"""


if __name__ == "__main__":
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text(render_doc())
    print(f"wrote {DOC}", file=sys.stderr)
