"""The ablation YAML (variants, pool, eval budget) and the probe's run config per variant."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, model_validator

from sftlab.builtin.noisy_pool import NoisyPoolConfig
from sftlab.configbase import Strict, read_yaml_mapping
from sftlab.configs import quickstart_config_path, shipped_config, shipped_names
from sftlab.errors import ConfigError


class VariantConfig(Strict):
    """One data variant: exactly one of data / curate / random_subset."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="folder-safe name")
    data: str | None = Field(None, description="a data file/folder used as is")
    curate: str | None = Field(None, description="a curate pipeline YAML applied to the pool (its inputs/output are replaced)")
    random_subset: bool = Field(False, description="a random subset of the pool, of the common size")
    seed: int = Field(0, description="random_subset: which rows")

    @model_validator(mode="after")
    def _one_kind(self) -> VariantConfig:
        kinds = [k for k in ("data", "curate", "random_subset") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(f"variant {self.name!r} sets {kinds or 'none'} of data / curate / random_subset; set exactly one")
        return self

    @property
    def kind(self) -> str:
        return "data" if self.data else "curate" if self.curate else "random_subset"


class AblationEval(Strict):
    max_task_examples_per_family: int = Field(8, ge=1, description="task prompts per family (24 families)")
    response_loss_every: int = Field(4, ge=1, description="response loss on every k-th eval-split conversation")
    batch_size: int = Field(16, ge=1)
    task_max_new_tokens: int = Field(16, ge=1, description="task answers are a word or a short list")


class AblationConfig(Strict):
    train: str = Field("quickstart", description="run config YAML (relative to this file) or 'quickstart'; "
                                                 "its data.train / data.eval / output_dir are replaced per variant")
    overrides: list[str] = Field(default_factory=list, description="dotted overrides of the run config, e.g. train.max_steps=25")
    output_dir: str = Field("runs/ablation", description="relative to the current directory")
    pool: NoisyPoolConfig | None = Field(None, description="build the built-in noisy pool")
    pool_path: str | None = Field(None, description="or: a data file as the pool")
    variants: list[VariantConfig] = Field(..., min_length=2)
    size_from: str = Field(..., description="the variant whose size every variant has")
    baseline: str = Field(..., description="differences are reported vs this variant")
    eval: AblationEval = AblationEval()

    @model_validator(mode="after")
    def _check(self) -> AblationConfig:
        names = [v.name for v in self.variants]
        problems = []
        if len(set(names)) != len(names):
            problems.append(f"variant names repeat: {names}")
        for key in ("size_from", "baseline"):
            if getattr(self, key) not in names:
                problems.append(f"{key} {getattr(self, key)!r} is not a variant name ({names})")
        if self.size_from in names and next(v for v in self.variants if v.name == self.size_from).random_subset:
            problems.append(f"size_from {self.size_from!r} is a random subset: it must be a data or curate variant")
        if self.needs_pool and (self.pool is None) == (self.pool_path is None):
            problems.append("set exactly one of pool (the built-in noisy pool) and pool_path (curate/random variants need a pool)")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def needs_pool(self) -> bool:
        return any(v.kind != "data" for v in self.variants)


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


def run_config(cfg: AblationConfig, base: Path, data_file: Path, out: Path):
    """The probe's RunConfig for one variant: same recipe, this variant's data, no eval-loss data."""
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
    return load_config(raw, cfg.overrides)


def with_seed(cfg: AblationConfig, seed: int) -> AblationConfig:
    """The same ablation replicated with another seed: the probe's train.seed (init, data order)
    and every random_subset variant's draw; pool and curate pipelines are unchanged."""
    return cfg.model_copy(update={
        "overrides": [*cfg.overrides, f"train.seed={seed}"],
        "variants": [v.model_copy(update={"seed": seed}) if v.random_subset else v for v in cfg.variants]})
