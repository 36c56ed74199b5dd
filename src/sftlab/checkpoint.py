"""Atomic checkpoints and exact resume.

A checkpoint folder is written under a temporary name and renamed into place only after every
file (and a COMPLETE marker with the file list) is on disk, so a kill during a save never leaves a
checkpoint that looks valid. It holds the trainable weights (safetensors), optimizer and scheduler
state, every RNG state, the step (which fixes the data position: the bin order of each epoch is a
pure function of the seed), and the fingerprints of config and data.

Optimizer/scheduler/RNG state is saved with torch.save and loaded with weights_only=True, which
refuses arbitrary pickled objects.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sftlab.errors import SftlabError

MARKER = "COMPLETE"


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": [x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(state["torch"])


@dataclass
class Resumed:
    step: int
    path: Path
    meta: dict


def save_checkpoint(out_dir: Path, step: int, model, optimizer, scheduler, meta: dict, keep: int = 2) -> Path:
    out_dir = Path(out_dir)
    final = out_dir / f"checkpoint-{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".tmp-checkpoint-{step:07d}-"))
    try:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}, tmp / "state.pt")
        (tmp / "meta.json").write_text(json.dumps({**meta, "step": step}, indent=2))
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:  # data reaches the disk before the marker that vouches for it
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        (tmp / MARKER).write_text(json.dumps(files))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first. Half-written ones (no marker) are ignored."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [p for p in out_dir.glob("checkpoint-*") if p.is_dir() and (p / MARKER).exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def remove_stale_temp_folders(out_dir: Path) -> list[str]:
    """Delete the temp folders of saves that a kill interrupted (each can be as large as a whole
    checkpoint). Only call it when no save is running in `out_dir`, i.e. before training starts."""
    removed = []
    for tmp in Path(out_dir).glob(".tmp-checkpoint-*"):
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp.name)
    return sorted(removed)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> Resumed:
    path = Path(path)
    expected = json.loads((path / MARKER).read_text())
    missing = [f for f in expected if not (path / f).exists()]
    if missing:
        raise SftlabError(f"checkpoint {path} is incomplete (missing {missing}); delete it to resume from an earlier one")
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(model.named_parameters())
    unknown = [n for n in weights if n not in params]
    if unknown:
        raise SftlabError(f"checkpoint {path} does not match the model (unknown tensors {unknown[:3]})")
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t)
    state = torch.load(path / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    meta = json.loads((path / "meta.json").read_text())
    return Resumed(meta["step"], path, meta)
