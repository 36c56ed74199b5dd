"""A run killed with SIGKILL at random moments and restarted with --resume ends bit for bit where an
unbroken run ends: same final weights (torch.equal on every tensor), same loss on every metrics line.

Kills are timed off what the run writes (seeded random delays after a metrics line or a checkpoint
temp folder appears), because a fixed wall-clock delay would mostly land in the ~8 s of imports.
"""

from __future__ import annotations

import json
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from sftlab.config import load_config
from sftlab.train import train
from helpers import final_weights, losses, run_config, train_process, write_config


def _newest_step(run: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in run.glob("checkpoint-*") if (p / "COMPLETE").exists()]
    return max(steps, default=0)


def _wait_then_kill(proc, run: Path, rng: random.Random, mode: str) -> tuple[int, str]:
    """Poll every 0.5 ms for the moment named by `mode` IN THIS PROCESS's life (not leftovers of the
    one killed before), then SIGKILL. Returns the newest complete checkpoint step and what was seen."""
    old_temps = set(run.glob(".tmp-checkpoint-*"))
    target = _newest_step(run) + rng.randint(1, 3)
    delay = rng.uniform(0.0, 0.03)  # one step (with its checkpoint) takes ~30 ms here
    while proc.poll() is None:
        if mode == "during-save" and set(run.glob(".tmp-checkpoint-*")) - old_temps:
            break
        if mode == "after-checkpoint" and _newest_step(run) >= target:
            time.sleep(delay)
            break
        time.sleep(0.0005)
    if proc.poll() is not None:
        out, err = proc.communicate()
        raise AssertionError(f"the run ended (rc {proc.returncode}) before the {mode} kill:\n{err[-2000:]}")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    temps = sorted(p.name for p in set(run.glob(".tmp-checkpoint-*")) - old_temps)
    step = _newest_step(run)
    return step, f"{mode}: killed at newest checkpoint {step}, temp folders left: {temps}"


def test_sigkill_at_random_moments_then_resume_is_bit_exact(tmp_path):
    cfg = run_config(tmp_path, out="killed")
    reference = run_config(tmp_path, out="unbroken")
    train(load_config(reference))  # in-process: same code, saves the ~8 s of a process start

    config = write_config(tmp_path, cfg)
    run = Path(cfg["train"]["output_dir"])
    rng = random.Random(1234)
    seen = []
    for i, mode in enumerate(["after-checkpoint", "during-save", "after-checkpoint"]):
        proc = train_process(config, *(["--resume"] if i else []))
        seen.append(_wait_then_kill(proc, run, rng, mode))
    print("\n".join(text for _, text in seen))
    steps = [step for step, _ in seen]
    assert steps == sorted(steps) and 0 < steps[0] and steps[-1] < 12, f"each kill landed mid-run, later than the last: {steps}"
    # the last restart in-process (same code as `sftlab train --resume`, ~8 s less): a kill during a
    # save leaves a temp folder, which resume must neither load nor leave behind
    result = train(load_config(cfg), resume=True)
    assert result.steps == 12 and not result.stopped_early

    assert losses(run) == losses(Path(reference["train"]["output_dir"]))
    assert [s for s, _ in losses(run)] == list(range(1, 13))
    a, b = final_weights(Path(reference["train"]["output_dir"])), final_weights(run)
    assert a.keys() == b.keys() and len(a) > 0
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert not list(run.glob(".tmp-checkpoint-*")), "a finished run leaves no temp folders behind"


def test_half_written_checkpoints_are_ignored_on_resume(tmp_path):
    """What a kill mid-save leaves: a temp folder and a checkpoint folder without its COMPLETE marker
    (e.g. copied by hand). Resume takes the newest complete checkpoint and ends like an unbroken run."""
    reference = run_config(tmp_path, out="unbroken", max_steps=6)
    train(load_config(reference))
    cfg = run_config(tmp_path, out="broken", max_steps=6, keep_checkpoints=6)
    run = Path(cfg["train"]["output_dir"])
    train(load_config(run_config(tmp_path, out="broken", max_steps=6, keep_checkpoints=6)))
    # roll the run back to step 4: drop the step-5/6 checkpoints and final, fake a half-written save
    import shutil

    for c in run.glob("checkpoint-*"):
        if int(c.name.split("-")[1]) > 4:
            shutil.rmtree(c)
    shutil.rmtree(run / "final")
    half = run / ".tmp-checkpoint-0000005-abc"
    half.mkdir()
    (half / "trainable.safetensors").write_bytes(b"\x00" * 10)
    no_marker = run / "checkpoint-0000006"
    shutil.copytree(run / "checkpoint-0000004", no_marker)
    (no_marker / "COMPLETE").unlink()
    (no_marker / "trainable.safetensors").write_bytes(b"garbage")
    # and a metrics line cut in half by the kill
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "epoch": 0.5, "lo')

    result = train(load_config(cfg), resume=True)
    assert result.steps == 6 and not result.stopped_early
    assert losses(run) == losses(Path(reference["train"]["output_dir"]))
    a, b = final_weights(Path(reference["train"]["output_dir"])), final_weights(run)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert json.loads((run / "checkpoint-0000006" / "meta.json").read_text())["step"] == 6
    assert not half.exists(), "the temp folder of the interrupted save is cleaned up on resume"
