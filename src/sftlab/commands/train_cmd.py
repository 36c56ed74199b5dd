"""`sftlab train CONFIG [key=value ...]`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("train", help="fine-tune a model (full or LoRA) as a YAML config says")
    p.add_argument("config", help="YAML run config (see README 'Config reference')")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.lr=1e-4 lora.r=8")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in train.output_dir")
    p.add_argument("--overwrite", action="store_true", help="delete a non-empty train.output_dir first")
    p.add_argument("--force-resume", action="store_true", help="resume even if the config or data changed since the checkpoint")
    p.set_defaults(func=run)


def run(args) -> int:
    from sftlab.config import load_config
    from sftlab.train import train

    cfg = load_config(args.config, args.overrides)
    result = train(cfg, resume=args.resume, overwrite=args.overwrite, force_resume=args.force_resume)
    return 3 if result.stopped_early else 0
