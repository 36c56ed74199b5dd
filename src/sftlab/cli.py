"""The `sftlab` command. Thin: parses arguments and calls the library.

Each subcommand module in sftlab/commands/ exposes `register(subparsers)` and imports the library
inside its handlers, so `sftlab --help` loads no torch (importing it costs about 2 s).
"""

from __future__ import annotations

import argparse
import sys

from sftlab.commands import (
    ablate_cmd,
    curate_cmd,
    data_cmd,
    eval_cmd,
    model_cmd,
    quickstart_cmd,
    synth_cmd,
    train_cmd,
)
from sftlab.errors import SftlabError

COMMANDS = [train_cmd, data_cmd, model_cmd, eval_cmd, quickstart_cmd, ablate_cmd, curate_cmd, synth_cmd]


def version() -> str:
    """The installed distribution's version (importlib.metadata); the package's own when not installed."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("sftlab")
    except PackageNotFoundError:
        from sftlab import __version__

        return __version__


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
    # GOMP_SPINCOUNT for the OpenBLAS path is set on `import sftlab` (sftlab/__init__.py), before torch loads
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
