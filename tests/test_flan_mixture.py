"""The FLAN-style mixture (sftlab.builtin.flan.mixture) on a small registry built here
(helpers.fake_flan_registry): deterministic, eval disjoint from training, held-out families and
clusters never trained, the mixing shares and format fractions asked for (counted), budgets kept,
answers graded by the flan checkers."""

import pytest
from pydantic import ValidationError

from helpers import fake_flan_registry
from sftlab.builtin.flan.mixture import (
    SYSTEM_PROMPTS,
    FlanMixture,
    build,
    build_eval,
    build_train,
    mixing_weights,
    quota_stream,
)
from sftlab.conversation import Conversation
from tiny import make_tokenizer

SEEN = ["reverse_word", "uppercase", "spell_back", "add", "multiply", "sort_words", "count_items", "pick_colour"]
NEVER_TRAINED = ["remove_vowels", "subtract", "sort_numbers", "parity", "is_prime"]


@pytest.fixture
def registry(monkeypatch):
    return fake_flan_registry(monkeypatch)


def small(**kw) -> FlanMixture:
    return FlanMixture(**{"budget": 1500, "cap": 200, **kw})


def dump(convs: list[Conversation]) -> list:
    return [(c.to_dicts(), c.meta) for c in convs]


def family_tag(text: str) -> str | None:
    """The fake registry writes every template as "[<family> <i>] ...": which family a user turn is of."""
    return text[1:].split(" ")[0] if text.startswith("[") else None


def test_deterministic_per_seed(registry):
    a, b = build(small(seed=3)), build(small(seed=3))
    assert dump(a[0]) == dump(b[0]) and dump(a[1]) == dump(b[1])
    c = build(small(seed=4))
    assert dump(a[0]) != dump(c[0]) and dump(a[1]) != dump(c[1])


def test_eval_set_covers_every_family_zero_shot_with_meta(registry):
    evaluation = build_eval(FlanMixture(n_eval=10))
    by_family = {}
    for c in evaluation:
        by_family.setdefault(c.meta["family"], []).append(c)
        assert c.meta["suite"] == "flan" and c.messages[-1].content == c.meta["answer"]
        assert c.messages[0].role == "user"  # no system message, no shots
        assert c.messages[-1].role == "assistant" and [m.role for m in c.messages[:-1]].count("assistant") <= 1
    assert sorted(by_family) == sorted(SEEN + NEVER_TRAINED)
    assert all(len(v) == 10 for v in by_family.values())
    splits = {f: v[0].meta["split"] for f, v in by_family.items()}
    assert splits["parity"] == "heldout_cluster" and splits["subtract"] == "heldout" and splits["add"] == "seen"
    assert {v[0].meta["cluster"] for v in by_family.values()} == {"letters", "arithmetic", "lists", "comparison"}
    # the eval set does not depend on the training knobs
    assert dump(evaluation) == dump(build_eval(FlanMixture(n_eval=10, cap=50, clusters=["lists"], budget=10)))


def test_eval_and_train_are_disjoint(registry):
    train, evaluation, _ = build(small(budget=3000, few_shot_fraction=0.3, pack_fraction=0.4))
    eval_examples = {tuple((m.role, m.content) for m in c.messages) for c in evaluation}
    lengths = {len(k) for k in eval_examples}
    assert lengths == {2, 4}  # single-turn and the multi-turn template
    for c in train:
        msgs = [(m.role, m.content) for m in c.messages if m.role != "system"]
        for n in lengths:
            for i in range(len(msgs) - n + 1):
                assert tuple(msgs[i:i + n]) not in eval_examples, c.meta
    # and no eval prompt appears as a user turn of training at all
    eval_prompts = {c.messages[-2].content for c in evaluation}
    assert not eval_prompts & {m.content for c in train for m in c.messages if m.role == "user"}


def test_heldout_families_and_clusters_never_in_training(registry):
    train, _ = build_train(small(budget=3000))
    tags = {family_tag(m.content) for c in train for m in c.messages if m.role == "user"} - {None}
    assert tags == set(SEEN)
    meta_families = {r["family"] for c in train for r in c.meta["examples"]} | {f for c in train for f in c.meta["shot_families"]}
    assert meta_families == set(SEEN)


def test_clusters_subset_is_respected_and_checked(registry):
    train, report = build_train(small(clusters=["arithmetic"], budget=500))
    assert {family_tag(m.content) for c in train for m in c.messages if m.role == "user"} == {"add", "multiply"}
    assert report.clusters == ("arithmetic",) and set(report.sizes) == {"add", "multiply"}
    with pytest.raises(ValueError, match=r"\['comparison'\] held out.*fix: choose from \['letters', 'arithmetic', 'lists'\]"):
        build_train(small(clusters=["comparison"]))
    with pytest.raises(ValueError, match=r"unknown \['letter'\]"):
        build_train(small(clusters=["letter"]))
    with pytest.raises(ValidationError, match="trains nothing"):
        FlanMixture(clusters=[])


def hand_sizes(cap: int, n_eval: int) -> dict[str, int]:
    """Sizes worked out from the generators: pick_colour has 10 colours x 8 templates = 80 distinct examples,
    every other seen family far more than n_eval + cap."""
    return {f: min(cap, 80 - n_eval) if f == "pick_colour" else cap for f in SEEN}


@pytest.mark.parametrize("mixing,temperature", [("proportional", None), ("temperature", 2.0), ("temperature", 4.0)])
def test_mixing_shares_are_those_computed_by_hand(registry, mixing, temperature):
    cap, n_eval, budget = 200, 40, 3000
    kw = {"temperature": temperature} if temperature else {}
    train, report = build_train(FlanMixture(cap=cap, n_eval=n_eval, budget=budget, mixing=mixing, pack_fraction=0.0, **kw))
    sizes = hand_sizes(cap, n_eval)
    assert report.sizes == sizes
    power = 1.0 if mixing == "proportional" else 1.0 / temperature
    total = sum(s ** power for s in sizes.values())
    expected = {f: s ** power / total for f, s in sizes.items()}
    assert report.weights == pytest.approx(expected)
    counts = {f: 0 for f in SEEN}
    for c in train:
        for r in c.meta["examples"]:
            counts[r["family"]] += 1
    n = sum(counts.values())
    assert n == budget
    for f in SEEN:  # the stream keeps every family within 2 of its share
        assert abs(counts[f] - expected[f] * n) <= 2, (f, counts[f], expected[f] * n)
    # a family's pool holds `size` distinct examples (the cap is the pool's length): beyond, repeats, counted
    assert report.repeated == sum(max(0, counts[f] - sizes[f]) for f in SEEN) > 0


def test_mixing_weights_and_quota_stream_alone():
    assert mixing_weights({"a": 300, "b": 100}) == pytest.approx({"a": 0.75, "b": 0.25})
    assert mixing_weights({"a": 400, "b": 100}, "temperature", 2.0) == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    from random import Random

    stream = quota_stream({"x": 0.7, "y": 0.2, "z": 0.1, "never": 0.0}, Random(0))
    counts = {"x": 0, "y": 0, "z": 0}
    for n in range(1, 5001):
        counts[next(stream)] += 1
        assert all(abs(counts[k] - p * n) < 2 for k, p in (("x", 0.7), ("y", 0.2), ("z", 0.1)))


def test_formats_and_system_prompts_are_the_fractions_asked(registry):
    cfg = small(budget=4000, few_shot_fraction=0.25, pack_fraction=0.35, system_fraction=0.4, max_shots=3, max_pack=3)
    train, report = build_train(cfg)
    graded = sum(len(c.meta["examples"]) for c in train)
    few = sum(1 for c in train if c.meta["layout"] == "few_shot")
    packed = sum(len(c.meta["examples"]) for c in train if c.meta["layout"] == "packed")
    with_system = [c for c in train if c.messages[0].role == "system"]
    assert abs(few - 0.25 * graded) <= 3
    # packed examples wait in open conversations (one per family clash, < max_pack each) when the budget ends
    assert abs(packed - 0.35 * graded) <= 3 + len(SEEN) * (cfg.max_pack - 1)
    assert abs(len(with_system) - 0.4 * len(train)) <= 2
    assert report.with_system == len(with_system) and report.layouts["few_shot"] == few
    assert {c.messages[0].content for c in with_system} <= set(SYSTEM_PROMPTS)
    assert len({c.messages[0].content for c in with_system}) == len(SYSTEM_PROMPTS)
    for c in train:
        msgs = [m for m in c.messages if m.role != "system"]
        if c.meta["layout"] == "few_shot":
            k = c.meta["shots"]
            assert 1 <= k <= 3 and len(c.meta["examples"]) == 1
            fam = c.meta["family"]
            # k solved examples of the same family, then the graded one, all user/assistant pairs
            tags = [family_tag(m.content) for m in msgs if m.role == "user" and family_tag(m.content)]
            assert set(tags) <= {fam} and msgs[-1].content == c.meta["answer"]
            assert len([m for m in msgs if m.role == "assistant"]) >= k + 1
        elif c.meta["layout"] == "packed":
            fams = [r["family"] for r in c.meta["examples"]]
            assert 2 <= len(fams) <= 3 and len(set(fams)) == len(fams)
        else:
            assert c.meta["shots"] == 0 and len(c.meta["examples"]) == 1
    assert {c.meta["shots"] for c in train if c.meta["layout"] == "few_shot"} == {1, 2, 3}


def test_token_budgets_are_kept_and_need_a_tokenizer(registry):
    from sftlab.render import Renderer

    tok = make_tokenizer()
    renderer = Renderer(tok)
    for unit in ("tokens", "trained_tokens"):
        budget = 30000 if unit == "tokens" else 3000
        train, report = build_train(small(budget=budget, budget_unit=unit), tokenizer=tok)
        rows = [renderer.render(c) for c in train]
        used = sum(len(r) if unit == "tokens" else r.n_trained for r in rows)
        assert used == report.used <= budget
        longest = max(len(r) if unit == "tokens" else r.n_trained for r in rows)
        assert budget - used < 2 * longest  # stopped at the first conversation that would not fit
        assert report.tokens.tokens == sum(len(r) for r in rows) and report.tokens.trained == sum(r.n_trained for r in rows)
    with pytest.raises(ValueError, match="pass tokenizer="):
        build_train(small(budget_unit="tokens"))


# SmolLM2-Instruct's template shape: a default system prompt when the conversation has none.
DEFAULT_SYSTEM_CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_trained_share_of_the_mixture_and_packing_raises_it(registry):
    """The trained share (what the train summary prints as "N tokens, M trained (x%)") of the default
    knobs under a ChatML template with a default system prompt; packing pays that prompt once."""
    from sftlab.render import Renderer, trained_share

    tok = make_tokenizer(DEFAULT_SYSTEM_CHATML)
    renderer = Renderer(tok)
    train, report = build_train(FlanMixture(budget=600), tokenizer=tok)
    share = trained_share(renderer, train)
    assert (share.tokens, share.trained) == (report.tokens.tokens, report.tokens.trained)
    rows = [renderer.render(c) for c in train]
    assert share.trained == sum(sum(r.loss_mask) for r in rows) and share.tokens == sum(len(r.input_ids) for r in rows)
    assert "trained (" in share.summary() and f"tokens: {share.summary()}" in report.summary()
    unpacked = trained_share(renderer, build_train(FlanMixture(budget=600, pack_fraction=0.0), tokenizer=tok)[0])
    packed = trained_share(renderer, build_train(FlanMixture(budget=600, pack_fraction=0.8), tokenizer=tok)[0])
    assert unpacked.share < share.share < packed.share


def test_flan_answers_are_graded_by_the_flan_checker_not_the_older_suite(registry):
    from sftlab.builtin.grading import check_answer, gradable
    from sftlab.builtin.tasks import build_suite
    from sftlab.train_eval import grade

    flan_conv = next(c for c in build_eval(FlanMixture(n_eval=5)) if c.meta["family"] == "uppercase")
    answer = flan_conv.meta["answer"]
    assert gradable(flan_conv) and check_answer(flan_conv, answer) and grade(flan_conv, f"The answer is {answer}.")
    assert not check_answer(flan_conv, answer + "x")
    # the suite in meta picks the checker: a flan meta naming a family only the older suite has is refused
    with pytest.raises(ValueError, match="unknown flan family 'plural'"):
        check_answer({"suite": "flan", "family": "plural", "answer": "cats"}, "cats")
    assert not gradable({"suite": "flan", "family": "plural", "answer": "cats"})
    old = build_suite(1, families=["plural"])[0]
    assert gradable(old) and check_answer(old, old.meta["answer"])
    flan_add = {"suite": "flan", "family": "add", "answer": "12"}
    assert check_answer(flan_add, "12") and not check_answer(flan_add, "13")


def test_builtin_data_set_names_load_the_default_mixture(registry):
    from sftlab.data.config import SourceConfig
    from sftlab.errors import DataError

    ev = SourceConfig(path="builtin:flan-eval").load().conversations
    assert dump(ev) == dump(build_eval())
    tr = SourceConfig(path="builtin:flan-train", limit=50).load().conversations
    assert dump(tr) == dump(build_train()[0][:50])
    with pytest.raises(DataError, match="builtin:flan-train, builtin:flan-eval"):
        SourceConfig(path="builtin:flan").load()


def test_config_refuses_unknown_keys_and_inconsistent_knobs():
    with pytest.raises(ValidationError, match="extra"):
        FlanMixture(few_shot=0.2)
    with pytest.raises(ValidationError, match="only used by mixing: temperature"):
        FlanMixture(temperature=3.0)
    with pytest.raises(ValidationError, match="lower one of them"):
        FlanMixture(few_shot_fraction=0.6, pack_fraction=0.5)
    with pytest.raises(ValidationError, match="more than once"):
        FlanMixture(clusters=["letters", "letters"])
    assert FlanMixture(mixing="temperature", temperature=3.0).temperature == 3.0


def test_pool_seed_keeps_the_eval_set_and_pools_while_seed_varies_the_mixture(registry):
    """A replicate with another seed, evaluated on the seed-0 eval set: with pool_seed 0 it never trains
    on a seed-0 eval example; without it (pools drawn with seed 1) it does (pick_colour has 80 examples)."""
    eval0 = build_eval(FlanMixture(seed=0))
    assert dump(build_eval(FlanMixture(seed=1, pool_seed=0))) == dump(eval0)
    eval_turns = {tuple((m.role, m.content) for m in c.messages) for c in eval0}

    def leaked(train):  # training conversations holding a whole eval example (its turns, consecutively)
        n = 0
        for c in train:
            msgs = [(m.role, m.content) for m in c.messages if m.role != "system"]
            n += any(tuple(msgs[i:i + k]) in eval_turns for k in (2, 4) for i in range(len(msgs) - k + 1))
        return n

    kept, _ = build_train(small(seed=1, pool_seed=0, budget=3000))
    assert leaked(kept) == 0
    assert leaked(build_train(small(seed=1, budget=3000))[0]) > 0
    # the seed still changes the mixture: other draws from the same pools
    assert dump(kept) != dump(build_train(small(seed=0, pool_seed=0, budget=3000))[0])
    assert dump(build_train(small(seed=0, budget=3000))[0]) == dump(build_train(small(seed=0, pool_seed=0, budget=3000))[0])


def test_a_family_too_small_for_its_eval_examples_says_how_to_fix(registry):
    with pytest.raises(ValueError, match="pick_colour.*fix: lower n_eval"):
        build_train(small(n_eval=79))


def test_default_mixture_on_the_real_registry():
    """Whatever families the registry holds today: each gives its eval examples, training holds only seen
    families of trained clusters, and no eval example is a training one."""
    import sftlab.builtin.flan as flan

    train, evaluation, report = build(FlanMixture(budget=2000))
    per_family = {}
    for c in evaluation:
        per_family[c.meta["family"]] = per_family.get(c.meta["family"], 0) + 1
    assert per_family == {f: 40 for f in flan.FAMILIES}
    trained = {r["family"] for c in train for r in c.meta["examples"]}
    assert trained == set(report.sizes) and all(flan.split_of(f) == "seen" for f in trained)
    assert not {f for f in trained if flan.FAMILIES[f].cluster in flan.HELDOUT_CLUSTERS}
    eval_examples = {repr(c.to_dicts()) for c in evaluation}
    train_windows = set()  # every run of consecutive turns (system aside) as long as an eval example
    for c in train:
        msgs = [m for m in c.to_dicts() if m["role"] != "system"]
        for n in {len(e.messages) for e in evaluation}:
            train_windows |= {repr(msgs[i:i + n]) for i in range(len(msgs) - n + 1)}
    assert len(train_windows) > len(train) and not eval_examples & train_windows


def test_a_mixture_saved_as_jsonl_loads_back_and_grades(registry, tmp_path):
    """How a variant reaches `sftlab train`: save_conversations, then data.train: [{path: ...}]."""
    from sftlab.builtin.grading import check_answer
    from sftlab.data.config import SourceConfig
    from sftlab.data.save import save_conversations

    train, evaluation, _ = build(small(budget=300))
    save_conversations(train, tmp_path / "train.jsonl")
    save_conversations(evaluation, tmp_path / "eval.jsonl")

    def ours(convs):  # the loader adds meta.format (the file's data format) and meta.original_source
        return [(c.to_dicts(), {k: v for k, v in c.meta.items() if k not in ("format", "original_source")}) for c in convs]

    assert ours(SourceConfig(path=str(tmp_path / "train.jsonl")).load().conversations) == dump(train)
    loaded = SourceConfig(path=str(tmp_path / "eval.jsonl")).load().conversations
    assert ours(loaded) == dump(evaluation) and all(check_answer(c, c.last_response) for c in loaded)
