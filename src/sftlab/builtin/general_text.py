"""A small general-English corpus for measuring forgetting (general-text perplexity, base vs tuned).

`general_text.jsonl` holds 42 encyclopedic paragraphs (~130-150 words each) on science, history,
geography, cooking, sports, technology and nature, written for sftlab and licensed with it under
Apache-2.0 (see README.md in this folder). One record per line: {"id", "topic", "text"}.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from sftlab.data.readers import read_jsonl_objects
from sftlab.errors import DataError, Problem


def general_text_path() -> Path:
    return Path(str(resources.files("sftlab.builtin") / "general_text.jsonl"))


def load_general_text_records(path: str | Path | None = None) -> list[dict[str, str]]:
    """All records with their id and topic; every malformed line is reported at once."""
    file = Path(path) if path is not None else general_text_path()
    rows, problems = read_jsonl_objects(file, '{"id": ..., "topic": ..., "text": ...}')
    records: list[dict[str, str]] = []
    for where, record in rows:
        bad = [k for k in ("id", "topic", "text") if not isinstance(record.get(k), str) or not record[k].strip()]
        if bad:
            problems.extend(Problem(where, k, "missing or not a non-empty string", f"give {k!r} as text")
                            for k in bad)
            continue
        records.append({"id": record["id"], "topic": record["topic"], "text": record["text"]})
    if problems:
        raise DataError(problems, header=f"{len(problems)} problem(s) in general text {file}:")
    return records


def load_general_text(path: str | Path | None = None) -> list[str]:
    """The paragraphs, in file order (the built-in corpus by default)."""
    return [r["text"] for r in load_general_text_records(path)]
