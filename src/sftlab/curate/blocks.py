"""The shape every curation step shares: a callable that takes Conversations and yields the kept ones.

A block records what it dropped, by reason, in its `stats` (a BlockStats): counts for every drop,
the first few dropped examples per reason (so a person can look at them), and for dedup blocks
every (removed -> kept, similarity) pair. Streaming blocks are generators, so a pipeline holds one
conversation at a time; blocks that need the whole set (select, mix, curriculum) say so.

    block = RefusalFilter()
    kept = list(block(conversations))
    print(block.stats.summary())
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar


from sftlab.configbase import Strict
from sftlab.conversation import Conversation

SAMPLES_PER_REASON = 3  # dropped examples kept per reason for inspection (all drops are counted)
PREVIEW_CHARS = 200


@dataclass
class DupPair:
    """A removed duplicate and the earlier example it duplicates."""

    removed_id: str
    kept_id: str
    similarity: float

    def to_json(self) -> dict[str, Any]:
        return {"removed_id": self.removed_id, "kept_id": self.kept_id, "similarity": round(self.similarity, 4)}


@dataclass
class BlockStats:
    name: str
    seen: int = 0
    kept: int = 0
    dropped_by_reason: Counter = field(default_factory=Counter)
    samples: list[dict[str, Any]] = field(default_factory=list)  # first SAMPLES_PER_REASON per reason
    pairs: list[DupPair] = field(default_factory=list)  # dedup only: every removed -> kept pair
    notes: dict[str, Any] = field(default_factory=dict)  # block-specific numbers (mix counts, ...)

    @property
    def dropped(self) -> int:
        return sum(self.dropped_by_reason.values())

    def drop(self, conv: Conversation, reason: str, detail: str = "") -> None:
        self.dropped_by_reason[reason] += 1
        if self.dropped_by_reason[reason] <= SAMPLES_PER_REASON:
            self.samples.append({"reason": reason, "id": conv.id, "source": conv.source, "detail": detail,
                                 "preview": preview(conv)})

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "seen": self.seen, "kept": self.kept, "dropped": self.dropped,
                "dropped_by_reason": dict(self.dropped_by_reason), "samples": self.samples,
                "pairs": [p.to_json() for p in self.pairs], "notes": self.notes}

    def summary(self) -> str:
        reasons = ", ".join(f"{r} {n:,}" for r, n in self.dropped_by_reason.most_common())
        return f"{self.name}: seen {self.seen:,}, kept {self.kept:,}, dropped {self.dropped:,}" + (
            f" ({reasons})" if reasons else "")


class BlockConfig(Strict):
    """Base of every block's settings. Subclasses set `type` (the YAML discriminator) and `block`."""

    def build(self) -> Block:
        return BLOCKS[self.type](self)  # type: ignore[attr-defined]


BLOCKS: dict[str, type[Block]] = {}  # YAML type name -> block class, filled by Block subclasses


class Block:
    """Base class. Subclasses set `Config` (a BlockConfig subclass) and implement `run` (a generator)
    or, for one-at-a-time filters, `reject(conv) -> (reason, detail) | None`."""

    Config: ClassVar[type[BlockConfig]]
    needs_all: ClassVar[bool] = False  # True: holds the whole input (select, mix, curriculum)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "Config" in cls.__dict__:
            BLOCKS[cls.Config.model_fields["type"].default] = cls

    def __init__(self, config: BlockConfig | None = None, **kw: Any) -> None:
        self.cfg = config if config is not None else self.Config(**kw)
        self.name = self.cfg.type  # type: ignore[attr-defined]
        self.stats = BlockStats(self.name)

    def __call__(self, conversations: Iterable[Conversation]) -> Iterator[Conversation]:
        self.stats = BlockStats(self.name)
        for conv in self.run(conversations):
            self.stats.kept += 1
            yield conv

    def run(self, conversations: Iterable[Conversation]) -> Iterator[Conversation]:
        for conv in conversations:
            self.stats.seen += 1
            why = self.reject(conv)
            if why is None:
                yield conv
            else:
                self.stats.drop(conv, *why)

    def reject(self, conv: Conversation) -> tuple[str, str] | None:
        raise NotImplementedError


# ---------------------------------------------------------------- text helpers shared by blocks

_PUNCT = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")
MESSAGE_SEP = " \x1f "  # kept by normalise(): "a b"+"c" and "a"+"b c" stay different


# ASCII fast path (most rows): punctuation/symbols -> space by str.translate, 4x faster than the regex
_ASCII_PUNCT = {c: " " for c in range(128) if not (chr(c).isalnum() or chr(c) == "_" or chr(c).isspace())}


def normalise(text: str) -> str:
    """Lowercase, strip punctuation and symbols, collapse whitespace (NFKC first: full-width forms)."""
    if text.isascii():
        return " ".join(text.lower().translate(_ASCII_PUNCT).split())
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def normalised_conversation(conv: Conversation) -> str:
    return MESSAGE_SEP.join(normalise(m.content) for m in conv.messages)


def conversation_text(conv: Conversation) -> str:
    """All message contents, one per line with the role: the text embedded for semantic blocks."""
    return "\n".join(f"{m.role}: {m.content}" for m in conv.messages)


def instruction_text(conv: Conversation) -> str:
    """Every user message before the last response (the 'instruction' scores look at)."""
    return "\n".join(m.content for m in conv.prompt_messages if m.role == "user")


def turns(conv: Conversation) -> list[tuple[str, str]]:
    """(prompt, response) per assistant message; prompt = the nearest user message before it."""
    out, prompt = [], ""
    for m in conv.messages:
        if m.role == "user":
            prompt = m.content
        elif m.role == "assistant":
            out.append((prompt, m.content))
    return out


def preview(conv: Conversation) -> str:
    text = " | ".join(f"{m.role}: {m.content}" for m in conv.messages)
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS] + f"... (+{len(text) - PREVIEW_CHARS} chars)"


def words(text: str) -> list[str]:
    return normalise(text).split()
