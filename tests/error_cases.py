"""The CLI error cases behind docs/errors.md: each a `sftlab train` call on a bad input that must print
one clean `error: ...` block (exit code 2, no traceback). tests/test_reliability_errors.py runs CASES,
tests/test_reliability_inputs.py runs CLI_CASES; `python tests/error_cases.py` regenerates the doc
after a message changed."""

import contextlib
import io
import json
import shutil
import sys
import tempfile
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).parent))
from helpers import make_model_folder, run_config, write_config, write_data  # noqa: E402
from sftlab.cli import main  # noqa: E402
from tiny import make_model, make_tokenizer  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "errors.md"


@dataclass
class Case:
    name: str
    setup: object  # (tmp: Path) -> (argv, context manager around the call)
    expect: list[str]


def edited_config(tmp, **edits):
    cfg = run_config(tmp, max_steps=1)
    for dotted, value in edits.items():
        section, key = dotted.split("__")
        cfg[section][key] = value
    return cfg


def train_argv(tmp, cfg, *flags):
    return ["train", str(write_config(tmp, cfg)), *flags], contextlib.nullcontext()


def run_case(case: Case, tmp: Path) -> tuple[int, str]:
    argv, context = case.setup(tmp)
    err = io.StringIO()
    with context, contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    return rc, err.getvalue().replace(str(tmp), "$TMP")


def error_block(stderr: str) -> str:
    """The `error:` block (tqdm bars also write to stderr)."""
    return stderr[stderr.index("error: "):].rstrip() if "error: " in stderr else stderr


def assert_clean_error(case, rc: int, err: str) -> str:
    """Exit 2, no traceback, every expected part in the `error:` block, and that block in docs/errors.md.
    Returns the block for further checks."""
    assert rc == 2, err[-2000:]
    assert "Traceback" not in err
    msg = error_block(err)
    for part in case.expect:
        assert part in msg, f"{part!r} not in:\n{msg}"
    assert msg in DOC.read_text(), "docs/errors.md is stale: run python tests/error_cases.py"
    return msg


# ---- config, model, template, output folder, disk, resume ---------------------------------------

def _typo(tmp):
    cfg = edited_config(tmp)
    cfg["train"]["warmup_ration"] = 0.1
    return train_argv(tmp, cfg)


def _tokenizer_folder(tmp, name, template=None, **kw):
    folder = tmp / name
    make_model().save_pretrained(folder)
    tok = make_tokenizer(template=template) if template else make_tokenizer()
    tok.save_pretrained(folder)
    return folder


def _template_raises(tmp):
    folder = _tokenizer_folder(tmp, "raising-template", template="{{ raise_exception('this template needs a system message first') }}")
    return train_argv(tmp, edited_config(tmp, model__name=str(folder)))


def _data_file(tmp, rows_text):
    path = tmp / "data" / "bad.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rows_text)
    return train_argv(tmp, edited_config(tmp, data__train=[{"path": str(path)}]))


def _ends_on_user(tmp):
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]}
    return _data_file(tmp, json.dumps(row) + "\n")


def _special_in_content(tmp):
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello<|im_end|>\n<|im_start|>user\nfake"}]}
    return _data_file(tmp, json.dumps(row) + "\n")


def _output_under_file(tmp):
    (tmp / "file.txt").write_text("a file")
    return train_argv(tmp, edited_config(tmp, train__output_dir=str(tmp / "file.txt" / "run")))


def _not_empty(tmp):
    (tmp / "run").mkdir()
    (tmp / "run" / "metrics.jsonl").write_text("")
    return train_argv(tmp, edited_config(tmp))


def _changed_data(tmp):
    cfg = edited_config(tmp)
    assert main(train_argv(tmp, cfg)[0]) == 0
    write_data(tmp / "data" / "train.jsonl", [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}] * 4)
    return train_argv(tmp, cfg, "--resume")


def _output_is_file(tmp):
    (tmp / "run").write_text("a file")
    return train_argv(tmp, edited_config(tmp))


def _overwrite_user_files(tmp):
    cfg = edited_config(tmp)
    assert main(train_argv(tmp, cfg)[0]) == 0
    (tmp / "run" / "notes.txt").write_text("mine")
    return train_argv(tmp, cfg, "--overwrite")


def _damaged_only_checkpoint(tmp):
    cfg = edited_config(tmp, train__keep_checkpoints=1)
    assert main(train_argv(tmp, cfg)[0]) == 0
    shutil.rmtree(tmp / "run" / "final")  # as if killed before the final model was written
    weights = tmp / "run" / "checkpoint-0000001" / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return train_argv(tmp, cfg, "--resume")


def _changed_config(tmp):
    cfg = edited_config(tmp)
    assert main(train_argv(tmp, cfg)[0]) == 0
    return train_argv(tmp, cfg, "--resume", "train.lr=5e-3")


def _only_bin(tmp):
    folder = tmp / "bin-model"
    folder.mkdir()
    model = make_model()
    model.config.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # a pickle: never loaded
    return train_argv(tmp, edited_config(tmp, model__name=str(folder)))


def _no_disk(tmp):
    usage = namedtuple("usage", "total used free")
    argv, _ = train_argv(tmp, edited_config(tmp))
    return argv, mock.patch.object(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 2**20, 2**20))


CASES = [
    Case("config key with a typo", _typo, ["1 problem(s) in the config", "train.warmup_ration", "did you mean 'warmup_ratio'?"]),
    Case("config value of the wrong type", lambda t: train_argv(t, edited_config(t, train__lr="fast")), ["train.lr: got 'fast'", "valid number"]),
    Case("config value out of range", lambda t: train_argv(t, edited_config(t, train__max_steps=0)), ["train.max_steps: got 0", "greater than or equal to 1"]),
    Case("config file that does not exist", lambda t: (["train", str(t / "nope.yaml")], contextlib.nullcontext()), ["config file not found", "nope.yaml"]),
    Case("model path that does not exist", lambda t: train_argv(t, edited_config(t, model__name=str(t / "no-such-model"))), ["model path does not exist", "no-such-model"]),
    Case("model folder with only pytorch_model.bin (pickle)", _only_bin, ["cannot load model weights", "sftlab loads only safetensors"]),
    Case("chat template that raises", _template_raises, ["the chat template raised", "this template needs a system message first"]),
    Case("`template: llama3` on a tokenizer without its special tokens", lambda t: train_argv(t, edited_config(t) | {"model": {"name": str(make_model_folder(t)), "template": "llama3"}}),
         ["template 'llama3' needs special tokens", "<|eot_id|>", "add_special_tokens: true"]),
    Case("unknown template name", lambda t: train_argv(t, edited_config(t) | {"model": {"name": str(make_model_folder(t)), "template": "chatlm"}}), ["unknown template 'chatlm'", "chatml"]),
    Case("empty data file", lambda t: _data_file(t, ""), ["bad.jsonl", "no rows"]),
    Case("data path that does not exist", lambda t: train_argv(t, edited_config(t, data__train=[{"path": str(t / "missing.jsonl")}])), ["missing.jsonl"]),
    Case("conversation ending on a user turn", _ends_on_user, ["bad.jsonl:1 [messages[2]]", "ends on a user turn"]),
    Case("special-token text inside a message", _special_in_content, ["template problems: 1", "bad.jsonl:1: message 2 (assistant) contains '<|im_start|>'"]),
    Case("output_dir not empty, no --resume/--overwrite", _not_empty, ["is not empty", "--resume", "--overwrite"]),
    Case("output_dir that cannot be created (a file in the path)", _output_under_file, ["output folder", "file.txt/run", "is not writable", "Not a directory"]),
    Case("too little free disk for the checkpoints", _no_disk, ["not enough free disk space", "1.0 MiB free", "MiB needed", "AdamW"]),
    Case("--resume after the data changed", _changed_data, ["cannot resume from", "the data changed since it was saved", "--force-resume"]),
    Case("--resume after a config change (the changed keys are named)", _changed_config,
         ["cannot resume from", "the config changed since it was saved:", "train.lr: 0.01 -> 0.005", "--force-resume", "docs/config.md"]),
    Case("output_dir that is a file", _output_is_file, ["train.output_dir", "is a file, not a folder", "Fix:"]),
    Case("--overwrite while output_dir holds files sftlab did not write", _overwrite_user_files,
         ["sftlab did not write: notes.txt", "nothing was deleted", "move those files"]),
    Case("--resume when every checkpoint is damaged", _damaged_only_checkpoint,
         ["no intact checkpoint", "trainable.safetensors has 1000 bytes", "(truncated)", "--overwrite", "new train.output_dir"]),
]


# ---- model folders, hub ids offline, command-line overrides, data rows ---------------------------

QA = [{"role": "user", "content": "Reverse the word apple."}, {"role": "assistant", "content": "elppa"}]


def model_folder(tmp, name, *, weights=True, tokenizer=True, files=()):
    folder = tmp / name
    folder.mkdir(parents=True, exist_ok=True)
    if weights:
        make_model().save_pretrained(folder)
    if tokenizer:
        make_tokenizer().save_pretrained(folder)
    for f in files:
        (folder / f).write_text("not a model file")
    return folder


def _with_model(tmp, folder):
    return train_argv(tmp, edited_config(tmp, model__name=str(folder)))


def _offline(tmp):
    """An unknown hub id with HF_HUB_OFFLINE=1 and a hub cache holding one other model."""
    cache = tmp / "hub-cache"
    snapshot = cache / "models--HuggingFaceTB--SmolLM2-360M" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (cache / "models--HuggingFaceTB--SmolLM2-360M" / "refs").mkdir()
    (cache / "models--HuggingFaceTB--SmolLM2-360M" / "refs" / "main").write_text("a" * 40)
    argv, _ = train_argv(tmp, edited_config(tmp, model__name="no-such-org/no-such-model"))
    env = mock.patch.dict("os.environ", {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)})
    return argv, env


def _override(*overrides):
    def setup(tmp):
        argv, ctx = train_argv(tmp, edited_config(tmp))
        return argv + list(overrides), ctx
    return setup


def _data(tmp, rows, cfg_edits=None, name="bad.jsonl"):
    path = tmp / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n" for r in rows))
    source = {"path": str(path), **(cfg_edits or {})}
    return train_argv(tmp, edited_config(tmp, data__train=[source]))


CLI_CASES = [
    Case("`model.name`: an empty folder", lambda t: _with_model(t, model_folder(t, "empty-model", weights=False, tokenizer=False)),
         ["empty-model is not a model folder", "no config.json", "no weights (*.safetensors)", "no tokenizer files",
          "the folder is empty", "smollm2-135m-instruct"]),
    Case("`model.name`: a folder that holds no model", lambda t: _with_model(t, model_folder(t, "notes", weights=False, tokenizer=False, files=["README.txt"])),
         ["notes is not a model folder", "it holds: README.txt", "a .gguf file, a hub id"]),
    Case("`model.name`: a model folder without a tokenizer", lambda t: _with_model(t, model_folder(t, "weights-only", tokenizer=False)),
         ["model folder $TMP/weights-only has no tokenizer files", "it holds: config.json, generation_config.json, model.safetensors",
          "save_pretrained"]),
    Case("`model.name`: an unknown hub id, offline", _offline,
         ["'no-such-org/no-such-model' not found locally", "HF_HUB_OFFLINE=1", "smollm2-135m-instruct (embedded)",
          "cached hub models in $TMP/hub-cache: HuggingFaceTB/SmolLM2-360M", "local model folder"]),
    Case("override without '='", _override("train.lr"), ["override 'train.lr': has no '='", "section.key=value"]),
    Case("override without a key", _override("=1"), ["override '=1': has no key before '='"]),
    Case("override with an empty key part", _override("train..lr=1"), ["'train..lr' has an empty part", "single dots"]),
    Case("override of a key inside a value", _override("train.lr.x=1"), ["'train.lr' is a value, not a section", "train.lr=VALUE"]),
    Case("override that sets a section to a value", _override("model=3"), ["'model' is a section (keys: name, template", "model.name=VALUE"]),
    Case("override with an unknown key", _override("train.learning_rate=1e-4"), ["'train.learning_rate' is not a config key",
                                                                                  "did you mean train.lr?", "docs/config.md"]),
    Case("override with a value that is not YAML", _override("train.lr=[1"), ["the value '[1' is not valid YAML", "quote it"]),
    Case("conversation that starts with an assistant message",
         lambda t: _data(t, [{"messages": QA}, {"messages": [{"role": "assistant", "content": "Hi! How can I help?"}, *QA]}]),
         ["bad.jsonl:2 [messages[0]]", "starts with an assistant message", "expected a user (or system) message first",
          "`data.on_error: skip` in the run config", "`rejects: FILE` on the data source"]),
    Case("row with two conversations (`messages` and `conversations`)",
         lambda t: _data(t, [{"messages": QA, "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]),
         ["bad.jsonl:1 [conversations]", "row has two conversations", "`format: sharegpt`"]),
    Case("`columns:` naming a column the file does not have",
         lambda t: _data(t, "question,answer\nReverse apple.,elppa\n", {"columns": {"instruction": "question", "output": "anwser"}}, "qa.csv"),
         ["qa.csv [columns]", "output -> 'anwser'", "its columns: answer, question", "`columns: {OUR_FIELD: YOUR_COLUMN}`"]),
    Case("config with a speed key at its old place (before train.speed)", lambda t: train_argv(t, edited_config(t, train__packed_attention=False)),
         ["1 problem(s) in the config", "train.packed_attention: got False", "this key moved: write it as train.speed.packed_attention"]),
    Case("override of a speed key by its old name (before train.speed)", _override("train.fused_lora=false"),
         ["'train.fused_lora' moved to 'train.speed.fused_lora'", "write train.speed.fused_lora=false"]),
    Case("image file that does not exist (LLaVA row; relative paths start at the data file's folder)",
         lambda t: _data(t, [{"id": "1", "image": "coco/train2017/000000033471.jpg", "conversations": [
             {"from": "human", "value": "<image>\nWhat colour is the bus?"}, {"from": "gpt", "value": "White and red."}]}]),
         ["bad.jsonl:1 [image]", "image file not found: $TMP/data/coco/train2017/000000033471.jpg",
          "relative to the data file's folder", "set `image_dir:` on the data source", "`data.on_error: skip`"]),
]


def all_cases() -> list[Case]:
    """The rows of docs/errors.md: CASES (run by tests/test_reliability_errors.py), then CLI_CASES
    (model folders, hub ids offline, command-line overrides, data rows; tests/test_reliability_inputs.py)."""
    return CASES + CLI_CASES


def render_doc() -> str:
    rows, blocks = [], []
    for i, case in enumerate(all_cases(), 1):
        with tempfile.TemporaryDirectory() as d:
            rc, err = run_case(case, Path(d))
        msg = error_block(err)
        lines = msg.splitlines()
        # a header line ending in ':' introduces the problems: show the first problem instead
        fail = [k for k, line in enumerate(lines) if "[FAIL]" in line]  # pre-flight report: the failing item
        first = lines[fail[0] + 1] if fail else lines[1] if lines[0].endswith(":") and len(lines) > 1 else lines[0]
        first = first.strip(" -").replace("|", "&#124;")
        rows.append(f"| {i} | {case.name} | {rc} | {first} ([full](#error-{i})) |")
        blocks.append(f"### Error {i}\n\n{case.name}:\n\n```text\n{msg}\n```\n")
    return HEADER + "\n".join(rows) + "\n\n## The messages, exactly as printed\n\n" + "\n".join(blocks)


HEADER = """# Errors beyond data rows: what you see

Bad data rows are in [bad_input.md](bad_input.md). This page lists the other mistakes `sftlab train`
catches before (or instead of) training: config and command-line overrides, model, template, output
folder, disk space and resume (changed config or data, damaged checkpoints). Each prints one
`error: ...` block on stderr (no traceback) and exits with code 2; `$TMP` stands for the folder the
example ran in. Every row is run by `tests/test_reliability_errors.py` or
`tests/test_reliability_inputs.py`, which also check that the messages here are exactly what the code
prints (regenerate with `python tests/error_cases.py`).

Not errors: SIGINT/SIGTERM finish the current step, save a checkpoint and exit with code 3
(`--resume` continues exactly); a non-finite loss skips that step (logged as `step N: non-finite
loss (nan); step skipped (k in a row)`) and `train.max_nonfinite_steps` in a row stop the run
(exit code 3, no final model saved).

Not errors either (the run goes on, after a line on stdout): `--resume` with no checkpoint starts from
step 0 (`--resume: no checkpoint in ...; starting a fresh run from step 0`); `--resume` on a finished
run changes nothing and exits 0 (`already finished at step N; nothing to do (use --overwrite to train
again)`); a damaged newest checkpoint (a file whose size or sha256 differs from what its `COMPLETE`
marker recorded, or that does not load) is skipped with `warning: checkpoint ... is damaged: ...` and
the run resumes from the newest intact one; a length policy that loses more than 5% of the trained
tokens prints `warning: data.length_policy ...` with the fix, also kept in run.json (`data.length`,
`data.length_warning`). `--overwrite` deletes only what sftlab writes in `train.output_dir`
(`checkpoint-*`, their temp folders, `final/`, `metrics.jsonl`, `run.json`, quickstart's
`report.html`/`report.json`, ablate's `ablation_variant.json`); any other file stops it (row 21).

| # | case | exit code | what you see (first line; full text below) |
|---|------|-----------|--------------------------------------------|
"""

if __name__ == "__main__":
    DOC.write_text(render_doc())
    print(f"wrote {DOC}", file=sys.stderr)
