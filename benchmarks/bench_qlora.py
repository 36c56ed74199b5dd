"""QLoRA vs LoRA on the embedded SmolLM2-135M-Instruct: peak memory and loss, side by side.

    pip install --no-deps 'bitsandbytes>=0.50'     # the [qlora] extra; --no-deps keeps your torch
    python benchmarks/bench_qlora.py               # 8 steps each, the quickstart config
    python benchmarks/bench_qlora.py --steps 24 --set train.tokens_per_batch=1024 train.grad_accum=2

Each run is `sftlab train src/sftlab/configs/quickstart.yaml train.max_steps=N ...` in its own
process, one after the other (LoRA, then the same with model.load_in_4bit=true): the same data,
seed, LoRA init and steps. Peak RSS is that process's ru_maxrss (os.wait4), which includes loading
(the 4-bit run reads the fp32 weights and quantises them layer by layer). Losses are read back from
each run's metrics.jsonl; the run log's "model:" line is printed for each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "src" / "sftlab" / "configs" / "quickstart.yaml"
# shorter rows than the quickstart's 2 x 1024 tokens per step: 8 steps in a few minutes on 2 cores
DEFAULTS = ["train.tokens_per_batch=512", "train.grad_accum=1", "data.max_len=512", "data.eval=[]", "train.save_every=0"]


def run(name: str, steps: int, extra: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "sftlab.cli", "train", str(CONFIG), f"train.max_steps={steps}",
           f"train.output_dir={out / name}", *DEFAULTS, *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    print("$", " ".join(cmd[1:]), flush=True)
    t = time.time()
    log = open(out / f"{name}.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    text = (out / f"{name}.log").read_text()
    if proc.returncode != 0:
        print(text[-3000:])
        raise SystemExit(f"{name}: exit {proc.returncode}")
    metrics = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines() if x.strip()]
    model_line = next((x for x in text.splitlines() if x.startswith("model: ")), "")
    return {"name": name, "peak_rss_mib": usage.ru_maxrss / 1024, "wall_s": time.time() - t,
            "losses": [m["loss"] for m in metrics], "step_s": [m["elapsed_s"] for m in metrics], "model": model_line}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--set", nargs="*", default=[], help="more overrides for both runs (key=value)")
    ap.add_argument("--out", default=None, help="folder for the runs (default: a temp folder)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_qlora-"))
    out.mkdir(parents=True, exist_ok=True)
    import torch

    try:
        from importlib.metadata import version

        bnb = version("bitsandbytes")
    except Exception:  # noqa: BLE001
        raise SystemExit("bitsandbytes is not installed: pip install --no-deps 'bitsandbytes>=0.50'") from None
    print(f"torch {torch.__version__}, bitsandbytes {bnb}, {os.cpu_count()} CPUs; runs in {out}", flush=True)
    runs = [run("lora", args.steps, args.set, out), run("qlora", args.steps, ["model.load_in_4bit=true", *args.set], out)]
    print()
    for r in runs:
        print(f"{r['name']}: {r['model']}")
    print()
    print("| run | peak RSS MiB | train s (steps) | wall s (with load) | loss step 1 | loss last step | mean loss |")
    print("|---|---|---|---|---|---|---|")
    for r in runs:
        losses = r["losses"]
        print(f"| {r['name']} | {r['peak_rss_mib']:,.0f} | {r['step_s'][-1]:.0f} ({len(losses)}) | {r['wall_s']:.0f} | "
              f"{losses[0]:.4f} | {losses[-1]:.4f} | {sum(losses) / len(losses):.4f} |")
    print()
    print("per-step loss (lora / qlora):")
    for i, (a, b) in enumerate(zip(runs[0]["losses"], runs[1]["losses"]), 1):
        print(f"  step {i}: {a:.4f} / {b:.4f}  ({b - a:+.4f})")
    (out / "bench_qlora.json").write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
