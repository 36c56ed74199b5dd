"""`train.autocast: auto` (speed/cpu_bf16.py): bf16 only where it is measured faster, the choice kept on resume."""

from __future__ import annotations

import json
import os
import signal

import torch

from helpers import final_weights, losses, run_config
from sftlab.config import load_config
from sftlab.speed import cpu_bf16
from sftlab.train import train
from tiny import hook_training_forwards, make_model, make_tokenizer


def calibration_says(monkeypatch, use: bool):
    monkeypatch.setattr(cpu_bf16, "choose", lambda *a, **k: {"use": use, "fp32_gflops": 1.0, "bf16_gflops": 3.0 if use else 0.1,
                                                             "reason": f"test calibration: bf16 = {use}"})


def autocast_seen_in_training_forwards(model) -> list[bool]:
    """Whether each training forward of `model` ran under CPU autocast (read inside the forward, not from sftlab)."""
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(torch.is_autocast_enabled("cpu")) if m.training else None)
    return seen


def test_auto_turns_bf16_on_only_where_the_calibration_says_so(tmp_path, monkeypatch):
    for use in (True, False):
        calibration_says(monkeypatch, use)
        out = f"auto-{use}"
        model = make_model()
        seen = autocast_seen_in_training_forwards(model)
        train(load_config(run_config(tmp_path, out=out, max_steps=2, save_every=1, autocast="auto")), model=model,
              tokenizer=make_tokenizer())
        assert seen and all(s == use for s in seen)
        meta = json.loads((tmp_path / out / "checkpoint-0000002" / "meta.json").read_text())
        assert meta["speed"]["autocast"] == ("bf16" if use else "off")


def test_off_and_bf16_never_time_anything(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("calibrated although train.autocast was not auto")

    monkeypatch.setattr(cpu_bf16, "choose", boom)
    for mode in ("off", "bf16"):
        model = make_model()
        seen = autocast_seen_in_training_forwards(model)
        train(load_config(run_config(tmp_path, out=mode, max_steps=1, save_every=0, autocast=mode)), model=model,
              tokenizer=make_tokenizer())
        assert seen and all(s == (mode == "bf16") for s in seen)


def test_the_real_calibration_times_both_ways_and_decides_by_the_threshold():
    cpu_bf16._choice = None
    try:
        got = cpu_bf16.choose(64, 128, tokens=64, repeats=2)
    finally:
        cpu_bf16._choice = None
    assert got["fp32_gflops"] > 0 and got["bf16_gflops"] > 0
    assert got["use"] == (got["bf16_gflops"] >= cpu_bf16.MIN_SPEEDUP * got["fp32_gflops"])


def test_resume_keeps_the_autocast_chosen_at_the_start_and_ends_bit_identical(tmp_path, monkeypatch, capsys):
    """The checkpoint records auto's choice; a resumed run whose calibration would now answer the other way (another
    machine) still trains under the recorded setting, so it ends bit-identical to an unbroken run."""
    calibration_says(monkeypatch, True)
    train(load_config(run_config(tmp_path, out="unbroken", max_steps=5, save_every=0, autocast="auto")))
    cfg = run_config(tmp_path, out="stopped", max_steps=5, save_every=0, autocast="auto")
    model = make_model()
    handle = hook_training_forwards(model, lambda out, k: os.kill(os.getpid(), signal.SIGINT) if k == 2 else None)
    first = train(load_config(cfg), model=model, tokenizer=make_tokenizer())
    handle.remove()
    assert first.stopped_early.startswith("stopped by SIGINT after step 2")

    calibration_says(monkeypatch, False)  # a fresh decision now would train in fp32
    capsys.readouterr()
    train(load_config(cfg), resume=True)
    got, ref = final_weights(tmp_path / "stopped"), final_weights(tmp_path / "unbroken")
    assert all(torch.equal(got[k], ref[k]) for k in ref), "bit-identical to the unbroken run"
    assert losses(tmp_path / "stopped") == losses(tmp_path / "unbroken")
    assert "autocast: bf16 (chosen at the run's start, recorded in the checkpoint" in capsys.readouterr().out

    # the check has teeth: the same run in fp32 ends on other bits
    train(load_config(run_config(tmp_path, out="fp32", max_steps=5, save_every=0, autocast="off")))
    other = final_weights(tmp_path / "fp32")
    assert any(not torch.equal(other[k], ref[k]) for k in ref)


def test_a_bare_off_on_the_command_line_means_off(tmp_path):
    """YAML 1.1 reads `off` as false; train.autocast=off must still be accepted as "off"."""
    cfg = load_config(run_config(tmp_path, out="x"), ["train.autocast=off"])
    assert cfg.train.autocast == "off"
    assert load_config(run_config(tmp_path, out="y"), ["train.autocast=auto"]).train.autocast == "auto"
