"""Shared set-up for the reliability tests (no tests here): a tiny model folder, tiny JSONL data and
a run config written to disk, so a `sftlab train` subprocess sees exactly what a user's run would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tiny import make_model, make_tokenizer

WORDS = ["apple", "lazy", "brown", "quick", "today", "there", "fine", "thank", "hello", "answer", "sort", "dog"]
ROWS = [
    {"messages": [{"role": "user", "content": f"Reverse the word {w}."}, {"role": "assistant", "content": w[::-1]}]}
    for w in WORDS * 2
]


def make_model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-model"
    if not folder.exists():
        make_model().save_pretrained(folder, safe_serialization=True)
        make_tokenizer().save_pretrained(folder)
    return folder


def write_data(path: Path, rows=ROWS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_config(tmp_path: Path, out: str = "run", **train) -> dict:
    """Full fine-tuning in fp32, one micro-batch of <= 64 tokens per step, a checkpoint every step."""
    folder = make_model_folder(tmp_path)
    data = tmp_path / "data" / "train.jsonl"
    if not data.exists():
        write_data(data)
    return {
        "model": {"name": str(folder)},
        "lora": {"enabled": False},
        "data": {"train": [{"path": str(data)}], "max_len": 64},
        "train": {"output_dir": str(tmp_path / out), "lr": 1e-2, "max_steps": 12, "tokens_per_batch": 64,
                  "warmup_ratio": 0.0, "save_every": 1, "keep_checkpoints": 2, **train},
    }


def write_config(tmp_path: Path, cfg: dict, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def train_process(config: Path, *args: str) -> subprocess.Popen:
    """`sftlab train CONFIG ...` as its own process (own process group, so signals reach only it)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen([sys.executable, "-m", "sftlab.cli", "train", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def losses(run_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) per metrics line; timing fields differ between runs by nature, losses must not."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [(json.loads(x)["step"], json.loads(x)["loss"]) for x in lines]


def final_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "final" / "model.safetensors"))
