"""The `sftlab` command. Thin: parses arguments and calls the library.

Each subcommand module in sftlab/commands/ exposes `register(subparsers)` and imports the library
inside its handlers, so `sftlab --help` loads no torch (importing it costs about 2 s).
"""

from __future__ import annotations

import argparse
import sys

from sftlab.speed import configure_openmp

# the `sftlab` command's process (and `python -m sftlab.cli`): OpenMP settings before anything loads
# torch, which reads them once (GOMP_SPINCOUNT=1000 unless set; sftlab/speed/__init__.py)
configure_openmp()

from sftlab.commands import (  # noqa: E402
    ablate_cmd,
    curate_cmd,
    data_cmd,
    eval_cmd,
    model_cmd,
    quickstart_cmd,
    synth_cmd,
    train_cmd,
)
from sftlab import version  # noqa: E402
from sftlab.errors import SftlabError  # noqa: E402

COMMANDS = [train_cmd, data_cmd, model_cmd, eval_cmd, quickstart_cmd, ablate_cmd, curate_cmd, synth_cmd]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sftlab",
        description="Instruction tuning of language models: data -> curate -> train -> evaluate -> use.",
    )
    parser.add_argument("--version", action="version", version=f"sftlab {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except SftlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
