"""Run configuration: small pydantic models, unknown keys are errors, all problems reported at once.

YAML in (`sftlab train run.yaml`), dotted overrides on the command line
(`sftlab train run.yaml train.lr=1e-4 lora.r=8`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from sftlab.configbase import Strict
from sftlab.data.config import DataSourceConfig, ReplayConfig
from sftlab.errors import ConfigError
from sftlab.model import DEFAULT_MODEL


class ModelConfig(Strict):
    name: str = Field(DEFAULT_MODEL, description="hub id, local folder, .gguf file, or the embedded alias")
    template: str = Field("auto", description="\"auto\" = the tokenizer's own; or chatml | llama3 | alpaca")
    add_special_tokens: bool = Field(False, description="let a built-in template add its tokens (embeddings resized)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="weights dtype; on GPU keep float32 and launch with --mixed_precision bf16")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = Field("sdpa", description="attention kernel; packing keeps examples apart with each")
    trust_remote_code: bool = Field(False, description="run Python code shipped with a hub model; only if you trust it")
    load_in_4bit: bool = Field(False, description="QLoRA: the frozen base model's linear layers in 4-bit NF4 with double quantisation (bitsandbytes, `pip install 'sftlab[qlora]'`), computing in model.dtype; the LoRA adapters stay in model.dtype. Needs lora.enabled (docs/training.md)")


class LoraSettings(Strict):
    enabled: bool = Field(True, description="LoRA adapters (peft); false = full fine-tuning")
    r: int = Field(16, ge=1, description="LoRA rank")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout")
    target_modules: list[str] | Literal["all-linear"] = Field("all-linear", description="module names to adapt, or all-linear")
    layers: list[Annotated[int, Field(ge=0)]] | None = Field(None, description="adapt only these decoder layers (0 = nearest the input; peft layers_to_transform); null = every layer. With nothing trainable below the lowest adapted layer (e.g. a frozen projector), the backward stops there")
    use_dora: bool = Field(False, description="DoRA (peft use_dora): each adapted weight split into a magnitude vector and a direction that LoRA updates; slower per step, no fused LoRA fast path (docs/training.md)")


class DataConfig(Strict):
    train: list[DataSourceConfig] = Field(description="training sources (see data.train[] below)")
    eval: list[DataSourceConfig] = Field([], description="eval-loss sources")
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="held out from train when `eval` is empty")
    train_on: Literal["all_assistant", "last_assistant", "everything"] = Field("all_assistant", description="which tokens get loss; the stop token after each trained turn is always trained")
    max_len: int = Field(1024, ge=8, description="longest example in tokens; longer ones follow length_policy")
    length_policy: Literal["drop", "truncate", "split"] = Field("split", description="what to do with over-long examples (always counted and reported)")
    packing: bool = Field(True, description="pack examples into rows without padding; false = padded batches (reshuffled each epoch)")
    pack_order: Literal["shuffled", "by_length"] = Field("shuffled", description="how packed rows are filled: shuffled = examples placed by best fit in a seeded random order, so each row is a random sample like a random batch (97-99% full); by_length = best-fit-decreasing over the whole set (~99% full, but each row holds examples of alike length: measured worse per epoch, docs/quality.md)")
    order: Literal["shuffled", "as_given", "curriculum"] = Field("shuffled", description="the order training sees the examples in: shuffled = a seeded random placement into rows, rows reshuffled each epoch (pack_order applies); as_given = the sources' order (e.g. a curated file already ordered by `sftlab curate`'s curriculum block): rows filled in sequence (next fit), never reshuffled; curriculum = sorted by the numeric meta key `order_key`, ascending (stable), then as_given. Replay pieces (data.replay) are spread evenly through an ordered stream")
    order_key: str | None = Field(None, description="data.order: curriculum: the meta key to sort by, ascending (e.g. a score written by a curate block); every training row must have a number there")
    replay: ReplayConfig | None = Field(None, description="general plain text mixed into training at a fraction of the trained tokens, a forgetting control (keys: data.replay below; docs/forgetting.md)")
    on_error: Literal["raise", "skip"] = Field("raise", description="bad rows: stop with all problems listed, or skip them (counted)")
    # exclude=True: not in model_dump, so not in RunConfig.fingerprint: turning the cache on or off
    # changes no result, and must neither block `--resume` nor change existing runs' fingerprints.
    @model_validator(mode="after")
    def _order_keys(self) -> "DataConfig":
        problems = []
        if self.order == "curriculum" and not self.order_key:
            problems.append("data.order: curriculum needs data.order_key (the meta key to sort by, ascending)")
        if self.order != "curriculum" and self.order_key:
            problems.append(f"data.order_key: {self.order_key!r} is only used with data.order: curriculum (order is {self.order!r})")
        if self.order != "shuffled" and self.pack_order != "shuffled":
            problems.append(f"data.pack_order: {self.pack_order} reorders the examples; with data.order: {self.order} leave pack_order at shuffled")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    cache: bool = Field(True, exclude=True, description="reuse rendered+tokenised rows from $SFTLAB_CACHE/tokenized (default ~/.cache/sftlab/tokenized), keyed by data, tokenizer, template and train_on; false = always render")


class SpeedConfig(Strict):
    """train.speed: fast paths with the same math as the plain loop up to float rounding (sftlab/speed/,
    each with an equivalence test). Not part of the config fingerprint: changing one never blocks a resume."""

    fused_lora: bool = Field(True, description="LoRA layers add their update with one addmm instead of peft's matmul + multiply + add (same math, faster; see speed/fused_lora.py)")
    fused_mlp: bool = Field(True, description="SwiGLU MLP blocks (Llama, Mistral, Qwen2/3) keep 2 instead of 4 [tokens, intermediate] activations for the backward and recompute the rest (same math, less memory; see speed/fused_mlp.py)")
    packed_attention: bool = Field(True, description="with sdpa, attend within each packed example instead of one masked attention over the whole row (same math, faster; see speed/packed_attention.py)")
    shared_prefix: bool = Field(True, description="a vision-language model whose language model is frozen (LLaVA stage 1) reads the tokens every example starts with (e.g. the template's default system prompt) once per run, as a KV cache, instead of in every row (same math; see speed/shared_prefix.py)")
    cpu_matmul: Literal["auto", "torch", "openblas"] = Field("auto", description="CPU fp32 training: the BLAS for the linear layers' products (LoRA layers, SwiGLU down projection, lm_head). auto = time both once at start (~0.5 s) and use numpy's OpenBLAS where it is >= 1.1x faster than torch's MKL (AMD CPUs: ~1.25x); torch = always torch; openblas = always OpenBLAS (an error if numpy has none). See speed/cpu_blas.py; a resumed run reuses the choice its checkpoint recorded")
    loss_chunk_tokens: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field("auto", description="lm_head + cross-entropy over this many trained positions at a time, gradients made right away, so the [positions, vocab] logits and their log-softmax are never kept for the backward (memory; see speed/chunked_loss.py); auto = 2^25 logits per chunk (682 positions for a 49k vocabulary) where the model allows it, else the standard path; null = all at once, autograd keeps the log-softmax")


class KLToBaseConfig(Strict):
    """train.kl_to_base: a pull toward the base model's next-token distribution (sftlab/kl.py)."""

    beta: float = Field(0.0, ge=0, description="loss = CE + beta * KL(tuned || base), both summed over the trained positions of the step and divided by its trained tokens; 0 = off (the plain loss, no extra forward). LoRA: the base is the same model with its adapters switched off (one extra no-grad forward per micro-batch, no second model in memory); full fine-tuning: a frozen copy of the starting weights (2x the weights in memory). lm_head runs at trained positions in chunks of train.speed.loss_chunk_tokens (auto: 2^24 logits). The mean KL per trained token is logged as kl_to_base in metrics.jsonl (and the CE alone as ce_loss); docs/forgetting.md")


class EvalGenerateConfig(Strict):
    """train.eval_generate: answers generated (greedy) to a small prompt set at every evaluation and graded:
    eval_accuracy in metrics.jsonl (docs/training.md)."""

    source: str = Field("builtin:tasks-eval", description="prompts with gold answers: builtin:tasks-eval or builtin:flan-eval (graded by their suite's checkers), or a data file/folder/hub id in any data format (graded by exact match of the last assistant message after normalising whitespace, quotes, a trailing period and an 'Answer:' prefix, case-insensitive)")
    limit: int = Field(40, ge=1, description="prompts used, spread evenly over the families (meta family, else the source file) in a fixed order")
    max_new_tokens: int = Field(32, ge=1, description="longest generated answer in tokens")
    batch_size: int = Field(16, ge=1, description="prompts generated together")


BEST_METRICS = {"eval_loss": "min", "eval_accuracy": "max"}  # what "better" means for each train.best_metric
TRACKERS = ("tensorboard", "wandb", "mlflow")


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
    autocast: Literal["off", "bf16", "auto"] = Field("off", description="run the training forward under bf16 autocast (CPU or GPU); weights and optimizer stay in model.dtype. auto = bf16 where it is measured faster: on CPU when a model-shaped bf16 product is >= 1.5x the fp32 one (CPUs with AMX: full fine-tuning steps of SmolLM2-135M 1.88x faster, but its LoRA steps 0.84x, slower; without bf16 instructions ~11x slower), on CUDA when the GPU supports bf16; the choice is recorded in checkpoints and kept on resume")

    @field_validator("autocast", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        # YAML 1.1 reads a bare `off` (in a file or `train.autocast=off` on the command line) as false
        return "off" if v is False else v
    kl_to_base: KLToBaseConfig = Field(KLToBaseConfig(), description="KL pull toward the base model, a forgetting control (keys: train.kl_to_base below)")
    neftune_alpha: float | None = Field(None, ge=0, description="NEFTune: uniform noise of bound alpha/sqrt(L*d) added to the input embeddings in training forwards only (L = tokens of the example, d = hidden size; never at eval or generation); the paper uses 5-15; null or 0 = off (docs/training.md)")
    speed: SpeedConfig = Field(SpeedConfig(), description="fast paths with the same math as the plain loop, not part of the fingerprint (keys: train.speed below)")
    eval_generate: EvalGenerateConfig | None = Field(None, description="at each evaluation also generate answers and grade them: eval_accuracy (keys: train.eval_generate below); null = eval loss only")
    best_metric: Literal["eval_loss", "eval_accuracy"] | None = Field(None, description="keep the checkpoint with the best value of this metric (eval_loss: lowest, eval_accuracy: highest) besides the newest keep_checkpoints, and save final/ from it (run.json result.best says which step and why); needs eval_every > 0. The last step is always evaluated too. null = final/ is the last step")
    early_stopping_patience: int | None = Field(None, ge=1, description="stop after this many evaluations in a row without improving best_metric (by more than early_stopping_min_delta); final/ is still saved, from the best checkpoint. null = never stop early")
    early_stopping_min_delta: float = Field(0.0, ge=0, description="an evaluation improves best_metric only when it is better by more than this")
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field([], description="experiment trackers (accelerate's) that get every metrics.jsonl line; logs under output_dir/tracking/. Optional installs: pip install 'sftlab[tensorboard]' / 'sftlab[wandb]' / 'sftlab[mlflow]'")


# keys that moved into a section: an old config gets an error naming the new key
MOVED_KEYS = {f"train.{k}": f"train.speed.{k}" for k in SpeedConfig.model_fields}


class MultimodalConfig(Strict):
    """multimodal: LLaVA-style vision-language tuning (docs/multimodal.md). With `vision_encoder` a new
    LLaVA is assembled from it, model.name (the language model) and a fresh projector; without it,
    model.name must already be a vision-language model (e.g. a stage-1 output folder)."""

    vision_encoder: str | None = Field(None, description="builtin:tiny-siglip-shapes (pretrained here on the built-in shapes), builtin:tiny-siglip (random weights), or a CLIP/SigLIP hub id or folder; null = model.name is already a vision-language model")
    image_size: int = Field(48, ge=8, description="built-in towers only: input size in pixels")
    patch_size: int = Field(16, ge=1, description="built-in towers only: patch size (image tokens = (image_size / patch_size)^2)")
    feature_layer: int = Field(-1, description="vision tower layer whose features the projector reads (LLaVA-1.5: -2)")
    trainable: list[Literal["projector", "language_model", "vision_tower"]] = Field(
        ["projector", "language_model"], min_length=1,
        description="what trains: stage 1 (feature alignment) = [projector]; stage 2 = [projector, language_model] (LoRA on the language model when lora.enabled); add vision_tower to unfreeze the encoder")
    seed: int = Field(0, description="seed of a new LLaVA's fresh weights (projector; the built-in towers: init, and the shapes pretraining)")
    projector_lr: float | None = Field(None, gt=0, description="peak learning rate of the projector's weights (LLaVA's mm_projector_lr); null = train.lr. Same warmup and decay as train.lr")


class RunConfig(Strict):
    model: ModelConfig = ModelConfig()
    lora: LoraSettings = LoraSettings()
    data: DataConfig
    train: TrainConfig = TrainConfig()
    multimodal: MultimodalConfig | None = Field(None, description="vision-language tuning (see multimodal.* below)")

    @model_validator(mode="after")
    def _kl_is_text_only(self) -> "RunConfig":
        if self.multimodal is not None and self.train.kl_to_base.beta > 0:
            raise ValueError(f"train.kl_to_base.beta: {self.train.kl_to_base.beta} is not supported for multimodal runs yet; "
                             "set train.kl_to_base.beta: 0")
        return self

    @model_validator(mode="after")
    def _4bit_needs_lora(self) -> "RunConfig":
        if self.model.load_in_4bit and not self.lora.enabled:
            raise ValueError("model.load_in_4bit: true (QLoRA) keeps the base weights frozen in 4 bits, so only LoRA "
                             "adapters can train: set lora.enabled: true, or model.load_in_4bit: false for full fine-tuning")
        if self.model.load_in_4bit and self.multimodal is not None:
            raise ValueError("model.load_in_4bit: true is not supported for multimodal runs yet: set model.load_in_4bit: false")
        return self

    @model_validator(mode="after")
    def _lora_needs_language_model(self) -> "RunConfig":
        mm = self.multimodal
        if mm is not None and self.lora.enabled and "language_model" not in mm.trainable:
            raise ValueError(f"lora.enabled: true adapts the language model, but multimodal.trainable is {mm.trainable}; "
                             "for feature alignment (stage 1: projector only) set lora.enabled: false, "
                             "or add language_model to multimodal.trainable")
        return self

    @model_validator(mode="after")
    def _evaluation_keys_fit(self) -> "RunConfig":
        """train.best_metric / early_stopping / eval_generate: what each needs, every problem at once."""
        t, problems = self.train, []
        has_eval_data = bool(self.data.eval) or self.data.eval_fraction > 0
        if t.best_metric is not None and not t.eval_every:
            problems.append(f"train.best_metric: {t.best_metric} needs evaluations during training; set train.eval_every (e.g. 50 steps)")
        if t.best_metric == "eval_loss" and not has_eval_data:
            problems.append("train.best_metric: eval_loss needs eval data; set data.eval or data.eval_fraction (e.g. 0.05)")
        if t.best_metric == "eval_accuracy" and t.eval_generate is None:
            problems.append("train.best_metric: eval_accuracy needs train.eval_generate (e.g. {source: builtin:tasks-eval, limit: 40})")
        if t.early_stopping_patience is not None and t.best_metric is None:
            problems.append("train.early_stopping_patience counts evaluations without improvement of train.best_metric; "
                            "set train.best_metric: eval_loss (or eval_accuracy)")
        if t.eval_generate is not None and self.multimodal is not None:
            problems.append("train.eval_generate is for text models; a multimodal run is evaluated with `sftlab eval` "
                            "(docs/multimodal.md); remove train.eval_generate")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def fingerprint(self) -> str:
        """Hash of everything that changes the result (resume refuses a changed config)."""
        payload = self.model_dump(mode="json")
        payload["train"].pop("output_dir", None)
        payload["train"].pop("save_every", None)
        payload["train"].pop("keep_checkpoints", None)
        payload["train"].pop("speed", None)  # the same math up to float rounding (tested): never blocks a resume
        payload["train"].pop("report_to", None)  # trackers only watch
        if payload["train"].get("best_metric") != "eval_accuracy":  # then generation only reports
            payload["train"].pop("eval_generate", None)
        # the data-order scheme (2 = shuffled packing, padded batches reshuffled each epoch, rows of
        # tokens_per_batch whatever max_len is): a checkpoint made under another scheme saw its data
        # in another order, so resuming it would not continue the same run and must be refused
        payload["data_order"] = 2
        # keys added after runs were saved: absent when unset, so older checkpoints keep their fingerprint
        if payload.get("multimodal") is None:
            payload.pop("multimodal", None)
        elif payload["multimodal"].get("projector_lr") is None:
            payload["multimodal"].pop("projector_lr", None)
        for key, default in (("best_metric", None), ("early_stopping_patience", None), ("early_stopping_min_delta", 0.0)):
            if payload["train"].get(key, default) == default:
                payload["train"].pop(key, None)
        for key, default in (("order", "shuffled"), ("order_key", None), ("replay", None)):
            if payload["data"].get(key, default) == default:
                payload["data"].pop(key, None)
        if payload["train"].get("kl_to_base") == KLToBaseConfig().model_dump(mode="json"):
            payload["train"].pop("kl_to_base", None)
        for section, key, off in (("model", "load_in_4bit", (False,)), ("lora", "use_dora", (False,)),
                                  ("lora", "layers", (None,)), ("train", "neftune_alpha", (None, 0))):
            if payload[section].get(key) in off:  # off: the result of a run from before the key existed
                payload[section].pop(key, None)
        for key in ("train", "eval"):
            for src in payload["data"].get(key, []):
                if src.get("image_dir") is None:
                    src.pop("image_dir", None)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


CONFIG_DOC = "docs/config.md"
# Names other trainers (transformers' TrainingArguments, TRL) give our keys: suggested for unknown overrides.
KEY_ALIASES = {"learning_rate": "lr", "num_train_epochs": "epochs", "gradient_accumulation_steps": "grad_accum",
               "per_device_train_batch_size": "batch_size", "lr_scheduler_type": "schedule",
               "max_seq_length": "max_len", "max_length": "max_len", "lora_r": "r", "lora_alpha": "alpha",
               "lora_dropout": "dropout", "model_name_or_path": "name"}


def _override_error(item: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"command-line override {item!r}: {problem}\n    fix: {fix}\n    every key: {CONFIG_DOC}")


def _shape(annotation) -> tuple[str, object]:
    """What a config field holds: ("section", model) | ("sections", item model) | ("mapping", None) | ("value", None)."""
    args = [a for a in (typing.get_args(annotation) if _is_union(annotation) else (annotation,)) if a is not type(None)]
    for a in args:
        if isinstance(a, type) and issubclass(a, BaseModel):
            return "section", a
    for a in args:
        origin, inner = typing.get_origin(a), typing.get_args(a)
        if origin is list and inner and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
            return "sections", inner[0]
        if origin is dict:
            return "mapping", None
    return "value", None


def _is_union(annotation) -> bool:
    return typing.get_origin(annotation) in (typing.Union, types.UnionType)


def _example_key(model: type[BaseModel]) -> str:
    return next(iter(model.model_fields))


def parse_override(item: str, root: type[BaseModel] | None = None) -> tuple[list[str | int], object]:
    """`section.key=value` -> (path, value), the path checked against the config's keys: every
    part names a key (or, in a list such as data.train, an index), a value's path ends at a value,
    and a section gets a mapping. The value is read as YAML (1e-4, true, null, [a, b], {k: v})."""
    root = root or RunConfig
    key, sep, text = item.partition("=")
    if not sep:
        raise _override_error(item, "has no '='", "write section.key=value, e.g. train.lr=1e-4")
    key = key.strip()
    if not key:
        raise _override_error(item, "has no key before '='", "write section.key=value, e.g. train.lr=1e-4")
    parts = key.split(".")
    if any(not p.strip() for p in parts):
        raise _override_error(item, f"the key {key!r} has an empty part (a leading, trailing or doubled '.')",
                              "write section.key=value with single dots, e.g. train.lr=1e-4")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise _override_error(item, f"the value {text!r} is not valid YAML ({problem})",
                              "write a number, true/false, null, a string (quote it if it holds [ ] { } : #), "
                              "or a YAML list/mapping such as [a, b] or {path: data.jsonl}") from None
    path: list[str | int] = []
    kind, inner = "section", root
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth])
        if kind == "section":
            fields = list(inner.model_fields)
            if part not in fields:
                if (moved := MOVED_KEYS.get(".".join(parts[: depth + 1]))):
                    raise _override_error(item, f"{'.'.join(parts[: depth + 1])!r} moved to {moved!r}",
                                          f"write {moved}={text.strip()}")
                close = [KEY_ALIASES[part]] if KEY_ALIASES.get(part) in fields else difflib.get_close_matches(part, fields, n=1)
                guess = f"did you mean {'.'.join([*parts[:depth], close[0]])}? " if close else ""
                raise _override_error(item, f"{'.'.join(parts[: depth + 1])!r} is not a config key",
                                      f"{guess}keys of {here or 'the config'}: {', '.join(fields)}")
            kind, inner = _shape(inner.model_fields[part].annotation)
            path.append(part)
        elif kind == "sections":
            if not part.isdigit():
                raise _override_error(item, f"{here!r} is a list, so the part after it must be an index (0, 1, ...), not {part!r}",
                                      f"e.g. {here}.0.{_example_key(inner)}=VALUE, or the whole list: {here}='[{{path: a.jsonl}}]'")
            kind = "section"
            path.append(int(part))
        elif kind == "mapping":
            kind = "value"
            path.append(part)
        else:
            raise _override_error(item, f"{here!r} is a value, not a section, so it has no key {part!r}",
                                  f"write {here}=VALUE")
    if kind == "section" and not isinstance(value, dict):
        raise _override_error(item, f"{key!r} is a section (keys: {', '.join(inner.model_fields)}), not a value",
                              f"set one of its keys, e.g. {key}.{_example_key(inner)}=VALUE")
    if kind == "sections" and not isinstance(value, list):
        raise _override_error(item, f"{key!r} is a list of sections, not a single value",
                              f"set one entry's key, e.g. {key}.0.{_example_key(inner)}=VALUE, or the whole list: {key}='[{{path: a.jsonl}}]'")
    return path, value


def _entries(n: int) -> str:
    return f"{n} entr{'y' if n == 1 else 'ies'}"


def _set_path(raw: dict, path: list[str | int], value, item: str) -> None:
    d = raw
    for depth, k in enumerate(path[:-1]):
        nxt = path[depth + 1]
        here = ".".join(map(str, path[: depth + 1]))
        if isinstance(k, int):
            if k > len(d):
                raise _override_error(item, f"{'.'.join(map(str, path[:depth]))} has {_entries(len(d))}, so index {k} is out of range",
                                      f"use an index from 0 to {len(d) - 1}, or {len(d)} to add an entry")
            if k == len(d):
                d.append({})
            child = d[k]
        else:
            child = d.get(k)
            if child is None:
                child = d[k] = [] if isinstance(nxt, int) else {}
        if not isinstance(child, list if isinstance(nxt, int) else dict):
            raise _override_error(item, f"the config has {here}: {child!r}, which is not a "
                                  f"{'list' if isinstance(nxt, int) else 'section'}", f"fix {here} in the config file")
        d = child
    last = path[-1]
    if isinstance(last, int):
        if last > len(d):
            raise _override_error(item, f"{'.'.join(map(str, path[:-1]))} has {_entries(len(d))}, so index {last} is out of range",
                                  f"use an index from 0 to {len(d) - 1}, or {len(d)} to add an entry")
        d.append(value) if last == len(d) else d.__setitem__(last, value)
    else:
        d[last] = value


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
    origins: dict[str, str] = {}
    for item in overrides:
        keys, value = parse_override(item)
        _set_path(raw, keys, value, item)
        origins[".".join(map(str, keys))] = item
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(where, e, origins=origins)) from None


def format_validation_error(where: str, e: ValidationError, field_names: list[str] | None = None, *,
                            origins: dict[str, str] | None = None) -> str:
    """Every problem of a pydantic validation, one line each, with did-you-mean for unknown keys
    (matched against `field_names`, by default the run config's). `origins`: dotted key -> the
    command-line override that set it, named next to its problem."""
    lines = [f"{where}: {e.error_count()} problem(s) in the config:"]
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"])
        if err["type"] == "extra_forbidden" and loc in MOVED_KEYS:
            fix = f"this key moved: write it as {MOVED_KEYS[loc]} (YAML: train: {{speed: {{{err['loc'][-1]}: ...}}}})"
        elif err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(err["loc"][-1]), field_names or _all_field_names(), n=1)
            fix = "unknown key" + (f"; did you mean {close[0]!r}?" if close else f": every key is in {CONFIG_DOC}")
        elif err["type"] == "missing":
            fix = "required: add it"
        else:
            fix = err["msg"]
        origin = next((o for k, o in (origins or {}).items() if loc == k or loc.startswith(k + ".")), None)
        by = f" (from the command line: {origin})" if origin else ""
        lines.append(f"  - {loc}: got {err.get('input')!r}{by} -> {fix}")
    return "\n".join(lines)


def _all_field_names() -> list[str]:
    models = [ModelConfig, LoraSettings, DataConfig, TrainConfig, KLToBaseConfig, SpeedConfig, EvalGenerateConfig, RunConfig, DataSourceConfig, ReplayConfig]
    return sorted({name for m in models for name in m.model_fields})


def reference_markdown() -> str:
    """The config reference (README links to docs/config.md, generated from these models)."""
    lines = ["# Config reference", "", "Generated from `src/sftlab/config.py` by `python -m sftlab.config`; "
             "unknown keys are errors.", ""]
    sections = [("model", ModelConfig), ("lora", LoraSettings), ("data", DataConfig),
                ("data.train[] / data.eval[]", DataSourceConfig), ("data.replay", ReplayConfig), ("train", TrainConfig),
                ("train.kl_to_base", KLToBaseConfig), ("train.speed", SpeedConfig), ("train.eval_generate", EvalGenerateConfig),
                ("multimodal", MultimodalConfig)]
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
        typ = (typ or str(f.annotation).replace("typing.", ""))
        typ = re.sub(r"\b(?:__main__|sftlab(?:\.\w+)*)\.(\w+)", r"\1", typ).replace("|", "\\|")  # a section: its class name
        default = "required" if f.is_required() else f.get_default(call_default_factory=True)
        default = "(a section)" if isinstance(default, BaseModel) else repr(default) if default != "required" else default
        meaning = (f.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {typ} | {default} | {meaning} |")
    return lines


if __name__ == "__main__":
    print(reference_markdown())
