"""MinHash near-dedup throughput and memory on synthetic rows with planted near-duplicates.

    python benchmarks/bench_dedup.py                 # 1,000,000 rows, checkpoints at 100k/300k/1M
    python benchmarks/bench_dedup.py --rows 200000 --num-perm 64
    python benchmarks/bench_dedup.py --index-dir /tmp/dedup-index   # index in memory-mapped files

Rows are generated on the fly (a prompt of 20 and a response of 40 words drawn from a 20,000-word
vocabulary); ~10% are near-duplicates of a recent row with ONE word changed (true 5-gram Jaccard
of about 0.85, above the 0.8 threshold). Nothing holds the rows (planted duplicates are marked in
their `source`, not in a set): memory growth is the dedup index, O(kept rows) by design (band table
entries + a 16-bit signature + the id per kept row, and the pairs). With --index-dir the index is
memory-mapped files and the pairs stream to pairs.jsonl there: its pages are page cache (counted in
RSS while resident, but the kernel can write them back and evict them), so the number that must
stay flat is the ANONYMOUS resident memory, RssAnon in /proc/self/status.

Printed at each checkpoint: rows/s of the dedup block alone, by CPU time of this process (the
number a dedicated core gives; generation CPU time, measured in its own pass, is subtracted) and
by wall clock including generation (lower when other jobs share the cores); peak RSS
(getrusage), current RSS, the growth of RSS over the baseline per kept row, recall of the planted
duplicates, and the anonymous resident memory (RssAnon) with its growth per kept row.
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


def rows(n: int, dup_rate: float, seed: int, planted: list[int]):
    """Yield n Conversations; planted near-duplicates have source "planted:<i>" and are counted
    in planted[0]."""
    rng = random.Random(seed)
    vocab = make_vocab(20_000, rng)
    recent: deque[list[str]] = deque(maxlen=1000)
    for i in range(n):
        if recent and rng.random() < dup_rate:
            toks = list(rng.choice(recent))
            toks[rng.randrange(len(toks))] = rng.choice(vocab)
            planted[0] += 1
            source = f"planted:{i}"
        else:
            toks = rng.choices(vocab, k=60)
            recent.append(toks)
            source = f"synthetic:{i}"
        yield Conversation((Message("user", " ".join(toks[:20])), Message("assistant", " ".join(toks[20:]))),
                           source=source, id=str(i))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def anon_rss_mb() -> float:
    """RssAnon of this process (Linux): resident memory not backed by a file, i.e. what the
    process really needs; memory-mapped index pages are RssFile (evictable page cache)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024  # kB
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--dup-rate", type=float, default=0.10)
    ap.add_argument("--checkpoints", default="100000,300000,1000000")
    ap.add_argument("--index-dir", default=None, help="MinHashDedup index_dir: the index in memory-mapped files there")
    args = ap.parse_args(argv)
    checkpoints = sorted({int(c) for c in args.checkpoints.split(",") if int(c) < args.rows} | {args.rows})

    # generation cost alone, so the reported rate is the dedup block's
    n_gen = min(args.rows, 50_000)
    t = time.process_time()
    for _ in rows(n_gen, args.dup_rate, 0, [0]):
        pass
    gen_s_per_row = (time.process_time() - t) / n_gen

    proc = psutil.Process()
    base = proc.memory_info().rss / 2**20, anon_rss_mb()
    print(f"MinHash dedup: num_perm={args.num_perm} threshold={args.threshold} ngram=5, "
          f"{args.dup_rate:.0%} planted near-dups; baseline RSS {base[0]:.0f} MB, RssAnon {base[1]:.0f} MB; "
          f"generation {gen_s_per_row * 1e6:.1f} us/row (subtracted); index "
          + (f"in files under {args.index_dir}" if args.index_dir else "in RAM"))
    block = MinHashDedup(threshold=args.threshold, num_perm=args.num_perm, index_dir=args.index_dir)
    print(f"LSH bands={block.bands} rows_per_band={block.rows_per_band}")
    print(f"{'rows':>10} {'CPU rows/s':>10} {'wall rows/s':>11} {'kept':>9} {'removed':>8} {'recall':>7} {'peak RSS MB':>11} "
          f"{'RSS MB':>7} {'RSS B/kept row':>14} {'anon MB':>8} {'anon B/kept row':>15}")
    planted = [0]  # planted near-duplicates so far
    kept_planted = [0]  # of which the block kept (missed)
    t0 = (time.process_time(), time.perf_counter())
    n = kept = 0
    next_cp = iter(checkpoints)
    cp = next(next_cp)
    for conv in block(rows(args.rows, args.dup_rate, 0, planted)):
        kept += 1
        kept_planted[0] += conv.source.startswith("planted:")
        n = block.stats.seen
        if n >= cp:
            _report(block, planted, kept_planted, n, kept, t0, gen_s_per_row, base, proc)
            cp = next(next_cp, 10**18)
    n = block.stats.seen
    if n < cp < 10**18:  # the last row was a duplicate: report the final state
        _report(block, planted, kept_planted, n, kept, t0, gen_s_per_row, base, proc)
    if args.index_dir:
        print(f"pairs: {block.stats.notes['pairs_total']:,} in {block.stats.notes['pairs_file']}, "
              f"{len(block.stats.pairs):,} in stats.pairs")
    return 0


def _report(block, planted, kept_planted, n, kept, t0, gen_s_per_row, base, proc) -> None:
    cpu = max(1e-9, time.process_time() - t0[0] - gen_s_per_row * n)
    wall = time.perf_counter() - t0[1]
    removed = n - kept  # every drop of this block is a near-duplicate
    recall = (planted[0] - kept_planted[0]) / max(1, planted[0])
    rss, anon = proc.memory_info().rss / 2**20, anon_rss_mb()
    per_row = (rss - base[0]) * 2**20 / max(1, kept)
    anon_per_row = (anon - base[1]) * 2**20 / max(1, kept)
    print(f"{n:>10,} {n / cpu:>10,.0f} {n / wall:>11,.0f} {kept:>9,} {removed:>8,} {recall:>7.1%} {peak_rss_mb():>11,.0f} "
          f"{rss:>7,.0f} {per_row:>14,.0f} {anon:>8,.0f} {anon_per_row:>15,.0f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
