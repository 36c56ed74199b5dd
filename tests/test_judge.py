"""Judging: verdict/score parsing, both-order pairwise comparison through `sftlab judge` over real
HTTP (scripted judge), length-controlled win rate. (Win-rate CIs come from sftlab.evaluate.bootstrap,
tested in test_eval_metrics.py.)"""

import json

import numpy as np
import pytest

from sftlab.cli import main
from sftlab.serve import server_in_thread
from sftlab.synth.judge import (
    combine,
    length_controlled_win_rate,
    parse_rating,
    parse_score,
    parse_verdict,
)
from helpers import scripted_app


@pytest.mark.parametrize("text,expected", [
    ("Score: 4\nGood answer.", 4), ("4", 4), ("I'd rate it 3/5.", 3), ("**Score:** 5", 5), ("[[2]]", 2),
    ("score of 4 out of 5", 4), ("Score: 9", None), ("no idea", None), ("The answer has 12 steps.", None),
])
def test_parse_score_1_to_5(text, expected):
    assert parse_score(text, 1, 5) == expected


def test_parse_rating_and_verdict():
    assert parse_rating("Explanation... Rating: [[7]]") == 7
    assert parse_rating("Rating: [[7.5]]") == 7.5
    assert parse_rating("Rating: 6") == 6
    assert parse_rating("[[11]]") is None
    assert parse_verdict("bla [[A]] ... final: [[B]]") == "B"
    assert parse_verdict("Assistant A is better overall.") == "A"
    assert parse_verdict("It's a tie.") == "C"
    assert parse_verdict("hmm") is None
    assert parse_verdict("It is a tie: both answers are fine.") == "C"
    assert parse_verdict("Both are equally good.\nTie.") == "C"
    # written by SmolLM2-135M in a real run: neither is a verdict
    assert parse_verdict("The capital of Australia is Canberra.\n\nThe answer is not a tie.") is None
    assert parse_verdict('output "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie') is None
    assert parse_verdict('I will output "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie. [[B]]') == "B"
    assert parse_verdict("[[A]] no, [[B]], or [[C]]?") is None  # all three named: no verdict
    assert parse_rating('You must rate it, for example: "Rating: [[5]]".') is None
    assert parse_rating('As asked, for example: "Rating: [[5]]". My rating: [[3]]') == 3


def test_both_orders_cancel_position_bias():
    assert combine("A", "B") == 1.0  # A first and preferred; A second and preferred
    assert combine("B", "A") == 0.0
    assert combine("A", "A") == 0.5  # always the first slot: position bias -> tie
    assert combine("A", "C") == 0.5
    assert combine(None, "A") is None


def test_length_controlled_win_rate_removes_length_preference():
    rng = np.random.default_rng(0)
    # A is longer on 80% of prompts and wins exactly those: all of its advantage is length
    d = np.concatenate([rng.uniform(50, 500, 80), rng.uniform(-500, -50, 20)])
    y = (d > 0).astype(float)
    assert y.mean() == 0.8
    lc = length_controlled_win_rate(y, d)
    assert lc < 0.65
    # preference unrelated to length: LC stays near the raw rate
    y2 = (rng.uniform(size=100) < 0.7).astype(float)
    d2 = rng.normal(0, 100, 100)
    assert abs(length_controlled_win_rate(y2, d2) - y2.mean()) < 0.06


def _write(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def test_sftlab_judge_command_over_http(tmp_path, capsys):
    prompts = [{"id": f"p{i}", "messages": [{"role": "user", "content": f"Question number {i}?"}]} for i in range(10)]
    _write(tmp_path / "prompts.jsonl", prompts)
    # A answers well on 0-6, B on 7-8, neither on 9 -> A 7 wins, B 2, 1 tie
    a = [{"id": f"p{i}", "messages": prompts[i]["messages"] + [{"role": "assistant", "content": "GOOD" if i < 7 else "meh"}]} for i in range(10)]
    b = [{"id": f"p{i}", "messages": prompts[i]["messages"] + [{"role": "assistant", "content": "GOOD!" if i in (7, 8) else "meh."}]} for i in range(10)]
    _write(tmp_path / "a.jsonl", a)
    _write(tmp_path / "b.jsonl", b)
    with server_in_thread(scripted_app()) as url:
        common = ["judge", "--a", str(tmp_path / "a.jsonl"), "--b", str(tmp_path / "b.jsonl"),
                  "--prompts", str(tmp_path / "prompts.jsonl"), "--bootstrap", "300"]
        assert main(common + ["--judge", f"{url}#fair", "--mode", "both", "--out", str(tmp_path / "fair.json")]) == 0
        assert main(common + ["--judge", f"{url}#biased", "--out", str(tmp_path / "biased.json")]) == 0
    fair = json.loads((tmp_path / "fair.json").read_text())
    s = fair["pairwise"]
    assert (s["wins_a"], s["wins_b"], s["ties"], s["n_valid"]) == (7, 2, 1, 10)
    assert s["win_rate_a"] == pytest.approx(0.75)
    lo, hi = s["win_rate_a_ci95"]
    assert lo < 0.75 < hi
    assert 0 < s["lc_win_rate_a"] < 1
    assert fair["single"]["a"]["mean"] == pytest.approx((7 * 8 + 3 * 3) / 10)
    assert fair["single"]["b"]["mean"] == pytest.approx((2 * 8 + 8 * 3) / 10)
    assert fair["judge_calls"]["calls"] == 20 + 20  # 2 orders x 10, then 2 x 10 single gradings
    biased = json.loads((tmp_path / "biased.json").read_text())["pairwise"]
    assert (biased["wins_a"], biased["wins_b"], biased["ties"]) == (0, 0, 10) and biased["win_rate_a"] == 0.5
    out = capsys.readouterr().out
    assert "win rate of A: 0.750" in out and "length-controlled" in out


def test_missing_answers_are_reported_by_id(tmp_path):
    from sftlab.errors import DataError
    from sftlab.synth.compare import compare

    _write(tmp_path / "prompts.jsonl", [{"id": f"p{i}", "messages": [{"role": "user", "content": f"Q{i}"}]} for i in range(3)])
    _write(tmp_path / "a.jsonl", [{"id": "p0", "messages": [{"role": "user", "content": "Q0"}, {"role": "assistant", "content": "x"}]}])
    with pytest.raises(DataError, match="p1"):
        compare(str(tmp_path / "a.jsonl"), str(tmp_path / "a.jsonl"), str(tmp_path / "prompts.jsonl"), "http://127.0.0.1:9/v1")
