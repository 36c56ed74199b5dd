"""Write Conversations as JSONL in the canonical form (Conversation.to_json), atomically."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import orjson

from sftlab.conversation import Conversation


def save_conversations(conversations: Iterable[Conversation], path: str | Path) -> int:
    """Write one JSON object per line: {"messages": [...], "id", "source", "meta"}.

    The file appears complete or not at all: rows go to a temp file in the same folder, which is
    fsynced and then renamed over `path` (os.replace is atomic on one filesystem). Returns the
    number of rows written. Non-JSON values in meta (numpy numbers, dates...) are written as str.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    n = 0
    try:
        with os.fdopen(fd, "wb") as f:
            for conv in conversations:
                f.write(orjson.dumps(conv.to_json(), default=str,
                                     option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))
                f.write(b"\n")
                n += 1
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return n
