"""Integration on the real embedded SmolLM2-135M-Instruct (GGUF -> cached safetensors). ~1-2 min."""

import json

import pytest

from sftlab.builtin.tasks import build_suite
from sftlab.config import load_config
from sftlab.model import DEFAULT_MODEL, load_model, load_tokenizer
from sftlab.render import Renderer, preflight

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(DEFAULT_MODEL)


def test_smollm2_template_masks(tok):
    rd = Renderer(tok)
    assert rd.stop_text == "<|im_end|>"
    convs = build_suite(3, families=["reverse_word", "add"])
    assert preflight(rd, convs).ok
    r = rd.render(convs[0])
    trained = tok.decode([t for t, m in zip(r.input_ids, r.loss_mask) if m])
    assert trained == convs[0].messages[-1].content + "<|im_end|>"


def test_smollm2_lora_steps_lower_loss_and_generation_stops(tmp_path, tok):
    from sftlab.generate import SamplingParams, generate_batch
    from sftlab.train import train

    data = tmp_path / "d.jsonl"
    convs = build_suite(4, families=["reverse_word"], seed=1)
    data.write_text("".join(json.dumps({"messages": c.to_dicts()}) + "\n" for c in convs * 4))
    cfg = load_config({
        "model": {"name": DEFAULT_MODEL},
        "lora": {"r": 8, "alpha": 16},
        "data": {"train": [{"path": str(data)}], "max_len": 256},
        "train": {"output_dir": str(tmp_path / "run"), "lr": 2e-3, "max_steps": 3, "tokens_per_batch": 256,
                  "warmup_ratio": 0.0, "schedule": "constant"},
    })
    res = train(cfg)
    losses = [json.loads(x)["loss"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 3 and losses[-1] < losses[0]
    model = load_model(str(res.final_dir))
    rd = Renderer(load_tokenizer(str(res.final_dir)))
    (answer,) = generate_batch(model, rd, [[{"role": "user", "content": "Say hello."}]], SamplingParams(max_new_tokens=40), progress=False)
    assert answer and "<|im_end|>" not in answer
