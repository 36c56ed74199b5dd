"""The one in-memory record of an instruction example: a conversation of role-tagged messages.

Every loader produces `Conversation`s, every curation block consumes and yields them, and
`render.py` turns them into token ids and a loss mask. Nothing else is passed around.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "user", "assistant", "tool")
Kind = Literal["chat", "text"]
KINDS: tuple[str, ...] = ("chat", "text")
# Where an image stands in a message's text (LLaVA's convention; OpenAI image parts load as it).
# A multimodal renderer expands each one to the model's image-token count; `Conversation.images`
# holds the images in the order their placeholders appear.
IMAGE_PLACEHOLDER = "<image>"


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class Conversation:
    """A validated conversation.

    messages: in order; roles from ROLES; at least one assistant message for training data.
    source:   where it came from, e.g. "data/train.jsonl:17" (file:line) or "hf:org/name[3]".
    id:       stable identifier; defaults to a content hash so duplicates get equal ids.
    meta:     free-form extras kept through the pipeline (task family, split, scores, tags...).
    kind:     "chat" (rendered with the chat template, assistant turns trained) or "text": a plain
              document, held as one assistant message so curation reads it like a response, and
              rendered without a template with every token trained (see `document`).
    images:   the images of a multimodal conversation, in the order of the IMAGE_PLACEHOLDERs in its
              messages' text: each an absolute local path, a `data:` URL or an http(s) URL (loaded by
              sftlab.multimodal.images). Empty for text conversations.
    """

    messages: tuple[Message, ...]
    source: str = ""
    id: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    kind: Kind = "chat"
    images: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(self.messages))
        if self.kind not in KINDS:
            raise ValueError(f"Conversation kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "text" and [m.role for m in self.messages] != ["assistant"]:
            raise ValueError("a text Conversation holds its document as exactly one assistant message; "
                             "use Conversation.document(text)")
        if not isinstance(self.images, tuple):
            object.__setattr__(self, "images", tuple(self.images))
        if self.images:
            n = sum(m.content.count(IMAGE_PLACEHOLDER) for m in self.messages)
            if n != len(self.images):
                raise ValueError(f"a conversation with {len(self.images)} image(s) must have as many {IMAGE_PLACEHOLDER} "
                                 f"placeholders in its messages, found {n}")
        if not self.id:
            object.__setattr__(self, "id", self.content_hash())

    @classmethod
    def document(cls, text: str, **kw: Any) -> Conversation:
        """A plain-text document (kind "text")."""
        return cls(messages=(Message("assistant", text),), kind="text", **kw)

    @classmethod
    def from_messages(cls, messages: list[dict[str, str]] | list[Message], **kw: Any) -> Conversation:
        msgs = tuple(m if isinstance(m, Message) else Message(m["role"], m["content"]) for m in messages)
        return cls(messages=msgs, **kw)

    def content_hash(self) -> str:
        items: list = [[m.role, m.content] for m in self.messages]
        if self.images:  # two conversations with the same text about different images are different
            items.append(list(self.images))
        payload = json.dumps(items, ensure_ascii=False)
        return hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]

    def to_dicts(self) -> list[dict[str, str]]:
        return [m.to_dict() for m in self.messages]

    def to_json(self) -> dict[str, Any]:
        """The canonical on-disk form (OpenAI `messages` format plus our fields; "kind" only for text)."""
        out = {"messages": self.to_dicts(), "id": self.id, "source": self.source, "meta": self.meta}
        if self.images:
            out["images"] = list(self.images)
        return out if self.kind == "chat" else {**out, "kind": self.kind}

    @property
    def prompt_messages(self) -> tuple[Message, ...]:
        """Everything before the last assistant message (what a model is asked)."""
        last = self.last_assistant_index()
        return self.messages[:last] if last is not None else self.messages

    @property
    def last_response(self) -> str:
        last = self.last_assistant_index()
        return self.messages[last].content if last is not None else ""

    def last_assistant_index(self) -> int | None:
        for i in range(len(self.messages) - 1, -1, -1):
            if self.messages[i].role == "assistant":
                return i
        return None

    def with_meta(self, **kw: Any) -> Conversation:
        return Conversation(self.messages, self.source, self.id, {**self.meta, **kw}, self.kind, self.images)
