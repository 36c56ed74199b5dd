"""sftlab ablate end to end on a tiny model, and the noisy pool it ablates on."""

import json

import pytest
import yaml

from sftlab.ablate import load_ablation_config
from sftlab.builtin.noisy_pool import NOISE_KINDS, NoisyPoolConfig, build_noisy_pool, noise_counts
from sftlab.cli import main
from sftlab.curate import ExactDedup, apply_blocks
from sftlab.curate.blocks import normalised_conversation
from sftlab.errors import ConfigError, SftlabError
from tiny import make_model, make_tokenizer

NOISE = {"exact_duplicate": 0.1, "near_duplicate": 0.1, "wrong_answer": 0.05, "truncated": 0.05, "off_task": 0.05,
         "refusal": 0.05, "trivial": 0.05, "repeated": 0.05}


def test_noisy_pool_has_the_configured_noise_and_is_deterministic():
    cfg = NoisyPoolConfig(size=400, noise=NOISE, seed=3)
    pool = build_noisy_pool(cfg)
    counts = noise_counts(pool)
    assert len(pool) == 400
    assert counts == {**{k: round(400 * f) for k, f in NOISE.items()}, "clean": 400 - 200}  # NOISE sums to 50%
    assert [c.to_json() for c in build_noisy_pool(cfg)] == [c.to_json() for c in pool]
    assert build_noisy_pool(NoisyPoolConfig(size=400, noise=NOISE, seed=4))[0].to_json() != pool[0].to_json()
    by_kind = {k: [c for c in pool if c.meta["noise"] == k] for k in ("clean", *NOISE_KINDS)}
    clean_texts = {normalised_conversation(c) for c in by_kind["clean"]}
    clean_raw = {c.to_dicts().__repr__() for c in by_kind["clean"]}
    for c in by_kind["exact_duplicate"]:
        assert repr(c.to_dicts()) in clean_raw
    for c in by_kind["near_duplicate"]:  # differs as text, equal once normalised
        assert repr(c.to_dicts()) not in clean_raw and normalised_conversation(c) in clean_texts
    for c in by_kind["wrong_answer"] + by_kind["truncated"]:
        assert c.last_response != c.meta["answer"]
    assert all(c.last_response.startswith(("As an AI", "I'm sorry")) for c in by_kind["refusal"])
    assert all(len(c.last_response.split()) >= 25 for c in by_kind["repeated"])
    # no two pool rows share an id, and every id is traceable to its position
    assert len({c.id for c in pool}) == 400 and pool[7].id == "pool-00007"


def test_noisy_pool_rejects_bad_fractions():
    with pytest.raises(ValueError, match="unknown noise kinds"):
        NoisyPoolConfig(noise={"typo": 0.1})
    with pytest.raises(ValueError, match="sum to"):
        NoisyPoolConfig(noise={"exact_duplicate": 0.6, "trivial": 0.5})


def test_curation_removes_the_planted_duplicates():
    pool = build_noisy_pool(NoisyPoolConfig(size=300, noise=NOISE, seed=0))
    block = ExactDedup()
    kept = list(apply_blocks(pool, [block]))
    n_dups = sum(c.meta["noise"] in ("exact_duplicate", "near_duplicate") for c in pool)
    # the first copy of each content is kept (it may be the planted copy: then its clean twin goes)
    assert block.stats.dropped_by_reason["exact_duplicate"] == n_dups
    assert len({normalised_conversation(c) for c in kept}) == len(kept) == 300 - n_dups


@pytest.fixture(scope="module")
def ablation_setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablate")
    folder = tmp / "tiny-model"
    make_model().save_pretrained(folder, safe_serialization=True)
    make_tokenizer().save_pretrained(folder)
    (tmp / "run.yaml").write_text(yaml.safe_dump({
        "model": {"name": str(folder)}, "lora": {"enabled": True, "r": 4, "alpha": 8},
        "data": {"train": [{"path": "unused"}], "max_len": 128},
        "train": {"lr": 1e-2, "max_steps": 2, "tokens_per_batch": 256, "warmup_ratio": 0.0}}))
    (tmp / "curate.yaml").write_text(yaml.safe_dump({
        "inputs": [{"name": "pool", "path": "pool.jsonl"}], "output": "unused.jsonl",
        "blocks": [{"type": "exact_dedup"}, {"type": "empty_response"}, {"type": "refusal"}, {"type": "repetition"}]}))
    cfg = {"train": "run.yaml", "output_dir": str(tmp / "out"),
           "pool": {"size": 120, "noise": NOISE, "seed": 0},
           "variants": [{"name": "curated", "curate": "curate.yaml"}, {"name": "random", "random_subset": True}],
           "size_from": "curated", "baseline": "random",
           "eval": {"max_task_examples_per_family": 1, "response_loss_every": 80, "batch_size": 24, "task_max_new_tokens": 3}}
    (tmp / "ablate.yaml").write_text(yaml.safe_dump(cfg))
    return tmp, cfg


def test_ablate_end_to_end_equal_sizes_and_reuse(ablation_setup, capsys):
    tmp, _ = ablation_setup
    assert main(["ablate", str(tmp / "ablate.yaml")]) == 0
    out = tmp / "out"
    res = json.loads((out / "ablation.json").read_text())
    # 120 rows, 50% noise: 12 exact + 12 near duplicates and 6 each of refusal/trivial/repeated are planted
    curated = [json.loads(x) for x in (out / "variants/curated/data.jsonl").read_text().splitlines()]
    random_rows = [json.loads(x) for x in (out / "variants/random/data.jsonl").read_text().splitlines()]
    assert len(curated) == len(random_rows) == res["size"] == 120 - 24 - 18
    assert {r["meta"]["noise"] for r in curated}.isdisjoint({"refusal", "trivial", "repeated"})
    assert res["composition"]["curated"]["distinct_prompts"] == res["size"]
    assert res["composition"]["random"]["rows"] == res["size"]
    rows = {r["variant"]: r for r in res["rows"]}
    assert list(rows) == ["random", "curated"]  # baseline first
    n = rows["curated"]["n_prompts"]
    assert n == {"seen": 16, "held-out": 8, "all": 24}
    for key in ("seen_acc", "held-out_acc", "all_acc", "response_loss"):
        e = rows["curated"][key]
        assert e["ci_low"] <= e["value"] <= e["ci_high"]
    assert "held-out_acc_diff" in rows["curated"] and "held-out_acc_diff" not in rows["random"]
    md = (out / "ablation.md").read_text()
    assert f"same size: **{res['size']} examples**" in md and "Paired differences vs `random`" in md
    assert (out / "ablation.png").stat().st_size > 1000 and "<table>" in (out / "ablation.html").read_text()
    evals = [json.loads((out / f"variants/{v}/eval.json").read_text()) for v in ("curated", "random")]
    assert evals[0]["tasks"]["ids"] == evals[1]["tasks"]["ids"]  # the same prompts for every variant
    assert res["reused"] == []

    # a rerun reuses both finished variants: nothing is trained or evaluated again
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("variants/*/eval.json")}
    capsys.readouterr()
    assert main(["ablate", str(tmp / "ablate.yaml")]) == 0
    printed = capsys.readouterr().out
    assert "reused finished variants: curated, random" in printed
    assert json.loads((out / "ablation.json").read_text())["rows"] == res["rows"]
    assert {p: p.stat().st_mtime_ns for p in out.glob("variants/*/eval.json")} == mtimes
    # another step count is another probe: the finished models are not silently reused for it
    from sftlab.ablate import run_ablation

    with pytest.raises(SftlabError, match="was trained with another config"):
        run_ablation(tmp / "ablate.yaml", steps=3)


def test_ablate_refuses_unequal_sizes_and_bad_configs(ablation_setup, tmp_path):
    tmp, cfg = ablation_setup
    (tmp / "other.jsonl").write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                              {"role": "assistant", "content": "hello"}]}) + "\n")
    bad = {**cfg, "output_dir": str(tmp_path / "o"), "variants": cfg["variants"] + [{"name": "file", "data": "other.jsonl"}]}
    (tmp / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(SftlabError, match="variant 'file' has 1 examples but 'curated' has"):
        main_raise(tmp / "bad.yaml")
    (tmp / "bad2.yaml").write_text(yaml.safe_dump({**cfg, "baseline": "nope", "size_from": "random"}))
    with pytest.raises(ConfigError) as e:
        load_ablation_config(tmp / "bad2.yaml")
    assert "baseline 'nope' is not a variant name" in str(e.value) and "size_from 'random' is a random subset" in str(e.value)


def main_raise(path):
    from sftlab.ablate import run_ablation

    return run_ablation(path)


def test_shipped_ablation_config_is_valid():
    cfg, base = load_ablation_config("ablation-curated-vs-random")
    assert cfg.size_from == "curated" and cfg.baseline == "random"
    assert (base / cfg.variants[0].curate).is_file()
    assert round(sum(cfg.pool.noise.values()), 2) == 0.40


def test_seed_replicate_changes_training_seed_and_random_draws_only():
    from sftlab.ablate import with_seed

    cfg, _ = load_ablation_config("ablation-curated-vs-random")
    rep = with_seed(cfg, 7)
    assert rep.overrides[-1] == "train.seed=7"
    assert [v.seed for v in rep.variants if v.random_subset] == [7]
    assert [v for v in rep.variants if not v.random_subset] == [v for v in cfg.variants if not v.random_subset]
    assert rep.pool == cfg.pool


def test_pooled_over_seeds_averages_paired_differences_per_prompt(tmp_path):
    """Two fake replicate folders with known pass/loss vectors: the pooled difference equals the
    mean over prompts of the per-seed differences, computed here by hand."""
    import json

    import numpy as np

    from sftlab.ablate import pooled_over_seeds

    rng = np.random.default_rng(0)
    splits = ["seen"] * 30 + ["held-out"] * 20
    nt = rng.integers(5, 20, 12).tolist()
    by_seed = []
    for s in range(2):
        runs = {}
        for v in ("curated", "random"):
            passed = (rng.random(50) < (0.6 if v == "curated" else 0.4)).tolist()
            loss = (rng.random(12) * 10).tolist()
            runs[v] = (passed, loss)
            d = tmp_path / f"seed{s}" / "variants" / v
            d.mkdir(parents=True)
            d.joinpath("eval.json").write_text(json.dumps({
                "tasks": {"ids": [f"p{i}" for i in range(50)], "splits": splits, "passed": passed},
                "response_loss": {"ids": [f"c{i}" for i in range(12)], "loss_sums": loss, "n_tokens": nt}}))
        by_seed.append(runs)
    got = pooled_over_seeds([tmp_path / "seed0", tmp_path / "seed1"], "random")["curated"]
    diff = np.mean([np.subtract(r["curated"][0], r["random"][0], dtype=float) for r in by_seed], axis=0)
    assert got["all_acc_diff"].value == pytest.approx(diff.mean())
    assert got["held-out_acc_diff"].value == pytest.approx(diff[30:].mean())
    assert got["seen_acc_diff"].low < got["seen_acc_diff"].value < got["seen_acc_diff"].high
    ldiff = np.mean([np.subtract(r["curated"][1], r["random"][1]) for r in by_seed], axis=0)
    assert got["response_loss_diff"].value == pytest.approx(ldiff.sum() / sum(nt))
    (tmp_path / "seed1" / "variants" / "random" / "eval.json").unlink()
    with pytest.raises(SftlabError, match="finished evaluations"):
        pooled_over_seeds([tmp_path / "seed0", tmp_path / "seed1"], "random")
