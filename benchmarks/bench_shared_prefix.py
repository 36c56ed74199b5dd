"""Stage 1 of the built-in LLaVA demo with and without train.speed.shared_prefix: step time and losses.

    python benchmarks/bench_shared_prefix.py                 # 12 steps x 2 rounds, alternating on / off
    python benchmarks/bench_shared_prefix.py --steps 20 --rounds 3

configs/vlm-stage1.yaml as the quickstart runs it (embedded SmolLM2-135M-Instruct frozen + tiny SigLIP
+ the projector training; 512 tokens a step), --steps optimizer steps per run, the runs alternating
on / off so a host that slows down mid-benchmark slows both. Each run is its own `sftlab train`
process. Step time = the mean of steps 2..N from metrics.jsonl (step 1 also computes the prefix's
keys once and pays the first-call costs). The two settings see the same rows in the same order, so
their per-step losses must agree up to float rounding: the largest relative difference is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
from pathlib import Path


def run(out: Path, steps: int, on: bool) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    from sftlab.configs import shipped_config

    cmd = [shutil.which("sftlab") or "sftlab", "train", str(shipped_config("vlm-stage1")), f"train.output_dir={out}",
           f"train.max_steps={steps}", "train.save_every=0", f"train.speed.shared_prefix={str(on).lower()}"]
    log = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if log.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{log.stdout[-2000:]}\n{log.stderr[-3000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "step" in r and "loss" in r]
    times = [b["elapsed_s"] - a["elapsed_s"] for a, b in zip(rows, rows[1:])]
    note = next((line for line in (log.stdout + log.stderr).splitlines() if line.startswith("shared prefix")), "")
    return {"losses": [r["loss"] for r in rows], "step_s": statistics.mean(times), "note": note}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="runs/bench-shared-prefix")
    args = ap.parse_args()
    out = Path(args.out)
    results: dict[bool, list[dict]] = {True: [], False: []}
    for k in range(args.rounds):
        for on in (True, False) if k % 2 == 0 else (False, True):
            r = run(out / f"{'on' if on else 'off'}-{k}", args.steps, on)
            results[on].append(r)
            print(f"round {k} shared_prefix={'on ' if on else 'off'}: {r['step_s']:.2f} s/step  {r['note']}", flush=True)
    on_s = statistics.mean(r["step_s"] for r in results[True])
    off_s = statistics.mean(r["step_s"] for r in results[False])
    diff = max(abs(a - b) / abs(b) for r_on, r_off in zip(results[True], results[False])
               for a, b in zip(r_on["losses"], r_off["losses"]))
    print(f"\nstage-1 step: on {on_s:.2f} s, off {off_s:.2f} s  ->  {off_s / on_s:.2f}x faster with the shared prefix")
    print(f"per-step losses, on vs off: largest relative difference {diff:.1e} over {args.steps} steps x {args.rounds} rounds")


if __name__ == "__main__":
    main()
