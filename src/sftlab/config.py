"""Run configuration: small pydantic models, unknown keys are errors, all problems reported at once.

YAML in (`sftlab train run.yaml`), dotted overrides on the command line
(`sftlab train run.yaml train.lr=1e-4 lora.r=8`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sftlab.data.config import DataSourceConfig
from sftlab.errors import ConfigError
from sftlab.model import DEFAULT_MODEL


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(Strict):
    name: str = Field(DEFAULT_MODEL, description="hub id, local folder, .gguf file, or the embedded alias")
    template: str = Field("auto", description="\"auto\" = the tokenizer's own; or chatml | llama3 | alpaca")
    add_special_tokens: bool = Field(False, description="let a built-in template add its tokens (embeddings resized)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype; on GPU keep float32 and launch with --mixed_precision bf16")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field("sdpa", description="attention kernel; packing keeps examples apart with each")
    trust_remote_code: bool = Field(False, description="run Python code shipped with a hub model; only if you trust it")


class LoraSettings(Strict):
    enabled: bool = Field(True, description="LoRA adapters (peft); false = full fine-tuning")
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout")
    target_modules: list[str] | Literal["all-linear"] = Field("all-linear", description="module names to adapt, or all-linear")


class DataConfig(Strict):
    train: list[DataSourceConfig] = Field(description="training sources (see data.train[] below)")
    eval: list[DataSourceConfig] = Field([], description="eval-loss sources")
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="held out from train when `eval` is empty")
    train_on: Literal["all_assistant", "last_assistant", "everything"] = Field("all_assistant", description="which tokens get loss; the stop token after each trained turn is always trained")
    max_len: int = Field(1024, ge=8, description="longest example in tokens; longer ones follow length_policy")
    length_policy: Literal["drop", "truncate", "split"] = Field("split", description="what to do with over-long examples (always counted and reported)")
    packing: bool = Field(True, description="pack examples into rows without padding; false = padded batches (reshuffled each epoch)")
    pack_order: Literal["shuffled", "by_length"] = Field("shuffled", description="how packed rows are filled: shuffled = examples placed by best fit in a seeded random order, so each row is a random sample like a random batch (97-99% full); by_length = best-fit-decreasing over the whole set (~99% full, but each row holds examples of alike length: measured worse per epoch, docs/quality.md)")
    on_error: Literal["raise", "skip"] = Field("raise", description="bad rows: stop with all problems listed, or skip them (counted)")
    # exclude=True: not in model_dump, so not in RunConfig.fingerprint: turning the cache on or off
    # changes no result, and must neither block `--resume` nor change existing runs' fingerprints.
    cache: bool = Field(True, exclude=True, description="reuse rendered+tokenised rows from $SFTLAB_CACHE/tokenized (default ~/.cache/sftlab/tokenized), keyed by data, tokenizer, template and train_on; false = always render")


class TrainConfig(Strict):
    output_dir: str = Field("runs/sft", description="checkpoints, metrics.jsonl, final/ model")
    lr: float = Field(2e-4, gt=0, description="peak learning rate (AdamW)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    warmup_ratio: float = Field(0.05, ge=0, le=1, description="fraction of steps with linear warmup")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="decay after warmup")
    epochs: float = Field(1.0, gt=0, description="passes over the data (fractions allowed)")
    max_steps: int | None = Field(None, ge=1, description="overrides epochs when set")
    tokens_per_batch: int = Field(4096, ge=16, description="packing budget of one micro-batch (one packed row); an example longer than this (up to data.max_len) gets a row of its own")
    batch_size: int = Field(8, ge=1, description="examples per micro-batch when packing is off")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step (per process)")
    max_grad_norm: float | None = Field(1.0, description="gradient clipping; null = off")
    seed: int = Field(0, description="seeds data order, LoRA init and sampling")
    eval_every: int = Field(0, ge=0, description="steps; 0 = only at the end")
    save_every: int = Field(0, ge=0, description="steps; 0 = only at the end")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept")
    max_nonfinite_steps: int = Field(3, ge=1, description="stop after this many non-finite losses in a row")
    gradient_checkpointing: bool = Field(False, description="recompute each layer's activations in the backward: less memory, ~1 extra forward of compute")
    compile: bool = Field(False, description="torch.compile the model for training; if compiling fails the run warns and continues uncompiled")
    autocast: Literal["off", "bf16"] = Field("off", description="run the training forward under bf16 autocast (CPU or GPU); weights and optimizer stay in model.dtype")
    loss_chunk_tokens: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field("auto", description="lm_head + cross-entropy over this many trained positions at a time, gradients made right away, so the [positions, vocab] logits and their log-softmax are never kept for the backward (memory; see loss.py); auto = 2^25 logits per chunk (682 positions for a 49k vocabulary) where the model allows it, else the standard path; null = all at once, autograd keeps the log-softmax")
    fused_lora: bool = Field(True, description="LoRA layers add their update with one addmm instead of peft's matmul + multiply + add (same math, faster; see fused_lora.py)")
    packed_attention: bool = Field(True, description="with sdpa, attend within each packed example instead of one masked attention over the whole row (same math, faster; see packed_attention.py)")
    fused_mlp: bool = Field(True, description="SwiGLU MLP blocks (Llama, Mistral, Qwen2/3) keep 2 instead of 4 [tokens, intermediate] activations for the backward and recompute the rest (same math, less memory; see fused_mlp.py)")
    cpu_matmul: Literal["auto", "torch", "openblas"] = Field("auto", description="CPU fp32 training: the BLAS for the linear layers' products (LoRA layers, SwiGLU down projection, lm_head). auto = time both once at start (~0.5 s) and use numpy's OpenBLAS where it is >= 1.1x faster than torch's MKL (AMD CPUs: ~1.25x); torch = always torch; openblas = always OpenBLAS (an error if numpy has none). See cpu_blas.py")


SPEED_ONLY_TRAIN_KEYS = ("fused_lora", "packed_attention", "fused_mlp", "cpu_matmul")


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
        # speed-only switches: the same math up to float rounding (tested), so flipping one never blocks
        # a resume, and runs made before they existed keep their fingerprint
        for key in SPEED_ONLY_TRAIN_KEYS:
            payload["train"].pop(key, None)
        # loss_chunk_tokens "auto" (the default since 2026-12-02) hashes as null, the old default:
        # the same loss up to float summation order, so runs made before keep their fingerprint
        if payload["train"].get("loss_chunk_tokens") == "auto":
            payload["train"]["loss_chunk_tokens"] = None
        # data order version 2 (2026-12-02): shuffled packing, padded batches reshuffled each epoch,
        # rows of tokens_per_batch even below max_len. A run saved before trained on another order,
        # so resuming it here would not continue the same run: its fingerprint must differ.
        payload["data_order"] = 2
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


def format_validation_error(where: str, e: ValidationError, field_names: list[str] | None = None) -> str:
    """Every problem of a pydantic validation, one line each, with did-you-mean for unknown keys
    (matched against `field_names`, by default the run config's)."""
    lines = [f"{where}: {e.error_count()} problem(s) in the config:"]
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), field_names or _all_field_names(), n=1)
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


def reference_markdown() -> str:
    """The config reference (README links to docs/config.md, generated from these models)."""
    lines = ["# Config reference", "", "Generated from `src/sftlab/config.py` by `python -m sftlab.config`; "
             "unknown keys are errors.", ""]
    sections = [("model", ModelConfig), ("lora", LoraSettings), ("data", DataConfig),
                ("data.train[] / data.eval[]", DataSourceConfig), ("train", TrainConfig)]
    for title, model in sections:
        lines += [f"## `{title}`", "", *fields_table(model), ""]
    return "\n".join(lines)


def fields_table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[str]:
    """A markdown table of a pydantic model's keys: type, default, description."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, f in model.model_fields.items():
        if name in skip:
            continue
        typ = getattr(f.annotation, "__name__", None) if isinstance(f.annotation, type) else None
        typ = (typ or str(f.annotation).replace("typing.", "")).replace("|", "\\|")
        default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
        meaning = (f.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {typ} | {default} | {meaning} |")
    return lines


if __name__ == "__main__":
    print(reference_markdown())
