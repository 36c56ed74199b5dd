"""Write Conversations as JSONL in the canonical form (Conversation.to_json), atomically."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import orjson

from sftlab.atomic import AtomicFile
from sftlab.conversation import Conversation


def save_conversations(conversations: Iterable[Conversation], path: str | Path) -> int:
    """Write one JSON object per line: {"messages": [...], "id", "source", "meta"}.

    The file appears complete or not at all (sftlab.atomic). Returns the number of rows written.
    Non-JSON values in meta (numpy numbers, dates...) are written as str.
    """
    n = 0
    with AtomicFile(path) as f:
        for conv in conversations:
            f.write(orjson.dumps(conv.to_json(), default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS))
            f.write(b"\n")
            n += 1
    return n
