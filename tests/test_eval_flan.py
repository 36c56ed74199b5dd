"""Task evaluation on the flan suite (evaluate_models(task_suite="flan")): accuracy with 95% CIs and
paired differences for seen families, held-out families of trained clusters and held-out clusters,
plus per cluster and per family; a model trained on a subset of clusters gets its other clusters as
their own group. Scripted generators answer right on known prompts, so every number is known."""

import json

import pytest

from helpers import fake_flan_registry
from sftlab.builtin.flan.mixture import build_eval
from sftlab.errors import ConfigError
from sftlab.evaluate.runner import Candidate, evaluate_models


class Scripted:
    """Answers the gold answer to prompts of `right` families, "no idea" otherwise."""

    def __init__(self, right: set[str]):
        convs = build_eval()
        self.gold = {json.dumps([m.to_dict() for m in c.prompt_messages]): (c.meta["family"], c.meta["answer"]) for c in convs}
        self.right = right

    def generate_batch(self, prompts, params, batch_size=16, progress=False):
        out = []
        for p in prompts:
            family, answer = self.gold[json.dumps(p)]
            out.append(f"The answer is {answer}." if family in self.right else "no idea")
        return out


SEEN = {"reverse_word", "uppercase", "spell_back", "add", "multiply", "sort_words", "count_items", "pick_colour"}


def run(right: set[str], **kw):
    return evaluate_models({"base": Candidate(generator=Scripted(set())), "tuned": Candidate(generator=Scripted(right))},
                           task_suite="flan", perplexity=False, ifeval=False, max_task_examples_per_family=6,
                           progress=False, **kw)


def rows(report) -> dict:
    return {m.name: m for m in report.metrics()}


def test_three_groups_with_cis_and_paired_diffs(monkeypatch):
    fake_flan_registry(monkeypatch)
    # tuned answers every seen family and one held-out family (subtract) right
    report = run(SEEN | {"subtract"})
    r = rows(report)
    seen, held, cluster = (r["task accuracy: seen families"], r["task accuracy: held-out families of trained clusters"],
                           r["task accuracy: held-out clusters (never trained)"])
    assert seen.values["tuned"].n == 8 * 6 and held.values["tuned"].n == 3 * 6 and cluster.values["tuned"].n == 2 * 6
    assert seen.values["tuned"].value == 1.0 and seen.values["base"].value == 0.0
    assert held.values["tuned"].value == pytest.approx(1 / 3) and cluster.values["tuned"].value == 0.0
    # CIs: a bootstrap interval around 1/3 that is not a point; paired diff = tuned - base on the same prompts
    est = held.values["tuned"]
    assert est.low < est.value < est.high
    assert held.diffs["tuned"].value == pytest.approx(1 / 3) and held.diffs["tuned"].low < held.diffs["tuned"].high
    assert seen.diffs["tuned"].low == seen.diffs["tuned"].high == 1.0
    # per cluster and per family
    assert r["task cluster: arithmetic"].values["tuned"].value == pytest.approx(1.0)  # add, multiply, subtract
    assert r["task cluster: comparison"].values["tuned"].value == 0.0
    assert r["task: subtract"].values["tuned"].value == 1.0 and r["task: remove_vowels"].values["tuned"].value == 0.0
    assert "task accuracy: clusters this model did not train" not in r  # all trainable clusters trained
    assert report.settings["task_suite"] == "flan"
    table = report.summary_table()
    assert "held-out clusters (never trained)" in table and "task cluster: lists" in table
    data = json.loads(json.dumps(report.to_json()))
    items = data["generations"]["tasks"]["items"]
    assert {it["split"] for it in items} == {"seen", "held-out", "held-out-cluster"} and all("cluster" in it for it in items)


def test_trained_on_a_subset_of_clusters(monkeypatch):
    fake_flan_registry(monkeypatch)
    report = run({"add", "multiply", "subtract", "parity"}, trained_clusters=["arithmetic"])
    r = rows(report)
    assert report.settings["trained_clusters"] == ["arithmetic"]
    seen = r["task accuracy: seen families"]
    assert seen.values["tuned"].n == 2 * 6 and seen.values["tuned"].value == 1.0  # add, multiply
    assert r["task accuracy: held-out families of trained clusters"].values["tuned"].n == 6  # subtract only
    # the fixed held-out clusters stay one group (comparable across variants) ...
    fixed = r["task accuracy: held-out clusters (never trained)"]
    assert fixed.values["tuned"].n == 2 * 6 and fixed.values["tuned"].value == 0.5  # parity right, is_prime wrong
    # ... the trainable clusters this model skipped (letters: 4 families, lists: 4) are another, and both together a third
    other = r["task accuracy: clusters this model did not train"]
    assert other.values["tuned"].n == 8 * 6 and other.values["tuned"].value == 0.0
    both = r["task accuracy: every cluster not trained (held-out + not trained)"]
    assert both.values["tuned"].n == 10 * 6 and both.values["tuned"].value == pytest.approx(6 / 60)


def test_suite_and_cluster_arguments_are_checked(monkeypatch):
    fake_flan_registry(monkeypatch)
    with pytest.raises(ConfigError, match="one of"):
        evaluate_models({"b": Candidate(generator=Scripted(set()))}, task_suite="flan2", perplexity=False, ifeval=False)
    with pytest.raises(ConfigError, match="--tasks flan"):
        evaluate_models({"b": Candidate(generator=Scripted(set()))}, trained_clusters=["letters"], perplexity=False, ifeval=False)
    with pytest.raises(ConfigError, match="held out"):
        run(set(), trained_clusters=["comparison"])


def test_cli_eval_takes_the_suite_and_trained_clusters():
    from sftlab.cli import build_parser

    args = build_parser().parse_args(["eval", "--base", "a", "--tuned", "b", "--tasks", "flan", "--trained-clusters", "letters, lists"])
    assert args.tasks == "flan" and args.trained_clusters == "letters, lists"
    assert build_parser().parse_args(["eval", "--base", "a", "--tuned", "b"]).tasks == "tasks"


def test_the_older_suite_is_unchanged():
    """task_suite="tasks" (the default) still reports seen / held-out families of the 24-family suite."""
    from sftlab.builtin.tasks import train_eval_split

    gold = {c.prompt_messages[0].content: c.meta["answer"] for c in train_eval_split(seed=0)[1]}

    class Right:
        def generate_batch(self, prompts, params, batch_size=16, progress=False):
            return [gold[p[0]["content"]] for p in prompts]

    report = evaluate_models({"base": Candidate(generator=Right())}, perplexity=False, ifeval=False,
                             max_task_examples_per_family=2, progress=False)
    r = rows(report)
    assert r["task accuracy: seen families"].values["base"].value == 1.0
    assert r["task accuracy: held-out families"].values["base"].value == 1.0
    assert not any(n.startswith("task cluster:") for n in r)


def test_a_cap_per_split(monkeypatch):
    """max_task_examples_per_family as {split: cap}: the quickstart asks many held-out prompts, few seen ones."""
    fake_flan_registry(monkeypatch)
    report = evaluate_models({"base": Candidate(generator=Scripted(set()))}, task_suite="flan", perplexity=False,
                             ifeval=False, max_task_examples_per_family={"seen": 1, "heldout": 5, "heldout_cluster": 2},
                             progress=False)
    r = rows(report)
    assert r["task accuracy: seen families"].values["base"].n == 8 * 1
    assert r["task accuracy: held-out families of trained clusters"].values["base"].n == 3 * 5
    assert r["task accuracy: held-out clusters (never trained)"].values["base"].n == 2 * 2
