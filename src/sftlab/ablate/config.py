"""The ablation YAML (variants, pool, flan mixtures, seeds, eval budget) and the probe's run config per run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from random import Random
from typing import Literal

from pydantic import Field, PositiveInt, ValidationError, model_validator

from sftlab.builtin import flan as flan_registry
from sftlab.builtin.flan.mixture import FlanMixture, trained_clusters
from sftlab.builtin.noisy_pool import NoisyPoolConfig
from sftlab.configbase import Strict, read_yaml_mapping
from sftlab.configs import quickstart_config_path, shipped_config, shipped_names
from sftlab.errors import ConfigError


# The flan suite's evaluation set (builtin:flan-eval, evaluate_models(task_suite="flan")) is drawn with
# seed 0 and the default n_eval: every flan variant draws its training pools the same way (pool_seed), so
# that no variant, whatever its seed, trains on an eval example; these keys are therefore not knobs here.
EVAL_POOL_SEED = 0
FLAN_FIXED_KEYS = ("seed", "pool_seed", "n_eval")
FLAN_SPLIT_CAPS = ("seen", "heldout", "heldout_cluster")  # the flan eval set's meta split values


def _fixed_keys(section: FlanMixture, where: str) -> list[str]:
    return [f"{where}: {k} is fixed in an ablation (the mixture's seed is the variant's `seed` or each of `seeds`; "
            f"the training pools are drawn like the eval set's, pool_seed {EVAL_POOL_SEED} and n_eval "
            f"{FlanMixture().n_eval}); drop it" for k in FLAN_FIXED_KEYS if k in section.model_fields_set]


class FlanVariant(FlanMixture):
    """A flan variant's mixture: keys of FlanMixture set here override the ablation's `flan:` section;
    the trained clusters are `clusters`, or `first_clusters: k` (the first k of the cluster order), or,
    with neither, every trainable cluster."""

    first_clusters: int | None = Field(None, ge=1, description="train the first k clusters of flan.cluster_order "
                                                               "(for one seed, k=1 ⊂ k=2 ⊂ ...)")

    @model_validator(mode="after")
    def _variant_keys(self) -> FlanVariant:
        problems = _fixed_keys(self, "flan")
        if self.first_clusters is not None and self.clusters is not None:
            problems.append("flan: set clusters (a list) or first_clusters (a number), not both")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class AblationFlan(FlanMixture):
    """Mixture knobs shared by every flan variant (budget, budget_unit, mixing, ...; a variant's own keys
    override them) and the order in which first_clusters takes clusters."""

    budget_unit: Literal["examples", "tokens", "trained_tokens"] = Field(
        "tokens", description="as FlanMixture's, but tokens by default here: rendered tokens under the probe's chat "
                              "template, the same compute for every run")
    cluster_order: Literal["shuffled", "registry"] | list[str] = Field(
        "shuffled", description="shuffled: the trainable clusters in an order shuffled per seed (a fixed shuffle: "
                                "Random('<seed>:ablate:cluster-order')); registry: their order in the registry "
                                "(sftlab.builtin.flan.CLUSTERS); or a list naming every trainable cluster once")

    @model_validator(mode="after")
    def _shared_keys(self) -> AblationFlan:
        problems = _fixed_keys(self, "flan")
        if "clusters" in self.model_fields_set:
            problems.append("flan: clusters is chosen per variant (its flan: clusters or first_clusters); drop it here")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class VariantConfig(Strict):
    """One data variant: exactly one of data / curate / random_subset / flan."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="folder-safe name")
    data: str | None = Field(None, description="a data file/folder used as is")
    curate: str | None = Field(None, description="a curate pipeline YAML applied to the pool (its inputs/output are replaced)")
    random_subset: bool = Field(False, description="a random subset of the pool, of the common size")
    flan: FlanVariant | None = Field(None, description="a FLAN mixture (sftlab.builtin.flan.mixture) built with the "
                                                       "probe's tokenizer; `flan: {}` trains every trainable cluster")
    seed: int = Field(0, description="random_subset: which rows; flan: the mixture's draws, the shuffled cluster "
                                     "order and the probe's train.seed (with `seeds:`, set per run instead)")

    @model_validator(mode="after")
    def _one_kind(self) -> VariantConfig:
        kinds = [k for k in ("data", "curate", "random_subset", "flan") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(f"variant {self.name!r} sets {kinds or 'none'} of data / curate / random_subset / flan; "
                             "set exactly one")
        return self

    @property
    def kind(self) -> str:
        return "data" if self.data else "curate" if self.curate else "flan" if self.flan else "random_subset"


@dataclass(frozen=True)
class VariantRun:
    """One training run: a variant, for one seed. Its folder is variants/<name>."""

    name: str  # the variant's name, or <name>-s<seed> under `seeds:`
    variant: VariantConfig  # its seed set to the run's
    train_seed: int | None  # the probe's train.seed for this run (None: the recipe's)

    @property
    def group(self) -> str:
        return self.variant.name


class AblationEval(Strict):
    max_task_examples_per_family: PositiveInt | dict[str, PositiveInt] = Field(
        8, description="task prompts per family (the first ones of each); flan ablations may give a cap per split "
                       "of the flan eval set: {seen: 2, heldout: 8, heldout_cluster: 8} (a split not named is not capped)")
    response_loss_every: int = Field(4, ge=1, description="response loss on every k-th conversation of the suite's eval set")
    batch_size: int = Field(16, ge=1)
    task_max_new_tokens: int = Field(16, ge=1, description="task answers are a word or a short list")


class AblationConfig(Strict):
    train: str = Field("quickstart", description="run config YAML (relative to this file) or 'quickstart'; "
                                                 "its data.train / data.eval / output_dir are replaced per variant")
    overrides: list[str] = Field(default_factory=list, description="dotted overrides of the run config, e.g. train.max_steps=25")
    output_dir: str = Field("runs/ablation", description="relative to the current directory")
    pool: NoisyPoolConfig | None = Field(None, description="build the built-in noisy pool")
    pool_path: str | None = Field(None, description="or: a data file as the pool")
    flan: AblationFlan = Field(default_factory=AblationFlan, description="flan variants: their shared mixture knobs and cluster_order")
    variants: list[VariantConfig] = Field(..., min_length=2)
    seeds: list[int] | None = Field(None, min_length=1, description="flan variants: run each once per seed, as "
                                                                    "<name>-s<seed> (the seed of its mixture and train.seed)")
    size_from: str | None = Field(None, description="data/curate/random_subset variants: the variant whose size every "
                                                    "variant has (flan variants are sized by flan.budget)")
    baseline: str = Field(..., description="differences are reported vs this variant")
    eval: AblationEval = AblationEval()

    @model_validator(mode="after")
    def _check(self) -> AblationConfig:
        names = [v.name for v in self.variants]
        problems = []
        if len(set(names)) != len(names):
            problems.append(f"variant names repeat: {names}")
        if self.baseline not in names:
            problems.append(f"baseline {self.baseline!r} is not a variant name ({names})")
        kinds = {v.kind for v in self.variants}
        if "flan" in kinds:
            problems += self._flan_problems(kinds)
        else:
            problems += self._data_problems(names)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _data_problems(self, names: list[str]) -> list[str]:
        problems = []
        if self.size_from is None:
            problems.append(f"size_from: name the variant whose size every variant has (one of {names})")
        elif self.size_from not in names:
            problems.append(f"size_from {self.size_from!r} is not a variant name ({names})")
        elif next(v for v in self.variants if v.name == self.size_from).random_subset:
            problems.append(f"size_from {self.size_from!r} is a random subset: it must be a data or curate variant")
        if self.needs_pool and (self.pool is None) == (self.pool_path is None):
            problems.append("set exactly one of pool (the built-in noisy pool) and pool_path (curate/random variants need a pool)")
        if self.seeds is not None:
            problems.append("seeds: multiplies flan variants only; replicate other variants with `sftlab ablate CONFIG "
                            "--seed N --out DIR` and pool the folders with --pooled")
        if "flan" in self.model_fields_set:
            problems.append("flan: knobs for flan variants, and no variant is one; drop it")
        if isinstance(self.eval.max_task_examples_per_family, dict):
            problems.append("eval.max_task_examples_per_family: a cap per split is for flan ablations; give one number")
        return problems

    def _flan_problems(self, kinds: set[str]) -> list[str]:
        problems = []
        if kinds != {"flan"}:
            problems.append(f"variants mix flan with {sorted(kinds - {'flan'})}: flan variants are evaluated on the flan "
                            "suite, the others on the 24-family suite; put them in separate ablations")
            return problems
        for key in ("size_from", "pool", "pool_path"):
            if getattr(self, key) is not None:
                problems.append(f"{key}: unused by flan variants (they are sized by flan.budget in flan.budget_unit, "
                                "drawn from the flan registry); drop it")
        caps = self.eval.max_task_examples_per_family
        if isinstance(caps, dict) and set(caps) - set(FLAN_SPLIT_CAPS):
            problems.append(f"eval.max_task_examples_per_family: unknown splits {sorted(set(caps) - set(FLAN_SPLIT_CAPS))}; "
                            f"fix: use {list(FLAN_SPLIT_CAPS)}")
        if self.seeds is not None:
            pinned = [v.name for v in self.variants if "seed" in v.model_fields_set]
            if pinned:
                problems.append(f"variants {pinned} set seed, and seeds: {self.seeds} sets it per run; drop one of them")
            if len(set(self.seeds)) != len(self.seeds):
                problems.append(f"seeds {self.seeds} repeat a seed")
        runs = variant_runs(self)
        if len({r.name for r in runs}) != len(runs):
            problems.append(f"run names repeat: {[r.name for r in runs]}; rename the variants")
        for r in runs:
            try:
                trained_clusters(flan_mixture(self, r.variant))  # unknown or held-out clusters, too many
            except ValueError as e:  # pydantic's ValidationError is one
                problems.append(f"variant {r.group!r}: {e}")
        unset = [v.name for v in self.variants if "budget" not in v.flan.model_fields_set | self.flan.model_fields_set]
        if unset:
            problems.append(f"variants {unset} have no budget; fix: set flan: budget (in flan.budget_unit, tokens by "
                            "default), e.g. max_steps x grad_accum x tokens_per_batch of the probe")
        budgets: dict[str, list[str]] = {}
        for v in self.variants:
            assert v.flan is not None
            knob = lambda k: getattr(v.flan if k in v.flan.model_fields_set else self.flan, k)  # noqa: E731
            budgets.setdefault(f"{knob('budget')} {knob('budget_unit')}", []).append(v.name)
        if len(budgets) > 1:
            problems.append(f"flan variants have different budgets {budgets}: a scaling ablation compares equal budgets; "
                            "set budget and budget_unit once, in the top-level flan: section")
        return list(dict.fromkeys(problems))  # a variant's problem, once for all its seeds

    @property
    def needs_pool(self) -> bool:
        return any(v.kind not in ("data", "flan") for v in self.variants)

    @property
    def task_suite(self) -> str:
        """The suite the variants are evaluated on: flan for flan variants, else the 24-family one."""
        return "flan" if any(v.flan for v in self.variants) else "tasks"


def trainable_clusters() -> list[str]:
    return [c for c in flan_registry.CLUSTERS if c not in flan_registry.HELDOUT_CLUSTERS]


def cluster_order(cfg: AblationConfig, seed: int) -> list[str]:
    """The order in which `first_clusters: k` takes the trainable clusters, for one seed: a variant with
    k clusters trains a prefix of it, so for one seed the subsets are nested (k=1 ⊂ k=2 ⊂ ...)."""
    trainable = trainable_clusters()
    order = cfg.flan.cluster_order
    if order == "registry":
        return trainable
    if order == "shuffled":
        Random(f"{seed}:ablate:cluster-order").shuffle(trainable)
        return trainable
    if sorted(order) != sorted(trainable):
        raise ValueError(f"flan.cluster_order {order} must name every trainable cluster once; fix: a permutation of "
                         f"{trainable}, or 'shuffled' / 'registry'")
    return list(order)


def flan_mixture(cfg: AblationConfig, v: VariantConfig) -> FlanMixture:
    """A flan variant's mixture: the shared flan: knobs, the variant's own over them, its clusters, its seed;
    training pools drawn like the eval set's (pool_seed), so no eval example is trained."""
    assert v.flan is not None
    knobs = {**cfg.flan.model_dump(exclude_unset=True, exclude={"cluster_order"}), "budget_unit": cfg.flan.budget_unit,
             **v.flan.model_dump(exclude_unset=True, exclude={"first_clusters"})}
    k = v.flan.first_clusters
    if k is not None:
        order = cluster_order(cfg, v.seed)
        if k > len(order):
            raise ValueError(f"first_clusters {k}: there are {len(order)} trainable clusters; fix: at most {len(order)}")
        knobs["clusters"] = order[:k]
    return FlanMixture(**knobs, seed=v.seed, pool_seed=EVAL_POOL_SEED)


def variant_runs(cfg: AblationConfig) -> list[VariantRun]:
    """The training runs: one per variant, or with `seeds:` one per seed and variant, seed-major (every
    variant of the first seed is trained first, so a stopped ablation has whole curves). A flan run's
    train.seed is its seed; other runs keep the recipe's."""
    if cfg.seeds is None:
        return [VariantRun(v.name, v, v.seed if v.flan else None) for v in cfg.variants]
    return [VariantRun(f"{v.name}-s{s}", v.model_copy(update={"seed": s}), s) for s in cfg.seeds for v in cfg.variants]


def config_path(name_or_path: str | Path) -> Path:
    """A path, or the name of a config shipped in sftlab/configs (with or without .yaml)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = shipped_config(p.name)
    if shipped.is_file():
        return shipped
    raise ConfigError(f"{name_or_path}: no such config file (nor a shipped config of that name)\n"
                      f"    fix: give a path, or one of {shipped_names('ablation-')}")


def load_ablation_config(path: str | Path) -> tuple[AblationConfig, Path]:
    """The validated config and the folder its relative paths are relative to."""
    path = config_path(path)
    raw = read_yaml_mapping(path, "train, variants, size_from, baseline, ...")
    try:
        return AblationConfig.model_validate(raw), path.parent
    except ValidationError as e:
        lines = [f"{path}: {e.error_count()} problem(s):"]
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
            lines.append(f"  - {loc}: {err['msg']}; got {err.get('input')!r}")
        raise ConfigError("\n".join(lines)) from e


def resolve(base: Path, p: str) -> str:
    """A config path relative to the ablation config's folder; absolute, hf: and builtin: unchanged."""
    return p if Path(p).is_absolute() or p.startswith(("hf:", "builtin:")) else str(base / p)


def run_config(cfg: AblationConfig, base: Path, data_file: Path, out: Path, train_seed: int | None = None):
    """The probe's RunConfig for one run: same recipe, this run's data (and train.seed when given), no
    eval-loss data."""
    import yaml

    from sftlab.config import load_config

    train_path = quickstart_config_path() if cfg.train == "quickstart" else Path(resolve(base, cfg.train))
    if not train_path.is_file():
        raise ConfigError(f"train: {train_path}: no such run config\n    fix: a run config YAML relative to the ablation config, or 'quickstart'")
    raw = yaml.safe_load(train_path.read_text(encoding="utf-8")) or {}
    raw.setdefault("data", {})
    # the ablation's own evaluation replaces the run's eval loss (its eval data would cost time per variant)
    raw["data"].update(train=[{"path": str(data_file)}], eval=[], eval_fraction=0.0)
    raw.setdefault("train", {})["output_dir"] = str(out)
    seed = [f"train.seed={train_seed}"] if train_seed is not None else []
    return load_config(raw, [*cfg.overrides, *seed])


def with_seed(cfg: AblationConfig, seed: int) -> AblationConfig:
    """The same ablation replicated with another seed: the probe's train.seed (init, data order), every
    random_subset variant's draw and every flan variant's mixture (with `seeds:`, seeds becomes [seed]);
    pool and curate pipelines are unchanged."""
    update = {"overrides": [*cfg.overrides, f"train.seed={seed}"],
              "variants": [v.model_copy(update={"seed": seed}) if v.random_subset or v.flan else v for v in cfg.variants]}
    if cfg.seeds is not None:
        update["seeds"] = [seed]
    return cfg.model_copy(update=update)
