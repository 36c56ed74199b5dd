"""A self-contained HTML report on an instruction dataset (`sftlab data-report DATA --out r.html`).

Sections: counts; prompt/response length histograms (words); source mix; tag coverage and task
families (meta["family"] when present); duplicate clusters (exact + MinHash run here, or the pairs
from a curate stats file); a 2-D PCA map of MiniLM embeddings. Plots are PNGs embedded as base64,
so the one file can be mailed or attached to an issue.
"""

from __future__ import annotations

import html
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sftlab.conversation import Conversation
from sftlab.curate.blocks import DupPair, instruction_text, preview
from sftlab.curate.mix import source_name
from sftlab.curate.scores import tag_coverage
from sftlab.html_page import figure_png, img, write_page
from sftlab.html_page import pyplot as _plt
from sftlab.html_page import table as _table


def _png(fig) -> str:
    return img(figure_png(fig, dpi=90), "plot")


def length_histograms(convs: Sequence[Conversation]) -> str:
    plt = _plt()
    prompt = [len(instruction_text(c).split()) for c in convs]
    resp = [len(c.last_response.split()) for c in convs]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, vals, title in zip(axes, (prompt, resp), ("prompt words", "response words")):
        ax.hist(vals, bins=min(50, max(5, len(set(vals)))), color="#4477aa")
        ax.set_title(f"{title} (median {int(np.median(vals))}, max {max(vals)})")
        ax.set_ylabel("examples")
    return _png(fig)


def bar_chart(counts: dict[str, int], title: str) -> str:
    plt = _plt()
    items = sorted(counts.items(), key=lambda kv: -kv[1])[:30]
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(items) + 1))
    ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color="#66aa55")
    ax.set_title(title + (f" (top 30 of {len(counts)})" if len(counts) > 30 else ""))
    ax.set_xlabel("examples")
    return _png(fig)


def duplicate_clusters(pairs: Sequence[DupPair]) -> list[tuple[str, list[tuple[str, float]]]]:
    """kept id -> [(removed id, similarity)], largest clusters first."""
    clusters: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for p in pairs:
        clusters[p.kept_id].append((p.removed_id, p.similarity))
    return sorted(clusters.items(), key=lambda kv: -len(kv[1]))


def find_duplicates(convs: Sequence[Conversation]) -> list[DupPair]:
    """Exact then MinHash (threshold 0.8) dedup over the data: the pairs, nothing written."""
    from sftlab.curate.dedup import ExactDedup, MinHashDedup

    exact, near = ExactDedup(), MinHashDedup()
    for _ in near(exact(convs)):
        pass
    return exact.stats.pairs + near.stats.pairs


def embedding_map(convs: Sequence[Conversation], max_points: int, seed: int = 0) -> tuple[str, int]:
    """PCA (numpy SVD) of MiniLM embeddings of up to max_points examples, coloured by family or
    source. Returns the plot and how many points it shows."""
    from sftlab.curate.embed import get_embedder

    plt = _plt()
    sample = list(convs) if len(convs) <= max_points else random.Random(seed).sample(list(convs), max_points)
    vecs = get_embedder().encode(sample)
    centred = vecs - vecs.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    xy = centred @ vt[:2].T
    explained = (s[:2] ** 2).sum() / max(1e-12, (s ** 2).sum())
    groups = [str(c.meta.get("family") or source_name(c)) for c in sample]
    fig, ax = plt.subplots(figsize=(7, 6))
    top = [g for g, _ in Counter(groups).most_common(10)]
    for g in top:
        idx = [i for i, x in enumerate(groups) if x == g]
        ax.scatter(xy[idx, 0], xy[idx, 1], s=8, label=g, alpha=0.7)
    rest = [i for i, x in enumerate(groups) if x not in top]
    if rest:
        ax.scatter(xy[rest, 0], xy[rest, 1], s=8, c="lightgray", label=f"other ({len(set(groups)) - 10} groups)")
    ax.legend(fontsize=7, markerscale=2)
    ax.set_title(f"MiniLM embeddings, PCA 2-D ({explained:.0%} of variance), {len(sample)} points")
    return _png(fig), len(sample)


def build_report(convs: Sequence[Conversation], out: str | Path, *, pairs: Sequence[DupPair] | None = None,
                 embeddings: bool = True, max_points: int = 2000, title: str = "sftlab dataset report") -> Path:
    """Write the HTML report to `out` and return its path."""
    if not convs:
        raise ValueError("no conversations to report on")
    by_id = {c.id: c for c in convs}
    parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]
    turns = [sum(m.role == "assistant" for m in c.messages) for c in convs]
    parts.append(f"<p>{len(convs):,} conversations; {sum(turns):,} assistant turns "
                 f"({sum(t > 1 for t in turns):,} multi-turn conversations).</p>")
    parts += ["<h2>Lengths</h2>", length_histograms(convs)]
    sources = Counter(source_name(c) for c in convs)
    parts += ["<h2>Source mix</h2>", bar_chart(dict(sources), "examples per source"), _table(
        ["source", "examples", "share"], [[k, f"{v:,}", f"{v / len(convs):.1%}"] for k, v in sources.most_common()])]
    cov = tag_coverage(convs)
    parts += ["<h2>Tag coverage</h2>",
              f"<p>{cov['covered']} of {cov['taxonomy_size']} tags covered; {cov['untagged']:,} examples have no tag.</p>",
              bar_chart({k: v for k, v in cov["per_tag"].items()}, "examples per tag")]
    families = Counter(str(c.meta["family"]) for c in convs if "family" in c.meta)
    if families:
        parts += ["<h2>Task families</h2>", bar_chart(dict(families), "examples per meta.family"),
                  f"<p>{len(convs) - sum(families.values()):,} examples have no family.</p>"]
    pairs = find_duplicates(convs) if pairs is None else pairs
    clusters = duplicate_clusters(pairs)
    parts.append("<h2>Duplicate clusters</h2>")
    parts.append(f"<p>{len(pairs):,} duplicates in {len(clusters):,} clusters (largest 20 shown).</p>")
    rows = []
    for kept, removed in clusters[:20]:
        kept_text = preview(by_id[kept]) if kept in by_id else "(not in this data)"
        first_removed = removed[0][0]
        rows.append([kept, str(len(removed)), f"{min(s for _, s in removed):.2f}", kept_text,
                     preview(by_id[first_removed]) if first_removed in by_id else first_removed])
    parts.append(_table(["kept id", "removed", "min similarity", "kept example", "a removed example"], rows))
    if embeddings and len(convs) >= 3:
        plot, n = embedding_map(convs, max_points)
        parts += ["<h2>Embedding map</h2>", plot]
    elif embeddings:
        parts += ["<h2>Embedding map</h2>", f"<p>skipped: {len(convs)} example(s), a 2-D map needs at least 3.</p>"]
    return write_page(out, title, "\n".join(parts))
