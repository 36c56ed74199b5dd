"""What the IFD score sees in the built-in noisy pool: IFD per planted noise kind.

    python examples/ifd_by_noise.py --per-kind 30        # ~5 min on 2 CPU cores (SmolLM2-135M scorer)

Builds the ablation's noisy pool (sftlab.builtin.noisy_pool, 1200 rows, seed 0), takes the first
N rows of each noise kind, scores them with the curate block `ifd_score` (the embedded
SmolLM2-135M-Instruct) and prints, per kind, the median IFD and the share at IFD >= 1 (what
`max_ifd: 1.0` would drop) — i.e. which flaws a small-model difficulty filter can catch that the
rule-based filters cannot (wrong, truncated and off-task answers).
"""

import argparse
import statistics
from collections import defaultdict

from sftlab.builtin.noisy_pool import NoisyPoolConfig, build_noisy_pool
from sftlab.curate import IFDScore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-kind", type=int, default=30)
    ap.add_argument("--threshold", type=float, default=1.0, help="the max_ifd to report the drop share for")
    a = ap.parse_args()
    by_kind = defaultdict(list)
    for c in build_noisy_pool(NoisyPoolConfig(size=1200, seed=0)):
        if len(by_kind[c.meta["noise"]]) < a.per_kind:
            by_kind[c.meta["noise"]].append(c)
    rows = [c for kind in sorted(by_kind) for c in by_kind[kind]]
    scored = defaultdict(list)
    for c in IFDScore()(rows):
        scored[c.meta["noise"]].append(c.meta["ifd"])
    print(f"\nIFD by planted noise kind (SmolLM2-135M-Instruct scorer, first {a.per_kind} rows of each kind):")
    print(f"{'kind':16s} {'n':>4s} {'median IFD':>11s} {'p25':>6s} {'p75':>6s} {f'IFD >= {a.threshold:g}':>10s}")
    for kind in sorted(scored, key=lambda k: statistics.median(scored[k])):
        v = sorted(scored[kind])
        q = lambda p: v[min(len(v) - 1, int(p * len(v)))]  # noqa: E731
        share = sum(x >= a.threshold for x in v) / len(v)
        print(f"{kind:16s} {len(v):4d} {statistics.median(v):11.3f} {q(0.25):6.3f} {q(0.75):6.3f} {share:10.0%}")


if __name__ == "__main__":
    main()
