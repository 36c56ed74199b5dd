"""Shared command-line options for loading data, so every command spells them the same way.

    add_load_args(parser)                      # --format --columns --on-error --rejects ...
    load_conversations(args.path, **load_kwargs(args))
"""

from __future__ import annotations

import argparse

from sftlab.data.formats import FIELD_NAMES, FORMATS
from sftlab.errors import ConfigError


def parse_columns(text: str | None) -> dict[str, str] | None:
    """'instruction=question,output=answer' -> {"instruction": "question", "output": "answer"}."""
    if not text:
        return None
    out = {}
    for pair in text.split(","):
        ours, sep, theirs = pair.partition("=")
        if not sep or not ours.strip() or not theirs.strip():
            raise ConfigError(f"--columns: {pair!r} must be OUR_FIELD=YOUR_COLUMN (our fields: {', '.join(FIELD_NAMES)})")
        out[ours.strip()] = theirs.strip()
    return out


def add_load_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data loading")
    g.add_argument("--format", default="auto", choices=("auto", *FORMATS), help="input format (default: detect per file)")
    g.add_argument("--columns", default=None, metavar="OURS=YOURS,...",
                   help="map your column names to ours, e.g. instruction=question,output=answer")
    g.add_argument("--on-error", default="raise", choices=("raise", "skip"),
                   help="raise: stop and list problems; skip: skip bad rows, count them by reason")
    g.add_argument("--rejects", default=None, metavar="PATH", help="with --on-error skip: write skipped rows here (JSONL)")
    g.add_argument("--split", default="train", help="split of a datasets source (default: train)")
    g.add_argument("--streaming", action="store_true", help="stream a datasets source instead of downloading it whole")
    g.add_argument("--limit", type=int, default=None, help="load at most this many conversations")


def load_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments for load_conversations / iter_conversations from parsed args."""
    return {"format": args.format, "columns": parse_columns(args.columns), "on_error": args.on_error,
            "rejects_path": args.rejects, "split": args.split, "streaming": args.streaming, "limit": args.limit}
