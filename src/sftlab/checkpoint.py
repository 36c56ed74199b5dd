"""Atomic checkpoints and exact resume.

A checkpoint folder is written under a temporary name and renamed into place only after every
file (and a COMPLETE marker with the file list) is on disk, so a kill during a save never leaves a
checkpoint that looks valid. It holds the trainable weights (safetensors), optimizer and scheduler
state, every RNG state, the step (which fixes the data position: the bin order of each epoch is a
pure function of the seed), and the fingerprints of config and data.

Optimizer/scheduler/RNG state is saved with torch.save and loaded with weights_only=True, which
refuses arbitrary pickled objects.

The COMPLETE marker records each file's size and sha256 (format 2); `resume_latest` checks them
before using a checkpoint and falls back to the newest intact one, saying what is wrong with the
others. Checkpoints from before format 2 (the marker is a plain file list) are checked as far as
they can be: the files exist and load.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from sftlab.errors import SftlabError

MARKER = "COMPLETE"
MARKER_FORMAT = 2  # the marker maps each file to {"bytes", "sha256"}; format 1 was a list of names
CHECKPOINT_FILES = ("trainable.safetensors", "state.pt", "meta.json")
TEMP_PREFIX = ".tmp-checkpoint-"
_NAME = re.compile(r"checkpoint-(\d+)")


class CheckpointDamaged(SftlabError):
    """A checkpoint whose files do not match its marker, or do not load. `reason` says which and how."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(f"checkpoint {path} is damaged: {reason}")


def json_safe(obj):
    """`obj` with every NaN/Infinity float replaced by None, so the JSON sftlab writes is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def dumps_json(obj, **kw) -> str:
    return json.dumps(json_safe(obj), allow_nan=False, **kw)


def write_json_atomic(path: Path, obj) -> None:
    """Write strict JSON (no NaN) to a temp file beside `path`, then rename it into place."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(dumps_json(obj, indent=2))
    os.replace(tmp, path)


def file_digest(path: Path) -> dict:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return {"bytes": size, "sha256": h.hexdigest()}


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


def save_checkpoint(out_dir: Path, step: int, model, optimizer, scheduler, meta: dict, keep: int = 2,
                    protect: frozenset[int] | set[int] = frozenset()) -> Path:
    """Write checkpoint-<step> atomically, then delete all but the newest `keep` checkpoints; the
    steps in `protect` (the best checkpoint of train.best_metric) are neither deleted nor counted."""
    out_dir = Path(out_dir)
    final = out_dir / f"checkpoint-{step:07d}"
    tmp = Path(tempfile.mkdtemp(dir=out_dir, prefix=f"{TEMP_PREFIX}{step:07d}-"))
    try:
        save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state()}, tmp / "state.pt")
        (tmp / "meta.json").write_text(dumps_json({**meta, "step": step}, indent=2))
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:  # data reaches the disk before the marker that vouches for it
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
        digests = {name: file_digest(tmp / name) for name in files}  # read back from the page cache
        with open(tmp / MARKER, "w") as f:
            f.write(json.dumps({"format": MARKER_FORMAT, "files": digests}, indent=1))
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rolling = [p for p in list_checkpoints(out_dir) if checkpoint_step(p) not in protect]
    for old in rolling[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(out_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first. Half-written ones (no marker) are ignored."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [p for p in out_dir.glob("checkpoint-*") if _NAME.fullmatch(p.name) and p.is_dir() and (p / MARKER).exists()]
    return sorted(found, key=checkpoint_step)


def checkpoint_step(path: Path) -> int:
    return int(_NAME.fullmatch(Path(path).name).group(1))


def remove_stale_temp_folders(out_dir: Path) -> list[str]:
    """Delete the temp folders of saves that a kill interrupted (each can be as large as a whole
    checkpoint). Only call it when no save is running in `out_dir`, i.e. before training starts."""
    removed = []
    for tmp in Path(out_dir).glob(f"{TEMP_PREFIX}*"):
        shutil.rmtree(tmp, ignore_errors=True)
        removed.append(tmp.name)
    return sorted(removed)


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with the files of checkpoint `path` compared with its marker, or None.

    Format 2 markers: every listed file exists with its recorded size and sha256. Format 1 (a list
    of names, written before sizes were recorded): the files exist; `read_checkpoint` then finds
    files that do not load."""
    path = Path(path)
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"its {MARKER} marker cannot be read ({type(e).__name__}: {e})"
    if isinstance(marker, list):  # format 1
        expected = {name: None for name in marker}
    elif isinstance(marker, dict) and isinstance(marker.get("files"), dict):
        expected = marker["files"]
    else:
        return f"its {MARKER} marker is not a file list"
    problems = []
    for name, want in expected.items():
        f = path / name
        if not f.is_file():
            problems.append(f"{name} is missing")
            continue
        if not isinstance(want, dict):
            continue
        size = f.stat().st_size
        if size != want.get("bytes"):
            problems.append(f"{name} has {size} bytes, {want.get('bytes')} were written" + (" (truncated)" if size < (want.get("bytes") or 0) else ""))
        elif file_digest(f)["sha256"] != want.get("sha256"):
            problems.append(f"{name} has the recorded size but a different sha256 (its bytes changed after the save)")
    return "; ".join(problems) or None


@dataclass
class _Read:
    weights: dict
    state: dict
    meta: dict


def read_checkpoint(path: Path) -> _Read:
    """Check and read a checkpoint's files without touching any model; CheckpointDamaged if they are bad."""
    path = Path(path)
    if problem := checkpoint_problem(path):
        raise CheckpointDamaged(path, problem)
    parts = {}
    for name, read in (("trainable.safetensors", lambda f: load_file(str(f))),
                       ("state.pt", lambda f: torch.load(f, weights_only=True)),
                       ("meta.json", lambda f: json.loads(f.read_text()))):
        try:
            parts[name] = read(path / name)
        except Exception as e:  # noqa: BLE001 - any failure to parse a file is damage, reported by name
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise CheckpointDamaged(path, f"{name} does not load ({type(e).__name__}: {first})") from None
    meta, state = parts["meta.json"], parts["state.pt"]
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise CheckpointDamaged(path, "meta.json has no step number")
    if meta["step"] != checkpoint_step(path):
        raise CheckpointDamaged(path, f"meta.json says step {meta['step']}, the folder name says {checkpoint_step(path)}")
    if not isinstance(state, dict) or not {"optimizer", "scheduler", "rng"} <= set(state):
        raise CheckpointDamaged(path, "state.pt lacks the optimizer, scheduler or RNG state")
    return _Read(parts["trainable.safetensors"], state, meta)


def load_checkpoint(path: Path, model, optimizer, scheduler) -> Resumed:
    """Check, read, then apply checkpoint `path` (weights, optimizer, scheduler, RNG)."""
    path = Path(path)
    got = read_checkpoint(path)
    params = dict(model.named_parameters())
    unknown = [n for n in got.weights if n not in params]
    if unknown:
        raise SftlabError(f"checkpoint {path} does not match the model (unknown tensors {unknown[:3]})")
    try:
        with torch.no_grad():
            for n, t in got.weights.items():
                params[n].copy_(t)
        optimizer.load_state_dict(got.state["optimizer"])
        scheduler.load_state_dict(got.state["scheduler"])
        set_rng_state(got.state["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise SftlabError(f"checkpoint {path} does not fit this model/optimizer ({type(e).__name__}: {first}); "
                          "resume with the config it was saved with, or start a new train.output_dir") from None
    return Resumed(got.meta["step"], path, got.meta)


def resume_latest(out_dir: Path, model, optimizer, scheduler, log=print) -> Resumed | None:
    """Load the newest intact checkpoint in `out_dir`; None when there is none at all.

    A damaged checkpoint (files that do not match the sizes/hashes in its marker, or do not load) is
    skipped with a warning naming what is wrong, and the one before it is tried. When every
    checkpoint is damaged: a SftlabError listing them, with how to go on."""
    out_dir = Path(out_dir)
    ckpts = list_checkpoints(out_dir)
    if not ckpts:
        return None
    damaged: list[CheckpointDamaged] = []
    for path in reversed(ckpts):
        try:
            state = load_checkpoint(path, model, optimizer, scheduler)
        except CheckpointDamaged as e:
            damaged.append(e)
            log(f"warning: {e}; skipping it" + (" and trying the one before it" if path != ckpts[0] else ""))
            continue
        if damaged:
            log(f"resuming from the newest intact checkpoint, {path.name} (step {state.step}); the damaged newer one(s) "
                f"({', '.join(d.path.name for d in damaged)}) are left as they are and replaced when the run saves those steps again")
        return state
    lines = "\n".join(f"  - {d.path.name}: {d.reason}" for d in damaged)
    raise SftlabError(
        f"cannot resume: no intact checkpoint in {out_dir.resolve()}:\n{lines}\n"
        "    fix: train again from step 0 with --overwrite (replaces this run's outputs), "
        "or keep this folder and choose a new train.output_dir"
    )
