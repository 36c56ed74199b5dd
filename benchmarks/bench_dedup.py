"""MinHash near-dedup throughput and memory on synthetic rows with planted near-duplicates.

    python benchmarks/bench_dedup.py                 # 1,000,000 rows, checkpoints at 100k/300k/1M
    python benchmarks/bench_dedup.py --rows 200000 --num-perm 64

Rows are generated on the fly (a prompt of 20 and a response of 40 words drawn from a 20,000-word
vocabulary); ~10% are near-duplicates of a recent row with ONE word changed (true 5-gram Jaccard
of about 0.85, above the 0.8 threshold). Nothing holds the rows: memory growth is the dedup index,
which is O(kept rows) by design (band dict entries + a 16-bit signature per kept row).

Printed at each checkpoint: rows/s of the dedup block alone, by CPU time of this process (the
number a dedicated core gives; generation CPU time, measured in its own pass, is subtracted) and
by wall clock including generation (lower when other jobs share the cores); peak RSS
(getrusage), current RSS, the growth over the baseline per kept row, and recall of the planted
duplicates.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from collections import deque

import psutil

from sftlab.conversation import Conversation, Message
from sftlab.curate.dedup import MinHashDedup


def make_vocab(n: int, rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(n)]


def rows(n: int, dup_rate: float, seed: int, planted: set[int]):
    """Yield n Conversations; indices of planted near-duplicates are added to `planted`."""
    rng = random.Random(seed)
    vocab = make_vocab(20_000, rng)
    recent: deque[list[str]] = deque(maxlen=1000)
    for i in range(n):
        if recent and rng.random() < dup_rate:
            toks = list(rng.choice(recent))
            toks[rng.randrange(len(toks))] = rng.choice(vocab)
            planted.add(i)
        else:
            toks = rng.choices(vocab, k=60)
            recent.append(toks)
        yield Conversation((Message("user", " ".join(toks[:20])), Message("assistant", " ".join(toks[20:]))),
                           source=f"synthetic:{i}", id=str(i))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--dup-rate", type=float, default=0.10)
    ap.add_argument("--checkpoints", default="100000,300000,1000000")
    args = ap.parse_args(argv)
    checkpoints = sorted({int(c) for c in args.checkpoints.split(",") if int(c) < args.rows} | {args.rows})

    # generation cost alone, so the reported rate is the dedup block's
    n_gen = min(args.rows, 50_000)
    t = time.process_time()
    for _ in rows(n_gen, args.dup_rate, 0, set()):
        pass
    gen_s_per_row = (time.process_time() - t) / n_gen

    proc = psutil.Process()
    base = proc.memory_info().rss / 2**20
    print(f"MinHash dedup: num_perm={args.num_perm} threshold={args.threshold} ngram=5, "
          f"{args.dup_rate:.0%} planted near-dups; baseline RSS {base:.0f} MB; "
          f"generation {gen_s_per_row * 1e6:.1f} us/row (subtracted)")
    block = MinHashDedup(threshold=args.threshold, num_perm=args.num_perm)
    print(f"LSH bands={block.bands} rows_per_band={block.rows_per_band}")
    print(f"{'rows':>10} {'CPU rows/s':>10} {'wall rows/s':>11} {'kept':>9} {'removed':>8} {'recall':>7} {'peak RSS MB':>11} "
          f"{'RSS MB':>7} {'index B/kept row':>16}")
    planted: set[int] = set()
    t0 = (time.process_time(), time.perf_counter())
    n = kept = 0
    next_cp = iter(checkpoints)
    cp = next(next_cp)
    for _ in block(rows(args.rows, args.dup_rate, 0, planted)):
        kept += 1
        n = block.stats.seen
        if n >= cp:
            _report(block, planted, n, kept, t0, gen_s_per_row, base, proc)
            cp = next(next_cp, 10**18)
    n = block.stats.seen
    if n < cp < 10**18:  # the last row was a duplicate: report the final state
        _report(block, planted, n, kept, t0, gen_s_per_row, base, proc)
    return 0


def _report(block, planted, n, kept, t0, gen_s_per_row, base, proc) -> None:
    cpu = max(1e-9, time.process_time() - t0[0] - gen_s_per_row * n)
    wall = time.perf_counter() - t0[1]
    removed = {int(p.removed_id) for p in block.stats.pairs}
    recall = len(removed & planted) / max(1, len(planted))
    rss = proc.memory_info().rss / 2**20
    per_row = (rss - base) * 2**20 / max(1, kept)
    print(f"{n:>10,} {n / cpu:>10,.0f} {n / wall:>11,.0f} {kept:>9,} {len(removed):>8,} {recall:>7.1%} {peak_rss_mb():>11,.0f} "
          f"{rss:>7,.0f} {per_row:>16,.0f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
