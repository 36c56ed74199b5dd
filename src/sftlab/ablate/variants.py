"""The pool and every variant's training data, all of one size; what each variant trained on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftlab.ablate.config import AblationConfig, resolve
from sftlab.builtin.noisy_pool import build_noisy_pool, noise_counts
from sftlab.conversation import Conversation
from sftlab.data.config import DataSourceConfig
from sftlab.errors import SftlabError


@dataclass
class VariantData:
    name: str
    kind: str
    path: Path
    conversations: list[Conversation]
    note: str
    curate_stats: list[dict] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for c in self.conversations:
            h.update(json.dumps(c.to_dicts(), ensure_ascii=False).encode())
        return h.hexdigest()[:16]


def build_pool(cfg: AblationConfig, base: Path, out: Path) -> tuple[list[Conversation], Path, str]:
    from sftlab.data import save_conversations

    path = out / "pool.jsonl"
    if cfg.pool is not None:
        pool = build_noisy_pool(cfg.pool)
        note = f"built-in noisy pool: {len(pool)} rows, seed {cfg.pool.seed}"
    else:
        pool = DataSourceConfig(path=resolve(base, cfg.pool_path)).load(on_error="raise").conversations
        note = f"{cfg.pool_path}: {len(pool)} rows"
    save_conversations(pool, path)
    return pool, path, note


def build_variants(cfg: AblationConfig, base: Path, out: Path) -> tuple[list[VariantData], int, str]:
    """Every variant's training data, all of one size (the size_from variant's)."""
    from sftlab.curate.config import CurateInput, load_curate_config
    from sftlab.curate.pipeline import run_pipeline
    from sftlab.curate.select import random_subset
    from sftlab.data import load_conversations, save_conversations

    pool, pool_path, pool_note = build_pool(cfg, base, out) if cfg.needs_pool else ([], None, "no pool")
    order = sorted(cfg.variants, key=lambda v: v.name != cfg.size_from)  # size_from first
    built: dict[str, VariantData] = {}
    size = None
    for v in order:
        vdir = out / "variants" / v.name
        vdir.mkdir(parents=True, exist_ok=True)
        data_path = vdir / "data.jsonl"
        stats: list[dict] = []
        if v.kind == "data":
            convs = DataSourceConfig(path=resolve(base, v.data)).load(on_error="raise").conversations
            save_conversations(convs, data_path)
            note = f"data file {v.data}"
        elif v.kind == "curate":
            ccfg = load_curate_config(resolve(base, v.curate))
            ccfg = ccfg.model_copy(update={"inputs": [CurateInput(path=str(pool_path), name="pool")],
                                           "output": str(data_path), "stats": str(vdir / "curate.stats.json")})
            res = run_pipeline(ccfg)
            stats = [b.to_json() for b in res.blocks]
            for s in stats:  # the dropped samples and dedup pairs stay in curate.stats.json
                del s["samples"], s["pairs"]
            convs = load_conversations(str(data_path), on_error="raise").conversations
            steps = ", ".join(f"{s['name']} -{s['dropped']}" for s in stats)
            note = f"curate {v.curate} on the pool ({steps})"
        else:
            assert size is not None  # size_from is never a random subset (validated)
            convs = random_subset(pool, size, seed=v.seed)
            save_conversations(convs, data_path)
            note = f"random subset of the pool, seed {v.seed}"
        if size is None:
            size = len(convs)
        if len(convs) != size:
            raise SftlabError(
                f"variant {v.name!r} has {len(convs)} examples but {cfg.size_from!r} has {size}: an ablation compares "
                f"variants of the same size\n    fix: make {v.name!r} {size} rows (e.g. a select block with budget: {size} "
                f"in its curate pipeline), or make it a random_subset")
        built[v.name] = VariantData(v.name, v.kind, data_path, convs, note, stats)
    assert size is not None
    return [built[v.name] for v in cfg.variants], size, pool_note


def composition(vd: VariantData) -> dict[str, Any]:
    from sftlab.curate.blocks import normalise

    prompts = [normalise(c.messages[0].content) for c in vd.conversations if c.messages]
    # Response words by kind: the loss is a mean over trained (response) tokens, so a few long junk
    # answers (a 30x repeated answer) weigh more in training than many one-word clean ones.
    words: dict[str, int] = {}
    for c in vd.conversations:
        k = str(c.meta.get("noise", "unknown"))
        words[k] = words.get(k, 0) + sum(len(m.content.split()) for m in c.messages if m.role == "assistant")
    total = max(1, sum(words.values()))
    return {"rows": len(vd.conversations), "noise": noise_counts(vd.conversations),
            "distinct_prompts": len(set(prompts)), "response_words": total,
            "clean_response_word_share": round(words.get("clean", 0) / total, 4),
            "response_word_share": {k: round(v / total, 4) for k, v in sorted(words.items())}}
