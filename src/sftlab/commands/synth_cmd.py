"""`sftlab synth CONFIG` and `sftlab judge --a ... --b ... --prompts FILE --judge BACKEND`."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("synth", help="make instruction data with a teacher model (Self-Instruct, Evol-Instruct, "
                                      "judge filtering, LLaVA-style image conversations from captions)")
    p.add_argument("config", help="YAML synth config (see sftlab/synth/config.py); rerun the same command to resume")
    p.add_argument("--report", default=None, help="also write the run report as JSON here")
    p.set_defaults(func=run_synth_cmd)

    j = sub.add_parser("judge", help="judged comparison of two models (pairwise win rate, both orders) and 1-10 grading")
    j.add_argument("--a", required=True, help="model A: answers file (.jsonl/.json) or model (local:NAME, NAME, http://host/v1#model)")
    j.add_argument("--b", required=True, help="model B, as --a")
    j.add_argument("--prompts", required=True, help="data file of prompts (the last assistant turn, if any, is ignored)")
    j.add_argument("--judge", required=True, help="judge backend: local:NAME | http://host:port/v1#MODEL | openai:MODEL")
    j.add_argument("--mode", default="pairwise", choices=["pairwise", "single", "both"])
    j.add_argument("--judge-method", default="text", choices=["text", "logprobs"],
                   help="text: parse the judge's written verdict (any backend); logprobs: a local judge's probability "
                        "of each allowed verdict after a forced prefix (always parses; one forward pass per verdict)")
    j.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch for local models")
    j.add_argument("--save-answers", default=None, metavar="PREFIX",
                   help="write the answers of A and B to PREFIX.a.jsonl / PREFIX.b.jsonl (reusable as --a/--b)")
    j.add_argument("--max-tokens", type=int, default=256, help="answer length when generating answers")
    j.add_argument("--judge-max-tokens", type=int, default=512)
    j.add_argument("--limit", type=int, default=None, help="use the first N prompts")
    j.add_argument("--bootstrap", type=int, default=1000,
                   help="bootstrap resamples for the length-controlled win rate's 95%% CI (the other CIs use sftlab's "
                        "standard 1000-resample percentile bootstrap)")
    j.add_argument("--out", default=None, help="write the summary and every judgement as JSON here")
    j.set_defaults(func=run_judge_cmd)


def run_synth_cmd(args) -> int:
    from sftlab.synth.config import load_synth_config
    from sftlab.synth.run import run_synth

    report = run_synth(load_synth_config(args.config))
    print(report.summary())
    if args.report:
        Path(args.report).write_text(json.dumps(report.to_dict(), indent=1))
    return 0 if report.finished else 3


def run_judge_cmd(args) -> int:
    from sftlab.synth.compare import compare

    result = compare(args.a, args.b, args.prompts, args.judge, mode=args.mode, max_tokens=args.max_tokens,
                     judge_max_tokens=args.judge_max_tokens, limit=args.limit, n_boot=args.bootstrap,
                     method=args.judge_method, batch_size=args.batch_size, save_answers=args.save_answers)
    print(result["text"])
    if args.out:
        Path(args.out).write_text(json.dumps({k: v for k, v in result.items() if k != "text"}, indent=1, ensure_ascii=False))
        print(f"judgements written to {args.out}")
    return 0
