"""Scores, Deita selection, random baseline, mixing proportions, temperature, curriculum."""

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from sftlab.conversation import Conversation
from sftlab.curate.embed import get_embedder
from sftlab.curate.mix import Curriculum, Mix, apportion, curriculum_order, mix_sources, temperature_weights
from sftlab.curate.scores import ComplexityScore, DiversityScore, TagScore, complexity, constraint_count, tag_coverage
from sftlab.curate.select import Select, random_subset, select_diverse
from sftlab.errors import DataError


def conv(prompt: str, response: str = "An answer.", **kw) -> Conversation:
    return Conversation.from_messages([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                                      **kw)


TOPICS = ["sorting a list in Python", "the French revolution", "baking sourdough bread", "black holes",
          "training for a marathon", "the rules of chess", "photosynthesis", "writing a cover letter",
          "the stock market", "knitting a scarf", "volcano eruptions", "learning Japanese"]


def test_complexity_counts_constraints_length_and_turns():
    plain = conv("Tell me about cats.")
    constrained = conv("Write exactly 3 bullet points about cats, at least 10 words each, in JSON format.")
    assert constraint_count(constrained.messages[0].content) >= 6
    assert constraint_count(plain.messages[0].content) == 0
    assert complexity(constrained) > complexity(plain) + 5
    words = "Tell me about cats " * 10  # 40 words: log2(1 + 40/20)
    assert complexity(conv(words)) == pytest.approx(math.log2(3))
    two_turns = Conversation.from_messages([{"role": "user", "content": "Tell me about cats."},
                                            {"role": "assistant", "content": "Cats are small."},
                                            {"role": "user", "content": "Tell me about cats."},
                                            {"role": "assistant", "content": "They purr."}])
    assert complexity(two_turns) == pytest.approx(math.log2(1 + 8 / 20) + 0.5)
    scored = list(ComplexityScore()([plain, constrained]))
    assert scored[0].meta["complexity"] < scored[1].meta["complexity"]


def test_tags_and_coverage():
    rows = [conv("Write a Python function to sort a list."), conv("Translate 'hello' into French."),
            conv("Solve the equation 3x + 2 = 11."), conv("Hmm.")]
    tagged = list(TagScore()(rows))
    assert "coding" in tagged[0].meta["tags"] and "writing" in tagged[0].meta["tags"]
    assert tagged[1].meta["tags"] == ["translation"]
    assert "math" in tagged[2].meta["tags"]
    assert tagged[3].meta["tags"] == []
    cov = tag_coverage(tagged)
    assert cov["untagged"] == 1 and cov["per_tag"]["translation"] == 1 and cov["examples"] == 4
    assert cov["covered"] == sum(v > 0 for v in cov["per_tag"].values())


def test_diversity_is_distance_to_nearest_earlier():
    rows = [conv("How do I sort a list in Python?"), conv("How can I sort a Python list?"),
            conv("What causes volcanoes to erupt?")]
    out = list(DiversityScore()(rows))
    d = [c.meta["diversity"] for c in out]
    assert d[0] == 1.0 and d[1] < 0.3 and d[2] > d[1]


def scored_rows() -> list[Conversation]:
    rows = []
    for i, topic in enumerate(TOPICS):
        rows.append(conv(f"Explain {topic}.", f"Here is an explanation of {topic}.", meta={"complexity": float(i)}))
        rows.append(conv(f"Please explain {topic}!", f"This is an explanation of {topic}.",
                         meta={"complexity": float(i) + 0.5}))  # near-copy with a higher score
    return rows


def test_select_respects_budget_and_diversity_threshold():
    rows = scored_rows()
    budget, min_dist = 8, 0.2
    chosen = select_diverse(rows, budget, ["complexity"], min_dist)
    assert len(chosen) == budget
    vecs = get_embedder().encode(chosen)
    for i, j in itertools.combinations(range(len(chosen)), 2):
        assert 1.0 - float(vecs[i] @ vecs[j]) > min_dist
    # highest-scoring of each near-copy pair wins: the top 8 topics' "Please explain" rows
    assert sorted(c.meta["complexity"] for c in chosen) == [i + 0.5 for i in range(4, 12)]


def test_select_block_counts_reasons_and_random_baseline_same_size():
    rows = scored_rows()
    block = Select(budget=5, min_distance=0.2)
    out = list(block(rows))
    assert len(out) == 5
    assert block.stats.dropped == len(rows) - 5
    assert set(block.stats.dropped_by_reason) == {"too_similar", "over_budget"}
    baseline = random_subset(rows, 5, seed=3)
    assert len(baseline) == 5 and len({c.id for c in baseline}) == 5
    assert random_subset(rows, 5, seed=3) == baseline and random_subset(rows, 5, seed=4) != baseline
    rnd = Select(budget=5, method="random", seed=3)
    assert list(rnd(rows)) == baseline and rnd.stats.dropped_by_reason == {"not_sampled": len(rows) - 5}


def test_select_without_score_names_the_row_and_key():
    with pytest.raises(DataError, match=r"(?s)f\.jsonl:3 \[meta\.quality\].*complexity_score"):
        select_diverse([conv("a", source="f.jsonl:3")], 1, ["quality"])


def groups(sizes: dict[str, int]) -> dict[str, list[Conversation]]:
    return {k: [conv(f"{k} question {i}", meta={"source_name": k}) for i in range(n)] for k, n in sizes.items()}


@pytest.mark.parametrize("total", [100, 333, 1000])
def test_mix_proportions_match_weights(total):
    g = groups({"big": 500, "small": 40, "mid": 120})
    weights = {"big": 1.0, "small": 2.0, "mid": 1.0}
    out, report = mix_sources(g, weights, total, seed=0)
    assert len(out) == total
    counts = Counter(c.meta["source_name"] for c in out)
    for k, w in weights.items():
        assert abs(counts[k] - total * w / sum(weights.values())) < 1.0
        assert report.per_source[k]["target"] == counts[k]
        assert report.per_source[k]["repetition"] == pytest.approx(counts[k] / len(g[k]), abs=1e-4)
    # undersampled sources have no repeats; oversampled ones repeat rows at most ceil(rep) times
    for k in weights:
        per_row = Counter(c.id for c in out if c.meta["source_name"] == k)
        assert max(per_row.values()) <= math.ceil(counts[k] / len(g[k]))
        if counts[k] <= len(g[k]):
            assert max(per_row.values()) == 1
        else:
            assert len(per_row) == len(g[k])  # every row used before any repeats a third time


def test_apportion_sums_exactly_and_temperature_flattens():
    assert sum(apportion(10, {"a": 1, "b": 1, "c": 1}).values()) == 10
    w = temperature_weights({"a": 1000, "b": 10}, 1.0)
    assert w["a"] / w["b"] == pytest.approx(100)
    w5 = temperature_weights({"a": 1000, "b": 10}, 5.0)
    assert w5["a"] / w5["b"] == pytest.approx(100 ** 0.2)


def test_mix_block_uses_temperature_and_reports_counts():
    rows = list(itertools.chain.from_iterable(groups({"a": 90, "b": 10}).values()))
    block = Mix(method="temperature", temperature=1e9, total=100)  # T -> inf: uniform
    out = list(block(rows))
    counts = Counter(c.meta["source_name"] for c in out)
    assert counts == {"a": 50, "b": 50}
    assert block.stats.notes["per_source"]["b"]["repetition"] == 5.0
    assert block.stats.dropped_by_reason["undersampled"] == 40


def test_mix_weight_for_missing_source_is_an_error():
    with pytest.raises(DataError, match="nope"):
        mix_sources(groups({"a": 3}), {"a": 1, "nope": 1}, 10)


def test_curriculum_orders_easy_to_hard_stably():
    rows = [conv(f"q{i}", meta={"complexity": c}) for i, c in enumerate([3.0, 1.0, 2.0, 1.0])]
    ordered = curriculum_order(rows, "complexity")
    assert [c.meta["complexity"] for c in ordered] == [1.0, 1.0, 2.0, 3.0]
    assert ordered[0] is rows[1] and ordered[1] is rows[3]
    out = list(Curriculum(descending=True)(rows))
    assert np.all(np.diff([c.meta["complexity"] for c in out]) <= 0)
    with pytest.raises(DataError, match="complexity"):
        curriculum_order([conv("x")], "complexity")
