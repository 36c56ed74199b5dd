"""The YAML shape of a curation pipeline (`sftlab curate CONFIG`).

    inputs:
      - {name: chat, path: data/chat.jsonl, weight: 2}
      - {name: code, path: data/code.jsonl, weight: 1}
    blocks:
      - type: exact_dedup
      - type: minhash_dedup
        threshold: 0.8
      - type: empty_response
      - type: refusal
      - type: complexity_score
      - type: select
        budget: 1000
      - type: mix
        total: 1500
    output: out/curated.jsonl
    stats: out/curated.stats.json     # default: <output>.stats.json

Relative paths are relative to the folder of the config file. Every block's settings are the
pydantic model next to the block (e.g. MinHashDedupConfig); unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError

from sftlab.configbase import Strict, read_yaml_mapping
from sftlab.curate.difficulty import IFDScoreConfig
from sftlab.curate.dedup import ExactDedupConfig, MinHashDedupConfig, SemanticDedupConfig
from sftlab.curate.filters import (
    EmptyResponseConfig,
    FormattingConfig,
    GarbageConfig,
    PromptEchoConfig,
    RefusalConfig,
    RepetitionConfig,
    ResponseLengthConfig,
)
from sftlab.curate.mix import CurriculumConfig, MixConfig
from sftlab.curate.scores import ComplexityScoreConfig, DiversityScoreConfig, TagScoreConfig
from sftlab.curate.select import SelectConfig
from sftlab.data.config import SourceConfig
from sftlab.errors import ConfigError

BlockSpec = Annotated[
    ExactDedupConfig | MinHashDedupConfig | SemanticDedupConfig
    | EmptyResponseConfig | PromptEchoConfig | ResponseLengthConfig | RefusalConfig | RepetitionConfig
    | FormattingConfig | GarbageConfig
    | ComplexityScoreConfig | TagScoreConfig | DiversityScoreConfig | IFDScoreConfig
    | SelectConfig | MixConfig | CurriculumConfig,
    Field(discriminator="type"),
]


class CurateInput(SourceConfig):
    """A data source (path, format, columns, split, limit) with a name for mixing and reports
    (default: the file name without extension) and its mixing weight."""

    name: str | None = None
    weight: float = Field(1.0, gt=0, description="this input's share in a mix block (relative to the other inputs' "
                                                 "weights) when the block names no weights")

    def display_name(self) -> str:
        return self.name or Path(self.path.removeprefix("hf:")).stem or self.path


class CurateConfig(Strict):
    inputs: list[CurateInput] = Field(..., min_length=1)
    blocks: list[BlockSpec] = Field(default_factory=list)
    output: str
    stats: str | None = None
    on_error: Literal["raise", "skip"] = Field("raise", description="bad input rows: stop, or skip and count")

    def resolve(self, base: Path) -> CurateConfig:
        """Paths relative to `base` (the config's folder); 'hf:' ids and absolute paths unchanged."""
        def fix(p: str) -> str:
            return p if p.startswith("hf:") or Path(p).is_absolute() else str(base / p)

        stats = self.stats or self.output + ".stats.json"
        return self.model_copy(update={
            "inputs": [i.model_copy(update={"path": fix(i.path), "name": i.display_name(),
                                            "image_dir": fix(i.image_dir) if i.image_dir else None}) for i in self.inputs],
            "output": fix(self.output), "stats": fix(stats)})


def load_curate_config(path: str | Path) -> CurateConfig:
    """Read and validate a curation YAML; every problem is reported at once as a ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file\n    fix: check the path (see `sftlab curate --help`)")
    raw = read_yaml_mapping(path, "inputs, blocks, output")
    try:
        cfg = CurateConfig.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: {e.error_count()} problem(s):"]
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"])
            fix = ""
            if err["type"] == "extra_forbidden":
                fix = " (unknown key: check the spelling; see the block's settings in sftlab.curate)"
            elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
                fix = f" (block types: {', '.join(sorted(block_types()))})"
            lines.append(f"  - {loc}: {err['msg']}; got {err.get('input')!r}{fix}")
        raise ConfigError("\n".join(lines)) from e
    names = [i.display_name() for i in cfg.inputs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{path} [inputs]: input names {dupes} are used more than once (the name defaults to the "
                          "file name without extension)\n    fix: give each input a unique `name:`")
    return cfg.resolve(path.parent)


def block_types() -> list[str]:
    from sftlab.curate.blocks import BLOCKS

    return list(BLOCKS)


def reference_markdown() -> str:
    """docs/curate.md: every block type with its keys (generated; tests/test_curate_cli.py checks it)."""
    import inspect

    from sftlab.config import fields_table
    from sftlab.curate.blocks import BLOCKS

    lines = ["# Curation blocks", "",
             "Generated from the block configs by `python -m sftlab.curate.config`; unknown keys are errors.",
             "A pipeline is `inputs:`, `blocks:` (run in order) and `output:`; see `src/sftlab/curate/config.py`.", ""]
    for name, cls in BLOCKS.items():
        doc = inspect.getdoc(cls) if cls.__doc__ else inspect.getdoc(inspect.getmodule(cls)) or ""
        first = doc.split("\n\n", 1)[0].replace("\n", " ")
        lines += [f"## `type: {name}`", "", f"`{cls.__module__}.{cls.__name__}`" + (f": {first}" if cls.__doc__ else ""), ""]
        if len(cls.Config.model_fields) > 1:
            lines += [*fields_table(cls.Config, skip=("type",)), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown())
