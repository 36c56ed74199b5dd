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

Two ways to get a verdict (`method`):
- "text": the judge writes free text and the verdict is parsed from it (any backend). Unparsed
  verdicts are counted and reported as the parse rate.
- "logprobs": a local judge's probability of each allowed answer after a forced prefix ("Score: ",
  "[[", "Rating: [[") -- synth/choices.py. Always gives a verdict (no parsing); scores and ratings
  are probability-weighted (G-Eval), and each judgement records the probability mass the judge
  put on the allowed answers. Pairwise judgements also get a soft outcome: the expected outcome
  for A in each order (P(A wins) + P(tie)/2) averaged over the two orders.

Confidence intervals of means (win rates, ratings) come from sftlab.evaluate.bootstrap.mean_ci,
the same percentile bootstrap as every other number in sftlab; the length-controlled win rate's
interval refits the model on paired resamples (scipy.stats.bootstrap).
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from sftlab.synth import prompts
from sftlab.evaluate.bootstrap import mean_ci
from sftlab.synth.backends import ChatBackend
from sftlab.synth.config import SynthConfig
from sftlab.synth.report import SynthReport
from sftlab.synth.store import JsonlOutput, ProgressState, state_path

_NUM = r"(\d+(?:\.\d+)?)"

Method = Literal["text", "logprobs"]
SCORES_1_5 = ["1", "2", "3", "4", "5"]
RATINGS_1_10 = [str(i) for i in range(1, 11)]


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


# The judge prompts' own format examples: a judge that repeats them has not given a verdict, so they
# are cut out before parsing (a small judge often echoes its instructions).
_ECHOES = re.compile("|".join(re.escape(e) for e in (
    '"[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie',
    'for example: "Rating: [[5]]"')), re.IGNORECASE)


def parse_rating(text: str) -> float | None:
    """MT-Bench 1-10 rating: "Rating: [[7]]" (also [[7.5]], "Rating: 7", "7/10")."""
    return parse_score(_ECHOES.sub(" ", text), 1, 10)


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'C' (tie) from "[[A]]" (the last one: the final verdict comes last); falls back
    to "Assistant A is better" / "it's a tie". Not a verdict: a text holding all three of [[A]],
    [[B]], [[C]] (the judge echoing the format instruction), and a negated tie ("The answer is not
    a tie." -- SmolLM2-135M writes this; matching "tie" alone would read it as a tie)."""
    text = _ECHOES.sub(" ", text)
    found = re.findall(r"\[\[\s*([ABC])\s*\]\]", text)
    if found:
        return None if set(found) == {"A", "B", "C"} else found[-1]
    low = text.lower()
    a = re.search(r"assistant a('s answer)? is (clearly )?better", low)
    b = re.search(r"assistant b('s answer)? is (clearly )?better", low)
    if a and not b:
        return "A"
    if b and not a:
        return "B"
    tie = re.search(r"\b(?:it'?s|it is|this is|that is)\s+a\s+tie\b|^\W*tie\W*$", low, re.MULTILINE)
    if tie and not (a or b):
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
    phash = prompts.prompt_hash(prompts.JUDGE_SCORE) if jc.method == "text" else \
        prompts.prompt_hash(prompts.JUDGE_SCORE, prompts.SCORE_PREFIX)
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
            for conv, (score, meta) in zip(batch, _filter_scores(judge, asks, jc, cfg.seed)):
                if meta is None:
                    state.count("rejected", "judge_call_failed")  # not written: the next run retries it
                    continue
                row = conv.with_meta(judge_score=score, **meta, judge=judge.name, judge_method=jc.method,
                                     judge_prompt_hash=phash, judge_threshold=jc.threshold)
                if score is None:
                    state.count("rejected", "unparseable_score")
                    rejects.append(row.with_meta(rejected_because="unparseable_score"))
                elif score < jc.threshold:
                    state.count("rejected", f"score_below_{jc.threshold:g}")
                    rejects.append(row.with_meta(rejected_because="score_below_threshold"))
                else:
                    out.append(row)
                    report.rows_new += 1
            state.save_progress(judge)
            print(f"judge_filter: {min(start + jc.batch_size, len(todo))}/{len(todo)} rows scored", file=sys.stderr, flush=True)
    finally:
        out.close()
        rejects.close()
        state.save_progress(judge)
        report.fill(len(out.rows), state, judge)
        judged = out.rows + rejects.rows
        scores = [r["meta"]["judge_score"] for r in judged if r["meta"].get("judge_score") is not None]
        if judged:
            report.note = (f"scores parsed {len(scores)}/{len(judged)}; score histogram: {score_histogram(scores)}; "
                           f"{len(rejects.rows)} rows in {rejects.path}")
            masses = [r["meta"]["judge_mass"] for r in judged if r["meta"].get("judge_mass") is not None]
            if masses:
                report.note += f"; probability on the allowed scores: mean {np.mean(masses):.2f}, min {min(masses):.2f}"
    return report


def _filter_scores(judge: ChatBackend, asks, jc, seed: int) -> list[tuple[float | None, dict | None]]:
    """(score, extra meta) per ask; meta None = the call failed (retried on the next run)."""
    if jc.method == "logprobs":
        out = []
        for ch in judge.choose(asks, prefix=prompts.SCORE_PREFIX, choices=SCORES_1_5):
            out.append((round(ch.expected(), 4), {"judge_probs": {k: round(v, 4) for k, v in ch.probs.items()},
                                                   "judge_mass": round(ch.mass, 4)}))
        return out
    out = []
    for res in judge.complete(asks, max_tokens=jc.max_tokens, temperature=0.0, seed=seed):
        if not res.ok:
            out.append((None, None))
            continue
        lines = [ln.strip() for ln in res.text.strip().splitlines() if ln.strip()]
        reason = " ".join(lines[1:]) if len(lines) > 1 else res.text.strip()
        score = parse_score(res.text, 1, 5)
        meta = {"judge_reason": reason[:2000]}
        if score is None:
            meta["judge_raw"] = res.text[:2000]
        out.append((score, meta))
    return out


def score_histogram(scores: list[float]) -> dict[str, int]:
    """Counts per score; expected (non-integer) scores are counted in bins 0.25 wide ("3.25-3.5")."""
    if all(float(s).is_integer() for s in scores):
        return {f"{s:g}": scores.count(s) for s in sorted(set(scores))}
    hist: dict[str, int] = {}
    for s in sorted(scores):
        lo = math.floor(s * 4) / 4
        key = f"{lo:g}-{lo + 0.25:g}"
        hist[key] = hist.get(key, 0) + 1
    return hist


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
    soft_outcome: float | None = None  # logprobs only: E[outcome for A], averaged over both orders
    mass: float | None = None  # logprobs only: probability on [[A]]/[[B]]/[[C]], mean of both orders
    raw_ab: str | None = None  # text only: what the judge wrote (first 2000 characters), A first
    raw_ba: str | None = None  # ... and B first

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


def soft_combine(p_ab: dict[str, float], p_ba: dict[str, float]) -> float:
    """Expected outcome for A (win 1, tie 0.5) in each order, averaged: a judge that only ever
    prefers the first slot gets exactly 0.5, whatever its confidence."""
    return 0.5 * ((p_ab["A"] + 0.5 * p_ab["C"]) + (p_ba["B"] + 0.5 * p_ba["C"]))


def judge_pairs(judge: ChatBackend, items: list[tuple[str, list[dict], str, str]], max_tokens: int = 512,
                method: Method = "text") -> list[PairJudgement]:
    """items: (id, prompt messages, answer of A, answer of B)."""
    asks = []
    for _, msgs, a, b in items:
        q = question_text(msgs)
        asks.append([{"role": "user", "content": prompts.JUDGE_PAIR.format(question=q, answer_a=a, answer_b=b)}])
        asks.append([{"role": "user", "content": prompts.JUDGE_PAIR.format(question=q, answer_a=b, answer_b=a)}])
    out = []
    if method == "logprobs":
        ch = judge.choose(asks, prefix=prompts.PAIR_PREFIX, choices=["A", "B", "C"], suffix=prompts.PAIR_SUFFIX)
        for k, (pid, msgs, a, b) in enumerate(items):
            c1, c2 = ch[2 * k], ch[2 * k + 1]
            out.append(PairJudgement(pid, question_text(msgs), a, b, c1.best, c2.best, combine(c1.best, c2.best),
                                     soft_combine(c1.probs, c2.probs), (c1.mass + c2.mass) / 2))
        return out
    res = judge.complete(asks, max_tokens=max_tokens, temperature=0.0, seed=0)
    for k, (pid, msgs, a, b) in enumerate(items):
        r1, r2 = res[2 * k], res[2 * k + 1]
        v1 = parse_verdict(r1.text) if r1.ok else None
        v2 = parse_verdict(r2.text) if r2.ok else None
        out.append(PairJudgement(pid, question_text(msgs), a, b, v1, v2, combine(v1, v2),
                                 raw_ab=r1.text[:2000] if r1.ok else r1.error, raw_ba=r2.text[:2000] if r2.ok else r2.error))
    return out


def _ci(est) -> tuple[float, float] | None:
    """(low, high) of an Estimate; None when there are too few values for an interval."""
    return None if math.isnan(est.low) else (est.low, est.high)


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


def length_controlled_ci(outcomes, len_diffs, n_boot: int = 1000, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap of the LC win rate: prompts resampled with their (outcome, length
    difference) pairs together and the model refitted on each resample (~2 ms a fit)."""
    from scipy import stats

    y, d = np.asarray(outcomes, dtype=float), np.asarray(len_diffs, dtype=float)
    if len(y) < 2:
        return None
    res = stats.bootstrap((y, d), length_controlled_win_rate, paired=True, vectorized=False, n_resamples=n_boot,
                          method="percentile", rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def pairwise_summary(judgements: list[PairJudgement], n_boot: int = 1000, seed: int = 0) -> dict:
    """Counts, win rate of A with its 95% CI, the length-controlled win rate with its CI, the
    verdict parse rate and how often the judge picked the first slot (position bias)."""
    valid = [j for j in judgements if j.outcome is not None]
    verdicts = [v for j in judgements for v in (j.verdict_ab, j.verdict_ba)]
    parsed = [v for v in verdicts if v is not None]
    y = np.array([j.outcome for j in valid])
    d = np.array([j.len_diff for j in valid], dtype=float)
    out = {"n_prompts": len(judgements), "n_valid": len(valid), "n_unparsed_or_failed": len(judgements) - len(valid),
           "verdicts": len(verdicts), "verdicts_parsed": len(parsed),
           "verdicts_first_slot": sum(v == "A" for v in parsed), "verdicts_tie": sum(v == "C" for v in parsed),
           "wins_a": int((y == 1).sum()), "wins_b": int((y == 0).sum()), "ties": int((y == 0.5).sum())}
    soft = [j.soft_outcome for j in judgements if j.soft_outcome is not None]
    if soft:
        est = mean_ci(soft, seed=seed)
        out["soft_win_rate_a"], out["soft_win_rate_a_ci95"] = est.value, _ci(est)
        out["mean_mass"] = float(np.mean([j.mass for j in judgements if j.mass is not None]))
    if not valid:
        return {**out, "win_rate_a": None, "win_rate_a_ci95": None, "lc_win_rate_a": None, "lc_win_rate_a_ci95": None}
    est = mean_ci(y, seed=seed)
    out["win_rate_a"], out["win_rate_a_ci95"] = est.value, _ci(est)
    out["lc_win_rate_a"] = length_controlled_win_rate(y, d)
    out["lc_win_rate_a_ci95"] = length_controlled_ci(y, d, n_boot=n_boot, seed=seed)
    out["mean_len_a"] = float(np.mean([len(j.answer_a) for j in valid]))
    out["mean_len_b"] = float(np.mean([len(j.answer_b) for j in valid]))
    return out


# ---- single-answer grading (MT-Bench) -----------------------------------------------------------


def grade_single(judge: ChatBackend, items: list[tuple[str, list[dict], str]], max_tokens: int = 512,
                 method: Method = "text") -> tuple[list[float | None], list[float] | None]:
    """items: (id, prompt messages, answer) -> (rating 1-10 per item, None when the verdict is
    unreadable; probability mass on the ten ratings per item for method logprobs, else None)."""
    asks = [[{"role": "user", "content": prompts.JUDGE_SINGLE.format(question=question_text(m), answer=a)}] for _, m, a in items]
    if method == "logprobs":
        ch = judge.choose(asks, prefix=prompts.RATING_PREFIX, choices=RATINGS_1_10, suffix=prompts.RATING_SUFFIX)
        return [c.expected() for c in ch], [c.mass for c in ch]
    return [parse_rating(r.text) if r.ok else None for r in judge.complete(asks, max_tokens=max_tokens, temperature=0.0, seed=0)], None


def single_summary(ratings: list[float | None], seed: int = 0, masses: list[float] | None = None) -> dict:
    valid = [r for r in ratings if r is not None]
    est = mean_ci(valid, seed=seed)
    out = {"n": len(ratings), "n_valid": len(valid), "mean": est.value if valid else None, "ci95": _ci(est) if valid else None}
    if masses:
        out["mean_mass"] = float(np.mean(masses))
    return out


def judgement_rows(judgements: list[PairJudgement]) -> list[dict]:
    return [asdict(j) | {"len_diff": j.len_diff} for j in judgements]


__all__ = ["PairJudgement", "combine", "grade_single", "judge_pairs", "judgement_rows", "length_controlled_ci",
           "length_controlled_win_rate", "pairwise_summary", "parse_rating", "parse_score", "parse_verdict",
           "run_judge_filter", "score_histogram", "single_summary", "soft_combine"]
