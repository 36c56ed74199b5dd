"""Files and folders that appear complete or not at all.

Everything is written to a temporary name in the target's own folder, fsynced, then renamed over
the target (os.replace is atomic within one filesystem); on an error the temporary is removed and
the target is left as it was.

    with AtomicFile(path) as f:          # bytes; AtomicFile(path, "w") for text
        f.write(b"...")
    atomic_write_json(path, obj)
    with atomic_dir(target) as tmp:      # fill tmp; it is renamed to target on success
        ...
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class AtomicFile:
    """A file written under a temporary name beside `path`: commit() moves it into place, discard()
    removes it. As a context manager it commits on a clean exit and discards on an exception."""

    def __init__(self, path: str | Path, mode: str = "wb", *, fsync: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self.file = os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"}))
        self.fsync = fsync

    def write(self, data: str | bytes) -> int:
        return self.file.write(data)

    def commit(self) -> Path:
        if self.fsync:
            self.file.flush()
            os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        self.file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def atomic_write(path: str | Path, data: str | bytes, *, fsync: bool = True) -> Path:
    with AtomicFile(path, "wb" if isinstance(data, bytes) else "w", fsync=fsync) as f:
        f.write(data)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any, **dumps: Any) -> Path:
    """json.dumps(obj, indent=2, ensure_ascii=False, default=str, **dumps), written atomically."""
    return atomic_write(path, json.dumps(obj, **{"indent": 2, "ensure_ascii": False, "default": str, **dumps}))


@contextmanager
def atomic_dir(target: str | Path, *, replace: bool = True, prefix: str | None = None) -> Iterator[Path]:
    """A temporary folder beside `target`, renamed to `target` when the block ends without an error.
    replace=False: if `target` appeared meanwhile (another process made the same thing), keep it.
    `prefix`: the temporary folder's name prefix (default ".tmp-<target name>-"), for cleaners that
    look for leftovers of a killed process by name."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=prefix or f".tmp-{target.name[:12]}-"))
    try:
        yield tmp
        try:
            os.replace(tmp, target) if replace else os.rename(tmp, target)
        except OSError:
            if replace or not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
