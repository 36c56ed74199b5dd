"""The `sftlab` command. Thin: parses arguments and calls the library.

Each area owns its subcommands in a `cli_*.py`-style module exposing `register(subparsers)`;
this file only collects them, so parallel work on areas never edits the same file.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from sftlab.errors import SftlabError

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sftlab",
        description="Instruction tuning of language models: data -> curate -> train -> evaluate -> use.",
    )
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


# libgomp's spin-wait after each torch parallel region (300,000 iterations by default) takes the
# cores from the OpenBLAS threads of cpu_blas.py; 1000 left torch's own speed unchanged and let
# OpenBLAS run 1.12x faster in SmolLM2 LoRA steps (see cpu_blas.py). Read once, when torch loads.
OMP_ENV_DEFAULTS = {"GOMP_SPINCOUNT": "1000"}


def main(argv: list[str] | None = None) -> int:
    if "torch" not in sys.modules:
        for key, value in OMP_ENV_DEFAULTS.items():
            os.environ.setdefault(key, value)
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
