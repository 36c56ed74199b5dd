"""torch's MKL vs numpy's OpenBLAS for the linear layers (train.speed.cpu_matmul), in ONE process.

    python benchmarks/bench_cpu_matmul.py              # SmolLM2-135M LoRA r=16, 3 batches x 4 rounds
    GOMP_SPINCOUNT=300000 python benchmarks/bench_cpu_matmul.py   # libgomp's default spin: OpenBLAS loses

Same model (SmolLM2-135M-Instruct, LoRA r=16 all-linear, sftlab's fused LoRA / MLP paths), same
packed 512-token batches (bench_train.py's fitted conversations), forward + backward of
accumulate_gradients per batch; the two settings alternate within one process, in reversed order
every other round, so a burst of load on a shared machine hits both (separate processes, as
bench_train.py's --techniques runs them, were swamped by host load: matmul peaks of 87-167 GFLOP/s
between rounds). Prints the median seconds per round of each setting and the ratio, checks that
the losses and the first gradients agree, and prints the process's calibration (cpu_blas.choose).

GOMP_SPINCOUNT matters (speed/cpu_blas.py): at libgomp's default torch's OpenMP workers spin after
every op and OpenBLAS loses; the `sftlab` command sets 1000 before torch loads unless it is set, and
so does this script (sftlab.speed.configure_openmp).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, default=3, help="packed batches per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()

    from sftlab.speed import configure_openmp

    configure_openmp()  # first: GOMP_SPINCOUNT before torch loads, as the `sftlab` command sets it
    import functools

    import torch
    from accelerate import Accelerator

    import bench_train as bt
    from sftlab.config import load_config
    from sftlab.prepare import prepare
    from sftlab.render import Renderer
    from sftlab.speed import chunked_loss, cpu_blas
    from sftlab.speed.fused_lora import fuse_lora_layers
    from sftlab.speed.fused_mlp import fuse_mlp_layers
    from sftlab.speed.packed_attention import packed_attention
    from sftlab.train import accumulate_gradients, step_batches

    torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-cpu-matmul-"))
    tok = bt.make_tokenizer("smollm2")
    rows = bt.fitted_conversations(176, 0, tok, 512)
    (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = bt.make_model("smollm2", tok, 0)
    fuse_lora_layers(model)
    fuse_mlp_layers(model)
    cfg = load_config({
        "model": {"name": "unused", "template": "auto"}, "lora": {"enabled": False},
        "data": {"train": [{"path": str(tmp / "data.jsonl")}], "max_len": 512, "length_policy": "truncate",
                 "packing": True, "cache": False},
        "train": {"output_dir": str(tmp / "run"), "tokens_per_batch": 512},
    })
    data = prepare(Renderer(tok), cfg.data, cfg.train, pad_id=tok.pad_token_id or 0)
    acc = Accelerator(cpu=True)
    model.train()
    batches = [step_batches(data.train, s, 1, 0, 1) for s in range(a.batches)]
    tokens = sum(b[0].n_tokens for b in batches)

    def run(use_blas: bool):
        losses = []
        t = time.perf_counter()
        loss_fn = functools.partial(chunked_loss.summed_loss, chunk_tokens=cfg.train.speed.loss_chunk_tokens)
        with cpu_blas.blas_matmuls(use_blas), packed_attention(model):
            for b in batches:
                model.zero_grad(set_to_none=True)
                losses.append(accumulate_gradients(model, b, acc, loss_fn=loss_fn)[0])
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None][:8]
        return time.perf_counter() - t, losses, grads

    env = ", ".join(f"{k}={os.environ.get(k) or '(unset)'}" for k in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY"))
    print(f"# bench_cpu_matmul: SmolLM2-135M LoRA r=16, {a.batches} packed batches ({tokens} tokens) per round, "
          f"{a.rounds} rounds, threads={a.threads}, {env}", flush=True)
    choice = cpu_blas.choose(model.config.hidden_size, model.config.intermediate_size)
    print(f"calibration (train.speed.cpu_matmul: auto would use {'OpenBLAS' if choice['use'] else 'torch'}): {choice['reason']}")
    names = {False: "torch", True: "openblas"}
    for use in (False, True):  # warm-up: thread pools, page faults, first-call allocations
        run(use)
    times = {False: [], True: []}
    ref = None
    for r in range(a.rounds):
        for use in (False, True) if r % 2 == 0 else (True, False):
            dt, losses, grads = run(use)
            times[use].append(dt)
            print(f"  round {r + 1} {names[use]:9s} {dt:7.3f} s  {tokens / dt:6.1f} tok/s", flush=True)
            if ref is None:
                ref = (losses, grads)
            else:
                dl = max(abs(x - y) for x, y in zip(losses, ref[0]))
                dg = max(float((x - y).abs().max()) for x, y in zip(grads, ref[1]))
                assert dl < 1e-3 and dg < 1e-4, f"{names[use]}: loss diff {dl}, grad diff {dg}"
    med = {k: statistics.median(v) for k, v in times.items()}
    for use in (False, True):
        print(f"{names[use]:9s} median {med[use]:.3f} s per round ({tokens / med[use]:.1f} tok/s)")
    print(f"openblas / torch: {med[False] / med[True]:.3f}x tokens/s (same batches, losses and gradients agree)")


if __name__ == "__main__":
    main()
