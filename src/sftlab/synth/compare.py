"""`sftlab judge`: answers of A and B (from files or generated) judged pairwise and/or graded."""

from __future__ import annotations

from pathlib import Path

from sftlab.errors import ConfigError, DataError, Problem
from sftlab.synth import judge as J
from sftlab.synth.backends import ChatBackend, LocalBackend, backend_from_spec

ANSWER_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def load_prompts(path: str, limit: int | None = None) -> list[tuple[str, list[dict]]]:
    from sftlab.data import load_conversations

    convs = load_conversations(path, require_response=False, limit=limit).conversations
    return [(c.id, [m.to_dict() for m in c.prompt_messages]) for c in convs]


def answers_for(source: str, prompts: list[tuple[str, list[dict]]], max_tokens: int, label: str,
                batch_size: int = 8) -> tuple[list[str], str]:
    """Answers to `prompts`: read from a file (matched by id, else by prompt text) or generated."""
    p = Path(source)
    if p.suffix in ANSWER_SUFFIXES and p.is_file():
        from sftlab.data import load_conversations

        convs = load_conversations(source).conversations
        by_id = {c.id: c.last_response for c in convs}
        by_prompt = {J.question_text([m.to_dict() for m in c.prompt_messages]): c.last_response for c in convs}
        out, missing = [], []
        for pid, msgs in prompts:
            ans = by_id.get(pid, by_prompt.get(J.question_text(msgs)))
            if ans is None:
                missing.append(pid)
            out.append(ans)
        if missing:
            raise DataError([Problem(source, "id", f"no answer for prompt id {m!r} (matched by id, then by prompt text)",
                                     f"give answers for every prompt of --prompts, or generate them with --{label} MODEL") for m in missing])
        return out, f"answers file {source}"
    backend: ChatBackend = backend_from_spec(source, batch_size=batch_size) \
        if source.startswith(("local:", "http://", "https://", "openai:")) else LocalBackend(source, batch_size=batch_size)
    results = backend.complete([m for _, m in prompts], max_tokens=max_tokens, temperature=0.0, seed=0)
    failed = [pid for (pid, _), r in zip(prompts, results) if not r.ok]
    if failed:
        raise DataError([Problem(source, "answer", f"generating the answer to {pid!r} failed", "check the model server")
                         for pid in failed], header=f"{len(failed)} of {len(prompts)} answers of model {label.upper()} failed:")
    return [r.text for r in results], backend.name


def compare(a: str, b: str, prompts_path: str, judge_spec: str, *, mode: str = "pairwise", max_tokens: int = 256,
            judge_max_tokens: int = 512, limit: int | None = None, n_boot: int = 1000, method: str = "text",
            batch_size: int = 8, save_answers: str | None = None) -> dict:
    """Answers of A and B (read or generated), judged; `text` the printable summary. With
    save_answers, generated answers are written as ANSWERS.a.jsonl / ANSWERS.b.jsonl so a later
    call (another judge method, say) can reuse them instead of generating again."""
    prompts = load_prompts(prompts_path, limit)
    judge = backend_from_spec(judge_spec, batch_size=batch_size)
    if method == "logprobs" and not isinstance(judge, LocalBackend):  # refuse before minutes of answer generation
        raise ConfigError(f"--judge {judge_spec}: --judge-method logprobs needs a local judge (local:NAME); an HTTP "
                          "server cannot score a forced answer prefix -- use --judge-method text")
    ans_a, name_a = answers_for(a, prompts, max_tokens, "a", batch_size)
    ans_b, name_b = answers_for(b, prompts, max_tokens, "b", batch_size)
    if save_answers:
        for tag, answers in (("a", ans_a), ("b", ans_b)):
            _write_answers(f"{save_answers}.{tag}.jsonl", prompts, answers)
    result: dict = {"a": name_a, "b": name_b, "judge": judge.name, "judge_method": method, "n_prompts": len(prompts)}
    lines = [f"A = {name_a}\nB = {name_b}\njudge = {judge.name} (method {method}), {len(prompts)} prompts"]
    if mode in ("pairwise", "both"):
        js = J.judge_pairs(judge, [(pid, m, x, y) for (pid, m), x, y in zip(prompts, ans_a, ans_b)], judge_max_tokens, method)
        s = J.pairwise_summary(js, n_boot=n_boot)
        result["pairwise"], result["judgements"] = s, J.judgement_rows(js)
        lines.append(f"pairwise (both orders; a win needs both to agree): A wins {s['wins_a']}, B wins {s['wins_b']}, "
                     f"ties {s['ties']}, unparsed/failed {s['n_unparsed_or_failed']}")
        first = f", {s['verdicts_first_slot']} of them for the first slot" if s["verdicts_parsed"] else ""
        lines.append(f"  verdicts parsed {s['verdicts_parsed']}/{s['verdicts']}{first}, {s['verdicts_tie']} ties")
        if s["win_rate_a"] is not None:
            lines.append(f"  win rate of A: {s['win_rate_a']:.3f} (95% CI {_fmt_ci(s['win_rate_a_ci95'])})")
            lines.append(f"  length-controlled win rate of A: {s['lc_win_rate_a']:.3f} (95% CI {_fmt_ci(s['lc_win_rate_a_ci95'])}); "
                         f"mean answer length A {s['mean_len_a']:.0f} chars, B {s['mean_len_b']:.0f}")
        if "soft_win_rate_a" in s:
            lines.append(f"  soft win rate of A (expected outcome, both orders averaged): {s['soft_win_rate_a']:.3f} "
                         f"(95% CI {_fmt_ci(s['soft_win_rate_a_ci95'])}); judge probability on [[A]]/[[B]]/[[C]]: "
                         f"mean {s['mean_mass']:.2f}")
    if mode in ("single", "both"):
        ra, ma = J.grade_single(judge, [(pid, m, x) for (pid, m), x in zip(prompts, ans_a)], judge_max_tokens, method)
        rb, mb = J.grade_single(judge, [(pid, m, x) for (pid, m), x in zip(prompts, ans_b)], judge_max_tokens, method)
        sa, sb = J.single_summary(ra, masses=ma), J.single_summary(rb, masses=mb)
        result["single"] = {"a": sa, "b": sb, "ratings_a": ra, "ratings_b": rb}
        for name, s in (("A", sa), ("B", sb)):
            mean = "n/a" if s["mean"] is None else f"{s['mean']:.2f} (95% CI {_fmt_ci(s['ci95'])})"
            mass = f"; judge probability on the ten ratings: mean {s['mean_mass']:.2f}" if "mean_mass" in s else ""
            lines.append(f"single-answer rating 1-10 of {name}: {mean}, {s['n_valid']}/{s['n']} ratings parsed{mass}")
    lines.append(f"judge calls: {judge.stats.summary()}")
    result["judge_calls"] = judge.stats.to_dict()
    result["text"] = "\n".join(lines)
    return result


def _fmt_ci(ci) -> str:
    return "n/a" if ci is None else f"{ci[0]:.3f}-{ci[1]:.3f}"


def _write_answers(path: str, prompts: list[tuple[str, list[dict]]], answers: list[str]) -> None:
    import json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for (pid, msgs), ans in zip(prompts, answers):
            f.write(json.dumps({"id": pid, "messages": msgs + [{"role": "assistant", "content": ans}]}, ensure_ascii=False) + "\n")
