"""Properties: any bytes in a data file give conversations or a DataError (never another
exception); any valid conversation written in each chat format loads back to the same messages."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sftlab.data import load_conversations
from sftlab.errors import DataError

FAST = settings(max_examples=int(__import__("os").environ.get("SFTLAB_HYPOTHESIS_EXAMPLES", 60)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# bytes that look a bit like data (so the parsers get past the first byte), mixed with noise
jsonish = st.lists(st.sampled_from([b"{", b"}", b"[", b"]", b'"', b":", b",", b"\n", b'"messages"', b'"role"',
                                    b'"content"', b'"user"', b'"assistant"', b'"text"', b"null", b"1", b"\xff",
                                    b"\xc3", b"\\u", b"\\", b" ", b'"from"', b'"value"', b'"instruction"']),
                   max_size=40).map(b"".join)
noise = st.binary(max_size=200)


@FAST
@given(data=st.one_of(noise, jsonish), suffix=st.sampled_from([".jsonl", ".json", ".csv"]),
       mode=st.sampled_from(["raise", "skip"]))
def test_any_bytes_load_or_raise_data_error(data, suffix, mode):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"input{suffix}"
        path.write_bytes(data)
        try:
            result = load_conversations(path, on_error=mode)
        except DataError as e:
            assert e.problems and all(p.where for p in e.problems)
        else:
            assert result.stats.loaded == len(result.conversations) > 0


# ---- round trips ---------------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30).filter(lambda s: s.strip())


@st.composite
def conversations(draw):
    """system? then (user, assistant) pairs, optionally a tool turn between them."""
    msgs = []
    if draw(st.booleans()):
        msgs.append(("system", draw(text)))
    for _ in range(draw(st.integers(1, 3))):
        msgs.append(("user", draw(text)))
        if draw(st.booleans()):
            msgs += [("assistant", draw(text)), ("tool", draw(text))]
        msgs.append(("assistant", draw(text)))
    return msgs


SHAREGPT_ROLE = {"system": "system", "user": "human", "assistant": "gpt", "tool": "observation"}


def as_messages(msgs):
    return {"messages": [{"role": r, "content": c} for r, c in msgs]}


def as_sharegpt(msgs):
    return {"conversations": [{"from": SHAREGPT_ROLE[r], "value": c} for r, c in msgs]}


def as_prompt_completion(msgs):
    return {"prompt": [{"role": r, "content": c} for r, c in msgs[:-1]], "completion": msgs[-1][1]}


@FAST
@given(convs=st.lists(conversations(), min_size=1, max_size=4),
       writer=st.sampled_from([as_messages, as_sharegpt, as_prompt_completion]),
       suffix=st.sampled_from([".jsonl", ".json"]))
def test_chat_formats_round_trip(convs, writer, suffix):
    rows = [writer(c) for c in convs]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"rows{suffix}"
        if suffix == ".jsonl":
            path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        else:
            path.write_text(json.dumps(rows), encoding="utf-8")
        loaded = load_conversations(path).conversations
    assert [[(m.role, m.content) for m in c.messages] for c in loaded] == convs


@st.composite
def alpaca_rows(draw):
    row = {"instruction": draw(text), "input": draw(st.one_of(st.just(""), text)), "output": draw(text)}
    if draw(st.booleans()):
        row["system"] = draw(text)
    return row


def alpaca_expected(row):
    user = row["instruction"] + ("\n\n" + row["input"] if row["input"].strip() else "")
    return ([("system", row["system"])] if "system" in row else []) + [("user", user), ("assistant", row["output"])]


@FAST
@given(rows=st.lists(alpaca_rows(), min_size=1, max_size=4), suffix=st.sampled_from([".jsonl", ".csv"]))
def test_alpaca_round_trips_through_jsonl_and_csv(rows, suffix):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"rows{suffix}"
        if suffix == ".jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        else:
            with open(path, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, ["instruction", "input", "output", "system"])
                w.writeheader()
                w.writerows(rows)
        loaded = load_conversations(path).conversations
    assert [[(m.role, m.content) for m in c.messages] for c in loaded] == [alpaca_expected(r) for r in rows]
