"""Every family of the FLAN-style mixture: its checker accepts the gold answer (also in the shapes a
model writes it: "The answer is ...", a trailing period) and rejects near-misses; templates render."""

import pytest

from sftlab.builtin.flan import CLUSTERS, FAMILIES, HELDOUT_CLUSTERS, HELDOUT_FAMILIES, split_of, unique_examples
from sftlab.builtin.flan.base import MIN_TEMPLATES

NAMES = sorted(FAMILIES)


@pytest.mark.parametrize("name", NAMES)
def test_checker_accepts_gold_and_rejects_near_misses(name):
    fam = FAMILIES[name]
    for messages, answer, _ in unique_examples(name, 25, seed=0):
        assert fam.check(answer, answer), (name, answer)
        assert fam.check(f"The answer is {answer}", answer) or fam.checker is not None, (name, answer)
        misses = fam.wrong_answers(answer)
        assert misses, (name, answer)
        for miss in misses:
            assert not fam.check(miss, answer), (name, answer, miss)
        assert messages[0][0] == "user" and messages[-1][0] == "user"
        assert all(m[1].strip() for m in messages)


@pytest.mark.parametrize("name", NAMES)
def test_templates_are_distinct_and_use_the_fields(name):
    fam = FAMILIES[name]
    assert len(fam.templates) >= MIN_TEMPLATES
    assert len({t.turns for t in fam.templates}) == len(fam.templates), "duplicate template"
    # every template renders for 20 draws without a missing field
    from random import Random

    rng = Random(name)
    for _ in range(20):
        fields, gold = fam.generator(rng)
        for t in fam.templates:
            t.render(fields, gold)


def test_each_family_is_deterministic_per_seed():
    for name in NAMES:
        assert unique_examples(name, 5, seed=3) == unique_examples(name, 5, seed=3)
        assert unique_examples(name, 5, seed=3) != unique_examples(name, 5, seed=4)


def test_split_holds_out_whole_clusters_and_one_family_per_trained_cluster():
    for cluster in HELDOUT_CLUSTERS:
        assert all(split_of(f) == "heldout_cluster" for f in CLUSTERS[cluster])
    for name in HELDOUT_FAMILIES:
        assert split_of(name) == "heldout" and FAMILIES[name].cluster not in HELDOUT_CLUSTERS


def test_mixture_size_every_cluster_has_families_and_a_heldout_one():
    import sftlab.builtin.flan as flan

    assert len(FAMILIES) >= 60
    for module in flan._modules:
        assert len(module.FAMILIES) >= 5, module.CLUSTER
        if module.CLUSTER not in HELDOUT_CLUSTERS:
            assert module.HELDOUT_FAMILY in CLUSTERS[module.CLUSTER], module.CLUSTER
    assert sum(f.multi_turn for f in FAMILIES.values()) >= 5
    assert sum(any(t.inverted for t in f.templates) for f in FAMILIES.values()) >= 12
