"""The `sftlab` command. Thin: parses arguments and calls the library.

Each area owns its subcommands in a `cli_*.py`-style module exposing `register(subparsers)`;
this file only collects them, so parallel work on areas never edits the same file.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from sftlab.speed import configure_openmp

# the `sftlab` command's process (and `python -m sftlab.cli`): OpenMP settings before anything loads
# torch, which reads them once (GOMP_SPINCOUNT=1000 unless set; sftlab/speed/__init__.py)
configure_openmp()

from sftlab.errors import SftlabError  # noqa: E402

# module path -> registers its subcommands. Imported lazily (torch import costs ~2 s).
COMMAND_MODULES = [
    "sftlab.commands.train_cmd",
    "sftlab.commands.data_cmd",
    "sftlab.commands.model_cmd",
    "sftlab.commands.eval_cmd",
    "sftlab.commands.quickstart_cmd",
    "sftlab.commands.ablate_cmd",
    "sftlab.curate.cli",
    "sftlab.synth.cli",
]


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
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that area is not built yet
                continue
            raise
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
