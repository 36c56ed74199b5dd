"""`sftlab train CONFIG [key=value ...] [--resume | --overwrite] [--force-resume] [--dry-run]`.

Overrides and flags may come in any order (`cfg.yaml --resume train.lr=1e-4` and
`cfg.yaml train.lr=1e-4 --resume`): a plain argparse `nargs="*"` positional stops at the first flag,
so the train parser parses intermixed (cli.py's top-level parser cannot: it has subparsers)."""

from __future__ import annotations

import argparse


class IntermixedParser(argparse.ArgumentParser):
    """Parses positionals and optionals in any order (argparse's parse_known_intermixed_args), also
    when called as a subparser. parse_known_intermixed_args itself calls parse_known_args twice:
    those inner calls get the plain parser."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def register(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a model (full or LoRA) as a YAML config says")
    p.__class__ = IntermixedParser  # add_parser builds the subparsers' own class; only its parsing changes
    p.add_argument("config", help="YAML run config (every key: docs/config.md)")
    p.add_argument("overrides", nargs="*", default=[], help="dotted overrides, e.g. train.lr=1e-4 lora.r=8 (before or after the flags)")
    p.add_argument("--resume", action="store_true", help="continue from the newest intact checkpoint in train.output_dir (starts fresh if there is none)")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in a used train.output_dir: deletes sftlab's outputs there (checkpoints, final/, metrics.jsonl, run.json); "
                        "refuses if the folder holds other files")
    p.add_argument("--force-resume", action="store_true", help="resume (implies --resume) even if the config or data changed since the checkpoint")
    p.add_argument("--dry-run", action="store_true",
                   help="check the whole run without training: load and render every row with the run's template, pre-flight each one, "
                        "length policy, packing; print the data summary, every bad row (file:line and why), the optimizer steps and "
                        "what train would do in train.output_dir. Loads no model weights, writes nothing; exit 2 if train would refuse")
    p.set_defaults(func=run)


def run(args) -> int:
    from sftlab.config import load_config
    from sftlab.errors import SftlabError
    from sftlab.train import train

    if args.resume and args.overwrite:
        raise SftlabError("--resume and --overwrite contradict each other: --resume continues the run in train.output_dir, "
                          "--overwrite deletes it and starts again; pass one of them")
    cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        from sftlab.dry_run import dry_run

        report = dry_run(cfg, resume=args.resume, overwrite=args.overwrite, force_resume=args.force_resume, config_name=args.config)
        print("\n".join(report.lines))
        return report.exit_code
    result = train(cfg, resume=args.resume or args.force_resume, overwrite=args.overwrite, force_resume=args.force_resume)
    return 3 if result.stopped_early else 0
