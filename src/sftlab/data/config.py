"""The YAML shape of one data source: SourceConfig (where and how to read it), DataSourceConfig
(a `data.train` / `data.eval` entry of a training config: + `repeat`). A curate input
(curate/config.py) is a SourceConfig with a name and a mixing `weight`.

Two numbers, two names: `repeat` multiplies one source's rows in a training run; a curate input's
`weight` is its share relative to the other inputs in the mix block."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from sftlab.configbase import Strict
from sftlab.data.formats import FIELD_NAMES, FORMATS
from sftlab.errors import DataError, Problem

BUILTIN_PREFIX = "builtin:"
BUILTIN_SETS = {"tasks-train": 0, "tasks": 0, "tasks-eval": 1}  # name -> index in train_eval_split()
# the FLAN-style mixture (sftlab.builtin.flan.mixture) with its default knobs, seed 0
FLAN_SETS = ("flan-train", "flan-eval")
# the multimodal shapes suite (sftlab.builtin.shapes): written once into cache_dir()/shapes, then read
# (tests/test_builtin_shapes.py checks this list against sftlab.builtin.shapes.SETS + DERIVED_SETS)
SHAPES_SETS = ("shapes-stage1", "shapes-stage1-per-image", "shapes-stage1-plain", "shapes-stage2", "shapes-stage2-chat",
               "shapes-stage2-wide", "shapes-stage2-wide-chat", "shapes-eval")


class SourceConfig(Strict):
    """One source: a file, folder, glob, 'hf:<dataset id>' or a built-in set.

    columns maps OUR field name -> YOUR column name, e.g. {instruction: question, output: answer}.
    """

    path: str = Field(description="file, folder, glob, hub dataset id, or builtin:tasks-train / builtin:tasks-eval / "
                      "builtin:flan-train / builtin:flan-eval "
                      "(multimodal: builtin:shapes-stage1 / builtin:shapes-stage2[-wide][-chat] / builtin:shapes-eval)")
    format: str = Field("auto", description="auto, messages, sharegpt, alpaca, prompt_completion or text")
    columns: dict[str, str] | None = Field(None, description="our field name -> your column name")
    split: str = Field("train", description="split for `datasets` sources")
    streaming: bool = Field(False, description="stream a `datasets` source instead of loading it whole")
    limit: int | None = Field(default=None, ge=0, description="use only the first N rows")
    rejects: str | None = Field(None, description="with data.on_error: skip, write this source's skipped rows here (JSONL: file:line, reason, problems, the row); written whole at the end, empty when none")
    image_dir: str | None = Field(None, description="multimodal data: the folder relative image paths start from (LLaVA's `image: coco/train2017/x.jpg` with image_dir: the folder holding coco/); default: the data file's folder (for `datasets` sources: the current folder). Every image is checked when its row loads")

    @field_validator("format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        if v != "auto" and v not in FORMATS:
            raise ValueError(f"format must be auto or one of {', '.join(FORMATS)}, got {v!r}")
        return v

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        unknown = [k for k in v or {} if k not in FIELD_NAMES]
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; keys are our field names ({', '.join(FIELD_NAMES)}), "
                             "values your column names")
        return v

    def load_kwargs(self) -> dict:
        """Keyword arguments for load_conversations / iter_conversations (sources = self.path)."""
        return {"format": self.format, "columns": self.columns, "split": self.split,
                "streaming": self.streaming, "limit": self.limit, "rejects_path": self.rejects,
                "image_dir": self.image_dir}

    def load(self, **kw):
        """Load this source: a built-in set (builtin:tasks-train, builtin:tasks-eval, builtin:flan-train,
        builtin:flan-eval, builtin:shapes-stage1,
        builtin:shapes-stage2[-wide][-chat], builtin:shapes-eval; `limit` applies),
        else load_conversations(self.path, **self.load_kwargs(), **kw). Returns a LoadResult."""
        from sftlab.data.load import LoadResult, LoadStats, load_conversations

        if not self.path.startswith(BUILTIN_PREFIX):
            return load_conversations(self.path, **{**self.load_kwargs(), **kw})
        name = self.path.removeprefix(BUILTIN_PREFIX)
        if name in SHAPES_SETS:
            from sftlab.builtin.shapes import load_set

            convs = load_set(name, seed=0)
        elif name in BUILTIN_SETS:
            from sftlab.builtin.tasks import train_eval_split

            convs = train_eval_split(seed=0)[BUILTIN_SETS[name]]
        elif name in FLAN_SETS:
            from sftlab.builtin.flan.mixture import build_eval, build_train

            convs = build_train()[0] if name == "flan-train" else build_eval()
        else:
            raise DataError(Problem(self.path, "path", "unknown built-in data set",
                                    "use builtin:tasks-train, builtin:tasks-eval, builtin:flan-train, builtin:flan-eval, "
                                    "builtin:" + ", builtin:".join(SHAPES_SETS)))
        convs = convs[: self.limit] if self.limit else convs
        n = len(convs)
        return LoadResult(convs, LoadStats(rows_read=n, loaded=n, by_format={"built-in suite": n}, by_file={self.path: n}))


class DataSourceConfig(SourceConfig):
    """A training or eval-loss source of a run config."""

    repeat: float = Field(default=1.0, gt=0, description="multiplies this source's rows: keeps round(repeat x rows) "
                                                          "rows (2 = every row twice, 0.5 = a random half)")

    @model_validator(mode="before")
    @classmethod
    def _renamed_weight(cls, data: Any) -> Any:
        if isinstance(data, dict) and "weight" in data:
            raise ValueError(f"a training source has no weight; for weight: {data['weight']!r} write repeat: "
                             f"{data['weight']!r} (it multiplies this source's rows: 2 = every row twice). A share "
                             "relative to other sources is a curate input's weight (sftlab curate, mix block)")
        return data


class ReplayConfig(SourceConfig):
    """data.replay: plain text mixed into training (sftlab/prepare.py `add_replay`). Its documents load
    as kind "text" (every token trained), are split at data.max_len, and pieces are drawn in a seeded
    random order (the text cycled when it is too short) until replay makes up `fraction` of the
    trained tokens of the training set, the last piece cut to hit the count exactly."""

    format: str = Field("text", description="text: one document per .txt file / per record's `text` field (any format that yields plain-text documents)")
    fraction: float = Field(description="share of the TRAINED TOKENS (what the loss averages over) that are replay text: "
                            "replay tokens / (instruction tokens + replay tokens); 0.1 = 10%", gt=0.0, lt=1.0)
