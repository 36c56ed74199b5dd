"""Multi-process training (DDP, gloo on CPU) gives the same run as one process with the same global batch.

`torchrun --nproc_per_node 2 -m sftlab.cli train run.yaml` (gloo) with grad_accum=1 must
reproduce, step by step, one process with grad_accum=2: each step's two micro-batches are the same
(train.step_batches deals micro-batch i of a step to process i % world), the loss of a step is
normalised by the trained tokens of the WHOLE step (all-reduced before backward) and DDP averages
the gradients. A per-process mean (each process dividing by its own token count) would differ as
soon as the two micro-batches hold different numbers of trained tokens, which they do here.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sftlab.config import load_config
from sftlab.train import train
from tiny import make_model, make_tokenizer

WORDS = "apple lazy brown quick today there fine thank hello world number answer".split()


def rows(n: int) -> list[dict]:
    """Conversations of clearly different lengths, so per-micro-batch token counts differ."""
    out = []
    for i in range(n):
        w = WORDS[i % len(WORDS)]
        answer = " ".join([w[::-1]] * (1 + (i * 7) % 9))
        turns = [{"role": "user", "content": f"Reverse the word {w}, {1 + i % 4} times."}, {"role": "assistant", "content": answer}]
        if i % 3 == 0:
            turns += [{"role": "user", "content": "Thank you."}, {"role": "assistant", "content": "Fine, hello there."}]
        out.append({"messages": turns})
    return out


def run_config(tmp_path, folder, data, out: str, grad_accum: int) -> dict:
    return {
        "model": {"name": str(folder)},
        "lora": {"enabled": False},
        "data": {"train": [{"path": str(data)}], "max_len": 96},
        "train": {"output_dir": str(tmp_path / out), "lr": 1e-2, "max_steps": 4, "tokens_per_batch": 128,
                  "warmup_ratio": 0.0, "schedule": "linear", "grad_accum": grad_accum, "max_grad_norm": 1.0, "seed": 3},
    }


def losses(run_dir) -> list[float]:
    return [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def tokens(run_dir) -> list[int]:
    return [json.loads(x)["trained_tokens"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one_process_with_grad_accum(tmp_path):
    folder = tmp_path / "tiny-model"
    make_model().save_pretrained(folder, safe_serialization=True)
    make_tokenizer().save_pretrained(folder)
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows(40)))

    # one process, 2 micro-batches accumulated per step
    train(load_config(run_config(tmp_path, folder, data, "one", grad_accum=2)))

    # two processes (gloo), 1 micro-batch each per step
    cfg_path = tmp_path / "ddp.yaml"
    cfg_path.write_text(yaml.safe_dump(run_config(tmp_path, folder, data, "two", grad_accum=1)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}
    # torchrun, not `accelerate launch --cpu`: accelerate 1.15 starts ONE process for --cpu unless
    # MPI is installed (simple_launcher); under torchrun, Accelerator() reads WORLD_SIZE/RANK and
    # picks gloo on CPU, which is exactly the DDP path a GPU launch takes (with nccl).
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "sftlab.cli", "train", str(cfg_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    one, two = tmp_path / "one", tmp_path / "two"
    # trained tokens per step are all-reduced: equal counts prove both ranks took part (one rank
    # alone with grad_accum=1 would log half); differing counts per step mean a per-process
    # mean would NOT match
    assert len(set(tokens(one))) > 1 and tokens(one) == tokens(two)
    l1, l2 = losses(one), losses(two)
    assert len(l1) == len(l2) == 4
    assert l1 == pytest.approx(l2, abs=1e-5), (l1, l2)
    assert l1[-1] < l1[0]  # it trained

    w1 = load_file(str(one / "final" / "model.safetensors"))
    w2 = load_file(str(two / "final" / "model.safetensors"))
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=1e-5, rtol=1e-4)
    w0 = load_file(str(folder / "model.safetensors"))
    assert max(float((w1[k] - w0[k]).abs().max()) for k in w0) > 1e-3  # weights moved: the comparison means something
