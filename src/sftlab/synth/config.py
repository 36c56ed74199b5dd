"""`sftlab synth CONFIG`: one YAML file, small pydantic models, unknown keys refused.

    pipeline: self_instruct            # self_instruct | evol_instruct | judge_filter | llava
    output: data/synth.jsonl           # appended as rows are made; rerun the same command to resume
    teacher: {kind: openai, base_url: http://127.0.0.1:8000/v1, model: default}
    judge:   {kind: local, model: smollm2-135m-instruct}     # judge_filter only
    self_instruct: {num_instructions: 50}
    llava: {input: images.jsonl, types: [conversation, detail, reasoning], per_image: 1}   # llava only
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from sftlab.config import format_validation_error
from sftlab.configbase import Strict, read_yaml_mapping
from sftlab.errors import ConfigError
from sftlab.synth.backends import BackendConfig

BUILTIN_SEEDS = str(Path(__file__).with_name("seed_tasks.jsonl"))


class SelfInstructConfig(Strict):
    num_instructions: int = Field(50, ge=1)  # rows to produce
    seed_tasks: str = "builtin"  # builtin = our 22 seed tasks, or a data file sftlab can load
    examples_per_prompt: int = Field(3, ge=1)  # k in-context examples...
    machine_examples: int = Field(1, ge=0)  # ...of which up to this many are generated ones (paper: 2 of 8)
    new_per_prompt: int = Field(4, ge=1)  # tasks asked for per prompt
    prompts_per_step: int = Field(4, ge=1)  # teacher calls per step (one progress save per step)
    rouge_threshold: float = Field(0.7, gt=0, le=1)
    min_words: int = 3
    max_words: int = 150
    min_response_words: int = 1
    temperature: float = 0.7
    max_tokens_instructions: int = 512
    max_tokens_response: int = 512
    max_steps: int = Field(100, ge=1)  # stop (and say so) if the target is not reached by then


class EvolInstructConfig(Strict):
    input: str = "builtin"  # instructions to evolve: builtin seeds or a data file
    rounds: int = Field(2, ge=1)
    methods: list[Literal["constraints", "deepen", "concretizing", "reasoning", "complicate_input", "breadth"]] = [
        "constraints", "deepen", "concretizing", "reasoning", "complicate_input", "breadth"]
    equality_check: bool = True  # ask the teacher whether child and parent are "Equal" (WizardLM rule 1)
    batch_size: int = Field(8, ge=1)
    min_response_words: int = 3
    temperature: float = 0.7
    max_tokens_instruction: int = 256
    max_tokens_response: int = 512


class JudgeFilterConfig(Strict):
    input: str  # data file with (instruction, response) conversations
    threshold: float = Field(4.0, ge=1, le=5)  # keep score >= threshold (AlpaGasus: 4.5 on their 0-5 scale)
    # text: the judge writes "Score: N" + a reason, parsed (any backend). logprobs: a local judge's
    # probability of each score 1-5 after "Score: ", score = probability-weighted mean (G-Eval);
    # always parses, one forward pass per row (synth/choices.py)
    method: Literal["text", "logprobs"] = "text"
    batch_size: int = Field(16, ge=1)  # rows per progress save (and per generation batch for text)
    max_tokens: int = 256  # text only
    rejects: str | None = None  # default: OUTPUT.rejected.jsonl


LLAVA_TYPES = ("conversation", "detail", "reasoning")


class LlavaConfig(Strict):
    """LLaVA-style visual instruction data from a text-only teacher (synth/llava.py)."""

    input: str  # JSONL, one image a line: {"image": PATH_OR_URL, "captions": [...], "boxes": [{"label", "box"}], "id"?}
    image_root: str | None = None  # relative image refs are relative to this folder or URL (default: the input's folder)
    types: list[Literal["conversation", "detail", "reasoning"]] = list(LLAVA_TYPES)
    per_image: int = Field(1, ge=1)  # rows of each type per image (each its own teacher call)
    max_images: int | None = Field(None, ge=1)  # use the first N records
    batch_size: int = Field(16, ge=1)  # teacher calls per step (one progress save per step)
    min_turns: int = Field(2, ge=1)  # conversation: question-answer pairs asked for (fewer are rejected)...
    max_turns: int = Field(5, ge=1)  # ...up to this many asked for (more are kept)
    min_description_words: int = Field(30, ge=1)  # detail: shorter descriptions are rejected
    min_reasoning_words: int = Field(15, ge=1)  # reasoning: shorter answers are rejected
    few_shot: bool = True  # show the teacher one worked example (context -> answer) before the request
    temperature: float = 0.7
    max_tokens: int = Field(1024, ge=16)

    @model_validator(mode="after")
    def _check(self):
        if not self.types:
            raise ValueError("llava.types is empty; choose from conversation, detail, reasoning")
        if len(set(self.types)) != len(self.types):
            raise ValueError(f"llava.types lists a type twice: {self.types}")
        if self.max_turns < self.min_turns:
            raise ValueError(f"llava.max_turns ({self.max_turns}) must be >= min_turns ({self.min_turns})")
        return self


class SynthConfig(Strict):
    pipeline: Literal["self_instruct", "evol_instruct", "judge_filter", "llava"]
    output: str
    teacher: BackendConfig | None = None
    judge: BackendConfig | None = None
    seed: int = 0
    self_instruct: SelfInstructConfig = SelfInstructConfig()
    evol_instruct: EvolInstructConfig = EvolInstructConfig()
    judge_filter: JudgeFilterConfig | None = None
    llava: LlavaConfig | None = None

    @model_validator(mode="after")
    def _needs(self):
        if self.pipeline in ("self_instruct", "evol_instruct", "llava") and self.teacher is None:
            raise ValueError(f"pipeline {self.pipeline} needs a `teacher:` section (kind, model, base_url)")
        if self.pipeline == "llava" and self.llava is None:
            raise ValueError("pipeline llava needs a `llava:` section with `input:` (JSONL of image, captions, boxes)")
        if self.pipeline == "judge_filter":
            if self.judge_filter is None:
                raise ValueError("pipeline judge_filter needs a `judge_filter:` section with `input:` (the data to score)")
            if self.judge is None:
                raise ValueError("pipeline judge_filter needs a `judge:` section (kind, model, base_url)")
            if self.judge_filter.method == "logprobs" and self.judge.kind != "local":
                raise ValueError("judge_filter.method: logprobs needs `judge: {kind: local, ...}` (an HTTP server cannot "
                                 "score a forced answer prefix); use method: text for an HTTP judge")
        return self


def load_synth_config(path: str | Path) -> SynthConfig:
    path = Path(path)
    raw = read_yaml_mapping(path, "pipeline, output, teacher, ...")
    try:
        cfg = SynthConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_validation_error(str(path), e, _synth_field_names())) from e
    # relative paths are relative to the config file
    base = path.parent
    cfg.output = str(_rel(base, cfg.output))
    for section, key in (("self_instruct", "seed_tasks"), ("evol_instruct", "input")):
        sub = getattr(cfg, section)
        if getattr(sub, key) != "builtin":
            setattr(sub, key, str(_rel(base, getattr(sub, key))))
    if cfg.judge_filter:
        cfg.judge_filter.input = str(_rel(base, cfg.judge_filter.input))
        if cfg.judge_filter.rejects:
            cfg.judge_filter.rejects = str(_rel(base, cfg.judge_filter.rejects))
    if cfg.llava:
        cfg.llava.input = str(_rel(base, cfg.llava.input))
        if cfg.llava.image_root and not cfg.llava.image_root.startswith(("http://", "https://")):
            cfg.llava.image_root = str(_rel(base, cfg.llava.image_root))
    return cfg


def _rel(base: Path, p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else base / q


def _synth_field_names() -> list[str]:
    """Every key the synth config accepts, for did-you-mean suggestions."""
    seen, todo, names = set(), [SynthConfig], set()
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, f in model.model_fields.items():
            names.add(name)
            for arg in [f.annotation, *getattr(f.annotation, "__args__", ())]:
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    todo.append(arg)
    return sorted(names)
