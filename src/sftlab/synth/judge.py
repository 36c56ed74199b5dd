"""Model judges: AlpaGasus-style 1-5 filtering, MT-Bench single-answer grading (1-10) and
pairwise comparison with both orders, win rates with bootstrap CIs and a length-controlled
win rate.

Pairwise: every prompt is judged twice, (A, B) and (B, A). A side wins only when both orders
agree; any disagreement (or a tie in either order) is a tie -- this cancels position bias.
Outcome per prompt: 1 = A wins, 0.5 = tie, 0 = B wins; win rate = mean outcome. Prompts where
either verdict could not be parsed are left out and counted.

Length control (AlpacaEval 2's idea, simplified): fit a logistic regression of the outcome on
x = tanh((len_A - len_B) / sd(len_A - len_B)) (characters), P(A) = sigmoid(b0 + b1 * x),
maximising the Bernoulli log-likelihood with the soft outcome (ties = 0.5) and a small L2
penalty (1e-3) so that all-wins data still has a finite fit. The length-controlled win rate is
sigmoid(b0): the predicted preference when both answers have the same length.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np

from sftlab.synth import prompts
from sftlab.synth.backends import ChatBackend
from sftlab.synth.config import SynthConfig
from sftlab.synth.report import SynthReport
from sftlab.synth.store import JsonlOutput, ProgressState, state_path

_NUM = r"(\d+(?:\.\d+)?)"


def parse_score(text: str, lo: float = 1, hi: float = 5) -> float | None:
    """A score in [lo, hi] from a judge's free text, trying the most explicit forms first:
    "[[4]]", "Score: 4", "Rating: 4", "4/5", "4 out of 5", then a lone number on the first line."""
    patterns = [
        r"\[\[\s*" + _NUM + r"\s*\]\]",
        r"\b(?:score|rating|grade)\s*(?:is|of|=|:)?\s*\**\s*\[?\s*" + _NUM,
        _NUM + r"\s*/\s*" + (str(int(hi)) if float(hi).is_integer() else str(hi)) + r"\b",
        _NUM + r"\s+out\s+of\s+" + str(int(hi)),
    ]
    for pat in patterns:
        for m in re.finditer(pat, text, re.IGNORECASE):
            v = float(m.group(1))
            if lo <= v <= hi:
                return v
    first = next((line for line in text.splitlines() if line.strip()), "")
    m = re.fullmatch(r"\W*" + _NUM + r"\W*", first.strip())
    if m and lo <= float(m.group(1)) <= hi:
        return float(m.group(1))
    return None


def parse_rating(text: str) -> float | None:
    """MT-Bench 1-10 rating: "Rating: [[7]]" (also [[7.5]], "Rating: 7", "7/10")."""
    return parse_score(text, 1, 10)


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'C' (tie) from "[[A]]"; falls back to "Assistant A is better" / "tie"."""
    found = re.findall(r"\[\[\s*([ABC])\s*\]\]", text)
    if found:
        return found[-1]  # the final verdict comes last
    low = text.lower()
    a = re.search(r"assistant a('s answer)? is (clearly )?better", low)
    b = re.search(r"assistant b('s answer)? is (clearly )?better", low)
    if a and not b:
        return "A"
    if b and not a:
        return "B"
    if re.search(r"\b(it'?s a tie|tie)\b", low) and not (a or b):
        return "C"
    return None


def question_text(messages: list[dict]) -> str:
    """What the judge sees as the question: the user message, or the whole prompt if multi-turn."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


# ---- AlpaGasus judge filtering ------------------------------------------------------------------


def run_judge_filter(cfg: SynthConfig, judge: ChatBackend) -> SynthReport:
    from sftlab.data import load_conversations

    jc = cfg.judge_filter
    out = JsonlOutput(cfg.output)
    rejects = JsonlOutput(jc.rejects or str(cfg.output) + ".rejected.jsonl")
    state = ProgressState(state_path(cfg.output))
    report = SynthReport("judge_filter", cfg.output, rows_resumed=len(out.rows), truncated_bytes=out.truncated_bytes)
    phash = prompts.prompt_hash(prompts.JUDGE_SCORE)
    convs = load_conversations(jc.input).conversations
    seen: set[str] = set()
    todo = []
    for c in convs:
        if c.id in seen:
            state.count("rejected", "duplicate_id_in_input")
            continue
        seen.add(c.id)
        if c.id not in out.ids and c.id not in rejects.ids:
            todo.append(c)
    try:
        for start in range(0, len(todo), jc.batch_size):
            batch = todo[start : start + jc.batch_size]
            asks = [[{"role": "user", "content": prompts.JUDGE_SCORE.format(
                instruction=question_text([m.to_dict() for m in c.prompt_messages]), response=c.last_response)}] for c in batch]
            results = judge.complete(asks, max_tokens=jc.max_tokens, temperature=0.0, seed=cfg.seed)
            for conv, res in zip(batch, results):
                if not res.ok:
                    state.count("rejected", "judge_call_failed")  # not written: the next run retries it
                    continue
                score = parse_score(res.text, 1, 5)
                lines = [ln.strip() for ln in res.text.strip().splitlines() if ln.strip()]
                reason = " ".join(lines[1:]) if len(lines) > 1 else res.text.strip()
                meta = {"judge_score": score, "judge_reason": reason[:2000], "judge": judge.name,
                        "judge_prompt_hash": phash, "judge_threshold": jc.threshold}
                row = conv.with_meta(**meta)
                if score is None:
                    state.count("rejected", "unparseable_score")
                    rejects.append(row.with_meta(judge_raw=res.text[:2000], rejected_because="unparseable_score"))
                elif score < jc.threshold:
                    state.count("rejected", f"score_below_{jc.threshold:g}")
                    rejects.append(row.with_meta(rejected_because="score_below_threshold"))
                else:
                    out.append(row)
                    report.rows_new += 1
            state.save_progress(judge)
    finally:
        out.close()
        rejects.close()
        state.save_progress(judge)
        report.fill(len(out.rows), state, judge)
        scores = [r["meta"]["judge_score"] for r in out.rows + rejects.rows if r["meta"].get("judge_score") is not None]
        if scores:
            hist = {f"{s:g}": scores.count(s) for s in sorted(set(scores))}
            report.note = f"score histogram: {hist}; {len(rejects.rows)} rows in {rejects.path}"
    return report


# ---- pairwise comparison ------------------------------------------------------------------------


@dataclass
class PairJudgement:
    id: str
    question: str
    answer_a: str
    answer_b: str
    verdict_ab: str | None  # A in the first slot
    verdict_ba: str | None  # B in the first slot, verdict in slot terms
    outcome: float | None  # 1 A wins, 0.5 tie, 0 B wins, None = unparsed/failed

    @property
    def len_diff(self) -> int:
        return len(self.answer_a) - len(self.answer_b)


def combine(verdict_ab: str | None, verdict_ba: str | None) -> float | None:
    """Both orders -> one outcome for A. A win needs both orders to agree."""
    if verdict_ab is None or verdict_ba is None:
        return None
    first = {"A": 1.0, "B": 0.0, "C": 0.5}[verdict_ab]
    second = {"A": 0.0, "B": 1.0, "C": 0.5}[verdict_ba]  # slot A holds model B in this order
    return first if first == second and first != 0.5 else 0.5


def judge_pairs(judge: ChatBackend, items: list[tuple[str, list[dict], str, str]], max_tokens: int = 512) -> list[PairJudgement]:
    """items: (id, prompt messages, answer of A, answer of B)."""
    asks = []
    for _, msgs, a, b in items:
        q = question_text(msgs)
        asks.append([{"role": "user", "content": prompts.JUDGE_PAIR.format(question=q, answer_a=a, answer_b=b)}])
        asks.append([{"role": "user", "content": prompts.JUDGE_PAIR.format(question=q, answer_a=b, answer_b=a)}])
    res = judge.complete(asks, max_tokens=max_tokens, temperature=0.0, seed=0)
    out = []
    for k, (pid, msgs, a, b) in enumerate(items):
        r1, r2 = res[2 * k], res[2 * k + 1]
        v1 = parse_verdict(r1.text) if r1.ok else None
        v2 = parse_verdict(r2.text) if r2.ok else None
        out.append(PairJudgement(pid, question_text(msgs), a, b, v1, v2, combine(v1, v2)))
    return out


def bootstrap_ci(values, stat=np.mean, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap over prompts (resampled with replacement)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    stats = [stat(values[rng.integers(0, len(values), len(values))]) for _ in range(n_boot)]
    return (float(np.quantile(stats, alpha / 2)), float(np.quantile(stats, 1 - alpha / 2)))


def _lc_fit(y: np.ndarray, x: np.ndarray, l2: float = 1e-3) -> float:
    from scipy.optimize import minimize

    def nll(theta):
        z = theta[0] + theta[1] * x
        # log(1 + e^z) computed stably; soft labels y in [0, 1]
        return float(np.sum(np.logaddexp(0, z) - y * z) / len(y) + l2 * (theta @ theta))

    theta = minimize(nll, np.zeros(2), method="L-BFGS-B").x
    return float(1 / (1 + math.exp(-theta[0])))


def length_controlled_win_rate(outcomes, len_diffs) -> float:
    y = np.asarray(outcomes, dtype=float)
    d = np.asarray(len_diffs, dtype=float)
    sd = d.std()
    x = np.tanh(d / sd) if sd > 0 else np.zeros_like(d)
    return _lc_fit(y, x)


def pairwise_summary(judgements: list[PairJudgement], n_boot: int = 1000, seed: int = 0) -> dict:
    valid = [j for j in judgements if j.outcome is not None]
    y = np.array([j.outcome for j in valid])
    d = np.array([j.len_diff for j in valid], dtype=float)
    out = {"n_prompts": len(judgements), "n_valid": len(valid), "n_unparsed_or_failed": len(judgements) - len(valid),
           "wins_a": int((y == 1).sum()), "wins_b": int((y == 0).sum()), "ties": int((y == 0.5).sum())}
    if not valid:
        return {**out, "win_rate_a": None, "win_rate_a_ci95": None, "lc_win_rate_a": None, "lc_win_rate_a_ci95": None}
    out["win_rate_a"] = float(y.mean())
    out["win_rate_a_ci95"] = bootstrap_ci(y, n_boot=n_boot, seed=seed)
    out["lc_win_rate_a"] = length_controlled_win_rate(y, d)
    idx = np.arange(len(y))
    # LC refits per resample are ~1 ms each; 200 resamples keep this well under a second
    out["lc_win_rate_a_ci95"] = bootstrap_ci(idx, stat=lambda ii: length_controlled_win_rate(y[ii.astype(int)], d[ii.astype(int)]),
                                            n_boot=min(n_boot, 200), seed=seed)
    out["mean_len_a"] = float(np.mean([len(j.answer_a) for j in valid]))
    out["mean_len_b"] = float(np.mean([len(j.answer_b) for j in valid]))
    return out


# ---- single-answer grading (MT-Bench) -----------------------------------------------------------


def grade_single(judge: ChatBackend, items: list[tuple[str, list[dict], str]], max_tokens: int = 512) -> list[float | None]:
    """items: (id, prompt messages, answer) -> rating 1-10, None when the verdict is unreadable."""
    asks = [[{"role": "user", "content": prompts.JUDGE_SINGLE.format(question=question_text(m), answer=a)}] for _, m, a in items]
    return [parse_rating(r.text) if r.ok else None for r in judge.complete(asks, max_tokens=max_tokens, temperature=0.0, seed=0)]


def single_summary(ratings: list[float | None], n_boot: int = 1000, seed: int = 0) -> dict:
    valid = [r for r in ratings if r is not None]
    return {"n": len(ratings), "n_valid": len(valid), "mean": float(np.mean(valid)) if valid else None,
            "ci95": bootstrap_ci(valid, n_boot=n_boot, seed=seed) if valid else None}


def judgement_rows(judgements: list[PairJudgement]) -> list[dict]:
    return [asdict(j) | {"len_diff": j.len_diff} for j in judgements]


__all__ = ["PairJudgement", "bootstrap_ci", "combine", "grade_single", "judge_pairs", "judgement_rows",
           "length_controlled_win_rate", "pairwise_summary", "parse_rating", "parse_score", "parse_verdict",
           "run_judge_filter", "single_summary"]
