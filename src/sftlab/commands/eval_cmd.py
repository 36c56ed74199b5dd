"""`sftlab eval --base MODEL --tuned MODEL [--tuned MODEL2 ...]`: report.html + report.json + a table."""

from __future__ import annotations

import json
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("eval", help="compare a base and tuned model(s): perplexity, tasks, IFEval, with 95%% CIs")
    p.add_argument("--base", required=True, help="baseline model: hub id, folder, .gguf, adapter folder or smollm2-135m-instruct")
    p.add_argument("--tuned", action="append", required=True, help="tuned model (repeat for several)")
    p.add_argument("--data", help="held-out instruction data for response perplexity (default: the eval split of the --tasks suite)")
    p.add_argument("--general-text", help="plain-text file for general-text perplexity, documents separated by blank lines "
                   "(default: the built-in general text)")
    p.add_argument("--train-data", help="training data to check the eval prompts against (n-gram decontamination)")
    p.add_argument("--out", default="eval_out", help="output folder for report.html and report.json (default: eval_out)")
    p.add_argument("--metrics", help="a run's metrics.jsonl: plot its training loss curve in the report")
    p.add_argument("--no-ifeval", action="store_true", help="skip verifiable instruction following")
    p.add_argument("--no-tasks", action="store_true", help="skip the built-in task suite")
    p.add_argument("--tasks", choices=("tasks", "flan"), default="tasks",
                   help="which built-in task suite: tasks (24 families, seen/held-out) or flan (the FLAN-style mixture's "
                   "eval set: seen families, held-out families, held-out clusters, per cluster); default tasks")
    p.add_argument("--trained-clusters", help="with --tasks flan: comma-separated clusters the tuned model trained on, "
                   "when a subset; the other trainable clusters are then reported as not trained (default: all but the held-out ones)")
    p.add_argument("--no-perplexity", action="store_true", help="skip perplexities (e.g. endpoint-only models)")
    p.add_argument("--max-per-family", type=int, help="at most this many task prompts per family")
    p.add_argument("--max-ifeval", type=int, help="at most this many IFEval prompts")
    p.add_argument("--task-max-new-tokens", type=int, default=32)
    p.add_argument("--ifeval-max-new-tokens", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--ngram", type=int, default=8, help="decontamination n-gram size in words (default 8)")
    p.add_argument("--endpoint", help="generate via an OpenAI-compatible server at this URL (e.g. http://127.0.0.1:8000/v1); "
                   "each model's name is sent as the request's model (env SFTLAB_ENDPOINT_URL)")
    p.add_argument("--api-key", help="endpoint API key (default: env SFTLAB_API_KEY or OPENAI_API_KEY)")
    p.add_argument("--endpoint-concurrency", type=int, default=8)
    p.add_argument("--endpoint-timeout", type=float, default=120.0)
    p.add_argument("--examples", type=int, default=3, help="side-by-side examples printed after the table")
    p.set_defaults(func=run)


def run(args) -> int:
    from sftlab.evaluate.generators import EndpointGenerator
    from sftlab.evaluate.html_report import write_report_html
    from sftlab.evaluate.runner import Candidate, evaluate_models

    names = [args.base, *args.tuned]
    labels = _labels(names)
    models = {}
    for label, name in zip(labels, names):
        model = tok = gen = None
        if not args.no_perplexity or not args.endpoint:
            from sftlab.model import load_model, load_tokenizer

            print(f"loading {label}: {name}", flush=True)
            model, tok = load_model(name, merge_adapter=True), load_tokenizer(name)
        if args.endpoint:
            gen = EndpointGenerator(args.endpoint, name, args.api_key, concurrency=args.endpoint_concurrency, timeout_s=args.endpoint_timeout)
        models[label] = Candidate(model=model, tokenizer=tok, generator=gen)
    eval_convs = None
    if args.data:
        from sftlab.data.config import DataSourceConfig
        from sftlab.prepare import load_source

        eval_convs, note = load_source(DataSourceConfig(path=args.data), on_error="raise")
        print(note)
    general = _read_documents(args.general_text) if args.general_text else None
    report = evaluate_models(
        models,
        eval_conversations=eval_convs,
        general_text=general,
        task_eval=not args.no_tasks,
        ifeval=not args.no_ifeval,
        perplexity=not args.no_perplexity,
        max_task_examples_per_family=args.max_per_family,
        max_ifeval_prompts=args.max_ifeval,
        batch_size=args.batch_size,
        train_conversations=args.train_data,
        task_max_new_tokens=args.task_max_new_tokens,
        ifeval_max_new_tokens=args.ifeval_max_new_tokens,
        decontam_ngram=args.ngram,
        task_suite=args.tasks,
        trained_clusters=[c.strip() for c in args.trained_clusters.split(",") if c.strip()] if args.trained_clusters else None,
    )
    report.settings["models"] = dict(zip(labels, names))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=1, ensure_ascii=False), encoding="utf-8")
    html_path = write_report_html(report, out / "report.html", metrics_jsonl=args.metrics)
    print(report.summary_table())
    if args.examples:
        print("\n" + report.format_examples(args.examples))
    print(f"\nwrote {html_path} and {out / 'report.json'}")
    return 0


def _labels(names: list[str]) -> list[str]:
    """'base', 'tuned' (or 'tuned1', 'tuned2', ... when several): short column names."""
    tuned = ["tuned"] if len(names) == 2 else [f"tuned{i}" for i in range(1, len(names))]
    return ["base", *tuned]


def _read_documents(path: str) -> list[str]:
    """Documents separated by blank lines; a file with none is an error, not an empty metric."""
    from sftlab.errors import DataError, Problem

    p = Path(path)
    if not p.is_file():
        raise DataError(Problem(path, "--general-text", "file not found", "give a UTF-8 text file"))
    docs = [d.strip() for d in p.read_text(encoding="utf-8").split("\n\n") if d.strip()]
    if not docs:
        raise DataError(Problem(path, "--general-text", "no text in the file", "separate documents by blank lines"))
    return docs
