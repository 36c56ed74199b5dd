"""Run configuration: small pydantic models, unknown keys are errors, all problems reported at once.

YAML in (`sftlab train run.yaml`), dotted overrides on the command line
(`sftlab train run.yaml train.lr=1e-4 lora.r=8`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sftlab.data.config import DataSourceConfig
from sftlab.errors import ConfigError
from sftlab.model import DEFAULT_MODEL


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(Strict):
    name: str = DEFAULT_MODEL  # hub id, local folder, .gguf file, or the embedded alias
    template: str = "auto"  # "auto" = the tokenizer's own; or chatml | llama3 | alpaca
    add_special_tokens: bool = False  # let a built-in template add its tokens (embeddings resized)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    trust_remote_code: bool = False


class LoraSettings(Strict):
    enabled: bool = True
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class DataConfig(Strict):
    train: list[DataSourceConfig]
    eval: list[DataSourceConfig] = []
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0)  # held out from train when `eval` is empty
    train_on: Literal["all_assistant", "last_assistant", "everything"] = "all_assistant"
    max_len: int = Field(1024, ge=8)
    length_policy: Literal["drop", "truncate", "split"] = "split"
    packing: bool = True
    on_error: Literal["raise", "skip"] = "raise"


class TrainConfig(Strict):
    output_dir: str = "runs/sft"
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)  # overrides epochs when set
    tokens_per_batch: int = Field(4096, ge=16)  # packing budget of one micro-batch (one packed row)
    batch_size: int = Field(8, ge=1)  # examples per micro-batch when packing is off
    grad_accum: int = Field(1, ge=1)
    max_grad_norm: float | None = 1.0
    seed: int = 0
    eval_every: int = Field(0, ge=0)  # steps; 0 = only at the end
    save_every: int = Field(0, ge=0)  # steps; 0 = only at the end
    keep_checkpoints: int = Field(2, ge=1)
    max_nonfinite_steps: int = Field(3, ge=1)  # stop after this many non-finite losses in a row


class RunConfig(Strict):
    model: ModelConfig = ModelConfig()
    lora: LoraSettings = LoraSettings()
    data: DataConfig
    train: TrainConfig = TrainConfig()

    def fingerprint(self) -> str:
        """Hash of everything that changes the result (resume refuses a changed config)."""
        payload = self.model_dump(mode="json")
        payload["train"].pop("output_dir", None)
        payload["train"].pop("save_every", None)
        payload["train"].pop("keep_checkpoints", None)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _set_dotted(d: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    d[keys[-1]] = value


def load_config(source: str | Path | dict, overrides: list[str] = ()) -> RunConfig:
    where = "<dict>" if isinstance(source, dict) else str(source)
    if isinstance(source, dict):
        raw = json.loads(json.dumps(source))
    else:
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path.resolve()}")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{where}: not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: the top level must be a mapping of sections (model, lora, data, train)")
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value (e.g. train.lr=1e-4)")
        key, value = item.split("=", 1)
        _set_dotted(raw, key, yaml.safe_load(value))
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(where, e)) from None


def format_validation_error(where: str, e: ValidationError) -> str:
    lines = [f"{where}: {e.error_count()} problem(s) in the config:"]
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), _all_field_names(), n=1)
            fix = "unknown key" + (f"; did you mean {close[0]!r}?" if close else ": see README 'Config reference'")
        elif err["type"] == "missing":
            fix = "required: add it"
        else:
            fix = err["msg"]
        lines.append(f"  - {loc}: got {err.get('input')!r} -> {fix}")
    return "\n".join(lines)


def _all_field_names() -> list[str]:
    models = [ModelConfig, LoraSettings, DataConfig, TrainConfig, RunConfig, DataSourceConfig]
    return sorted({name for m in models for name in m.model_fields})
