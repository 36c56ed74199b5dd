"""Percentile bootstrap confidence intervals over examples (scipy.stats.bootstrap does the work).

Every number in an eval report is an average over a few hundred prompts at most, so it comes
with a 95% interval: resample the examples with replacement 1000 times (seeded, so a report is
reproducible), recompute the statistic, take the 2.5th and 97.5th percentiles.

Differences between two models are PAIRED: both models answered the same prompts, so the
resampling picks prompt indices once and applies them to both models' results. Pairing removes
the prompt-difficulty variance that both share; two identical models give exactly [0, 0].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

N_RESAMPLES = 1000
CONFIDENCE = 0.95
SEED = 0


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its percentile-bootstrap interval (low/high are NaN for n < 2)."""

    value: float
    low: float
    high: float
    n: int  # examples the estimate is based on

    def excludes_zero(self) -> bool:
        """A difference whose interval lies entirely on one side of 0."""
        return not math.isnan(self.low) and (self.low > 0 or self.high < 0)

    def to_json(self) -> dict:
        clean = lambda x: None if math.isnan(x) else round(float(x), 6)  # noqa: E731 (JSON has no NaN)
        return {"value": clean(self.value), "ci_low": clean(self.low), "ci_high": clean(self.high), "n": self.n}

    def format(self, digits: int = 3, pct: bool = False) -> str:
        scale, unit = (100.0, "%") if pct else (1.0, "")
        if math.isnan(self.value):
            return "n/a"
        text = f"{self.value * scale:.{digits}f}{unit}"
        if not math.isnan(self.low):
            text += f" [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"
        return text


def _interval(data: tuple[np.ndarray, ...], statistic, paired: bool, seed: int) -> tuple[float, float]:
    if min(len(d) for d in data) < 2:
        return math.nan, math.nan  # one example has no spread to resample
    res = stats.bootstrap(
        data,
        statistic,
        n_resamples=N_RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        paired=paired,
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return float(ci.low), float(ci.high)


def _mean(x, axis=-1):
    return np.mean(x, axis=axis)


def mean_ci(values, seed: int = SEED) -> Estimate:
    """Accuracy (mean of 0/1 outcomes) or any per-example mean."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    low, high = _interval((x,), _mean, paired=False, seed=seed)
    return Estimate(float(x.mean()), low, high, int(x.size))


def paired_diff_ci(base, other, seed: int = SEED) -> Estimate:
    """mean(other) - mean(base) over the same examples, paired bootstrap."""
    a, b = np.asarray(base, dtype=float), np.asarray(other, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired difference needs results on the same examples: {a.shape} vs {b.shape}")
    if a.size == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    d = b - a
    low, high = _interval((d,), _mean, paired=False, seed=seed)
    return Estimate(float(d.mean()), low, high, int(d.size))


def _ppl(loss_sums, n_tokens, axis=-1):
    return np.exp(np.sum(loss_sums, axis=axis) / np.sum(n_tokens, axis=axis))


def perplexity_ci(loss_sums, n_tokens, seed: int = SEED) -> Estimate:
    """exp(token-weighted mean loss); examples (not tokens) are resampled, so long examples keep
    their weight and tokens of one example stay together (they are not independent)."""
    ls, nt = np.asarray(loss_sums, dtype=float), np.asarray(n_tokens, dtype=float)
    if ls.size == 0 or nt.sum() == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    low, high = _interval((ls, nt), _ppl, paired=True, seed=seed)
    return Estimate(float(_ppl(ls, nt)), low, high, int(ls.size))


def perplexity_diff_ci(base_loss_sums, other_loss_sums, n_tokens, seed: int = SEED) -> Estimate:
    """PPL(other) - PPL(base) on the same examples (same tokens), paired bootstrap."""
    a, b, nt = (np.asarray(x, dtype=float) for x in (base_loss_sums, other_loss_sums, n_tokens))
    if a.size == 0 or nt.sum() == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)

    def stat(a, b, nt, axis=-1):
        return _ppl(b, nt, axis) - _ppl(a, nt, axis)

    low, high = _interval((a, b, nt), stat, paired=True, seed=seed)
    return Estimate(float(stat(a, b, nt)), low, high, int(a.size))


def perplexity_ratio_ci(num_loss_sums, num_tokens, den_loss_sums, den_tokens, seed: int = SEED) -> Estimate:
    """PPL(numerator set) / PPL(denominator set) — two different example sets, resampled
    independently (e.g. instruction-response PPL / general-text PPL)."""
    nl, nn, dl, dn = (np.asarray(x, dtype=float) for x in (num_loss_sums, num_tokens, den_loss_sums, den_tokens))
    if nl.size == 0 or dl.size == 0 or nn.sum() == 0 or dn.sum() == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    point = float(_ppl(nl, nn) / _ppl(dl, dn))
    if min(nl.size, dl.size) < 2:
        return Estimate(point, math.nan, math.nan, int(nl.size + dl.size))
    rng = np.random.default_rng(seed)
    # two independent samples of (loss, tokens) pairs: resample each set's example indices
    i = rng.integers(0, nl.size, size=(N_RESAMPLES, nl.size))
    j = rng.integers(0, dl.size, size=(N_RESAMPLES, dl.size))
    dist = _ppl(nl[i], nn[i]) / _ppl(dl[j], dn[j])
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(dist, [alpha, 1 - alpha])
    return Estimate(point, float(low), float(high), int(nl.size + dl.size))


def ratio_of_sums_ci(num, den, seed: int = SEED) -> Estimate:
    """sum(num) / sum(den) with examples resampled (e.g. instructions passed / instructions given,
    where each prompt carries several instructions)."""
    a, t = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    if a.size == 0 or t.sum() == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    stat = lambda a, t, axis=-1: np.sum(a, axis) / np.sum(t, axis)  # noqa: E731
    low, high = _interval((a, t), stat, paired=True, seed=seed)
    return Estimate(float(stat(a, t)), low, high, int(a.size))


def ratio_of_sums_diff_ci(base_num, other_num, den, seed: int = SEED) -> Estimate:
    """(sum(other_num) - sum(base_num)) / sum(den) on the same examples, paired bootstrap."""
    a, b, t = (np.asarray(x, dtype=float) for x in (base_num, other_num, den))
    if a.size == 0 or t.sum() == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    stat = lambda a, b, t, axis=-1: (np.sum(b, axis) - np.sum(a, axis)) / np.sum(t, axis)  # noqa: E731
    low, high = _interval((a, b, t), stat, paired=True, seed=seed)
    return Estimate(float(stat(a, b, t)), low, high, int(a.size))
