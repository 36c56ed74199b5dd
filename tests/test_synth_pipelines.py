"""Synthesis pipelines through the real OpenAIBackend over real HTTP, against a scripted teacher
(a small FastAPI app on 127.0.0.1 whose answers are deterministic, so pipeline logic can be
checked exactly). Includes a SIGKILL-and-resume run in a subprocess."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sftlab.serve import server_in_thread
from sftlab.synth.config import BUILTIN_SEEDS, load_synth_config
from sftlab.synth.run import run_synth
from helpers import scripted_app

@pytest.fixture(scope="module")
def teacher_url():
    with server_in_thread(scripted_app()) as url:
        yield url


def write_config(tmp_path: Path, **cfg) -> Path:
    p = tmp_path / "synth.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def test_self_instruct_filters_and_provenance(tmp_path, teacher_url):
    cfg = write_config(tmp_path, pipeline="self_instruct", output="out.jsonl",
                       teacher={"kind": "openai", "base_url": teacher_url, "model": "teach"},
                       self_instruct={"num_instructions": 10, "new_per_prompt": 3, "prompts_per_step": 2})
    report = run_synth(load_synth_config(cfg))
    rows = read_rows(tmp_path / "out.jsonl")
    assert report.rows_total == report.rows_new == len(rows) == 10
    assert [r["id"] for r in rows] == [f"self-instruct-{i:05d}" for i in range(10)]
    steps = report.rows_total // 6 + 1  # 6 good tasks per step; the last step's extras are not answered
    # every reply carried one of each bad kind: too short, media, near-copy of a seed, chatter
    for reason in ("too_short", "mentions_unsupported_media", "too_similar_rouge_l", "starts_with_non_instruction"):
        assert report.rejected[reason] == 2 * steps, reason
    assert report.failed_calls == 0
    r = rows[0]
    assert r["messages"][0]["content"].startswith("Describe ") and r["messages"][1]["content"].startswith("Here is a careful answer")
    assert r["meta"]["pipeline"] == "self_instruct" and r["meta"]["teacher"].startswith("openai:teach@http://127.0.0.1")
    assert len(r["meta"]["prompt_hash"]) == 10 and r["meta"]["step"] == 0
    # running again when complete makes nothing new and duplicates nothing
    again = run_synth(load_synth_config(cfg))
    assert again.rows_new == 0 and again.rows_resumed == 10 and len(read_rows(tmp_path / "out.jsonl")) == 10


def test_evol_instruct_elimination_rules(tmp_path, teacher_url):
    cfg = write_config(tmp_path, pipeline="evol_instruct", output="evol.jsonl",
                       teacher={"kind": "openai", "base_url": teacher_url, "model": "teach"},
                       evol_instruct={"rounds": 2, "batch_size": 5})
    report = run_synth(load_synth_config(cfg))
    seeds = read_rows(BUILTIN_SEEDS)
    assert len(seeds) == 22
    # haiku -> leaked "#Rewritten Prompt#"; riddle -> unchanged; French -> teacher says "Equal";
    # "180 km" -> the answer is "Sorry..." -- all in round 1; their lines die out
    assert report.rejected == {"leaked_prompt_words": 1, "no_new_information": 2, "refusal": 1}
    rows = read_rows(tmp_path / "evol.jsonl")
    assert report.rows_total == len(rows) == 18 * 2
    r1 = [r for r in rows if r["meta"]["round"] == 1]
    r2 = [r for r in rows if r["meta"]["round"] == 2]
    assert len(r1) == len(r2) == 18
    child = r2[0]
    assert child["id"] == child["meta"]["parent_id"] + "-r2" and child["meta"]["parent_id"].endswith("-r1")
    assert child["messages"][0]["content"].count("three numbered steps") == 2
    assert child["meta"]["method"] in ("constraints", "deepen", "concretizing", "reasoning", "complicate_input", "breadth")
    again = run_synth(load_synth_config(cfg))
    assert again.rows_new == 0 and len(read_rows(tmp_path / "evol.jsonl")) == 36


def test_judge_filter_keeps_high_scores_and_resumes(tmp_path, teacher_url):
    data = tmp_path / "in.jsonl"
    kinds = ["excellent", "poor", "garbled", "excellent", "poor", "excellent"]
    with open(data, "w") as f:
        for i, k in enumerate(kinds):
            f.write(json.dumps({"id": f"row{i}", "messages": [{"role": "user", "content": f"Question {i}?"},
                                                             {"role": "assistant", "content": f"An {k} answer."}]}) + "\n")
    cfg = write_config(tmp_path, pipeline="judge_filter", output="kept.jsonl",
                       judge={"kind": "openai", "base_url": teacher_url, "model": "judge"},
                       judge_filter={"input": "in.jsonl", "threshold": 4, "batch_size": 4})
    report = run_synth(load_synth_config(cfg))
    kept = read_rows(tmp_path / "kept.jsonl")
    rejected = read_rows(tmp_path / "kept.jsonl.rejected.jsonl")
    assert [r["id"] for r in kept] == ["row0", "row3", "row5"]
    assert all(r["meta"]["judge_score"] == 5 and "accurate" in r["meta"]["judge_reason"] for r in kept)
    assert sorted(r["id"] for r in rejected) == ["row1", "row2", "row4"]
    assert {r["id"]: r["meta"]["judge_score"] for r in rejected} == {"row1": 2, "row2": None, "row4": 2}
    assert report.rejected == {"score_below_4": 2, "unparseable_score": 1}
    again = run_synth(load_synth_config(cfg))
    assert again.rows_new == 0 and len(read_rows(tmp_path / "kept.jsonl")) == 3
    assert len(read_rows(tmp_path / "kept.jsonl.rejected.jsonl")) == 3


def test_failed_calls_are_counted_not_raised(tmp_path, teacher_url):
    cfg = write_config(tmp_path, pipeline="self_instruct", output="out.jsonl",
                       teacher={"kind": "openai", "base_url": teacher_url, "model": "down", "max_retries": 1, "backoff_s": 0.01},
                       self_instruct={"num_instructions": 5, "prompts_per_step": 2, "max_steps": 3})
    report = run_synth(load_synth_config(cfg))
    assert report.rows_total == 0 and not report.finished and "max_steps=3" in report.note
    assert report.failed_calls == 6 and report.rejected == {"instruction_call_failed": 6}
    assert report.call_stats["retries"] == 6


def test_config_errors_are_all_reported(tmp_path):
    from sftlab.errors import ConfigError

    cfg = write_config(tmp_path, pipeline="self_instruct", output="o.jsonl", teachr={"model": "x"},
                       self_instruct={"num_instructons": 3})
    with pytest.raises(ConfigError) as e:
        load_synth_config(cfg)
    msg = str(e.value)
    assert "teachr" in msg and "self_instruct.num_instructons" in msg and "unknown key" in msg


def test_killed_run_resumes_without_loss_or_duplicates(tmp_path):
    """SIGKILL a real `sftlab synth` subprocess midway, restart it, check the rows."""
    target = 24
    with server_in_thread(scripted_app(delay_s=0.15)) as url:
        cfg = write_config(tmp_path, pipeline="self_instruct", output="out.jsonl",
                           teacher={"kind": "openai", "base_url": url, "model": "teach"},
                           self_instruct={"num_instructions": target, "new_per_prompt": 2, "prompts_per_step": 1})
        out = tmp_path / "out.jsonl"
        cmd = [sys.executable, "-m", "sftlab.cli", "synth", str(cfg)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline and (not out.exists() or len(read_rows(out)) < 6):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        n_killed = len(read_rows(out))
        assert 6 <= n_killed < target, "the run must be killed midway"
        with open(out, "ab") as f:  # as if the kill hit in the middle of writing a line
            f.write(b'{"messages": [{"role": "user", "content": "half a li')
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "removed a partial last line" in done.stdout and f"{n_killed} from earlier runs" in done.stdout
    rows = read_rows(out)
    ids = [r["id"] for r in rows]
    assert ids == [f"self-instruct-{i:05d}" for i in range(target)]
    instructions = [r["messages"][0]["content"] for r in rows]
    assert len(set(instructions)) == target


def test_novelty_pool_holds_seed_instructions_without_their_inputs():
    from sftlab.synth.filters import NoveltyFilter
    from sftlab.synth.self_instruct import load_instructions, novelty_pool

    seeds = [t for _, t in load_instructions("builtin")]
    with_input = next(s for s in seeds if s.startswith("Translate the sentence into French.\n\n"))
    copy = with_input.split("\n\n")[0]
    # against the seed as shown (instruction + input) a verbatim copy of its instruction looks new...
    assert NoveltyFilter(seeds).is_novel(copy)[0]
    # ...so the pool also holds the instruction alone, and the copy is rejected
    pool = novelty_pool(seeds)
    assert copy in pool and with_input in pool and len(pool) == len(seeds) + sum("\n\n" in s for s in seeds)
    assert not NoveltyFilter(pool).is_novel(copy)[0]
