"""End to end on a tiny model: YAML config -> sftlab train -> saved model loadable by transformers/peft."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from sftlab.cli import main
from sftlab.config import load_config
from sftlab.errors import ConfigError, SftlabError
from sftlab.train import train
from tiny import make_model, make_tokenizer

ROWS = [
    {"messages": [{"role": "user", "content": f"Reverse the word {w}."}, {"role": "assistant", "content": w[::-1]}]}
    for w in ["apple", "lazy", "brown", "quick", "today", "there", "fine", "thank"] * 4
] + [
    {"conversations": [{"from": "human", "value": "Hello there!"}, {"from": "gpt", "value": "Hello! How are you?"},
                       {"from": "human", "value": "I am fine."}, {"from": "gpt", "value": "Thank you."}]}
] * 8


@pytest.fixture
def tiny_dir(tmp_path):
    folder = tmp_path / "tiny-model"
    make_model().save_pretrained(folder, safe_serialization=True)
    make_tokenizer().save_pretrained(folder)
    openai_rows, sharegpt_rows = [r for r in ROWS if "messages" in r], [r for r in ROWS if "conversations" in r]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in openai_rows))
    (tmp_path / "data" / "b.json").write_text(json.dumps(sharegpt_rows))  # a folder of mixed formats
    return tmp_path, folder, tmp_path / "data"


def config(tmp_path, folder, data, **train):
    return {
        "model": {"name": str(folder)},
        "lora": {"enabled": train.pop("lora", False), "r": 4, "alpha": 8},
        "data": {"train": [{"path": str(data)}], "eval_fraction": 0.2, "max_len": 64},
        "train": {"output_dir": str(tmp_path / "run"), "lr": 1e-2, "max_steps": 12, "tokens_per_batch": 256,
                  "warmup_ratio": 0.0, "save_every": 4, **train},
    }


@pytest.mark.parametrize("lora", [False, True])
def test_training_lowers_loss_and_saves_loadable_model(tiny_dir, lora):
    tmp_path, folder, data = tiny_dir
    cfg = load_config(config(tmp_path, folder, data, lora=lora, lr=5e-2 if lora else 1e-2))
    res = train(cfg)
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 13))
    # LoRA r=4 on a 64-wide random model moves slowly (B starts at 0): a smaller but real drop
    assert lines[-1]["loss"] < lines[0]["loss"] * (0.98 if lora else 0.8)
    assert res.steps == 12
    assert res.eval_loss < lines[0]["loss"]  # the held-out examples are learned too (a number: not None, not NaN)
    final = tmp_path / "run" / "final"
    if lora:
        from peft import PeftModel

        assert (final / "adapter_model.safetensors").exists()
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(folder), final)
    else:
        assert (final / "model.safetensors").exists()
        model = AutoModelForCausalLM.from_pretrained(final)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():  # the saved model is the trained one, not the base it started from
        assert not torch.allclose(model(ids).logits, AutoModelForCausalLM.from_pretrained(folder)(ids).logits)
    assert "im_start" in (final / "tokenizer_config.json").read_text() + (final / "chat_template.jinja").read_text()


def test_cli_train_refuses_existing_output_and_bad_config(tiny_dir, capsys):
    tmp_path, folder, data = tiny_dir
    import yaml

    cfg = config(tmp_path, folder, data, max_steps=2)
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 0
    assert main(["train", str(path)]) == 2
    assert "--resume" in capsys.readouterr().err
    cfg["train"]["warmup_ration"] = 0.1
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--overwrite"]) == 2
    assert "did you mean 'warmup_ratio'" in capsys.readouterr().err


def test_resume_refuses_changed_config(tiny_dir):
    tmp_path, folder, data = tiny_dir
    train(load_config(config(tmp_path, folder, data, max_steps=4)))
    with pytest.raises(SftlabError, match="changed since it was saved"):
        train(load_config(config(tmp_path, folder, data, max_steps=4, lr=3e-2)), resume=True)


def test_resume_continues_to_identical_weights(tiny_dir):
    """A run stopped at step 4 and resumed ends with the same weights as an unbroken run."""
    tmp_path, folder, data = tiny_dir
    full = config(tmp_path, folder, data, max_steps=8)
    full["train"]["output_dir"] = str(tmp_path / "a")
    train(load_config(full))
    part = config(tmp_path, folder, data, max_steps=8)
    part["train"]["output_dir"] = str(tmp_path / "b")
    # first leg: same schedule (max_steps 8) but stop after 4 via a SIGTERM-like flag is covered in
    # test_reliability; here: train 8 steps, delete the last checkpoint + final, resume from step 4
    train(load_config(part))
    import shutil

    run_b = tmp_path / "b"
    ckpts = sorted(run_b.glob("checkpoint-*"))
    for c in ckpts[1:]:
        shutil.rmtree(c)
    shutil.rmtree(run_b / "final")
    assert ckpts[0].name.endswith("0000004")
    train(load_config(part), resume=True)
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "final").state_dict()
    b = AutoModelForCausalLM.from_pretrained(run_b / "final").state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert (tmp_path / "a" / "metrics.jsonl").read_text().count("\n") == (run_b / "metrics.jsonl").read_text().count("\n")
