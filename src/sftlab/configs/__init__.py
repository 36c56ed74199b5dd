"""The YAML configs shipped with sftlab (package data), found by name."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def shipped_config(name: str) -> Path:
    """The shipped config `name` ('quickstart', 'ablation-curated-vs-random', with or without .yaml);
    the path may not exist (check .is_file())."""
    file = name if name.endswith(".yaml") else name + ".yaml"
    return Path(str(resources.files(__name__).joinpath(file)))


def shipped_names(prefix: str = "") -> list[str]:
    """Names of the shipped configs that start with `prefix`, without .yaml."""
    return sorted(p.name.removesuffix(".yaml") for p in resources.files(__name__).iterdir()
                  if p.name.endswith(".yaml") and p.name.startswith(prefix))


def quickstart_config_path() -> Path:
    """The run config of `sftlab quickstart` (and of an ablation whose `train:` is 'quickstart')."""
    return shipped_config("quickstart")
