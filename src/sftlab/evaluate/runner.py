"""evaluate_models: base vs tuned on perplexity, built-in tasks and IFEval, with CIs.

    report = evaluate_models({"base": (base_model, tok), "tuned": (tuned_model, tok)})
    print(report.summary_table())
    write_report_html(report, "out/report.html", metrics_jsonl="runs/x/metrics.jsonl")

A model entry is (model, tokenizer), or a Candidate with a `generator` (e.g. EndpointGenerator)
that answers prompts instead of the in-process model; a Candidate without a model skips the
perplexities (an endpoint gives no token losses) and says so in the report notes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sftlab.conversation import Conversation
from sftlab.errors import ConfigError
from sftlab.evaluate.decontam import decontaminate
from sftlab.evaluate.generators import EndpointGenerator, LocalGenerator
from sftlab.evaluate.perplexity import example_losses, text_rows
from sftlab.evaluate.results import EvalReport, GenerationSet
from sftlab.generate import SamplingParams

TASK_MAX_NEW_TOKENS = 32  # built-in task answers are a word or a short list
TASK_SUITES = ("tasks", "flan")
# flan.mixture.eval_split -> the report's split label (GenerationSet.splits)
FLAN_SPLIT_LABELS = {"seen": "seen", "heldout": "held-out", "heldout_cluster": "held-out-cluster",
                     "untrained_cluster": "untrained-cluster"}
IFEVAL_MAX_NEW_TOKENS = 256  # long enough for "write at least 3 paragraphs"-style constraints


@dataclass
class Candidate:
    model: Any = None  # scored for perplexity; generates when `generator` is None
    tokenizer: Any = None
    generator: Any = None  # anything with generate_batch(prompts, params, batch_size, progress)


def _as_candidate(name: str, entry) -> Candidate:
    if isinstance(entry, Candidate):
        c = entry
    elif isinstance(entry, EndpointGenerator):
        c = Candidate(generator=entry)
    elif isinstance(entry, tuple) and len(entry) == 2:
        c = Candidate(model=entry[0], tokenizer=entry[1])
    else:
        raise TypeError(f"models[{name!r}] must be (model, tokenizer), a Candidate or an EndpointGenerator; got {type(entry).__name__}")
    if c.generator is None:
        if c.model is None or c.tokenizer is None:
            raise TypeError(f"models[{name!r}] needs a model and tokenizer, or a generator")
        from sftlab.render import Renderer

        c.generator = LocalGenerator(c.model, Renderer(c.tokenizer))
    return c


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[eval] {msg}", flush=True)


def evaluate_models(
    models: dict[str, Any],
    *,
    eval_conversations: list[Conversation] | None = None,
    general_text: list[str] | None = None,
    task_eval: bool = True,
    ifeval: bool = True,
    max_task_examples_per_family: int | dict[str, int] | None = None,
    max_ifeval_prompts: int | None = None,
    ifeval_prompts: list | None = None,
    batch_size: int = 16,
    train_conversations: list[Conversation] | str | None = None,
    task_max_new_tokens: int = TASK_MAX_NEW_TOKENS,
    ifeval_max_new_tokens: int = IFEVAL_MAX_NEW_TOKENS,
    perplexity: bool = True,
    ppl_token_budget: int = 2048,
    decontam_ngram: int = 8,
    progress: bool = True,
    task_suite: str = "tasks",
    trained_clusters: list[str] | None = None,
) -> EvalReport:
    """Evaluate every model on the same data; the first model is the baseline for differences.

    eval_conversations: held-out instruction data for response perplexity (default: the
        built-in suite's eval split). general_text: documents for general-text perplexity
        (default: sftlab.builtin.tasks.load_general_text()).
    train_conversations: conversations or a data path; eval prompts sharing a word n-gram
        (decontam_ngram) with them are counted and listed.
    ifeval_prompts: IFEvalPrompt list (default: ifeval.load_prompts(), the built-in set).
    max_task_examples_per_family: one cap for every family, or a cap per split ({"seen": 3, "heldout": 16,
        "heldout_cluster": 6}; a split not named is not capped).
    task_suite: "tasks" (the 24-family suite's eval split) or "flan" (the FLAN-style mixture's eval set,
        sftlab.builtin.flan.mixture.build_eval, seed 0: accuracy by split, cluster and family); it is also
        the default response-perplexity data. trained_clusters (flan only): the clusters the tuned model
        trained on, when a subset; families of the other trainable clusters then form their own group
        ("clusters not trained") beside the held-out clusters (default: every cluster not held out).
    """
    if not models:
        raise ValueError("evaluate_models needs at least one model")
    if task_suite not in TASK_SUITES:
        raise ConfigError(f"task_suite {task_suite!r}; fix: one of {TASK_SUITES}")
    if trained_clusters is not None:
        if task_suite != "flan":
            raise ConfigError("trained_clusters names clusters of the flan suite; fix: use the flan suite (--tasks flan) or drop it")
        from sftlab.builtin.flan.mixture import FlanMixture
        from sftlab.builtin.flan.mixture import trained_clusters as checked

        try:  # unknown or held-out clusters, an empty list: the mixture's own checks
            trained_clusters = list(checked(FlanMixture(clusters=list(trained_clusters))))
        except ValueError as e:  # pydantic's ValidationError is one
            raise ConfigError(f"trained_clusters: {e}") from e
    cands = {name: _as_candidate(name, e) for name, e in models.items()}
    names = list(cands)
    report = EvalReport(
        models=names,
        settings={
            "baseline": names[0],
            "task_max_new_tokens": task_max_new_tokens,
            "ifeval_max_new_tokens": ifeval_max_new_tokens,
            "decoding": "greedy",
            "batch_size": batch_size,
            "bootstrap": "percentile, 1000 resamples, seed 0, 95%; diffs paired on the same prompts",
            "generation": {n: getattr(c.generator, "describe", lambda g=c.generator: type(g).__name__)() for n, c in cands.items()},
            "max_task_examples_per_family": max_task_examples_per_family,
            "max_ifeval_prompts": max_ifeval_prompts,
            "task_suite": task_suite,
            "trained_clusters": trained_clusters,
        },
    )

    # ---- perplexities ---------------------------------------------------------------------------
    if perplexity and not any(c.model is not None for c in cands.values()):
        report.notes.append("no model has local weights (endpoints only): perplexities not computed")
    elif perplexity:
        t0 = time.time()
        if eval_conversations is None:
            eval_conversations = suite_eval_set(task_suite)
            report.settings["response_ppl_data"] = f"built-in {task_suite} suite, eval split ({len(eval_conversations)} conversations)"
        else:
            report.settings["response_ppl_data"] = f"{len(eval_conversations)} given conversations"
        if general_text is None:
            from sftlab.builtin.tasks import load_general_text

            general_text = load_general_text()
            report.settings["general_ppl_data"] = f"built-in general text ({len(general_text)} documents)"
        else:
            report.settings["general_ppl_data"] = f"{len(general_text)} given documents"
        general_rows = text_rows(general_text)
        for name, c in cands.items():
            if c.model is None:
                report.notes.append(f"{name}: no local weights (endpoint only), perplexities not computed")
                report.perplexity[name] = {"response": None, "general": None}
                continue
            from sftlab.render import Renderer

            rd = c.generator.renderer if isinstance(c.generator, LocalGenerator) else Renderer(c.tokenizer)
            _log(progress, f"{name}: response perplexity on {len(eval_conversations)} conversations")
            resp = example_losses(c.model, rd, eval_conversations, ppl_token_budget, progress) if eval_conversations else None
            _log(progress, f"{name}: general-text perplexity on {len(general_rows)} documents")
            gen = example_losses(c.model, rd, general_rows, ppl_token_budget, progress) if general_rows else None
            report.perplexity[name] = {"response": resp, "general": gen}
            for kind, el in (("response", resp), ("general-text", gen)):
                if el is not None and (el.truncated or el.skipped):
                    report.notes.append(
                        f"{name} {kind} PPL: {el.truncated} example(s) truncated to the context, "
                        f"{len(el.skipped)} skipped with nothing to score: {el.skipped[:5]}"
                    )
        report.timings_s["perplexity"] = time.time() - t0

    # ---- built-in tasks -----------------------------------------------------------------------
    if task_eval:
        t0 = time.time()
        report.tasks = _task_set(max_task_examples_per_family, task_max_new_tokens, report, task_suite, trained_clusters)
        _generate_all(report.tasks, cands, batch_size, progress)
        from sftlab.builtin.grading import check_answer

        convs = report.tasks.conversations
        for name in names:
            report.tasks.passed[name] = [bool(check_answer(c, a)) for c, a in zip(convs, report.tasks.answers[name])]
        report.timings_s["tasks"] = time.time() - t0

    # ---- IFEval ----------------------------------------------------------------------------------
    if ifeval:
        t0 = time.time()
        from sftlab.evaluate import ifeval as ife

        prompts = list(ifeval_prompts) if ifeval_prompts is not None else ife.load_prompts()
        total = len(prompts)
        if max_ifeval_prompts is not None and max_ifeval_prompts < total:
            prompts = prompts[:max_ifeval_prompts]
            report.notes.append(f"IFEval: first {len(prompts)} of {total} prompts evaluated (max_ifeval_prompts)")
        report.ifeval = _ifeval_set(prompts, ifeval_max_new_tokens)
        _generate_all(report.ifeval, cands, batch_size, progress)
        for name in names:
            result = ife.evaluate_responses(prompts, report.ifeval.answers[name])
            _record_ifeval(report, name, result)
        report.timings_s["ifeval"] = time.time() - t0

    # ---- decontamination ----------------------------------------------------------------------
    if train_conversations is not None:
        train = _load_train(train_conversations)
        items = []
        for gs in (report.tasks, report.ifeval):
            if gs is None:
                continue
            for i, pid in enumerate(gs.ids):
                text = "\n".join(m["content"] for m in gs.prompts[i])
                items.append((pid, gs.name, gs.conversations[i] if gs.conversations else text))
        if eval_conversations:
            items += [(c.id, c.source or "eval data", c) for c in eval_conversations]
        # one entry per distinct id: the task eval split and the perplexity data are often the same
        unique = list({pid: (pid, where, item) for pid, where, item in reversed(items)}.values())
        report.decontam = decontaminate(train, unique, n=decontam_ngram)
        _log(progress, report.decontam.summary())
    return report


def suite_eval_set(suite: str) -> list[Conversation]:
    """The eval split of a built-in task suite, seed 0."""
    if suite == "flan":
        from sftlab.builtin.flan.mixture import build_eval

        return build_eval()
    from sftlab.builtin.tasks import train_eval_split

    return train_eval_split(seed=0)[1]


def _splits(convs: list[Conversation], suite: str, trained_clusters: list[str] | None) -> list[str]:
    """The report's split label per prompt (GenerationSet.splits): "seen", "held-out" (a held-out family;
    flan: of a trained cluster), flan only: "held-out-cluster", "untrained-cluster"."""
    families = [str(c.meta.get("family", "")) for c in convs]
    if suite == "flan":
        from sftlab.builtin.flan.mixture import eval_split

        return [FLAN_SPLIT_LABELS[eval_split(f, trained_clusters)] for f in families]
    from sftlab.builtin import tasks as bt

    seen, held = set(bt.SEEN_FAMILIES), set(bt.HELDOUT_FAMILIES)
    return ["seen" if f in seen else "held-out" if f in held else "" for f in families]


def _task_set(max_per_family: int | dict[str, int] | None, max_new_tokens: int, report: EvalReport, suite: str = "tasks",
              trained_clusters: list[str] | None = None) -> GenerationSet:
    """max_per_family: one cap for every family, or a cap per split meta value ({"seen": 3, "heldout": 16, ...};
    a split it does not name is not capped)."""
    evaluation = suite_eval_set(suite)
    per_family: dict[str, int] = {}
    convs, capped = [], 0
    for c in evaluation:
        fam = str(c.meta.get("family", ""))
        cap = max_per_family.get(str(c.meta.get("split", ""))) if isinstance(max_per_family, dict) else max_per_family
        if cap is not None and per_family.get(fam, 0) >= cap:
            capped += 1
            continue
        per_family[fam] = per_family.get(fam, 0) + 1
        convs.append(c)
    if capped:
        report.notes.append(
            f"tasks: {len(convs)} of {len(evaluation)} eval prompts used ({max_per_family} per family, max_task_examples_per_family)"
        )
    gs = GenerationSet(
        name="tasks",
        ids=[c.id for c in convs],
        prompts=[list(m.to_dict() for m in c.prompt_messages) for c in convs],
        gold=[c.last_response for c in convs],
        groups=[str(c.meta.get("family", "")) for c in convs],
        splits=_splits(convs, suite, trained_clusters),
        max_new_tokens=max_new_tokens,
    )
    gs.conversations = convs
    if suite == "flan":
        gs.clusters = [str(c.meta.get("cluster", "")) for c in convs]
    return gs


def _ifeval_set(prompts: list, max_new_tokens: int) -> GenerationSet:
    """prompts: sftlab.evaluate.ifeval.IFEvalPrompt (id, prompt, constraints)."""
    gs = GenerationSet(
        name="ifeval",
        ids=[p.id for p in prompts],
        prompts=[[{"role": "user", "content": p.prompt}] for p in prompts],
        gold=["" for _ in prompts],
        groups=["" for _ in prompts],
        splits=["" for _ in prompts],
        max_new_tokens=max_new_tokens,
    )
    gs.instruction_ids = [[cid for cid, _ in p.constraints] for p in prompts]
    return gs


def _record_ifeval(report: EvalReport, name: str, result) -> None:
    """Per-prompt verdicts from ifeval.evaluate_responses (IFEvalResult.details), for CIs and
    paired diffs; ifeval.py's own aggregate numbers are kept as given."""
    gs = report.ifeval
    assert gs is not None
    rows = result.details
    gs.passed[name] = [all(r.strict) for r in rows]
    gs.passed_loose[name] = [all(r.loose) for r in rows]
    gs.instructions[name] = [(sum(r.strict), len(r.strict)) for r in rows]
    gs.instructions_loose[name] = [(sum(r.loose), len(r.loose)) for r in rows]
    gs.instruction_passed[name] = [list(map(bool, r.strict)) for r in rows]
    report.ifeval_results[name] = {
        "n_prompts": result.n_prompts,
        "n_instructions": result.n_instructions,
        "prompt_strict": result.prompt_strict,
        "prompt_loose": result.prompt_loose,
        "instruction_strict": result.instruction_strict,
        "instruction_loose": result.instruction_loose,
        "per_constraint": result.per_constraint,
    }


def _generate_all(gs: GenerationSet, cands: dict[str, Candidate], batch_size: int, progress: bool) -> None:
    params = SamplingParams(max_new_tokens=gs.max_new_tokens, temperature=0.0)
    for name, c in cands.items():
        _log(progress, f"{name}: generating {len(gs.prompts)} {gs.name} answers (max_new_tokens={gs.max_new_tokens})")
        answers = c.generator.generate_batch(gs.prompts, params, batch_size=batch_size, progress=progress)
        if len(answers) != len(gs.prompts):
            raise RuntimeError(f"{name}: {len(answers)} answers for {len(gs.prompts)} prompts")
        gs.answers[name] = answers


def _load_train(train: list[Conversation] | str) -> list[Conversation]:
    if not isinstance(train, str):
        return list(train)
    from sftlab.data.config import DataSourceConfig
    from sftlab.prepare import load_source

    convs, _ = load_source(DataSourceConfig(path=train), on_error="raise")
    return convs
