"""Tokenised-data cache: a hit gives exactly what rendering gives; any change of data, tokenizer,
template or train_on misses; damaged entries are detected, removed and rebuilt; no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sftlab.config import DataConfig, RunConfig, TrainConfig
from sftlab.prepare import prepare
from sftlab.render import Renderer
from sftlab.templates import LLAMA3
from tiny import make_tokenizer

ROWS = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Reverse word {i}."},
                  {"role": "assistant", "content": f"{i} drow"}, {"role": "user", "content": "And 2 + 3?"},
                  {"role": "assistant", "content": "5 " * (i % 7 + 1)}]}
    for i in range(40)
]
TEXT_ROWS = [{"text": "A plain document row, every token trained."}, {"text": "Another document."}]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("SFTLAB_CACHE", str(d))  # model.cache_dir(): the one cache folder setting
    return d / "tokenized"


def write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run(path, tok=None, cache=True, train_on="all_assistant", max_len=64, eval_fraction=0.1, **train):
    tok = tok or make_tokenizer()
    # plain-text rows (format "text": no template, every token trained) from a second file
    text = write(Path(path).parent / "text_rows.jsonl", TEXT_ROWS)
    data = DataConfig(train=[{"path": str(path)}, {"path": str(text)}], max_len=max_len, length_policy="split", train_on=train_on,
                      eval_fraction=eval_fraction, cache=cache)
    return prepare(Renderer(tok, train_on=train_on), data, TrainConfig(**{"tokens_per_batch": 128, **train}), pad_id=0)


def state(p):
    def ex(ds):
        return None if ds is None else ([(r.input_ids, r.loss_mask, r.turn_ends, r.id, r.source, r.kind) for r in ds.examples], ds.bins)

    return (ex(p.train), ex(p.eval), p.fingerprint, p.length_report.summary())


def cache_note(p) -> str:
    (note,) = [n for n in p.notes if n.startswith("token cache")]
    return note


def entries(cache_dir: Path) -> list[Path]:
    return sorted(d for d in cache_dir.iterdir() if not d.name.startswith(".")) if cache_dir.exists() else []


def test_miss_then_hit_gives_identical_data(tmp_path, cache_dir):
    path = write(tmp_path / "d.jsonl", ROWS)
    uncached = run(path, cache=False)
    assert cache_note(uncached) == "token cache: off (data.cache: false)" and not cache_dir.exists()
    first = run(path)
    assert "train miss, stored" in cache_note(first) and "eval miss, stored" in cache_note(first)
    assert str(cache_dir) in cache_note(first)
    assert cache_note(first) in first.summary().splitlines()  # `sftlab train` prints the summary
    second = run(path)
    assert "train hit" in cache_note(second) and "eval hit" in cache_note(second)
    assert state(first) == state(second) == state(uncached)
    assert len(entries(cache_dir)) == 2  # train rows and eval rows
    assert sum(r.kind == "text" for r in second.train.examples + second.eval.examples) == len(TEXT_ROWS)
    # the stored arrays are plain .npy: they load with pickle disabled
    for f in entries(cache_dir)[0].glob("*.npy"):
        np.load(f, allow_pickle=False)


def test_length_policy_and_packing_are_recomputed_on_a_hit(tmp_path, cache_dir):
    path = write(tmp_path / "d.jsonl", ROWS)
    run(path, max_len=64)
    for kw in ({"max_len": 24}, {"max_len": 24, "tokens_per_batch": 48}):
        hit = run(path, **kw)
        assert "train hit" in cache_note(hit)
        assert state(hit) == state(run(path, cache=False, **kw))
        assert hit.length_report.too_long > 0  # the shorter max_len really changed the result


def test_any_change_of_inputs_misses(tmp_path, cache_dir):
    path = write(tmp_path / "d.jsonl", ROWS)
    run(path)
    seen = {e.name for e in entries(cache_dir)}

    def misses(p):
        assert "train miss, stored" in cache_note(p), cache_note(p)
        new = {e.name for e in entries(cache_dir)} - seen
        assert new, "a new entry must be stored"
        seen.update(new)
        return p

    # one byte of data
    text = path.read_text()
    changed = write(tmp_path / "d2.jsonl", [])
    changed.write_text(text.replace("Reverse word 7.", "Reverse word 8."))
    p = misses(run(changed))
    assert state(p) == state(run(changed, cache=False))
    # a setting that changes rendering
    p = misses(run(path, train_on="last_assistant"))
    assert state(p) == state(run(path, cache=False, train_on="last_assistant"))
    # the template
    tok = make_tokenizer()
    tok.chat_template = "{{ bos_token }}" + tok.chat_template
    p = misses(run(path, tok=tok))
    assert p.train.examples[0].input_ids[0] == tok.bos_token_id
    # the tokenizer's vocabulary (one added token), same template
    tok = make_tokenizer()
    tok.add_tokens(["drow"])
    p = misses(run(path, tok=tok))
    assert state(p) == state(run(path, tok=tok, cache=False))
    # a different template with its own stop token
    tok = make_tokenizer(template=LLAMA3)
    tok.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]})
    misses(run(path, tok=tok))


def test_moved_file_hits_with_the_new_sources(tmp_path, cache_dir):
    path = write(tmp_path / "d.jsonl", ROWS)
    run(path, eval_fraction=0.0)
    moved = tmp_path / "elsewhere.jsonl"
    path.rename(moved)
    p = run(moved, eval_fraction=0.0)
    assert "train hit" in cache_note(p)
    assert all(r.source.startswith((str(moved), str(tmp_path / "text_rows.jsonl"))) for r in p.train.examples)
    assert sum(r.source.startswith(str(moved)) for r in p.train.examples) == len(ROWS)
    assert state(p) == state(run(moved, cache=False, eval_fraction=0.0))


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete", "meta"])
def test_damaged_entry_is_detected_and_rebuilt(tmp_path, cache_dir, damage):
    path = write(tmp_path / "d.jsonl", ROWS)
    good = state(run(path, eval_fraction=0.0))
    (entry,) = entries(cache_dir)
    ids = entry / "input_ids.npy"
    if damage == "truncate":  # a killed writer or a full disk
        ids.write_bytes(ids.read_bytes()[:-17])
    elif damage == "flip":  # same size, one token changed
        raw = bytearray(ids.read_bytes())
        raw[-3] ^= 1
        ids.write_bytes(bytes(raw))
    elif damage == "delete":
        (entry / "loss_mask.npy").unlink()
    else:
        (entry / "meta.json").write_text("{not json")
    p = run(path, eval_fraction=0.0)
    assert "damaged entry removed" in cache_note(p) and "stored" in cache_note(p)
    assert state(p) == good
    again = run(path, eval_fraction=0.0)
    assert "train hit" in cache_note(again) and state(again) == good


def test_unwritable_cache_folder_does_not_stop_the_run(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv("SFTLAB_CACHE", str(blocker))  # mkdir below a file fails (even as root)
    path = write(tmp_path / "d.jsonl", ROWS)
    p = run(path, eval_fraction=0.0)
    assert "not stored" in cache_note(p)
    assert state(p) == state(run(path, cache=False, eval_fraction=0.0))


def test_cache_setting_is_not_part_of_the_run_fingerprint():
    base = {"data": {"train": [{"path": "x.jsonl"}]}}
    on = RunConfig.model_validate(base)
    off = RunConfig.model_validate({"data": {"train": [{"path": "x.jsonl"}], "cache": False}})
    assert on.data.cache is True and off.data.cache is False
    assert on.fingerprint() == off.fingerprint()  # resume is not blocked by turning the cache off
