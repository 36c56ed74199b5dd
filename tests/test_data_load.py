"""Loading: every format, every reader, sources, detection, column mapping, stats, save."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from sftlab.conversation import Conversation, Message
from sftlab.data import (
    DataSourceConfig,
    iter_conversations,
    load_conversations,
    save_conversations,
)
from sftlab.errors import DataError

QA = [Message("user", "What is 2+2?"), Message("assistant", "4")]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def roles_contents(conv: Conversation) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in conv.messages]


# ---- formats -------------------------------------------------------------------------------


def test_openai_messages_with_text_parts_and_tool(tmp_path):
    p = write_jsonl(tmp_path / "m.jsonl", [{"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather"}, {"type": "text", "text": "in Oslo?"}]},
        {"role": "assistant", "content": "Calling the weather tool."},
        {"role": "tool", "content": "rain, 4C"},
        {"role": "assistant", "content": "Rainy, 4C."},
    ]}])
    (conv,) = load_conversations(p).conversations
    assert roles_contents(conv) == [("system", "Be brief."), ("user", "Weather\nin Oslo?"),
                                    ("assistant", "Calling the weather tool."), ("tool", "rain, 4C"),
                                    ("assistant", "Rainy, 4C.")]
    assert conv.source == f"{p}:1" and conv.meta["format"] == "messages"


def test_sharegpt_roles_are_mapped(tmp_path):
    p = tmp_path / "s.json"
    p.write_text(json.dumps([{"system": "Sys.", "conversations": [
        {"from": "human", "value": "Find x."}, {"from": "function_call", "value": "solve(x)"},
        {"from": "observation", "value": "x=2"}, {"from": "gpt", "value": "x is 2."},
        {"from": "user", "value": "Thanks"}, {"from": "model", "value": "Welcome."}]}]))
    (conv,) = load_conversations(p).conversations
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "tool", "assistant", "user", "assistant"]
    assert conv.source == f"{p}:[0]" and conv.meta["format"] == "sharegpt"


def test_alpaca_instruction_input_history_system(tmp_path):
    p = write_jsonl(tmp_path / "a.jsonl", [
        {"instruction": "Add.", "input": "2 and 2", "output": "4", "system": "Math bot.",
         "history": [["Hi", "Hello!"]]},
        {"instruction": "Say hi.", "input": "", "output": "Hi!"},
    ])
    first, second = load_conversations(p).conversations
    assert roles_contents(first) == [("system", "Math bot."), ("user", "Hi"), ("assistant", "Hello!"),
                                     ("user", "Add.\n\n2 and 2"), ("assistant", "4")]
    assert roles_contents(second) == [("user", "Say hi."), ("assistant", "Hi!")]
    assert second.meta["format"] == "alpaca"


def test_prompt_completion_strings_and_message_lists(tmp_path):
    p = write_jsonl(tmp_path / "pc.jsonl", [
        {"prompt": "2+2=", "completion": "4"},
        {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}], "completion": "A"},
    ])
    a, b = load_conversations(p).conversations
    assert roles_contents(a) == [("user", "2+2="), ("assistant", "4")]
    assert roles_contents(b) == [("system", "S"), ("user", "Q"), ("assistant", "A")]
    assert a.meta["format"] == "prompt_completion"


def test_text_rows_and_txt_files(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", [{"text": "A plain document."}])
    (conv,) = load_conversations(p).conversations
    assert conv.messages == (Message("assistant", "A plain document."),) and conv.meta == {"format": "text"}

    txt = tmp_path / "doc.txt"
    txt.write_text("First block\nline two\n\n\nSecond block\n")
    (whole,) = load_conversations(txt).conversations
    assert whole.messages[0].content == "First block\nline two\n\n\nSecond block\n" and whole.source == f"{txt}:1"
    blocks = load_conversations(txt, text_blocks=True).conversations
    assert [(c.source, c.messages[0].content) for c in blocks] == [
        (f"{txt}:1", "First block\nline two"), (f"{txt}:5", "Second block")]


def test_extra_fields_go_to_meta_and_id_is_kept(tmp_path):
    p = write_jsonl(tmp_path / "m.jsonl", [{"id": "ex-7", "category": "math",
                                            "messages": [m.to_dict() for m in QA]}])
    (conv,) = load_conversations(p).conversations
    assert conv.id == "ex-7" and conv.meta == {"category": "math", "format": "messages"}


# ---- detection, forcing, column mapping ----------------------------------------------------


def test_each_file_in_a_folder_is_detected_on_its_own(tmp_path):
    (tmp_path / "sub").mkdir()
    write_jsonl(tmp_path / "b.jsonl", [{"instruction": "I", "output": "O"}])
    write_jsonl(tmp_path / "sub" / "a.jsonl", [{"conversations": [{"from": "human", "value": "Q"},
                                                                  {"from": "gpt", "value": "A"}]}])
    (tmp_path / "README.md").write_text("not data")
    result = load_conversations(tmp_path)
    assert [c.meta["format"] for c in result.conversations] == ["alpaca", "sharegpt"]  # sorted paths
    assert result.stats.by_format == {"alpaca": 1, "sharegpt": 1}
    assert result.stats.ignored_files == [str(tmp_path / "README.md")]


def test_glob_and_list_of_sources(tmp_path):
    for i in range(3):
        write_jsonl(tmp_path / f"part{i}.jsonl", [{"text": f"doc {i}"}])
    got = load_conversations(str(tmp_path / "part*.jsonl")).conversations
    assert [c.messages[0].content for c in got] == ["doc 0", "doc 1", "doc 2"]
    got = load_conversations([tmp_path / "part2.jsonl", tmp_path / "part0.jsonl"]).conversations
    assert [c.messages[0].content for c in got] == ["doc 2", "doc 0"]


def test_columns_mapping_and_forced_format(tmp_path):
    p = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Q?", "answer": "A."}])
    with pytest.raises(DataError, match="cannot tell the format"):
        load_conversations(p)
    (conv,) = load_conversations(p, columns={"instruction": "question", "output": "answer"}).conversations
    assert roles_contents(conv) == [("user", "Q?"), ("assistant", "A.")] and conv.meta["format"] == "alpaca"
    # forcing "text" on chat rows: each row must then have a text field
    with pytest.raises(DataError, match="format text needs text"):
        load_conversations(p, format="text")
    (conv,) = load_conversations(p, format="text", columns={"text": "answer"}).conversations
    assert conv.messages[0].content == "A." and conv.meta["question"] == "Q?"


def test_csv_rows_are_numbered_like_a_spreadsheet(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('instruction,input,output\nAdd.,"2\nand 2",4\n,,\nSay hi.,,Hi!\n')
    convs = load_conversations(p).conversations
    # header is row 1; the quoted cell spans two lines but is one row; the blank row still counts
    assert [c.source for c in convs] == [f"{p}:row 2", f"{p}:row 4"]
    assert convs[0].messages[0].content == "Add.\n\n2\nand 2"


def test_parquet_and_json_object_with_data_key(tmp_path):
    pq = tmp_path / "d.parquet"
    pd.DataFrame({"messages": [[m.to_dict() for m in QA]] * 2}).to_parquet(pq)
    convs = load_conversations(pq).conversations
    assert [c.source for c in convs] == [f"{pq}:row 0", f"{pq}:row 1"] and roles_contents(convs[0]) == [
        ("user", "What is 2+2?"), ("assistant", "4")]
    js = tmp_path / "d.json"
    js.write_text(json.dumps({"version": 2, "data": [{"prompt": "p", "completion": "c"}]}))
    (conv,) = load_conversations(js).conversations
    assert conv.source == f"{js}:data[0]"


def test_json_file_holding_jsonl_is_read_as_jsonl(tmp_path):
    p = tmp_path / "mislabelled.json"
    p.write_text('{"text": "one"}\n{"text": "two"}\n')
    assert [c.source for c in load_conversations(p).conversations] == [f"{p}:1", f"{p}:2"]


def test_malformed_json_document_names_line_and_column(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('[\n  {"text": "ok"},\n  {"text": "missing quote}\n]\n')
    with pytest.raises(DataError) as info:
        load_conversations(p)
    assert info.value.problems[0].where == f"{p}:3" and "line 3, column" in str(info.value)


# ---- datasets ------------------------------------------------------------------------------


def test_datasets_object_and_saved_dataset(tmp_path):
    import datasets

    ds = datasets.Dataset.from_list([{"instruction": "I", "input": "", "output": "O"},
                                     {"instruction": "", "input": "", "output": "O"}])
    result = load_conversations(ds, on_error="skip")
    assert [c.source for c in result.conversations] == ["hf:dataset[train][0]"]
    assert result.stats.skipped == {"empty_content": 1}
    ds.save_to_disk(str(tmp_path / "saved"))
    (conv,) = load_conversations(tmp_path / "saved", on_error="skip").conversations
    assert conv.source == f"hf:{tmp_path / 'saved'}[train][0]"


def test_local_jsonl_through_load_dataset_streaming(tmp_path):
    p = write_jsonl(tmp_path / "m.jsonl", [{"messages": [m.to_dict() for m in QA]}] * 3)
    import datasets

    stream = datasets.load_dataset("json", data_files=str(p), split="train", streaming=True)
    got = load_conversations(stream).conversations
    assert len(got) == 3 and roles_contents(got[0]) == roles_contents(Conversation(tuple(QA)))


# ---- stats, streaming, limit, save ---------------------------------------------------------


def test_iter_conversations_streams_and_fills_stats(tmp_path):
    p = write_jsonl(tmp_path / "m.jsonl", [{"messages": [m.to_dict() for m in QA]}] * 5 + [{"messages": []}])
    stream = iter_conversations(p, on_error="skip")
    first = next(stream)
    assert first.source == f"{p}:1" and stream.stats.loaded == 1
    rest = list(stream)
    assert len(rest) == 4
    assert stream.stats.rows_read == 6 and stream.stats.skipped == {"no_messages": 1}
    assert stream.stats.by_file == {str(p): 5}
    summary = stream.stats.summary()
    assert "loaded 5 of 6 rows" in summary and "no_messages 1" in summary


def test_limit_stops_reading(tmp_path):
    p = write_jsonl(tmp_path / "t.jsonl", [{"text": str(i)} for i in range(100)])
    result = load_conversations([p, p], limit=7)
    assert len(result.conversations) == 7 and result.stats.rows_read == 7


def test_save_then_load_round_trips(tmp_path):
    convs = [Conversation(tuple(QA), source="x:1", meta={"format": "alpaca", "score": 0.5}),
             Conversation.document("doc", source="y:2", meta={"kind": "family kind, not the row's"})]
    out = tmp_path / "out" / "saved.jsonl"
    assert save_conversations(convs, out) == 2
    assert not [f for f in out.parent.iterdir() if f.name != "saved.jsonl"]  # no temp file left
    back = load_conversations(out).conversations
    assert [c.messages for c in back] == [c.messages for c in convs]
    assert [c.id for c in back] == [c.id for c in convs]
    assert [c.kind for c in back] == ["chat", "text"]  # text rows stay text rows
    assert [c.meta["format"] for c in back] == ["messages", "text"]
    assert back[0].meta["score"] == 0.5 and back[0].meta["original_source"] == "x:1"
    assert back[1].meta["kind"] == "family kind, not the row's"  # meta is the user's; the row's kind is not in it
    # a file saved before Conversation.kind existed marks a text row in meta.format only
    old = write_jsonl(tmp_path / "old.jsonl", [{"messages": [{"role": "assistant", "content": "doc"}], "meta": {"format": "text"}}])
    assert load_conversations(old).conversations[0].kind == "text"


def test_text_conversations_are_one_assistant_message():
    assert Conversation.document("doc").kind == "text"
    with pytest.raises(ValueError, match="exactly one assistant message"):
        Conversation(tuple(QA), kind="text")
    with pytest.raises(ValueError, match="kind must be one of"):
        Conversation(tuple(QA), kind="document")


def test_data_source_config(tmp_path):
    p = write_jsonl(tmp_path / "qa.jsonl", [{"q": "Q", "a": "A"}])
    cfg = DataSourceConfig(path=str(p), columns={"instruction": "q", "output": "a"}, repeat=2)
    assert len(cfg.load().conversations) == 1
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="for weight: 2 write repeat: 2"):
        DataSourceConfig(path="x", weight=2)

    with pytest.raises(ValidationError, match="extra"):
        DataSourceConfig(path="x", colums={})
    with pytest.raises(ValidationError, match="format must be auto or one of"):
        DataSourceConfig(path="x", format="chatml")
    with pytest.raises(ValidationError, match="unknown field"):
        DataSourceConfig(path="x", columns={"question": "q"})


def test_missing_folder_name_is_tried_as_dataset_id_and_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # never the network in tests
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError) as info:
        load_conversations("no_such_org/no_such_set")
    assert "'no_such_org/no_such_set' is not a local file or folder" in str(info.value)
    assert info.value.problems[0].where == "hf:no_such_org/no_such_set"


def test_repeat_multiplies_a_training_sources_rows(tmp_path):
    from sftlab.prepare import load_sources

    p = write_jsonl(tmp_path / "qa.jsonl", [{"instruction": f"Q{i}", "output": f"A{i}"} for i in range(4)])
    convs, notes = load_sources([DataSourceConfig(path=str(p), repeat=2.5)], "raise", seed=0)
    ids = [c.id for c in convs]
    assert len(ids) == 10 and all(ids.count(i) in (2, 3) for i in set(ids)) and len(set(ids)) == 4
    assert notes[0].endswith("-> repeat 2.5: 10 rows")
    half, _ = load_sources([DataSourceConfig(path=str(p), repeat=0.5)], "raise", seed=0)
    assert len(half) == 2 and len({c.id for c in half}) == 2


def test_builtin_sets_load_through_the_source_config():
    res = DataSourceConfig(path="builtin:tasks-eval", limit=5).load()
    assert len(res.conversations) == 5 and res.stats.loaded == 5
    from sftlab.errors import DataError

    with pytest.raises(DataError, match="unknown built-in data set"):
        DataSourceConfig(path="builtin:nope").load()
