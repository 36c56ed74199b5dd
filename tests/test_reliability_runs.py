"""Run and checkpoint safety: --overwrite deletes only sftlab's outputs, an output_dir
that is a file, damaged checkpoints (sizes + sha256 in the marker, fallback to the newest intact
one), a finished run resumed again, strict JSON, resume messages (fresh start, changed config
keys), overrides before or after the flags, and a loud warning when the length policy loses
trained tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sftlab.checkpoint import MARKER, dumps_json
from sftlab.cli import build_parser, main
from sftlab.config import load_config
from sftlab.errors import SftlabError
from sftlab.train import train
from helpers import final_weights, losses, run_config, write_config, write_data


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _strict(text: str):
    """json.loads that refuses NaN/Infinity (what other JSON parsers do)."""
    def bad(token):
        raise ValueError(f"non-standard JSON constant {token}")
    return json.loads(text, parse_constant=bad)


def _cli(tmp_path, cfg, *args, capsys):
    rc = main(["train", str(write_config(tmp_path, cfg)), *args])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.out, out.err


# ---- 1. --overwrite deletes only what sftlab wrote --------------------------------------------------
def test_overwrite_refuses_while_user_files_are_there_and_deletes_nothing(tmp_path, capsys):
    cfg = run_config(tmp_path, max_steps=2)
    assert _cli(tmp_path, cfg, capsys=capsys)[0] == 0
    run = tmp_path / "run"
    (run / "notes.txt").write_text("my notes")
    (run / "plots").mkdir()
    (run / "final" / "my_eval.csv").write_text("a,b")  # a user file inside sftlab's final/
    before = _tree_bytes(run)
    rc, _, err = _cli(tmp_path, cfg, "--overwrite", capsys=capsys)
    assert rc == 2
    assert "holds 3 file(s) or folder(s) that sftlab did not write: final/my_eval.csv, notes.txt, plots/" in err
    assert "nothing was deleted" in err and "move those files" in err and "train.output_dir" in err
    assert _tree_bytes(run) == before, "not one byte deleted"
    assert (run / "plots").is_dir()


def test_overwrite_error_lists_ten_files_and_a_count(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for i in range(13):
        (run / f"user-{i:02d}.txt").write_text("x")
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(SftlabError) as info:
        train(load_config(run_config(tmp_path, max_steps=1)), overwrite=True)
    msg = str(info.value)
    assert "holds 13 file(s)" in msg and "user-09.txt" in msg and "user-10.txt" not in msg and "and 3 more" in msg
    assert len(list(run.iterdir())) == 14


def test_overwrite_replaces_a_folder_of_only_sftlab_outputs(tmp_path):
    long = run_config(tmp_path, max_steps=4, keep_checkpoints=4)
    train(load_config(long))
    run = tmp_path / "run"
    (run / ".tmp-checkpoint-0000009-abc").mkdir()  # a kill mid-save leaves one
    (run / "report.html").write_text("<html>")  # quickstart writes its report beside the run
    lora = run_config(tmp_path, max_steps=1)
    lora["lora"] = {"enabled": True, "r": 2}
    train(load_config(lora), overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-0000001", "final", "metrics.jsonl", "run.json"]
    assert (run / "final" / "adapter_config.json").exists() and not (run / "final" / "model.safetensors").exists()
    assert [s for s, _ in losses(run)] == [1]
    # and a LoRA final/ (adapter files, peft's README.md) is recognised as sftlab's too
    train(load_config(run_config(tmp_path, max_steps=1)), overwrite=True)
    assert (run / "final" / "model.safetensors").exists() and not (run / "final" / "adapter_config.json").exists()


def test_a_folder_of_only_other_files_names_them_without_overwrite(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "data.csv").write_text("x")
    with pytest.raises(SftlabError, match=r"that sftlab did not write: data.csv\. Fix: move those files .* another train.output_dir"):
        train(load_config(run_config(tmp_path, max_steps=1)))


# ---- 2. train.output_dir that is a file ------------------------------------------------------------
@pytest.mark.parametrize("flag", [[], ["--overwrite"], ["--resume"]])
def test_output_dir_that_is_a_file_is_a_clean_error(tmp_path, capsys, flag):
    cfg = run_config(tmp_path)
    (tmp_path / "run").write_text("a file the user owns")
    rc, _, err = _cli(tmp_path, cfg, *flag, capsys=capsys)
    assert rc == 2
    assert f"error: train.output_dir {tmp_path / 'run'} is a file, not a folder" in err
    assert "Fix: set train.output_dir to the path of a new or empty folder" in err and "move that file away" in err
    assert (tmp_path / "run").read_text() == "a file the user owns"


# ---- 3. damaged checkpoints ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """3 steps, a checkpoint at every step (all kept) and the final weights of the unbroken run."""
    tmp = tmp_path_factory.mktemp("finished")
    cfg = run_config(tmp, max_steps=3, keep_checkpoints=3)
    train(load_config(cfg))
    return tmp, cfg


def _copy_run(finished_run, tmp_path):
    src_tmp, cfg = finished_run
    cfg = {**cfg, "train": {**cfg["train"], "output_dir": str(tmp_path / "run")}}
    shutil.copytree(src_tmp / "run", tmp_path / "run")
    return cfg, tmp_path / "run"


def _old_marker(ckpt: Path) -> None:
    """Rewrite the marker as sftlab wrote it before sizes/hashes were recorded (a list of names)."""
    files = json.loads((ckpt / MARKER).read_text())["files"]
    (ckpt / MARKER).write_text(json.dumps(sorted(files)))


DAMAGE = {
    "truncated weights": ("trainable.safetensors", lambda b: b[: len(b) // 2]),
    "truncated optimizer state": ("state.pt", lambda b: b[: len(b) - 1000]),
    "garbage meta JSON": ("meta.json", lambda b: b'{"step": 3, "config_fin'),
    "same-size flipped bytes in the weights": ("trainable.safetensors", lambda b: b[:-8] + bytes(8)),
}
EXPECT = {  # what the warning says, with the size/hash marker and with an old list marker
    "truncated weights": ("trainable.safetensors has 251556 bytes, 503112 were written (truncated)", "trainable.safetensors does not load"),
    "truncated optimizer state": ("state.pt has ", "state.pt does not load"),
    "garbage meta JSON": ("meta.json has 23 bytes, ", "meta.json does not load (JSONDecodeError"),
    "same-size flipped bytes in the weights": ("trainable.safetensors has the recorded size but a different sha256", None),
}


# without recorded hashes (old list marker), same-size changes to tensor bytes cannot be seen
CASES = [(kind, marker) for kind in DAMAGE for marker in ("hashed", "old list") if EXPECT[kind][marker == "old list"]]


@pytest.mark.parametrize("kind,marker", CASES)
def test_damaged_newest_checkpoint_falls_back_to_the_one_before(finished_run, tmp_path, capsys, kind, marker):
    name, damage = DAMAGE[kind]
    expect = EXPECT[kind][marker == "old list"]
    cfg, run = _copy_run(finished_run, tmp_path)
    reference = final_weights(run)
    shutil.rmtree(run / "final")  # killed after the step-3 checkpoint, before final/
    newest = run / "checkpoint-0000003"
    if marker == "old list":
        for c in run.glob("checkpoint-*"):
            _old_marker(c)
    (newest / name).write_bytes(damage((newest / name).read_bytes()))
    result = train(load_config(cfg), resume=True)
    out = capsys.readouterr().out
    assert f"warning: checkpoint {newest} is damaged: {expect}" in out
    assert "resuming from the newest intact checkpoint, checkpoint-0000002 (step 2)" in out
    assert result.steps == 3 and not result.stopped_early
    assert [s for s, _ in losses(run)] == [1, 2, 3]
    got = final_weights(run)
    assert all(torch.equal(reference[k], got[k]) for k in reference), "resumed from step 2: the same weights as the unbroken run"
    assert "config" in json.loads((run / "checkpoint-0000003" / "meta.json").read_text()), "the damaged checkpoint was saved again"


@pytest.mark.parametrize("kind", ["truncated weights", "truncated optimizer state", "garbage meta JSON"])
def test_only_checkpoint_damaged_is_a_clean_error_with_the_way_out(finished_run, tmp_path, capsys, kind):
    name, damage = DAMAGE[kind]
    cfg, run = _copy_run(finished_run, tmp_path)
    for c in ["checkpoint-0000001", "checkpoint-0000002", "final"]:
        shutil.rmtree(run / c)
    ckpt = run / "checkpoint-0000003"
    (ckpt / name).write_bytes(damage((ckpt / name).read_bytes()))
    before = _tree_bytes(run)
    rc, _, err = _cli(tmp_path, cfg, "--resume", capsys=capsys)
    assert rc == 2
    assert f"error: cannot resume: no intact checkpoint in {run}:\n  - checkpoint-0000003: {EXPECT[kind][0]}" in err
    assert "--overwrite" in err and "new train.output_dir" in err
    assert _tree_bytes(run) == before


# ---- 4. a finished run resumed again; strict JSON -------------------------------------------------
def test_resuming_a_finished_run_changes_nothing(finished_run, tmp_path, capsys):
    cfg, run = _copy_run(finished_run, tmp_path)
    before = _tree_bytes(run)
    rc, out, _ = _cli(tmp_path, cfg, "--resume", capsys=capsys)
    assert rc == 0
    assert f"{run}: already finished at step 3; nothing to do (use --overwrite to train again)" in out
    assert _tree_bytes(run) == before, "run.json, metrics.jsonl, final/ and the checkpoints are byte for byte unchanged"
    saved = _strict((run / "run.json").read_text())["result"]
    result = train(load_config(cfg), resume=True)
    assert (result.steps, result.final_loss, result.trained_tokens) == (3, saved["final_loss"], saved["trained_tokens"])


def test_resumed_at_the_last_step_without_final_writes_final_and_a_finite_run_json(finished_run, tmp_path):
    cfg, run = _copy_run(finished_run, tmp_path)
    shutil.rmtree(run / "final")  # killed between the last checkpoint and final/
    last_loss = losses(run)[-1][1]
    train(load_config(cfg), resume=True)
    record = _strict((run / "run.json").read_text())
    assert (run / "final" / "model.safetensors").exists()
    assert record["result"]["final_loss"] == last_loss, "the loss of the run's last step, not NaN"
    assert record["resumed_from_step"] == 3


def test_sftlab_json_never_holds_nan():
    assert dumps_json({"loss": float("nan"), "x": [float("inf"), 1.5]}) == '{"loss": null, "x": [null, 1.5]}'


def test_metrics_line_with_an_infinite_grad_norm_is_strict_json(tmp_path):
    from sftlab.train import append_jsonl

    append_jsonl(tmp_path / "m.jsonl", {"step": 1, "grad_norm": float("inf")})
    assert _strict((tmp_path / "m.jsonl").read_text()) == {"step": 1, "grad_norm": None}


# ---- 5. resume messages ----------------------------------------------------------------------------
def test_resume_without_a_checkpoint_says_it_starts_fresh(tmp_path, capsys):
    rc, out, _ = _cli(tmp_path, run_config(tmp_path, max_steps=1), "--resume", capsys=capsys)
    assert rc == 0
    assert f"--resume: no checkpoint in {tmp_path / 'run'}; starting a fresh run from step 0" in out


def test_changed_config_names_the_keys_in_cli_words(finished_run, tmp_path, capsys):
    cfg, run = _copy_run(finished_run, tmp_path)
    shutil.rmtree(run / "final")
    rc, _, err = _cli(tmp_path, cfg, "--resume", "train.lr=5e-3", "lora.r=4", "train.save_every=2", capsys=capsys)
    assert rc == 2
    assert f"error: cannot resume from {run / 'checkpoint-0000003'}: the config changed since it was saved:\n" in err
    assert "    train.lr: 0.01 -> 0.005\n" in err and "    lora.r: 16 -> 4\n" in err
    assert "save_every" not in err, "keys that do not change the result are not listed"
    assert "--force-resume" in err and "docs/config.md" in err and "force_resume=True" not in err
    rc, out, _ = _cli(tmp_path, cfg, "train.lr=5e-3", "--force-resume", capsys=capsys)  # implies --resume
    assert rc == 0
    assert (f"warning: resuming from {run / 'checkpoint-0000003'} anyway (--force-resume): the config changed since it was saved:\n"
            "    train.lr: 0.01 -> 0.005\n") in out


def test_checkpoint_without_a_recorded_config_still_refuses_clearly(finished_run, tmp_path):
    cfg, run = _copy_run(finished_run, tmp_path)
    shutil.rmtree(run / "final")
    meta_path = run / "checkpoint-0000003" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]  # as written before the config was recorded
    meta_path.write_text(json.dumps(meta))
    for c in run.glob("checkpoint-*"):
        _old_marker(c)
    with pytest.raises(SftlabError, match="saved by an older sftlab that did not record the config"):
        train(load_config({**cfg, "train": {**cfg["train"], "lr": 5e-3}}), resume=True)


# ---- 6. overrides before or after the flags ----------------------------------------------------------
@pytest.mark.parametrize("argv", [["c.yaml", "--resume", "train.lr=1e-4", "lora.r=8"], ["c.yaml", "train.lr=1e-4", "--resume", "lora.r=8"],
                                  ["c.yaml", "train.lr=1e-4", "lora.r=8", "--resume"], ["--resume", "c.yaml", "train.lr=1e-4", "lora.r=8"]])
def test_overrides_parse_before_or_after_the_flags(argv):
    args = build_parser().parse_args(["train", *argv])
    assert (args.config, args.overrides, args.resume, args.overwrite) == ("c.yaml", ["train.lr=1e-4", "lora.r=8"], True, False)


def test_override_after_resume_reaches_the_run(tmp_path, capsys):
    cfg = run_config(tmp_path, max_steps=2, save_every=0)
    assert _cli(tmp_path, cfg, "--resume", "train.max_steps=1", capsys=capsys)[0] == 0
    assert [s for s, _ in losses(tmp_path / "run")] == [1]
    assert _cli(tmp_path, cfg, "--overwrite", "train.max_steps=2", capsys=capsys)[0] == 0
    assert [s for s, _ in losses(tmp_path / "run")] == [1, 2]


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys):
    rc, _, err = _cli(tmp_path, run_config(tmp_path), "--resume", "--overwrite", capsys=capsys)
    assert rc == 2 and "--resume and --overwrite contradict each other" in err


# ---- 7. length policies that lose trained tokens ---------------------------------------------------
LONG = [{"messages": [{"role": "user", "content": "Say a long thing."},
                      {"role": "assistant", "content": " ".join(["the quick brown fox jumps over the lazy dog"] * 8)}]}] * 6


def test_length_policy_losing_trained_tokens_warns_and_is_recorded(tmp_path, capsys):
    from helpers import ROWS

    write_data(tmp_path / "data" / "train.jsonl", ROWS + LONG)
    cfg = run_config(tmp_path, max_steps=1)
    cfg["data"].update(max_len=48, length_policy="drop")
    result = train(load_config(cfg))
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("warning: data.length_policy"))
    record = _strict((tmp_path / "run" / "run.json").read_text())
    length = record["data"]["length"]
    lost = length["trained_tokens_in"] - length["trained_tokens_out"]
    assert length["dropped"] == 6 and length["policy"] == "drop" and lost > 0.05 * length["trained_tokens_in"]
    assert length["trained_tokens_lost"] == lost
    assert f"loses {lost} of {length['trained_tokens_in']} trained tokens" in line
    assert "6 of 30 examples are longer than max_len (6 dropped" in line
    assert "Fix: raise data.max_len or set data.length_policy: split" in line
    assert record["data"]["length_warning"] == line.removeprefix("warning: ")
    assert record["result"]["warnings"][0] == line.removeprefix("warning: ") and result.warnings[0] == record["data"]["length_warning"]


def test_small_length_losses_do_not_warn(tmp_path, capsys):
    train(load_config(run_config(tmp_path, max_steps=1)))
    assert "warning: data.length_policy" not in capsys.readouterr().out
    assert _strict((tmp_path / "run" / "run.json").read_text())["data"]["length_warning"] is None
