"""The flan ablation's comparison (the FLAN "number of training clusters" experiment): per variant,
accuracy on the held-out clusters (HELDOUT_CLUSTERS, trained by no variant: the same prompts for every
run, so the y axis of the scaling curve) against the number of clusters it trained, pooled over its
seeds, with each seed's value and paired differences vs the baseline variant; the other prompt sets
(seen families, held-out families of its trained clusters, clusters it did not train, all prompts) and
response loss beside it; the tables and the plot.

Pooling over seeds: per prompt, the mean of the seeds' pass (0/1), then a 95% percentile bootstrap over
prompts; a difference is, per prompt, the variant's mean minus the baseline's (= seed s minus seed s of
the baseline, averaged over the seeds), paired bootstrap over prompts. The interval is over prompts: the seeds' spread is shown by each seed's value, not folded in.
Seen / held-out-family / not-trained accuracies are over prompts that differ per seed when the cluster
order is shuffled per seed: they pool the seeds' prompts and have no paired difference.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sftlab.ablate.report import Block, _cells
from sftlab.errors import SftlabError

# GenerationSet split labels (evaluate.runner.FLAN_SPLIT_LABELS values) -> row keys
SPLIT_KEYS = {"held-out-cluster": "heldout_cluster", "seen": "seen", "held-out": "heldout", "untrained-cluster": "untrained"}


def scaling_rows(vds: list, evals: dict[str, dict], baseline: str) -> list[dict[str, Any]]:
    """One row per variant (its runs = seeds), ordered by number of trained clusters (then config order).
    vds: ablate.variants.VariantData of every run (group = variant, seed, trained_clusters)."""
    from sftlab.evaluate.bootstrap import mean_ci, paired_diff_ci, ratio_of_sums_ci, ratio_of_sums_diff_ci

    ref = evals[vds[0].name]
    for vd in vds:
        for key in ("tasks", "response_loss"):
            if evals[vd.name][key]["ids"] != ref[key]["ids"]:
                raise SftlabError(f"run {vd.name!r} was evaluated on other {key} prompts than {vds[0].name!r}; "
                                  "fix: delete its eval.json and rerun so every run sees the same prompts")
    heldout = np.asarray(ref["tasks"]["splits"]) == "held-out-cluster"
    for vd in vds:  # the held-out clusters are the same prompts for every run, whatever it trained
        if not np.array_equal(np.asarray(evals[vd.name]["tasks"]["splits"]) == "held-out-cluster", heldout):
            raise SftlabError(f"run {vd.name!r} has other held-out-cluster prompts than {vds[0].name!r}; "
                              "fix: delete its eval.json and rerun")
    nt = np.asarray(ref["response_loss"]["n_tokens"], dtype=float)
    groups: dict[str, list] = {}
    for vd in vds:
        groups.setdefault(vd.group, []).append(vd)
    for runs in groups.values():
        runs.sort(key=lambda vd: vd.seed)

    def passed(runs) -> np.ndarray:  # per prompt, mean over the runs (seeds)
        return np.mean([np.asarray(evals[vd.name]["tasks"]["passed"], float) for vd in runs], axis=0)

    def losses(runs) -> np.ndarray:
        return np.mean([np.asarray(evals[vd.name]["response_loss"]["loss_sums"], float) for vd in runs], axis=0)

    base_runs = groups[baseline]
    base_pass, base_loss = passed(base_runs), losses(base_runs)
    rows = []
    for group, runs in groups.items():
        p = passed(runs)
        ks = {len(vd.trained_clusters) for vd in runs}
        row: dict[str, Any] = {
            "variant": group, "runs": [vd.name for vd in runs], "seeds": [vd.seed for vd in runs],
            "n_clusters": min(ks), "clusters": {str(vd.seed): list(vd.trained_clusters) for vd in runs},
            "heldout_cluster_acc": mean_ci(p[heldout]).to_json(),
            "heldout_cluster_acc_per_seed": {str(vd.seed): float(np.mean(np.asarray(evals[vd.name]["tasks"]["passed"], float)[heldout]))
                                             for vd in runs},
            "all_acc": mean_ci(p).to_json(),
            "response_loss": ratio_of_sums_ci(losses(runs), nt).to_json(),
            "n_prompts": {"heldout_cluster": int(heldout.sum()), "all": len(p)},
        }
        for label, key in SPLIT_KEYS.items():
            if key == "heldout_cluster":
                continue
            pooled = np.concatenate([np.asarray(evals[vd.name]["tasks"]["passed"], float)[np.asarray(evals[vd.name]["tasks"]["splits"]) == label]
                                     for vd in runs])
            row[f"{key}_acc"] = mean_ci(pooled).to_json() if pooled.size else None
            row["n_prompts"][key] = int(pooled.size)
        if group != baseline:
            row["heldout_cluster_acc_diff"] = paired_diff_ci(base_pass[heldout], p[heldout]).to_json()
            row["all_acc_diff"] = paired_diff_ci(base_pass, p).to_json()
            row["response_loss_diff"] = ratio_of_sums_diff_ci(base_loss, losses(runs), nt).to_json()
        rows.append(row)
    order = list(groups)
    return sorted(rows, key=lambda r: (r["n_clusters"], order.index(r["variant"])))


def _cell(row: dict, key: str, pct: bool = True, diff: bool = False) -> str:
    return "—" if row.get(key) is None else _cells(row[key], pct, diff)


def _per_seed(row: dict) -> str:
    return ", ".join(f"s{s} {v * 100:.1f}%" for s, v in row["heldout_cluster_acc_per_seed"].items())


def scaling_blocks(rows: list[dict], baseline: str, mixes: dict[str, dict]) -> list[Block]:
    """The scaling table, the other prompt sets, and what each run trained (mixes: run -> VariantData.mix)."""
    n = rows[0]["n_prompts"]
    seeds = rows[0]["seeds"]
    scaling = [[r["variant"], r["n_clusters"], _cell(r, "heldout_cluster_acc"), _per_seed(r),
                "baseline" if r["variant"] == baseline else _cell(r, "heldout_cluster_acc_diff", diff=True)] for r in rows]
    other = [[r["variant"], r["n_clusters"], _cell(r, "seen_acc"), _cell(r, "heldout_acc"), _cell(r, "untrained_acc"),
              _cell(r, "all_acc"), "baseline" if r["variant"] == baseline else _cell(r, "all_acc_diff", diff=True),
              _cell(r, "response_loss", pct=False),
              "baseline" if r["variant"] == baseline else _cell(r, "response_loss_diff", pct=False, diff=True)] for r in rows]
    trained = [[run, m["seed"], len(m["clusters"]), ", ".join(m["clusters"]), m["conversations"], m["graded"],
                f"{m['tokens']} ({m['trained_tokens']} trained)", f"{m['used']} of {m['budget']} {m['budget_unit']}"]
               for run, m in mixes.items()]
    return [
        ("h2", "Scaling: accuracy on held-out clusters vs number of training clusters"),
        ("p", f"Held-out clusters: {n['heldout_cluster']} prompts of the clusters no variant trains (HELDOUT_CLUSTERS), "
              f"the same for every run. Mean over seeds {seeds}: per prompt, the mean of the seeds' verdicts; 95% "
              "bootstrap CI over prompts (the seeds' spread is the per-seed column). Difference vs "
              f"`{baseline}`: per prompt, variant minus baseline of the same seed, averaged over the seeds, paired "
              "bootstrap; '*' = 95% CI excludes 0."),
        ("table", ["variant", "training clusters", "held-out clusters (never trained), mean over seeds [95% CI]",
                   "per seed", f"Δ vs {baseline} [95% CI]"], scaling),
        ("p", "**Other prompt sets** (seen families, held-out families of the trained clusters and clusters this "
              "variant did not train depend on the variant's clusters, and on the seed when the cluster order is "
              "shuffled: their prompts are pooled over seeds, without a paired difference; all prompts and response "
              f"loss are the same for every run; Δ = variant − {baseline}, lower response loss is better)"),
        ("table", ["variant", "clusters", "seen families", "held-out families of trained clusters",
                   "clusters not trained", "all prompts", f"Δ all vs {baseline}", "response loss", f"Δ loss vs {baseline}"],
         other),
        ("p", "**What each run trained** (clusters in the order taken; tokens as rendered under the probe's chat "
              "template, before its length policy):"),
        ("table", ["run", "seed", "k", "clusters", "conversations", "graded examples", "tokens", "budget used"], trained),
    ]


def scaling_figure(rows: list[dict], baseline: str):
    """Left: held-out-cluster accuracy vs training clusters (mean over seeds with 95% CI, each seed's
    point); right: the paired difference vs the baseline with its 95% CI."""
    from sftlab.html_page import pyplot

    plt = pyplot()
    fig, (ax, dx) = plt.subplots(1, 2, figsize=(9, 3.4))
    ks = [r["n_clusters"] for r in rows]

    def bars(est: dict) -> tuple[float, float, float]:
        v = est["value"] * 100
        lo = est["ci_low"] * 100 if est["ci_low"] is not None else v
        hi = est["ci_high"] * 100 if est["ci_high"] is not None else v
        return v, v - lo, hi - v

    means = [bars(r["heldout_cluster_acc"]) for r in rows]
    ax.plot(ks, [m[0] for m in means], "-", color="#48c", zorder=1)
    ax.errorbar(ks, [m[0] for m in means], yerr=[[m[1] for m in means], [m[2] for m in means]], fmt="o", color="#48c",
                capsize=5, label="mean over seeds (95% CI)", zorder=2)
    for i, r in enumerate(rows):
        vals = list(r["heldout_cluster_acc_per_seed"].values())
        jitter = np.linspace(-0.08, 0.08, len(vals)) if len(vals) > 1 else [0.0]
        ax.scatter([r["n_clusters"] + j for j in jitter], [v * 100 for v in vals], facecolors="none", edgecolors="#333",
                   s=22, zorder=3, label="each seed" if i == 0 else None)
        ax.annotate(r["variant"], (r["n_clusters"], means[i][0]), textcoords="offset points", xytext=(6, 6), fontsize=7)
    ax.set_xticks(sorted(set(ks)))
    ax.set_xlabel("clusters trained")
    ax.set_ylabel("% correct")
    ax.set_title("held-out clusters (never trained)", fontsize=9)
    top = max(max(m[0] + m[2] for m in means), max(v * 100 for r in rows for v in r["heldout_cluster_acc_per_seed"].values()))
    ax.set_ylim(0, max(20.0, top + 5))
    ax.legend(fontsize=7, loc="upper left")

    diffs = [(r["n_clusters"], bars(r["heldout_cluster_acc_diff"]) if r["variant"] != baseline else (0.0, 0.0, 0.0))
             for r in rows]
    dx.axhline(0, color="#999", lw=0.8)
    dx.errorbar([k for k, _ in diffs], [d[0] for _, d in diffs], yerr=[[d[1] for _, d in diffs], [d[2] for _, d in diffs]],
                fmt="o", color="#c64", capsize=5)
    dx.set_xticks(sorted(set(ks)))
    dx.set_xlabel("clusters trained")
    dx.set_ylabel("pp")
    dx.set_title(f"held-out clusters: Δ vs {baseline} (paired, 95% CI)", fontsize=9)
    fig.tight_layout()
    return fig

