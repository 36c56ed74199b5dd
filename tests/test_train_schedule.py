"""metrics.jsonl logs the learning rate each step actually used (issue 15: it logged the next step's,
so a linear schedule without warm-up showed 1.93e-4 at step 1 for a 2e-4 peak and 0 at the end).
Checked against the schedule computed by hand, not through the scheduler object."""

import json

import pytest

from sftlab.config import load_config
from sftlab.train import train
from tiny import make_model, make_tokenizer


def test_logged_lr_is_the_rate_each_step_used(tmp_path):
    folder = tmp_path / "m"
    make_model().save_pretrained(folder, safe_serialization=True)
    make_tokenizer().save_pretrained(folder)
    rows = [{"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]} for w in ["apple", "brown", "lazy", "quick"] * 5]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    peak, steps = 1e-3, 6
    cfg = load_config({
        "model": {"name": str(folder)}, "lora": {"enabled": False},
        "data": {"train": [{"path": str(tmp_path / "d.jsonl")}], "max_len": 64, "cache": False},
        "train": {"output_dir": str(tmp_path / "run"), "lr": peak, "schedule": "linear", "warmup_ratio": 0.0,
                  "max_steps": steps, "tokens_per_batch": 64},
    })
    train(cfg)
    logged = [json.loads(x)["lr"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    by_hand = [peak * (steps - k) / steps for k in range(steps)]  # linear decay from the peak, step k = 0..5
    assert logged == [pytest.approx(x, rel=1e-9) for x in by_hand]
    assert logged[0] == peak and logged[-1] > 0

