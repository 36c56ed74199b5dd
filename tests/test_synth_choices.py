"""Log-prob judging (synth/choices.py): choice log-probabilities with the KV cache equal a plain
full-sequence computation; judge_filter and pairwise judging with method logprobs on a tiny local
model; HTTP judges are refused for it."""

import json
import math

import pytest
import torch
import yaml

from sftlab.errors import ConfigError
from sftlab.render import Renderer
from sftlab.synth import prompts
from sftlab.synth.backends import LocalBackend, OpenAIBackend
from sftlab.synth.choices import choice_tokens, score_choices
from sftlab.synth.config import load_synth_config
from sftlab.synth.judge import judge_pairs, pairwise_summary, run_judge_filter, soft_combine
from tiny import make_model, make_tokenizer


@pytest.fixture(scope="module")
def tiny():
    tok = make_tokenizer()
    return make_model(vocab_size=len(tok)), Renderer(tok)


def full_sequence_logprob(model, prompt_ids: list[int], cont: list[int]) -> float:
    """Independent: one forward over prompt + continuation, no cache, sum of the continuation's log-probs."""
    ids = torch.tensor([prompt_ids + cont])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    n = len(prompt_ids)
    return float(sum(lp[n - 1 + t, c] for t, c in enumerate(cont)))


def test_cached_choice_logprobs_equal_full_sequence(tiny):
    model, renderer = tiny
    tok = renderer.tokenizer
    preamble = "Please act as a judge. Rate the answer to the instruction from 1 to 10.\n\nInstruction: "
    convs = [[{"role": "user", "content": preamble + "Reverse the word apple. Answer: elppa"}],
             [{"role": "user", "content": preamble + "What is 2 + 3? The answer is 5."}],
             [{"role": "user", "content": preamble + "Sort these numbers: 3, 1, 2 -> 1, 2, 3"}]]
    choices = [str(i) for i in range(1, 11)]
    pre, conts = choice_tokens(tok, "Rating: [[", choices, "]]")
    assert len({len(c) for c in conts}) > 1  # "10" is longer than "7": the multi-token path runs
    res = score_choices(model, renderer, convs, "Rating: [[", choices, "]]")
    assert len(res) == 3
    for conv, r in zip(convs, res):
        want = [full_sequence_logprob(model, renderer.render_prompt(conv) + pre, c) for c in conts]
        assert r.logprobs == pytest.approx(want, abs=1e-4)
        assert sum(r.probs.values()) == pytest.approx(1.0)
        assert 0 < r.mass < 1 and r.mass == pytest.approx(sum(math.exp(x) for x in want), rel=1e-4)
        assert r.expected() == pytest.approx(sum(int(c) * p for c, p in r.probs.items()))
        assert r.best == choices[max(range(10), key=lambda i: want[i])]
    # alone (nothing shared to cache) and together (the preamble's cache shared) give the same numbers
    assert score_choices(model, renderer, convs[1:2], "Rating: [[", choices, "]]")[0].logprobs == pytest.approx(res[1].logprobs, abs=1e-4)


def test_choices_that_tokenize_the_same_are_refused(tiny):
    _, renderer = tiny
    with pytest.raises(ConfigError, match="cannot be told apart"):
        choice_tokens(renderer.tokenizer, "[[", ["A", "A"], "]]")


def _rows(path):
    return [json.loads(x) for x in open(path) if x.strip()]


def test_judge_filter_logprobs_keeps_rows_by_expected_score(tmp_path, tiny):
    model, renderer = tiny
    data = tmp_path / "in.jsonl"
    with open(data, "w") as f:
        for i in range(6):
            f.write(json.dumps({"id": f"r{i}", "messages": [{"role": "user", "content": f"Sort these numbers: {i}, 1, 2"},
                                                           {"role": "assistant", "content": "1, 2, 3" * (i + 1)}]}) + "\n")
    cfg_path = tmp_path / "f.yaml"
    cfg_path.write_text(yaml.safe_dump({"pipeline": "judge_filter", "output": "kept.jsonl",
                                        "judge": {"kind": "local", "model": "unused-here"},
                                        "judge_filter": {"input": "in.jsonl", "method": "logprobs", "threshold": 3.0,
                                                         "batch_size": 4}}))
    cfg = load_synth_config(cfg_path)
    judge = LocalBackend(model=model, tokenizer=renderer.tokenizer)
    report = run_judge_filter(cfg, judge)
    # independent expected scores from full-sequence log-probs
    pre, conts = choice_tokens(renderer.tokenizer, prompts.SCORE_PREFIX, ["1", "2", "3", "4", "5"])
    want = {}
    for r in _rows(data):
        ask = [{"role": "user", "content": prompts.JUDGE_SCORE.format(instruction=r["messages"][0]["content"],
                                                                   response=r["messages"][1]["content"])}]
        lps = [full_sequence_logprob(model, renderer.render_prompt(ask) + pre, c) for c in conts]
        w = [math.exp(x - max(lps)) for x in lps]
        want[r["id"]] = sum((k + 1) * x for k, x in enumerate(w)) / sum(w)
    kept, rejected = _rows(tmp_path / "kept.jsonl"), _rows(tmp_path / "kept.jsonl.rejected.jsonl")
    assert len(kept) + len(rejected) == 6 and judge.stats.calls == 6
    for r in kept + rejected:
        assert r["meta"]["judge_score"] == pytest.approx(want[r["id"]], abs=1e-3)
        assert r["meta"]["judge_method"] == "logprobs" and 0 < r["meta"]["judge_mass"] <= 1
    assert sorted(r["id"] for r in kept) == sorted(i for i, s in want.items() if s >= 3.0)
    assert report.rejected.get("score_below_3", 0) == len(rejected)
    assert "scores parsed 6/6" in report.note and "probability on the allowed scores" in report.note


def test_pairwise_logprobs_soft_outcome_and_position_bias(tiny):
    model, renderer = tiny
    judge = LocalBackend(model=model, tokenizer=renderer.tokenizer)
    items = [(f"p{i}", [{"role": "user", "content": f"Reverse the word {w}."}], w[::-1], w)
             for i, w in enumerate(["apple", "hello", "fox", "dog"])]
    js = judge_pairs(judge, items, method="logprobs")
    s = pairwise_summary(js, n_boot=50)
    assert s["verdicts_parsed"] == s["verdicts"] == 8 and s["n_valid"] == 4
    for j in js:
        assert 0 <= j.soft_outcome <= 1 and 0 < j.mass < 1
    assert s["soft_win_rate_a"] == pytest.approx(sum(j.soft_outcome for j in js) / 4)
    # a judge that always picks the first slot, however sure, is worth exactly a coin flip
    assert soft_combine({"A": 0.9, "B": 0.05, "C": 0.05}, {"A": 0.9, "B": 0.05, "C": 0.05}) == pytest.approx(0.5)
    assert soft_combine({"A": 1, "B": 0, "C": 0}, {"A": 0, "B": 1, "C": 0}) == 1.0


def test_logprobs_needs_a_local_judge(tmp_path):
    cfg_path = tmp_path / "f.yaml"
    cfg_path.write_text(yaml.safe_dump({"pipeline": "judge_filter", "output": "o.jsonl",
                                        "judge": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
                                        "judge_filter": {"input": "in.jsonl", "method": "logprobs"}}))
    with pytest.raises(ConfigError, match="method: logprobs needs"):
        load_synth_config(cfg_path)
    with pytest.raises(ConfigError, match="needs a local model"):
        OpenAIBackend("m", "http://127.0.0.1:9/v1").choose([[{"role": "user", "content": "x"}]], prefix="[[", choices=["A"])
