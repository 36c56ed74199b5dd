"""Append-only JSONL output that survives being killed, plus a small progress state.

Rows are written one line at a time, flushed and fsynced, so a killed run keeps every row it
finished. On restart the file is re-read: its rows ARE the progress (pipelines derive ids and
what is left to do from them), and a last line cut off mid-write is truncated away and counted.
The state file (OUTPUT.state.json, replaced atomically) keeps only counters and which inputs
were processed without producing a row; at worst it lags the rows by one step, which can redo
that step's rejected work but never duplicates a row (ids are checked before writing).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sftlab.atomic import atomic_write
from sftlab.conversation import Conversation
from sftlab.errors import DataError, Problem


class JsonlOutput:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: list[dict] = []
        self.truncated_bytes = 0  # a partial last line removed on open (from a killed run)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._recover()
        self.ids = {r["id"] for r in self.rows}
        self._f = open(self.path, "ab")

    def _recover(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1  # everything after the last newline was cut off mid-write
        if end < len(data):
            self.truncated_bytes = len(data) - end
            with open(self.path, "r+b") as f:
                f.truncate(end)
        for lineno, line in enumerate(data[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                row["id"]
            except (ValueError, KeyError, TypeError) as e:
                raise DataError(Problem(f"{self.path}:{lineno}", "id", f"cannot resume from this line: {e}",
                                        "this file is not a sftlab synth output; choose another output path")) from e
            self.rows.append(row)

    def append(self, conv: Conversation) -> None:
        if conv.id in self.ids:
            raise ValueError(f"row id {conv.id!r} already in {self.path}")  # a pipeline bug, never user input
        self._f.write(json.dumps(conv.to_json(), ensure_ascii=False, default=str).encode("utf-8") + b"\n")
        self._f.flush()
        os.fsync(self._f.fileno())
        self.ids.add(conv.id)
        self.rows.append(conv.to_json())

    def close(self) -> None:
        self._f.close()


class ProgressState:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.data: dict = json.loads(self.path.read_text()) if self.path.exists() else {}
        # failed calls of earlier runs; this run's are added from the backends' stats on each save
        self.failed_before = self.data.get("failed_calls", 0)

    def save(self) -> None:
        atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=True))

    def save_progress(self, *backends) -> None:
        self.data["failed_calls"] = self.failed_before + sum(b.stats.failed for b in backends)
        self.save()

    def count(self, key: str, reason: str, n: int = 1) -> None:
        bucket = self.data.setdefault(key, {})
        bucket[reason] = bucket.get(reason, 0) + n


def state_path(output: str | Path) -> Path:
    return Path(str(output) + ".state.json")
