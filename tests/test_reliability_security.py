"""Security as tests: pickled weights are never loaded (not even unpickled), and Python code shipped
with a model folder (config.json auto_map) is not run unless `model.trust_remote_code: true`."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from sftlab.config import ModelConfig
from sftlab.errors import ModelLoadError
from sftlab.model import load_model
from tiny import make_model, make_tokenizer


class _RunsOnUnpickle:
    """A pickle that creates a marker file when loaded: what a malicious pytorch_model.bin does."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_folder_with_only_pickled_weights_is_refused_without_unpickling(tmp_path):
    folder = tmp_path / "bin-model"
    folder.mkdir()
    make_model().config.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    marker = tmp_path / "PICKLE-RAN"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"model.embed_tokens.weight": _RunsOnUnpickle(marker)}))
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder))
    assert "sftlab loads only safetensors" in str(info.value) and str(folder) in str(info.value)
    assert not marker.exists(), "the pickle was never unpickled"


def _remote_code_folder(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "remote-code-model"
    make_model().save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    marker = tmp_path / "REMOTE-CODE-RAN"
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "evil"  # unknown to transformers: only the shipped code could build it
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "class EvilConfig(LlamaConfig):\n    model_type = 'evil'\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n"
    )
    return folder, marker


def test_remote_code_is_not_run_by_default(tmp_path):
    assert ModelConfig().trust_remote_code is False
    folder, marker = _remote_code_folder(tmp_path)
    with pytest.raises(Exception, match="trust_remote_code"):
        load_model(str(folder))
    assert not marker.exists(), "evil.py was not imported"


def test_remote_code_runs_only_when_asked(tmp_path):
    """The same folder with trust_remote_code=True does import the shipped module: the flag is what
    gates it (so the test above is not passing for some unrelated reason)."""
    folder, marker = _remote_code_folder(tmp_path)
    try:
        load_model(str(folder), trust_remote_code=True)
    except Exception:  # noqa: BLE001 - whether the toy class builds is beside the point
        pass
    assert marker.read_text() == "ran"
