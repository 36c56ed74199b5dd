"""The pool and every variant's training data, all of one size (flan variants: one budget of their
mixture, counted under the probe's tokenizer); what each variant trained on."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftlab.ablate.config import AblationConfig, flan_mixture, resolve, run_config, variant_runs
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
    group: str = ""  # the variant (a run's name is <variant>-s<seed> under seeds:)
    seed: int | None = None  # flan: the run's seed (mixture draws, cluster order)
    train_seed: int | None = None  # the probe's train.seed for this run (None: the recipe's)
    trained_clusters: tuple[str, ...] | None = None  # flan: the clusters it trained, in cluster order
    mix: dict[str, Any] = field(default_factory=dict)  # flan: what the mixture made, counted

    def __post_init__(self):
        self.group = self.group or self.name

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


def probe_tokenizer(rc):
    """The probe's tokenizer with its chat template applied, as training and evaluation load it."""
    from sftlab.model import load_tokenizer
    from sftlab.templates import apply_template

    tok = load_tokenizer(rc.model.name, trust_remote_code=rc.model.trust_remote_code)
    apply_template(tok, rc.model.template, add_missing_tokens=rc.model.add_special_tokens)
    return tok


def build_flan_variants(cfg: AblationConfig, base: Path, out: Path) -> tuple[list[VariantData], int, str]:
    """Every flan run's mixture, built with the probe's tokenizer (and train_on), so that a budget in
    tokens or trained tokens is counted as the probe will see the data; all runs have one budget
    (validated). Also writes variants/<run>/mixture.json (knobs and counts)."""
    from sftlab.atomic import atomic_write_json
    from sftlab.builtin.flan.mixture import build_train
    from sftlab.data import save_conversations
    from sftlab.render import Renderer

    rc = run_config(cfg, base, out / "unused.jsonl", out / "unused")
    renderer = Renderer(probe_tokenizer(rc), train_on=rc.data.train_on)
    built = []
    for run in variant_runs(cfg):
        vdir = out / "variants" / run.name
        vdir.mkdir(parents=True, exist_ok=True)
        m = flan_mixture(cfg, run.variant)
        convs, rep = build_train(m, renderer=renderer)
        save_conversations(convs, vdir / "data.jsonl")
        mix = {"clusters": list(rep.clusters), "seed": m.seed, "budget": m.budget, "budget_unit": m.budget_unit,
               "used": rep.used, "conversations": rep.conversations, "graded": sum(rep.graded.values()),
               "families": len(rep.sizes), "tokens": rep.tokens.tokens, "trained_tokens": rep.tokens.trained,
               "repeated": rep.repeated, "layouts": dict(rep.layouts)}
        atomic_write_json(vdir / "mixture.json", {"knobs": m.model_dump(), **mix, "summary": rep.summary()})
        note = (f"flan mixture, seed {m.seed}: clusters {list(rep.clusters)}, {rep.conversations} "
                f"conversations, {rep.used} of {m.budget} {m.budget_unit}")
        built.append(VariantData(run.name, "flan", vdir / "data.jsonl", convs, note, group=run.group, seed=m.seed,
                                 train_seed=run.train_seed, trained_clusters=tuple(rep.clusters), mix=mix))
    m0 = built[0].mix
    return built, m0["budget"], f"flan mixtures of {m0['budget']} {m0['budget_unit']} each (no pool)"


def build_variants(cfg: AblationConfig, base: Path, out: Path) -> tuple[list[VariantData], int, str]:
    """Every variant's training data, all of one size (the size_from variant's; flan: the flan budget)."""
    if cfg.task_suite == "flan":
        return build_flan_variants(cfg, base, out)
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
