"""One data source in a YAML config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class DataSourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str  # file, folder, glob, hub id, or "builtin:tasks"
    format: str = "auto"
    columns: dict[str, str] | None = None
    split: str = "train"
    weight: float = 1.0
    streaming: bool = False
    limit: int | None = None
