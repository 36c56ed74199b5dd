"""Evaluation: base vs tuned on perplexity, built-in tasks and IFEval, with bootstrap CIs.

Public API (imported lazily: `import sftlab.evaluate.ifeval` must not pull in torch):
    evaluate_models(models, ...) -> EvalReport      report.summary_table(), .to_json(), .examples(n)
    write_report_html(report, path, metrics_jsonl=None)
    EndpointGenerator(base_url, model, api_key)     answers from an OpenAI-compatible server
    decontaminate(train, eval_items, n=8)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "evaluate_models": "sftlab.evaluate.runner",
    "Candidate": "sftlab.evaluate.runner",
    "EvalReport": "sftlab.evaluate.results",
    "write_report_html": "sftlab.evaluate.html_report",
    "EndpointGenerator": "sftlab.evaluate.generators",
    "LocalGenerator": "sftlab.evaluate.generators",
    "decontaminate": "sftlab.evaluate.decontam",
    "example_losses": "sftlab.evaluate.perplexity",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sftlab.evaluate' has no attribute {name!r}")
