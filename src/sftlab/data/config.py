"""The YAML shape of one data source (a `data:` list entry in a training config)."""

from __future__ import annotations

from pydantic import Field, field_validator

from sftlab.configbase import Strict
from sftlab.data.formats import FIELD_NAMES, FORMATS


class DataSourceConfig(Strict):
    """One source: a file, folder, glob, or 'hf:<dataset id>'.

    columns maps OUR field name -> YOUR column name, e.g. {instruction: question, output: answer}.
    weight is the source's share in a mixture (used by the mixing step, not by the loader).
    """

    path: str = Field(description="file, folder, glob, hub dataset id, or builtin:tasks-train / builtin:tasks-eval")
    format: str = Field("auto", description="auto, messages, sharegpt, alpaca, prompt_completion or text")
    columns: dict[str, str] | None = Field(None, description="our field name -> your column name")
    split: str = Field("train", description="split for `datasets` sources")
    weight: float = Field(default=1.0, gt=0, description="mixing weight: keeps round(weight x rows) rows (>1 repeats)")
    streaming: bool = Field(False, description="stream a `datasets` source instead of loading it whole")
    limit: int | None = Field(default=None, ge=0, description="use only the first N rows")
    rejects: str | None = Field(None, description="with data.on_error: skip, write this source's skipped rows here (JSONL: file:line, reason, problems, the row); written whole at the end, empty when none")

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
                "streaming": self.streaming, "limit": self.limit, "rejects_path": self.rejects}

    def load(self, **kw):
        """Load this source: load_conversations(self.path, **self.load_kwargs(), **kw)."""
        from sftlab.data.load import load_conversations

        return load_conversations(self.path, **{**self.load_kwargs(), **kw})
