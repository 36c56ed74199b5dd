"""LLaVA-style visual instruction data from a text-only teacher (synth/llava.py), without a network:
an in-process fake teacher (a ChatBackend) that answers from what it is shown, the real
OpenAIBackend against a scripted HTTP teacher on 127.0.0.1 through `run_synth`, and a run
SIGKILLed in a subprocess and resumed."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from sftlab.conversation import IMAGE_PLACEHOLDER, Conversation
from sftlab.errors import ConfigError, DataError
from sftlab.serve import server_in_thread
from sftlab.synth.backends import ChatBackend, CompletionResult
from sftlab.synth.config import SynthConfig, load_synth_config
from sftlab.synth.llava import parse_answer, parse_qa, prompt_version, read_records, run_llava
from sftlab.synth.run import run_synth

RECORDS = [
    {"image": "imgs/cat.jpg", "captions": ["A grey cat sleeps on a red sofa.", "A cat curled up on a couch."],
     "boxes": [{"label": "cat", "box": [0.12, 0.3, 0.56, 0.88]}, {"label": "couch", "box": [0.0, 0.2, 1.0, 1.0]}]},
    {"image": "https://example.org/dogs.jpg", "captions": ["Two dogs run on a beach."]},
    # pixel boxes, normalised with the record's size
    {"image": "/data/bus.jpg", "id": "bus-1", "width": 640, "height": 480, "captions": ["A red bus on a street."],
     "boxes": [{"label": "bus", "box": [64, 48, 320, 240]}]},
]

LONG = ("The picture shows a calm scene in which every object sits in a clear place, the light is soft and even, "
        "and nothing in view is hidden or blurred, so the whole scene can be read from left to right at a glance")


def teacher_reply(messages: list[dict], seed=0) -> str:
    """Answers like a teacher following the prompt; the LAST user message is the image's context.
    Context words steer failures: GARBLE -> no format, LEAK -> mentions captions."""
    system, context = messages[0]["content"], messages[-1]["content"]
    first = re.search(r"^- (.*)$", context, re.M).group(1)
    if "GARBLE" in context:
        return "Sure! I would love to talk about this lovely picture."
    if "LEAK" in context:
        return ("Question: What is in the image?\nAnswer: According to the captions, a lamp.\n"
                "Question: Where?\nAnswer: On a table.")
    if "write a conversation" in system:
        return (f"Here you go:\nQuestion: What is shown?\nAnswer: {first}\n"
                f"**Question 2:** How many things are there?\n**Answer 2:** I count them all.\nThere are several.")
    if "describe the image in one rich" in system:
        return f"Description: {first} {LONG} (sample seed {seed})."
    if "takes reasoning to answer" in system:
        return f"Question: Why does this scene look the way it does?\nAnswer: {LONG}, therefore {first}"
    raise AssertionError("unknown prompt: " + system[:200])


class FakeTeacher(ChatBackend):
    name = "fake:teacher"

    def __init__(self, reply=teacher_reply, fail_after: int | None = None):
        super().__init__()
        self.reply, self.fail_after = reply, fail_after
        self.seen: list[list[dict]] = []  # every conversation asked, in order

    def complete(self, conversations, *, max_tokens=256, temperature=0.0, seed=None):
        out = []
        for conv in conversations:
            if self.fail_after is not None and len(self.seen) >= self.fail_after:
                raise KeyboardInterrupt("simulated interruption")
            self.seen.append(conv)
            self.stats.calls += 1
            self.stats.ok += 1
            out.append(CompletionResult(self.reply(conv, seed)))
        return out


def write_records(path: Path, records=RECORDS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def config(tmp_path: Path, **llava) -> SynthConfig:
    inp = write_records(tmp_path / "images.jsonl", llava.pop("records", RECORDS))
    return SynthConfig.model_validate({
        "pipeline": "llava", "output": str(tmp_path / "out.jsonl"),
        "teacher": {"kind": "openai", "model": "unused"},
        "llava": {"input": str(inp), "batch_size": 4, **llava}})


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def as_conversation(row: dict) -> Conversation:
    return Conversation.from_messages(row["messages"], id=row["id"], source=row["source"], meta=row["meta"],
                                      images=tuple(row.get("images", ())))


def test_each_type_makes_wellformed_image_conversations_with_provenance(tmp_path):
    cfg = config(tmp_path)
    teacher = FakeTeacher()
    report = run_llava(cfg, teacher)
    rows = read_rows(tmp_path / "out.jsonl")
    assert len(rows) == report.rows_total == report.rows_new == 9 and report.rejected == {}
    assert len(teacher.seen) == 9 and report.failed_calls == 0
    want_refs = {"cat": str(tmp_path / "imgs" / "cat.jpg"), "dogs": "https://example.org/dogs.jpg", "bus": "/data/bus.jpg"}
    by_type = {}
    for row in rows:
        conv = as_conversation(row)  # validates: as many <image> placeholders as images
        by_type.setdefault(row["meta"]["type"], []).append(conv)
        assert len(conv.images) == 1 and conv.images[0] in want_refs.values()
        roles = [m.role for m in conv.messages]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles
        assert conv.messages[0].content.startswith(IMAGE_PLACEHOLDER + "\n")
        assert sum(m.content.count(IMAGE_PLACEHOLDER) for m in conv.messages) == 1
        m = row["meta"]
        assert m["pipeline"] == "llava" and m["teacher"] == "fake:teacher" and m["sample"] == 0
        assert m["prompt_hash"] == prompt_version(m["type"]) and len(m["prompt_hash"]) == 10
        line = int(m["record"].rsplit(":", 1)[1])
        assert m["record"] == f"{tmp_path / 'images.jsonl'}:{line}" == row["source"]
        assert conv.images[0] == list(want_refs.values())[line - 1]  # the record on that line
        assert row["id"] == f"llava-{m['record_id']}-{m['type']}-0"
    assert sorted(by_type) == ["conversation", "detail", "reasoning"] and all(len(v) == 3 for v in by_type.values())
    # conversation: the preamble dropped, a multi-line answer kept whole, markdown labels read
    conv = next(c for c in by_type["conversation"] if "cat.jpg" in c.images[0])
    assert [m.content for m in conv.messages] == [
        "<image>\nWhat is shown?", "A grey cat sleeps on a red sofa.",
        "How many things are there?", "I count them all.\nThere are several."]
    # detail: the "Description:" label dropped; the user turn is one of the fixed requests
    det = next(c for c in by_type["detail"] if "bus.jpg" in c.images[0])
    assert det.messages[1].content.startswith("A red bus on a street. The picture shows")
    from sftlab.synth.prompts import LLAVA_DETAIL_INSTRUCTIONS
    assert det.messages[0].content.removeprefix("<image>\n") in LLAVA_DETAIL_INSTRUCTIONS
    reason = by_type["reasoning"][0]
    assert len(reason.messages) == 2 and reason.messages[0].content == "<image>\nWhy does this scene look the way it does?"
    assert "rows by type: conversation 3, detail 3, reasoning 3" in report.note
    assert "2 of 3 local images not found" in report.note  # cat.jpg and /data/bus.jpg; the URL is not checked


def test_boxes_and_captions_are_in_what_the_teacher_sees(tmp_path):
    teacher = FakeTeacher()
    run_llava(config(tmp_path, types=["detail"]), teacher)
    prompts_seen = {conv[-1]["content"] for conv in teacher.seen}
    cat = next(p for p in prompts_seen if "grey cat" in p)
    assert "- cat: [0.120, 0.300, 0.560, 0.880]" in cat and "- couch: [0.000, 0.200, 1.000, 1.000]" in cat
    assert "- A cat curled up on a couch." in cat
    bus = next(p for p in prompts_seen if "red bus" in p)
    assert "- bus: [0.100, 0.100, 0.500, 0.500]" in bus  # 64/640, 48/480, 320/640, 240/480
    dogs = next(p for p in prompts_seen if "dogs" in p)
    assert "Objects:" not in dogs  # no boxes, no empty section
    conv = teacher.seen[0]
    assert [m["role"] for m in conv] == ["system", "user", "assistant", "user"]  # system + worked example + request
    assert "normalised" in conv[0]["content"] and "bounding boxes" in conv[0]["content"]


def test_unparseable_and_bad_answers_are_counted_by_reason_and_not_retried(tmp_path):
    records = RECORDS + [{"image": "x.jpg", "captions": ["GARBLE a lamp."]}, {"image": "y.jpg", "captions": ["LEAK lamp."]}]
    cfg = config(tmp_path, records=records, types=["conversation", "reasoning"])
    report = run_llava(cfg, FakeTeacher())
    assert report.rejected == {"conversation:no_question_answer_format": 1, "reasoning:no_question_answer_format": 1,
                               "conversation:mentions_captions_or_boxes": 1, "reasoning:mentions_captions_or_boxes": 1}
    assert report.rows_total == 6 and len(read_rows(tmp_path / "out.jsonl")) == 6
    # a rerun does not ask again for what was rejected (counts stay), nor for rows already made
    again = FakeTeacher()
    report2 = run_llava(cfg, again)
    assert again.seen == [] and report2.rows_new == 0 and report2.rejected == report.rejected


def test_parsers_and_rules():
    lc = SynthConfig.model_validate({"pipeline": "llava", "output": "o", "teacher": {}, "llava": {"input": "i"}}).llava
    assert parse_qa("Q: a?\nA: b.\nQ1: c?\nA1: d\nmore") == ([("a?", "b."), ("c?", "d\nmore")], None)
    assert parse_qa("Question: a?\nAnswer: b\nQuestion: c?")[1] == "question_without_answer"
    assert parse_qa("Answer: b\nQuestion: a?")[1] == "turns_out_of_order"
    assert parse_qa("Question:\nAnswer: b")[1] == "empty_turn"
    one = "Question: What is it?\nAnswer: A cat."
    assert parse_answer("conversation", one, lc) == (None, "too_few_turns")  # min_turns 2
    assert parse_answer("conversation", one + "\nQuestion: Colour?\nAnswer: Grey.", lc)[1] is None
    assert parse_answer("conversation", "Question: Where?\nAnswer: At [0.12, 0.30].\nQuestion: x?\nAnswer: y", lc)[1] \
        == "mentions_captions_or_boxes"
    assert parse_answer("conversation", "Question: a?\nAnswer: <image> b\nQuestion: c?\nAnswer: d", lc)[1] \
        == "contains_image_placeholder"
    assert parse_answer("detail", "Sorry, as an AI I cannot see the image.", lc)[1] == "refusal"
    assert parse_answer("detail", "A cat on a sofa.", lc)[1] == "description_too_short"
    assert parse_answer("detail", "Question: x?\nAnswer: " + LONG, lc)[1] == "not_a_description"
    assert parse_answer("reasoning", "Question: Why?\nAnswer: Because.", lc)[1] == "answer_too_short"
    assert parse_answer("reasoning", f"Question: Why?\nAnswer: {LONG}\nQuestion: And?\nAnswer: {LONG}", lc)[1] \
        == "not_one_question"
    assert parse_answer("reasoning", f"Question: Why?\nAnswer: {LONG}", lc) == ([("Why?", LONG)], None)
    assert parse_answer("detail", "", lc)[1] == "empty_answer"


def test_samples_per_image_differ_and_duplicates_are_rejected(tmp_path):
    report = run_llava(config(tmp_path, types=["detail", "conversation"], per_image=2), FakeTeacher())
    rows = read_rows(tmp_path / "out.jsonl")
    # detail answers carry the seed (one seed per sample index) -> 2 rows per image; the fake's
    # conversation ignores the seed -> sample 1 repeats sample 0 and is rejected as a duplicate
    assert sorted(r["id"] for r in rows if r["meta"]["type"] == "detail") == sorted(
        f"llava-{r['meta']['record_id']}-detail-{k}" for r in rows if r["meta"]["type"] == "conversation" for k in (0, 1))
    assert report.rejected == {"conversation:duplicate_sample": 3} and report.rows_total == 9


def test_interrupted_run_resumes_without_redoing_finished_records(tmp_path):
    cfg = config(tmp_path)
    interrupted = FakeTeacher(fail_after=5)
    with pytest.raises(KeyboardInterrupt):
        run_llava(cfg, interrupted)  # batch_size 4: the first batch is written, the second one's answers lost
    first = read_rows(tmp_path / "out.jsonl")
    assert len(first) == 4 and len(interrupted.seen) == 5
    resumed = FakeTeacher()
    report = run_llava(cfg, resumed)
    assert report.rows_resumed == 4 and report.rows_new == 5 and report.rows_total == 9
    assert len(resumed.seen) == 5
    assert not any(conv in resumed.seen for conv in interrupted.seen[:4])  # finished: not asked again
    assert interrupted.seen[4] in resumed.seen  # asked, but its answer was lost: asked again
    rows = read_rows(tmp_path / "out.jsonl")
    assert len({r["id"] for r in rows}) == 9 and rows[:4] == first


def test_sigkilled_run_resumes(tmp_path):
    """A real kill (no finally blocks run): the process SIGKILLs itself in its second teacher call."""
    import inspect

    cfg = config(tmp_path)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    script = tmp_path / "killed.py"
    script.write_text("import os, re, signal, sys\n" + f"LONG = {LONG!r}\n" + inspect.getsource(teacher_reply) + textwrap.dedent("""
        from sftlab.synth.backends import ChatBackend, CompletionResult
        from sftlab.synth.config import SynthConfig
        from sftlab.synth.llava import run_llava

        class Dying(ChatBackend):
            name = "fake:teacher"
            def complete(self, convs, *, seed=None, **kw):
                if self.stats.calls >= 4:
                    os.kill(os.getpid(), signal.SIGKILL)
                self.stats.calls += len(convs)
                return [CompletionResult(teacher_reply(c, seed)) for c in convs]

        run_llava(SynthConfig.model_validate_json(open(sys.argv[1]).read()), Dying())
    """))
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "cfg.json")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == -9, proc.stderr
    killed = read_rows(tmp_path / "out.jsonl")
    assert len(killed) == 4  # the first batch (batch_size 4)
    with open(tmp_path / "out.jsonl", "ab") as f:  # as if the kill hit in the middle of writing a line
        f.write(b'{"messages": [{"role": "user", "content": "half')
    resumed = FakeTeacher()
    report = run_llava(cfg, resumed)
    rows = read_rows(tmp_path / "out.jsonl")
    assert report.truncated_bytes > 0 and report.rows_resumed == 4 and rows[:4] == killed
    assert len(resumed.seen) == 5 and len(rows) == 9 and len({r["id"] for r in rows}) == 9
    assert report.rejected == {}


def scripted_teacher_app():
    from fastapi import FastAPI, Request

    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        text = teacher_reply(body["messages"], body.get("seed"))
        return {"id": "x", "object": "chat.completion", "model": body["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}

    return app


def test_config_and_cli_through_http_teacher(tmp_path):
    (tmp_path / "data").mkdir()
    write_records(tmp_path / "data" / "images.jsonl")
    with server_in_thread(scripted_teacher_app()) as url:
        cfg_path = tmp_path / "synth.yaml"
        cfg_path.write_text(yaml.safe_dump({
            "pipeline": "llava", "output": "out/llava.jsonl",
            "teacher": {"kind": "openai", "base_url": url, "model": "teach"},
            "llava": {"input": "data/images.jsonl", "image_root": "pics", "types": ["reasoning", "detail"]}}))
        cfg = load_synth_config(cfg_path)
        assert cfg.llava.input == str(tmp_path / "data" / "images.jsonl") and cfg.llava.image_root == str(tmp_path / "pics")
        report = run_synth(cfg)
        assert report.rows_total == 6 and report.call_stats["ok"] == 6
        rows = read_rows(tmp_path / "out" / "llava.jsonl")
        assert rows[0]["meta"]["teacher"] == f"openai:teach@{url}"
        assert str(tmp_path / "pics" / "imgs" / "cat.jpg") in {r["images"][0] for r in rows}
        # the command: complete already -> nothing new, exit 0
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        done = subprocess.run([sys.executable, "-m", "sftlab.cli", "synth", str(cfg_path)], capture_output=True,
                              text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "llava: 6 rows" in done.stdout and "6 from earlier runs" in done.stdout


def test_bad_records_and_config_are_reported_at_once(tmp_path):
    bad = [{"captions": ["no image"]},
           {"image": "a.jpg", "captions": ["ok"], "boxes": [{"label": "cat", "box": [10, 10, 50, 50]}]},
           {"image": "b.jpg", "captions": [], "boxes": []},
           {"image": "c.jpg", "captions": ["x"], "boxes": [{"label": "cat", "box": [0.5, 0.5, 0.2, 0.9]}]},
           {"image": "ok.jpg", "captions": ["x"]}, {"image": "ok.jpg", "captions": ["y"]}]
    p = write_records(tmp_path / "bad.jsonl", bad)
    with pytest.raises(DataError) as e:
        read_records(p)
    msg = str(e.value)
    assert "6 problem(s)" not in msg and "5 problem(s)" in msg
    for where, what in ((1, "image"), (2, "width/height"), (3, "no captions and no boxes"), (4, "x0 <= x1"), (6, "bad.jsonl:5")):
        assert f"bad.jsonl:{where}" in msg and what in msg, (where, what)
    teacher = FakeTeacher()
    with pytest.raises(DataError):
        run_llava(config(tmp_path, records=bad), teacher)
    assert teacher.seen == []  # nothing asked before the input is known good
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"pipeline": "llava", "output": "o.jsonl", "teacher": {"model": "x"},
                                   "llava": {"input": "i.jsonl", "types": ["detail", "captions"], "per_imag": 2}}))
    with pytest.raises(ConfigError) as e:
        load_synth_config(cfg)
    assert "per_imag" in str(e.value) and "captions" in str(e.value)
    cfg.write_text(yaml.safe_dump({"pipeline": "llava", "output": "o.jsonl", "teacher": {"model": "x"}}))
    with pytest.raises(ConfigError, match="llava"):
        load_synth_config(cfg)


def test_local_model_teacher_runs_and_its_failures_are_counted(tmp_path):
    """The in-process backend (kind: local) through the same pipeline: a tiny random model cannot
    follow the format, so every answer is rejected -- counted by reason, none written, none lost."""
    from helpers import make_model_folder

    folder = make_model_folder(tmp_path)
    cfg = SynthConfig.model_validate({
        "pipeline": "llava", "output": str(tmp_path / "out.jsonl"), "teacher": {"kind": "local", "model": str(folder)},
        "llava": {"input": str(write_records(tmp_path / "in.jsonl", RECORDS[:1])), "max_tokens": 16}})
    report = run_synth(cfg)
    assert report.call_stats["calls"] == 3 and report.call_stats["ok"] == 3
    assert report.rows_total == 0 and sum(report.rejected.values()) == 3
    assert {k.split(":")[0] for k in report.rejected} == {"conversation", "detail", "reasoning"}
