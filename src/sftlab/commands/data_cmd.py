"""`sftlab data inspect FILE`: token statistics and one example with its trained tokens highlighted."""

from __future__ import annotations

import statistics
import sys


def register(sub) -> None:
    p = sub.add_parser("data", help="look at instruction data")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    q = dsub.add_parser("inspect", help="token stats and an example with trained tokens highlighted")
    q.add_argument("path", help="data file/folder (JSON, JSONL, CSV, Parquet) or builtin:tasks-train")
    q.add_argument("--model", default=None, help="tokenizer/template to use (default: the embedded SmolLM2)")
    q.add_argument("--template", default="auto", help="auto (the tokenizer's own) or chatml | llama3 | alpaca")
    q.add_argument("--format", default="auto")
    q.add_argument("--train-on", default="all_assistant", choices=["all_assistant", "last_assistant", "everything"])
    q.add_argument("--example", type=int, default=0, help="which example to show (index)")
    q.add_argument("--max-len", type=int, default=2048, help="report how many examples exceed this")
    q.add_argument("--no-color", action="store_true", help="mark trained text with [[...]] instead of colour")
    q.set_defaults(func=inspect)
    p.set_defaults(func=lambda a: p.print_help() or 1)


def inspect(args) -> int:
    from sftlab.data.config import DataSourceConfig
    from sftlab.model import DEFAULT_MODEL, load_tokenizer
    from sftlab.render import Renderer, format_mask, preflight
    from sftlab.templates import apply_template

    src = DataSourceConfig(path=args.path, format=args.format)
    # The full multi-line load summary: skipped rows by reason, dropped empty system messages,
    # message keys that were ignored (with the first rows that had them).
    loaded = src.load(on_error="skip")
    convs = loaded.conversations
    print(f"{src.path}: " + loaded.stats.summary())
    if not convs:
        print("no examples loaded")
        return 1
    tok = load_tokenizer(args.model or DEFAULT_MODEL)
    apply_template(tok, args.template, add_missing_tokens=True)
    rd = Renderer(tok, train_on=args.train_on)
    report = preflight(rd, convs)
    rendered = [rd.render(c) for c in convs]
    lengths = [len(r) for r in rendered]
    trained = [r.n_trained for r in rendered]
    turns = [sum(m.role == "assistant" for m in c.messages) for c in convs]
    print(f"\n{len(convs)} examples; tokens per example: min {min(lengths)}, median {statistics.median(lengths):.0f}, "
          f"mean {statistics.mean(lengths):.1f}, max {max(lengths)}; total {sum(lengths)} tokens, "
          f"{sum(trained)} trained ({sum(trained) / max(1, sum(lengths)):.1%})")
    print(f"assistant turns per example: mean {statistics.mean(turns):.2f}, max {max(turns)}; "
          f"{sum(n > args.max_len for n in lengths)} examples longer than {args.max_len} tokens")
    print(f"stop token: {rd.stop_text!r} (id {rd.stop_token_id}), trained after every assistant turn")
    print(report.format())
    i = min(max(args.example, 0), len(convs) - 1)
    color = not args.no_color and sys.stdout.isatty()
    legend = "trained tokens in green" if color else "trained tokens inside [[...]]"
    print(f"\nexample {i} ({convs[i].source}), {legend}:\n")
    print(format_mask(rd, rendered[i], color=color))
    return 0 if report.ok else 1
