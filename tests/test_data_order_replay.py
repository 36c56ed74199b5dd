"""data.order (shuffled / as_given / curriculum) holds in what training sees; data.replay mixes
plain text at the asked fraction of trained tokens."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from sftlab.config import DataConfig, TrainConfig, load_config
from sftlab.errors import ConfigError
from sftlab.pack import IGNORE, PackedDataset
from sftlab.prepare import labels_of, prepare
from sftlab.render import Renderer
from sftlab.train import step_batches
from helpers import run_config
from tiny import make_tokenizer

WORDS = ["apple", "lazy", "brown", "quick", "today", "there", "fine", "thank", "hello", "answer", "sort", "dog"]


def rows(n=60, seed=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        w = WORDS[i % len(WORDS)]
        out.append({"id": f"ex{i}", "meta": {"difficulty": rng.random()},
                    "messages": [{"role": "user", "content": f"Reverse the word {w} " + "please " * rng.randint(0, 6)},
                                 {"role": "assistant", "content": w[::-1] + " ok" * rng.randint(0, 8)}]})
    return out


def write(path: Path, records) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def text_file(path: Path, n=8) -> Path:
    docs = [" ".join(f"The {w} of paragraph {k} is quick and brown." for w in WORDS) for k in range(n)]
    return write(path, [{"text": d} for d in docs])


def prep(tmp_path, packing=True, epochs_tpb=96, **data):
    src = write(tmp_path / "train.jsonl", rows())
    cfg = DataConfig(train=[{"path": str(src)}], max_len=128, packing=packing, cache=False, **data)
    return prepare(Renderer(make_tokenizer()), cfg, TrainConfig(tokens_per_batch=epochs_tpb, batch_size=4), pad_id=0)


def seen_ids(ds: PackedDataset, epochs: int, micro=2) -> list[list[str]]:
    """Example ids in the order training's step_batches hands them out, per epoch."""
    per_epoch = math.ceil(len(ds) / micro)
    out = []
    for epoch in range(epochs):
        ids = []
        for step in range(epoch * per_epoch, (epoch + 1) * per_epoch):
            for b in step_batches(ds, step, micro, 0, 1):
                if b.n_examples:  # not the empty filler of a short last step
                    ids += _ids_of(ds, b)
        out.append(ids)
    return out


def _ids_of(ds, batch):
    # each example's tokens are a unique block of the row; find them via collate of every bin (test only)
    for bin_ in ds.bins:
        if ds.collate(bin_).input_ids.shape == batch.input_ids.shape and bool((ds.collate(bin_).input_ids == batch.input_ids).all()):
            return [ds.examples[i].id for i in bin_]
    raise AssertionError("batch not found")


DIFF = {r["id"]: r["meta"]["difficulty"] for r in rows()}


@pytest.mark.parametrize("packing", [True, False])
def test_curriculum_order_holds_in_every_epoch(tmp_path, packing):
    p = prep(tmp_path, packing=packing, order="curriculum", order_key="difficulty")
    epochs = seen_ids(p.train, 2)
    for ids in epochs:
        assert sorted(ids) == sorted(DIFF)  # every example once
        assert [DIFF[i] for i in ids] == sorted(DIFF[i] for i in ids)  # ascending
    assert epochs[0] == epochs[1]  # not reshuffled


def test_as_given_keeps_the_file_order_and_shuffled_does_not(tmp_path):
    given = seen_ids(prep(tmp_path, order="as_given").train, 2)
    assert given[0] == given[1] == [f"ex{i}" for i in range(60)]
    shuffled = seen_ids(prep(tmp_path).train, 2)
    assert shuffled[0] != shuffled[1] and shuffled[0] != given[0]
    assert [DIFF[i] for i in shuffled[0]] != sorted(DIFF.values())


def test_order_config_is_checked_and_defaults_keep_the_fingerprint(tmp_path):
    with pytest.raises(ConfigError, match="order_key"):
        load_config(run_config(tmp_path), ["data.order=curriculum"])
    with pytest.raises(ConfigError, match="only used with data.order: curriculum"):
        load_config(run_config(tmp_path), ["data.order_key=difficulty"])
    with pytest.raises(ConfigError, match="pack_order"):
        load_config(run_config(tmp_path), ["data.order=as_given", "data.pack_order=by_length"])
    base = load_config(run_config(tmp_path))
    assert base.fingerprint() == load_config(run_config(tmp_path), ["data.order=shuffled"]).fingerprint()
    assert base.fingerprint() != load_config(run_config(tmp_path), ["data.order=as_given"]).fingerprint()


def test_training_sees_the_curriculum_order(tmp_path, monkeypatch):
    """The loop itself (not only step_batches): record each micro-batch's example ids as train() collates them."""
    from sftlab import pack
    from sftlab.train import train

    src = write(tmp_path / "data" / "c.jsonl", rows(24))
    seen = []
    original = pack.PackedDataset.collate

    def recording(self, idx):
        if self.order == "as_given":  # the training set (eval sets are by_length)
            seen.extend(self.examples[i].id for i in idx)
        return original(self, idx)

    monkeypatch.setattr(pack.PackedDataset, "collate", recording)
    cfg = run_config(tmp_path, max_steps=None, epochs=2, save_every=0)
    cfg["data"].update(train=[{"path": str(src)}], order="curriculum", order_key="difficulty", cache=False, max_len=128)
    cfg["train"]["tokens_per_batch"] = 128
    train(load_config(cfg))
    diff = {r["id"]: r["meta"]["difficulty"] for r in rows(24)}
    half = len(seen) // 2
    assert len(seen) == 48 and seen[:half] == seen[half:]
    assert [diff[i] for i in seen[:half]] == sorted(diff.values())


@pytest.mark.parametrize("fraction", [0.1, 0.3])
@pytest.mark.parametrize("order", ["shuffled", "curriculum"])
def test_replay_makes_up_the_asked_fraction_of_trained_tokens(tmp_path, fraction, order):
    txt = text_file(tmp_path / "general.jsonl")
    extra = {"order_key": "difficulty"} if order == "curriculum" else {}
    p = prep(tmp_path, order=order, replay={"path": str(txt), "fraction": fraction}, **extra)
    # count what training sees: labels of every micro-batch of one epoch, replay rows by kind
    ds = p.train
    replay_ids = {r.id for r in ds.examples if r.kind == "text"}
    replay = total = 0
    for rows_ in ds.epoch_rows(0):
        for i in rows_:
            n = int((ds.collate([i]).labels != IGNORE).sum())
            total += n
            replay += n if ds.examples[i].id in replay_ids else 0
    instr = sum(labels_of(r) for r in ds.examples if r.kind != "text")
    assert replay == round(fraction / (1 - fraction) * instr)  # exact token count
    assert replay / total == pytest.approx(fraction, abs=1 / total)
    assert any("replay" in n and f"{fraction}" in n for n in p.notes)
    if order == "curriculum":  # instruction examples still ascending, replay spread through the stream
        seq = [ds.examples[i] for b in ds.epoch_rows(0) for i in b]
        chat = [r.id for r in seq if r.kind != "text"]
        assert [DIFF[i] for i in chat] == sorted(DIFF[i] for i in chat)
        pos = [k for k, r in enumerate(seq) if r.kind == "text"]
        gaps = [b - a for a, b in zip([-1, *pos], [*pos, len(seq)])]
        assert max(gaps) <= len(seq) / (len(pos) + 1) + 2  # evenly spread


def test_replay_text_is_cycled_when_short_and_refuses_chat_rows(tmp_path):
    txt = text_file(tmp_path / "short.jsonl", n=1)
    p = prep(tmp_path, replay={"path": str(txt), "fraction": 0.5})
    assert any("cycled" in n for n in p.notes)
    instr = sum(labels_of(r) for r in p.train.examples if r.kind != "text")
    assert sum(labels_of(r) for r in p.train.examples if r.kind == "text") == instr
    chat = write(tmp_path / "chat.jsonl", rows(3))
    from sftlab.errors import DataError

    with pytest.raises(DataError, match="not plain text"):
        prep(tmp_path, replay={"path": str(chat), "fraction": 0.2, "format": "auto"})
