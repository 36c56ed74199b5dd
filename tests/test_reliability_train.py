"""Training-loop reliability: SIGTERM/SIGINT stop cleanly and resume exactly, non-finite losses are
skipped then stop the run, output folder and free-disk checks, resume refuses changed config/data."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from sftlab.config import load_config
from sftlab.errors import SftlabError
from sftlab.train import train
from helpers import ROWS, final_weights, losses, run_config, train_process, write_config, write_data


def _ckpt_steps(run: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*") if (p / "COMPLETE").exists())


def _assert_same_run(a: Path, b: Path) -> None:
    assert losses(a) == losses(b)
    wa, wb = final_weights(a), final_weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


@pytest.mark.slow  # ~25 s: one `sftlab train` process start (~8 s of imports) on a loaded 2-core box
def test_sigterm_exits_3_with_a_checkpoint_and_resume_matches_unbroken(tmp_path):
    reference = run_config(tmp_path, out="unbroken", max_steps=16, save_every=0)
    train(load_config(reference))
    cfg = run_config(tmp_path, out="stopped", max_steps=16, save_every=0)  # only the stop saves
    run = Path(cfg["train"]["output_dir"])
    proc = train_process(write_config(tmp_path, cfg))
    metrics = run / "metrics.jsonl"
    while proc.poll() is None and not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        time.sleep(0.001)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err[-2000:]
    assert "stopped by SIGTERM" in out and "resume with --resume" in out
    last = losses(run)[-1][0]
    assert 3 <= last < 16
    assert _ckpt_steps(run) == [last], "the stop saves a checkpoint at the last completed step"
    assert not (run / "final").exists()

    result = train(load_config(cfg), resume=True)
    assert result.steps == 16 and not result.stopped_early
    _assert_same_run(Path(reference["train"]["output_dir"]), run)


def test_sigint_mid_step_finishes_the_step_saves_and_resumes_exactly(tmp_path):
    from tiny import hook_training_forwards, make_model, make_tokenizer

    reference = run_config(tmp_path, out="unbroken", max_steps=8, save_every=0)
    train(load_config(reference))
    cfg = run_config(tmp_path, out="stopped", max_steps=8, save_every=0)
    model = make_model()
    model.load_state_dict(make_model().state_dict())
    handle = hook_training_forwards(model, lambda out, k: os.kill(os.getpid(), signal.SIGINT) if k == 3 else None)
    result = train(load_config(cfg), model=model, tokenizer=make_tokenizer())
    handle.remove()
    run = Path(cfg["train"]["output_dir"])
    assert result.stopped_early.startswith("stopped by SIGINT after step 3")
    assert _ckpt_steps(run) == [3] and [s for s, _ in losses(run)] == [1, 2, 3]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handlers are restored"
    train(load_config(cfg), resume=True)
    _assert_same_run(Path(reference["train"]["output_dir"]), run)


def test_second_sigint_stops_at_once_without_saving(tmp_path):
    """Ctrl-C twice must not be ignored (a long step or eval would otherwise be unstoppable)."""
    from tiny import hook_training_forwards, make_model, make_tokenizer

    def twice(out, k):
        if k == 2:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # the handler runs between bytecodes: the first signal lands here
            os.kill(os.getpid(), signal.SIGINT)
        return None

    model = make_model()
    hook_training_forwards(model, twice)
    with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
        train(load_config(run_config(tmp_path, max_steps=6, save_every=0)), model=model, tokenizer=make_tokenizer())
    assert _ckpt_steps(tmp_path / "run") == [] and not (tmp_path / "run" / "final").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "handlers are restored"


def test_nonfinite_loss_step_is_skipped_and_reported(tmp_path, capsys):
    from tiny import hook_training_forwards, make_model, make_tokenizer

    def poison(out, k):
        if k == 3:  # the 3rd step's logits become inf -> loss nan
            out.logits = out.logits + float("inf")
        return out

    model = make_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    snapshots = {}

    def after_step_two(out, k):
        if k == 3:
            snapshots["at3"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        return poison(out, k)

    hook_training_forwards(model, after_step_two)
    result = train(load_config(run_config(tmp_path, max_steps=6, save_every=0)), model=model, tokenizer=make_tokenizer())
    out = capsys.readouterr().out
    assert "step 3: non-finite loss (nan); step skipped (1 in a row)" in out
    assert not result.stopped_early and result.steps == 6
    steps = [s for s, _ in losses(tmp_path / "run")]
    assert steps == [1, 2, 4, 5, 6], "the skipped step has no metrics line and no update"
    assert any(not torch.equal(before[n], snapshots["at3"][n]) for n in before)
    assert all(torch.isfinite(p).all() for p in model.parameters()), "nan gradients never reached the weights"


def test_nonfinite_losses_in_a_row_stop_the_run(tmp_path, capsys):
    from tiny import hook_training_forwards, make_model, make_tokenizer

    def poison_from_2(out, k):
        if k >= 2:
            out.logits = out.logits * float("nan")
        return out

    model = make_model()
    hook_training_forwards(model, poison_from_2)
    cfg = load_config(run_config(tmp_path, max_steps=10, save_every=0, max_nonfinite_steps=3))
    result = train(cfg, model=model, tokenizer=make_tokenizer())
    out = capsys.readouterr().out
    assert result.stopped_early.startswith("3 non-finite losses in a row (train.max_nonfinite_steps=3); no final model saved")
    assert "step 4: non-finite loss (nan); step skipped (3 in a row)" in out
    assert "(3 non-finite losses in a row (train.max_nonfinite_steps=3); no final model saved: lower train.lr" in out
    assert not (tmp_path / "run" / "final").exists(), "a diverged model is not saved as final"
    assert [s for s, _ in losses(tmp_path / "run")] == [1]


def test_output_dir_that_cannot_be_created_is_refused_before_training(tmp_path, capsys):
    from sftlab.cli import main

    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    cfg = run_config(tmp_path)
    cfg["train"]["output_dir"] = str(blocker / "run")  # root ignores chmod; a file in the path stops anyone
    assert main(["train", str(write_config(tmp_path, cfg))]) == 2
    err = capsys.readouterr().err
    assert "error: output folder" in err and "file.txt/run" in err and "Traceback" not in err
    assert "Not a directory" in err or "not writable" in err


def test_too_little_free_disk_is_refused_with_the_numbers(tmp_path, monkeypatch):
    real = shutil.disk_usage
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 100_000, 100_000))
    with pytest.raises(SftlabError) as info:
        train(load_config(run_config(tmp_path)))
    msg = str(info.value)
    # tiny model: 132,736 fp32 parameters (all trainable) = 0.5 MiB; (x3 + x1) x 2 = 4.1 MiB
    n = sum(p.numel() for p in __import__("tiny").make_model().parameters())
    need = 2 * (n * 4 * 3 + n * 4) / 2**20
    assert f"0.1 MiB free, {need:.1f} MiB needed" in msg and "train.output_dir" in msg
    assert not (tmp_path / "run" / "metrics.jsonl").exists(), "refused before any step"
    monkeypatch.setattr(shutil, "disk_usage", real)
    assert train(load_config(run_config(tmp_path, max_steps=1)), overwrite=True).steps == 1


def test_resume_refuses_changed_data_unless_forced(tmp_path):
    cfg = run_config(tmp_path, max_steps=3)
    train(load_config(cfg))
    write_data(tmp_path / "data" / "train.jsonl", ROWS[:-1])  # one row fewer
    with pytest.raises(SftlabError, match=r"(?s)the data changed since it was saved .* pass --force-resume"):
        train(load_config(cfg), resume=True)
    with pytest.raises(SftlabError, match="the config changed since it was saved"):
        train(load_config({**cfg, "train": {**cfg["train"], "max_steps": 5}}), resume=True)
    result = train(load_config({**cfg, "train": {**cfg["train"], "max_steps": 5}}), resume=True, force_resume=True)
    assert result.steps == 5
    assert [s for s, _ in losses(tmp_path / "run")] == [1, 2, 3, 4, 5]
    assert json.loads((tmp_path / "run" / "checkpoint-0000005" / "meta.json").read_text())["step"] == 5
