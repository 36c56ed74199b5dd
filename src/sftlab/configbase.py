"""The base of every YAML config model, and reading a YAML file into one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict

from sftlab.errors import ConfigError


class Strict(BaseModel):
    """A config section whose unknown keys are errors: a misspelt key must not be ignored silently.
    (serve.py's request bodies forbid unknown keys the same way, on pydantic alone.)"""

    model_config = ConfigDict(extra="forbid")


def read_yaml_mapping(path: str | Path, expected: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file; a ConfigError naming the file (and line) otherwise.
    `expected` names the keys a reader should see, for the error message."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML: {getattr(e, 'problem', e)}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping ({expected}); got {type(raw).__name__}")
    return raw
