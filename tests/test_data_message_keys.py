"""Keys of a message other than role/content are dropped (a Message is only role + content), and
every drop is counted per key and reported: in LoadStats, in stats.summary(), in `sftlab data
inspect`. Never an error. Counts are checked against a count made here from the written rows."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from sftlab.data import load_conversations

USED = {"role", "content", "from", "value"}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _expected(rows, list_key):
    """Independent count: key -> (messages with a non-null value, rows, rows' 1-based lines)."""
    messages, lines = Counter(), {}
    for line, row in enumerate(rows, start=1):
        keys = [k for m in row[list_key] for k, v in m.items() if k not in USED and v is not None]
        messages.update(keys)
        for k in set(keys):
            lines.setdefault(k, []).append(line)
    return messages, lines


OPENAI_ROWS = [
    {"messages": [{"role": "user", "content": "Hi", "name": "ann"},
                  {"role": "assistant", "content": "Hello", "weight": 0}]},
    {"messages": [{"role": "user", "content": "Sum 2 and 3"}, {"role": "assistant", "content": "5"}]},
    {"messages": [{"role": "system", "content": "Be brief", "weight": 0},  # a flag on a non-assistant turn
                  {"role": "user", "content": "Capital of France?", "name": "bob"},
                  {"role": "assistant", "content": "Paris", "weight": 1, "refusal": None}]},  # null: absent
    {"messages": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A", "weight": False},
                  {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2", "weight": "0",
                                                      "custom_score": 0.7}]},
]


def test_extra_message_keys_are_counted_per_key_with_rows_and_not_an_error(tmp_path):
    path = _write(tmp_path / "chats.jsonl", OPENAI_ROWS)
    result = load_conversations(path)
    assert result.stats.loaded == 4 and not result.stats.skipped
    # the content itself is untouched
    assert [m.content for m in result.conversations[2].messages] == ["Be brief", "Capital of France?", "Paris"]

    messages, lines = _expected(OPENAI_ROWS, "messages")
    got = result.stats.ignored_message_keys
    assert set(got) == set(messages) == {"name", "weight", "custom_score"}  # null 'refusal' is not a drop
    for key, ik in got.items():
        assert ik.messages == messages[key], key
        assert ik.rows == len(lines[key]), key
        assert ik.examples == [f"{path}:{n}" for n in lines[key][:3]], key
    # "do not train" flags on assistant turns: row 1 (0), row 4 (False, "0"); the system turn's 0
    # and the 1 do not count
    assert got["weight"].not_trained_flags == 3
    assert got["name"].not_trained_flags == 0

    summary = result.stats.summary()
    assert "ignored message keys (a message keeps only its role and content):" in summary
    assert (f"weight x 5 in 3 row(s) ({path}:1, {path}:3, {path}:4): per-turn training flag, NOT honoured "
            "(every assistant turn is trained); 3 assistant turn(s) marked 0/false are trained anyway") in summary
    assert f"name x 2 in 2 row(s) ({path}:1, {path}:3): speaker name (OpenAI)" in summary
    assert f"custom_score x 1 in 1 row(s) ({path}:4)\n" in summary + "\n"  # unknown key: count only
    # most frequent key first
    assert summary.index("weight x") < summary.index("name x") < summary.index("custom_score x")


def test_examples_list_at_most_three_rows_then_dots(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": f"q{i}", "markdown": f"q{i}"},
                               {"from": "gpt", "value": f"a{i}", "markdown": f"a{i}"}]} for i in range(5)]
    path = _write(tmp_path / "sg.jsonl", rows)
    stats = load_conversations(path).stats
    ik = stats.ignored_message_keys["markdown"]
    assert (ik.messages, ik.rows) == (10, 5)
    assert f"markdown x 10 in 5 row(s) ({path}:1, {path}:2, {path}:3, ...): ShareGPT scrape" in stats.summary()


def test_rows_without_extra_keys_report_nothing(tmp_path):
    path = _write(tmp_path / "plain.jsonl", [OPENAI_ROWS[1]] * 3)
    stats = load_conversations(path).stats
    assert stats.ignored_message_keys == {}
    assert "ignored message keys" not in stats.summary()


def test_skipped_rows_do_not_count(tmp_path):
    rows = [OPENAI_ROWS[1],
            {"messages": [{"role": "bot", "content": "x", "name": "n"}, {"role": "assistant", "content": "y"}]}]
    path = _write(tmp_path / "mixed.jsonl", rows)
    result = load_conversations(path, on_error="skip")
    assert result.stats.skipped == {"unknown_role": 1}
    assert result.stats.ignored_message_keys == {}


def test_parquet_null_struct_fields_are_not_counted(tmp_path):
    """Parquet/datasets give every message every struct field; null means the row had none."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        {"messages": [{"role": "user", "content": "Hi", "name": "ann"}, {"role": "assistant", "content": "Yo", "name": None}]},
        {"messages": [{"role": "user", "content": "Q", "name": None}, {"role": "assistant", "content": "A", "name": None}]},
    ]
    path = tmp_path / "chats.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    result = load_conversations(path)
    assert result.stats.loaded == 2
    ik = result.stats.ignored_message_keys["name"]
    assert (ik.messages, ik.rows, ik.examples) == (1, 1, [f"{path}:row 0"])


def test_data_inspect_shows_ignored_keys(tmp_path, capsys):
    from tiny import make_tokenizer

    from sftlab.cli import main

    tok_dir = tmp_path / "tok"
    make_tokenizer().save_pretrained(tok_dir)
    path = _write(tmp_path / "chats.jsonl", OPENAI_ROWS)
    code = main(["data", "inspect", str(path), "--model", str(tok_dir), "--no-color"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "ignored message keys (a message keeps only its role and content):" in out
    assert "    weight x 5 in 3 row(s)" in out and "3 assistant turn(s) marked 0/false are trained anyway" in out
    assert "    name x 2 in 2 row(s)" in out
