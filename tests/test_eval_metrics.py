"""Eval metrics against values computed independently: perplexity, bootstrap CIs, decontamination."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from sftlab.conversation import Conversation, Message
from sftlab.evaluate.bootstrap import mean_ci, paired_diff_ci, perplexity_ci, perplexity_diff_ci, ratio_of_sums_ci
from sftlab.evaluate.decontam import decontaminate
from sftlab.evaluate.perplexity import example_losses, text_rows
from sftlab.render import Renderer
from tiny import make_model, make_tokenizer

CONVS = [
    Conversation.from_messages([{"role": "user", "content": "Reverse the word apple."}, {"role": "assistant", "content": "elppa"}]),
    Conversation.from_messages(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": "The answer is 5."},
        ]
    ),
    Conversation.from_messages([{"role": "user", "content": "Hello there!"}, {"role": "assistant", "content": "I am fine, thank you."}]),
]
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Sort these numbers: 3, 1, 2 -> 1, 2, 3"]


def _independent_losses(model, renderer, convs):
    """Per example: full-logit forward pass of that example alone, CE at response tokens only."""
    sums, counts = [], []
    for c in convs:
        r = renderer.render(c)
        ids = torch.tensor([r.input_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]  # [L, V], every position
        mask = torch.tensor(r.loss_mask[1:], dtype=torch.bool)
        ce = F.cross_entropy(logits[:-1].float(), ids[0, 1:], reduction="none")[mask]
        sums.append(float(ce.sum()))
        counts.append(int(mask.sum()))
    return np.array(sums), np.array(counts)


def test_response_and_text_perplexity_match_independent_full_logit_computation():
    tok, model = make_tokenizer(), make_model()
    rd = Renderer(tok)
    el = example_losses(model, rd, CONVS, token_budget=512)
    sums, counts = _independent_losses(model, rd, CONVS)
    np.testing.assert_allclose(el.loss_sums, sums, rtol=1e-4)
    np.testing.assert_array_equal(el.n_tokens, counts)
    # only response tokens are scored: "elppa" + stop token is a handful of tokens, not the prompt
    assert counts[0] < len(rd.render(CONVS[0]).input_ids) / 2
    assert math.isclose(el.perplexity, math.exp(sums.sum() / counts.sum()), rel_tol=1e-5)

    rows = text_rows(TEXTS)
    gl = example_losses(model, rd, rows, token_budget=512)
    tsums, tcounts = _independent_losses(model, rd, rows)
    np.testing.assert_allclose(gl.loss_sums, tsums, rtol=1e-4)
    ids = tok(TEXTS[0], add_special_tokens=False)["input_ids"]
    assert tcounts[0] == len(ids)  # every token after the first, plus the appended eos
    assert not el.skipped and not gl.skipped and el.truncated == 0


def test_example_longer_than_context_is_truncated_and_counted():
    tok, model = make_tokenizer(), make_model()
    rd = Renderer(tok)
    long = text_rows(["the quick brown fox " * 80])  # > 64 tokens
    el = example_losses(model, rd, long + text_rows(TEXTS), token_budget=64)
    assert el.truncated == 1
    assert el.n_tokens[0] == 63  # 64 tokens kept, the first one has nothing predicting it


def test_bootstrap_ci_contains_estimate_and_narrows_with_more_data():
    rng = np.random.default_rng(1)
    small = rng.random(40) < 0.6
    big = rng.random(4000) < 0.6
    a, b = mean_ci(small), mean_ci(big)
    assert a.low <= a.value <= a.high and b.low <= b.value <= b.high
    assert (b.high - b.low) < (a.high - a.low) / 4  # width ~ 1/sqrt(n): 10x data -> ~3x narrower
    assert a.value == small.mean()
    # percentile bootstrap of a proportion ~ normal interval for large n
    se = math.sqrt(b.value * (1 - b.value) / big.size)
    assert abs((b.high - b.low) - 2 * 1.96 * se) < 0.2 * (2 * 1.96 * se)
    assert mean_ci(small) == a  # seeded: identical twice


def test_paired_difference_of_identical_results_is_exactly_zero():
    x = np.random.default_rng(2).random(50) < 0.5
    d = paired_diff_ci(x, x)
    assert (d.value, d.low, d.high) == (0.0, 0.0, 0.0)
    losses, n = np.random.default_rng(3).random(30) * 10, np.arange(1, 31)
    p = perplexity_diff_ci(losses, losses, n)
    assert (p.value, p.low, p.high) == (0.0, 0.0, 0.0)
    # a clear improvement (+40 points on the same prompts) has a CI excluding 0
    base = np.zeros(100)
    tuned = np.r_[np.ones(40), np.zeros(60)]
    d = paired_diff_ci(base, tuned)
    assert d.value == 0.4 and d.excludes_zero() and d.low > 0.25


def test_perplexity_ci_is_token_weighted_and_contains_estimate():
    sums, n = np.array([2.0, 30.0, 1.0]), np.array([1.0, 10.0, 1.0])
    e = perplexity_ci(sums, n)
    assert math.isclose(e.value, math.exp(33.0 / 12.0))  # not the mean of per-example PPLs
    assert e.low <= e.value <= e.high
    r = ratio_of_sums_ci([1, 2, 0, 3], [2, 2, 1, 3])
    assert math.isclose(r.value, 6 / 8) and r.low <= r.value <= r.high


def test_decontamination_finds_planted_8gram_but_not_7gram():
    planted8 = "alpha bravo charlie delta echo foxtrot golf hotel"
    planted7 = "india juliet kilo lima mike november oscar"
    train = [
        Conversation.from_messages([{"role": "user", "content": f"Intro. {planted8.upper()} and more"}, {"role": "assistant", "content": "ok"}]),
        Conversation.from_messages([{"role": "user", "content": f"{planted7} papa"}, {"role": "assistant", "content": "ok"}]),
    ]
    evals = [
        ("e1", "set", f"Please: {planted8}, thanks"),  # same 8 words, different case/punctuation
        ("e2", "set", f"quebec {planted7} romeo"),  # only 7 words shared
        ("e3", "set", "nothing in common here at all with anything above ok"),
    ]
    rep = decontaminate(train, evals, n=8)
    assert [c.id for c in rep.contaminated] == ["e1"]
    assert rep.contaminated[0].ngram == planted8
    assert math.isclose(rep.fraction, 1 / 3) and rep.eval_prompts == 3
    assert [c.id for c in decontaminate(train, evals, n=7).contaminated] == ["e1", "e2"]
    # n-grams do not span two messages
    split = [Conversation.from_messages([{"role": "user", "content": "alpha bravo charlie delta"}, {"role": "assistant", "content": "echo foxtrot golf hotel"}])]
    assert not decontaminate(split, evals, n=8).contaminated
