"""sftlab ablate with flan variants (the "number of training clusters" experiment): configs and runs
(nested cluster subsets, seeds multiply variants, one budget), the scaling rows worked out by hand,
and end to end on a tiny model and the small fake flan registry (tests/helpers.py)."""

import json

import numpy as np
import pytest
import yaml

from helpers import fake_flan_registry
from sftlab.ablate import load_ablation_config, variant_runs, with_seed
from sftlab.ablate.config import AblationConfig, cluster_order, flan_mixture
from sftlab.errors import ConfigError, SftlabError
from tiny import make_model, make_tokenizer

TRAINABLE = ["letters", "arithmetic", "lists"]


def approx(x):
    return pytest.approx(x, abs=1e-6)  # Estimate.to_json rounds to 6 digits  # the fake registry's; comparison is held out


def config(**kw) -> AblationConfig:
    raw = {"variants": [{"name": f"k{k}", "flan": {"first_clusters": k}} for k in (1, 2, 3)], "baseline": "k1",
           "flan": {"budget": 3000}, **kw}
    return AblationConfig.model_validate(raw)


def test_shipped_flan_scaling_config_runs_nested_subsets_with_one_budget():
    cfg, _ = load_ablation_config("ablation-flan-scaling")
    runs = variant_runs(cfg)
    assert cfg.task_suite == "flan" and cfg.baseline == "k1" and cfg.seeds == [0, 1]
    assert [r.name for r in runs] == ["k1-s0", "k2-s0", "k4-s0", "k9-s0", "k1-s1", "k2-s1", "k4-s1", "k9-s1"]
    mixtures = {r.name: flan_mixture(cfg, r.variant) for r in runs}
    assert {(m.budget, m.budget_unit) for m in mixtures.values()} == {(49152, "tokens")}
    assert all(m.pool_seed == 0 and m.n_eval == 40 for m in mixtures.values())  # the eval set's draws, any seed
    for s in (0, 1):
        order = cluster_order(cfg, s)
        assert [mixtures[f"k{k}-s{s}"].clusters for k in (1, 2, 4, 9)] == [order[:1], order[:2], order[:4], order]
        assert [r.train_seed for r in runs if r.name.endswith(f"-s{s}")] == [s] * 4
    assert len(order) == 9 and cluster_order(cfg, 0) != cluster_order(cfg, 1)  # a fixed shuffle per seed
    # the run config: quickstart + 24 steps of 2 x 1024 tokens = the budget; train.seed is the run's
    from sftlab.ablate.config import run_config

    rc = run_config(cfg, _, "x.jsonl", "out", train_seed=1)
    assert rc.train.max_steps * rc.train.grad_accum * rc.train.tokens_per_batch == 49152 and rc.train.seed == 1
    assert cfg.eval.max_task_examples_per_family == {"seen": 2, "heldout": 8, "heldout_cluster": 8}


def test_cluster_orders_nested_and_deterministic(monkeypatch):
    fake_flan_registry(monkeypatch)
    cfg = config()
    orders = {s: cluster_order(cfg, s) for s in range(6)}
    assert all(sorted(o) == sorted(TRAINABLE) for o in orders.values())
    assert len({tuple(o) for o in orders.values()}) > 1 and cluster_order(cfg, 3) == orders[3]
    for s in range(3):
        v = cfg.model_copy(update={"seeds": None})
        got = [flan_mixture(cfg, x.model_copy(update={"seed": s})).clusters for x in v.variants]
        assert got == [orders[s][:1], orders[s][:2], orders[s]]
    reg = config(flan={"budget": 3000, "budget_unit": "tokens", "cluster_order": "registry"})
    assert cluster_order(reg, 5) == TRAINABLE
    fixed = config(flan={"budget": 3000, "budget_unit": "tokens", "cluster_order": ["lists", "letters", "arithmetic"]})
    assert [flan_mixture(fixed, v).clusters for v in fixed.variants] == [["lists"], ["lists", "letters"],
                                                                         ["lists", "letters", "arithmetic"]]
    # a variant's own knobs override the shared ones; explicit clusters; {} = every trainable cluster
    cfg = config(variants=[{"name": "a", "flan": {"clusters": ["lists"], "mixing": "temperature", "temperature": 3}},
                           {"name": "all", "flan": {}}], baseline="a")
    a, b = (flan_mixture(cfg, v) for v in cfg.variants)
    assert a.budget_unit == b.budget_unit == "tokens"  # the ablation's default unit
    assert a.clusters == ["lists"] and a.mixing == "temperature" and a.budget == b.budget == 3000 and b.clusters is None


def test_seeds_multiply_variants_and_set_train_seed(monkeypatch):
    fake_flan_registry(monkeypatch)
    cfg = config(seeds=[0, 1])
    runs = variant_runs(cfg)
    assert [r.name for r in runs] == ["k1-s0", "k2-s0", "k3-s0", "k1-s1", "k2-s1", "k3-s1"]
    assert [(r.group, r.variant.seed, r.train_seed) for r in runs[3:]] == [("k1", 1, 1), ("k2", 1, 1), ("k3", 1, 1)]
    assert [flan_mixture(cfg, r.variant).seed for r in runs] == [0, 0, 0, 1, 1, 1]
    assert [r.name for r in variant_runs(with_seed(cfg, 7))] == ["k1-s7", "k2-s7", "k3-s7"]
    single = config(variants=[{"name": "a", "flan": {"first_clusters": 1}, "seed": 4}, {"name": "b", "flan": {}}],
                    baseline="a")
    assert [(r.name, r.train_seed) for r in variant_runs(single)] == [("a", 4), ("b", 0)]


def write(tmp_path, name, raw) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_bad_flan_configs_say_how_to_fix(monkeypatch, tmp_path):
    fake_flan_registry(monkeypatch)
    base = {"variants": [{"name": "a", "flan": {"first_clusters": 1}}, {"name": "b", "flan": {}}], "baseline": "a"}
    # field-level: fixed keys, clusters and first_clusters together, clusters in the shared section
    bad = {**base, "flan": {"seed": 3, "clusters": ["lists"]},
           "variants": [{"name": "a", "flan": {"first_clusters": 1, "clusters": ["lists"], "n_eval": 5}}, base["variants"][1]]}
    with pytest.raises(ConfigError) as e:
        load_ablation_config(write(tmp_path, "bad1.yaml", bad))
    msg = str(e.value)
    assert "flan: seed is fixed in an ablation" in msg and "clusters is chosen per variant" in msg
    assert "n_eval is fixed" in msg and "not both" in msg
    # the whole config: other budgets, held-out or too many clusters, a size_from, seeds with a pinned seed
    bad = {"variants": [{"name": "a", "flan": {"first_clusters": 4}, "seed": 2}, {"name": "b", "flan": {"clusters": ["comparison"]}},
                        {"name": "c", "flan": {"budget": 99, "budget_unit": "examples"}}],
           "baseline": "a", "size_from": "a", "seeds": [0, 1], "eval": {"max_task_examples_per_family": {"seen": 1, "held": 2}}}
    with pytest.raises(ConfigError) as e:
        load_ablation_config(write(tmp_path, "bad2.yaml", bad))
    msg = str(e.value)
    for part in ("first_clusters 4: there are 3 trainable clusters", "['comparison'] held out", "different budgets",
                 "set budget and budget_unit once", "size_from: unused by flan variants", "variants ['a'] set seed",
                 "unknown splits ['held']", "variants ['a', 'b'] have no budget", "'8000 tokens': ['a', 'b'], '99 examples': ['c']"):
        assert part in msg, part
    with pytest.raises(ConfigError, match="put them in separate ablations"):
        load_ablation_config(write(tmp_path, "bad3.yaml", {**base, "variants": [*base["variants"], {"name": "d", "data": "x.jsonl"}]}))
    with pytest.raises(ConfigError, match="seeds: multiplies flan variants only"):
        load_ablation_config(write(tmp_path, "bad4.yaml", {"variants": [{"name": "d", "data": "x"}, {"name": "e", "data": "y"}],
                                                           "size_from": "d", "baseline": "d", "seeds": [0, 1]}))
    with pytest.raises(ConfigError, match="must name every trainable cluster once"):
        load_ablation_config(write(tmp_path, "bad5.yaml", {**base, "flan": {"cluster_order": ["lists"]}}))


# ---------------------------------------------------------------- the scaling rows, by hand

def fake_runs():
    """Prompts 0-3 held-out cluster, 4-6 of cluster A, 7-9 of cluster B; k1 trains A, k2 trains A and B."""
    from sftlab.ablate.variants import VariantData

    passed = {("k1", 0): [1, 0, 0, 0] + [1, 1, 0] + [0, 0, 0], ("k1", 1): [0, 0, 0, 0] + [1, 0, 0] + [1, 0, 0],
              ("k2", 0): [1, 1, 0, 0] + [1, 1, 1] + [1, 0, 0], ("k2", 1): [1, 1, 1, 0] + [0, 0, 0] + [1, 1, 1]}
    loss = {("k1", 0): [4.0, 2.0], ("k1", 1): [6.0, 2.0], ("k2", 0): [3.0, 1.0], ("k2", 1): [3.0, 1.0]}
    vds, evals = [], {}
    for (group, seed), p in passed.items():
        clusters = ("A",) if group == "k1" else ("A", "B")
        name = f"{group}-s{seed}"
        b = "seen" if "B" in clusters else "untrained-cluster"
        vds.append(VariantData(name, "flan", None, [], "", group=group, seed=seed, trained_clusters=clusters))
        evals[name] = {"tasks": {"ids": [f"p{i}" for i in range(10)], "passed": p,
                                 "splits": ["held-out-cluster"] * 4 + ["seen"] * 3 + [b] * 3},
                       "response_loss": {"ids": ["c0", "c1"], "loss_sums": loss[(group, seed)], "n_tokens": [4, 4]}}
    return vds[::-1], evals  # k2 first: rows are ordered by clusters, not by run order


def test_scaling_rows_pool_seeds_and_pair_with_the_baseline():
    from sftlab.ablate.scaling import scaling_blocks, scaling_figure, scaling_rows
    from sftlab.ablate.report import to_markdown
    from sftlab.html_page import figure_png

    vds, evals = fake_runs()
    rows = scaling_rows(vds, evals, "k1")
    k1, k2 = rows
    assert (k1["variant"], k1["n_clusters"], k2["variant"], k2["n_clusters"]) == ("k1", 1, "k2", 2)
    assert k1["heldout_cluster_acc_per_seed"] == {"0": 0.25, "1": 0.0}
    assert k1["heldout_cluster_acc"]["value"] == approx(0.125) and k2["heldout_cluster_acc"]["value"] == approx(0.625)
    assert k2["heldout_cluster_acc_diff"]["value"] == approx(0.5) and "heldout_cluster_acc_diff" not in k1
    e = k2["heldout_cluster_acc"]
    assert e["ci_low"] <= e["value"] <= e["ci_high"] and e["n"] == 4
    assert k2["all_acc_diff"]["value"] == approx(np.mean([(a + b - c - d) / 2 for a, b, c, d in zip(
        evals["k2-s0"]["tasks"]["passed"], evals["k2-s1"]["tasks"]["passed"], evals["k1-s0"]["tasks"]["passed"],
        evals["k1-s1"]["tasks"]["passed"])]))
    # cluster B: untrained by k1 (pooled over its seeds: 1 of 6), seen by k2; k2 has no untrained cluster
    assert k1["untrained_acc"]["value"] == approx(1 / 6) and k2["untrained_acc"] is None
    assert k2["seen_acc"]["value"] == approx(7 / 12) and k2["n_prompts"]["seen"] == 12
    # response loss: per conversation mean over seeds, / tokens; difference vs k1
    assert k1["response_loss"]["value"] == approx((5 + 2) / 8) and k2["response_loss_diff"]["value"] == approx((4 - 7) / 8)
    mixes = {vd.name: {"seed": vd.seed, "clusters": list(vd.trained_clusters), "conversations": 3, "graded": 5,
                       "tokens": 100, "trained_tokens": 10, "used": 100, "budget": 120, "budget_unit": "tokens"} for vd in vds}
    md = to_markdown(scaling_blocks(rows, "k1", mixes))
    assert "## Scaling: accuracy on held-out clusters vs number of training clusters" in md
    assert "| k1 | 1 | 12.5% [" in md and "| s0 25.0%, s1 0.0% | baseline |" in md and "| k2 | 2 | 62.5% [" in md
    assert "+50.0 pp [" in md and "| k2-s1 | 1 | 2 | A, B | 3 | 5 | 100 (10 trained) | 100 of 120 tokens |" in md
    assert len(figure_png(scaling_figure(rows, "k1"))) > 1000
    evals["k2-s1"]["tasks"]["ids"] = evals["k2-s1"]["tasks"]["ids"][::-1]
    with pytest.raises(SftlabError, match="other tasks prompts"):
        scaling_rows(vds, evals, "k1")


# ---------------------------------------------------------------- end to end

def test_flan_ablation_end_to_end(monkeypatch, tmp_path, capsys):
    from sftlab.cli import main
    from sftlab.data import load_conversations
    from sftlab.render import Renderer
    from transformers import AutoTokenizer

    fake_flan_registry(monkeypatch)
    folder = tmp_path / "tiny-model"
    make_model().save_pretrained(folder, safe_serialization=True)
    make_tokenizer().save_pretrained(folder)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({
        "model": {"name": str(folder)}, "lora": {"enabled": True, "r": 4, "alpha": 8},
        "data": {"train": [{"path": "unused"}], "max_len": 256},
        "train": {"lr": 1e-2, "max_steps": 2, "tokens_per_batch": 512, "warmup_ratio": 0.0}}))
    budget = 2500
    raw = {"train": "run.yaml", "output_dir": str(tmp_path / "out"),
           "flan": {"budget": budget, "budget_unit": "tokens", "cap": 100},
           "seeds": [0, 1], "variants": [{"name": f"k{k}", "flan": {"first_clusters": k}} for k in (1, 2, 3)],
           "baseline": "k1",
           "eval": {"max_task_examples_per_family": {"seen": 1, "heldout": 1, "heldout_cluster": 3},
                    "response_loss_every": 130, "batch_size": 24, "task_max_new_tokens": 3}}
    path = write(tmp_path, "flan.yaml", raw)
    assert main(["ablate", path]) == 0
    out = tmp_path / "out"
    res = json.loads((out / "ablation.json").read_text())
    names = [f"k{k}-s{s}" for s in (0, 1) for k in (1, 2, 3)]
    assert list(res["runs"]) == names and res["budget"] == budget

    # every run: the same token budget, counted here with the saved tokenizer; nested clusters per seed
    renderer = Renderer(AutoTokenizer.from_pretrained(folder))
    clusters = {}
    for name in names:
        convs = load_conversations(str(out / "variants" / name / "data.jsonl"), on_error="raise").conversations
        lengths = [len(renderer.render(c)) for c in convs]
        assert sum(lengths) == res["runs"][name]["mixture"]["used"] <= budget
        assert budget - sum(lengths) < max(lengths)  # stopped at the first conversation that did not fit
        clusters[name] = {r["cluster"] for c in convs for r in c.meta["examples"]}
        assert clusters[name] == set(json.loads((out / "variants" / name / "mixture.json").read_text())["clusters"])
    for s in (0, 1):
        assert clusters[f"k1-s{s}"] < clusters[f"k2-s{s}"] < clusters[f"k3-s{s}"] == set(TRAINABLE)
        assert len(clusters[f"k1-s{s}"]) == 1 and len(clusters[f"k2-s{s}"]) == 2

    # each run evaluated on the same flan prompts with its own trained clusters
    evals = {n: json.loads((out / "variants" / n / "eval.json").read_text()) for n in names}
    assert len({tuple(e["tasks"]["ids"]) for e in evals.values()}) == 1
    assert len(evals["k1-s0"]["tasks"]["ids"]) == 8 + 3 + 2 * 3  # seen 1 each, held-out families 1, held-out cluster 3
    assert evals["k1-s0"]["eval_settings"]["trained_clusters"] == res["runs"]["k1-s0"]["mixture"]["clusters"]
    assert "untrained-cluster" in evals["k2-s1"]["tasks"]["splits"] and "untrained-cluster" not in evals["k3-s1"]["tasks"]["splits"]
    assert evals["k3-s0"]["tasks"]["splits"].count("held-out-cluster") == 6

    rows = {r["variant"]: r for r in res["rows"]}
    assert list(rows) == ["k1", "k2", "k3"] and [r["n_clusters"] for r in rows.values()] == [1, 2, 3]
    assert set(rows["k2"]["heldout_cluster_acc_per_seed"]) == {"0", "1"} and "heldout_cluster_acc_diff" in rows["k3"]
    md = (out / "ablation.md").read_text()
    assert "Scaling: accuracy on held-out clusters vs number of training clusters" in md and "| k3 | 3 |" in md
    assert f"**{budget} tokens**" in md
    html = (out / "ablation.html").read_text()
    assert "held-out-cluster accuracy vs number of training clusters" in html and "<table>" in html
    assert (out / "ablation.png").stat().st_size > 1000 and (out / "eval_report.html").is_file()

    # a rerun reuses every finished run
    capsys.readouterr()
    assert main(["ablate", path]) == 0
    assert f"reused finished variants: {', '.join(names)}" in capsys.readouterr().out
    assert main(["ablate", path, "--pooled", str(out)]) == 2
    assert "pools its seeds itself" in capsys.readouterr().err
