"""Loading instruction data: files, folders, globs and `datasets` -> validated Conversations.

    from sftlab.data import load_conversations
    result = load_conversations("data/", on_error="skip", rejects_path="rejects.jsonl")
    print(result.stats.summary())

See docs/bad_input.md for every error a user can see, and formats.py for the formats.
"""

from sftlab.data.config import DataSourceConfig
from sftlab.data.formats import FORMATS, ROLE_ALIASES, detect_format
from sftlab.data.load import (
    ConversationStream,
    LoadResult,
    LoadStats,
    iter_conversations,
    load_conversations,
)
from sftlab.data.readers import MAX_LINE_BYTES
from sftlab.data.save import save_conversations

__all__ = [
    "FORMATS",
    "MAX_LINE_BYTES",
    "ROLE_ALIASES",
    "ConversationStream",
    "DataSourceConfig",
    "LoadResult",
    "LoadStats",
    "detect_format",
    "iter_conversations",
    "load_conversations",
    "save_conversations",
]
