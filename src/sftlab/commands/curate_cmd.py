"""`sftlab curate CONFIG` and `sftlab data-report DATA --out report.html`.

Top-level names, not `sftlab data ...`: `data` holds the commands that look at one data set as the
trainer sees it (tokens, masks); these two run the curation library.
"""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("curate", help="run a curation pipeline (dedup, filters, scores, select, mix) from YAML")
    p.add_argument("config", help="YAML with inputs, blocks, output (see sftlab.curate.config)")
    p.set_defaults(func=curate)

    r = sub.add_parser("data-report", help="self-contained HTML report on a dataset (lengths, mix, tags, dups, map)")
    r.add_argument("data", nargs="+", help="data file(s)/folder(s) (JSON, JSONL, CSV, Parquet)")
    r.add_argument("--out", default="report.html", help="HTML file to write (default: report.html)")
    r.add_argument("--format", default="auto")
    r.add_argument("--stats", default=None, help="a curate stats JSON: show its dedup pairs instead of running dedup")
    r.add_argument("--no-embeddings", action="store_true", help="skip the embedding map (no MiniLM)")
    r.add_argument("--max-points", type=int, default=2000, help="examples in the embedding map (sampled)")
    r.set_defaults(func=data_report)


def curate(args) -> int:
    from sftlab.curate.config import load_curate_config
    from sftlab.curate.pipeline import run_pipeline

    result = run_pipeline(load_curate_config(args.config))
    print(result.table())
    return 0


def data_report(args) -> int:
    from sftlab.curate.blocks import DupPair
    from sftlab.curate.report import build_report
    from sftlab.data import load_conversations

    loaded = load_conversations(args.data, format=args.format, on_error="skip")
    print(loaded.stats.summary())
    pairs = None
    if args.stats:
        with open(args.stats, encoding="utf-8") as f:
            stats = json.load(f)
        pairs = [DupPair(p["removed_id"], p["kept_id"], p["similarity"])
                 for b in stats.get("blocks", []) for p in b.get("pairs", [])]
    if not loaded.conversations:
        print("no examples loaded: nothing to report")
        return 1
    out = build_report(loaded.conversations, args.out, pairs=pairs, embeddings=not args.no_embeddings,
                       max_points=args.max_points)
    print(f"wrote {out}")
    return 0
