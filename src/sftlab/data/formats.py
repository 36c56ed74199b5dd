"""Format adapters: one parsed row (a dict) -> one validated `Conversation`.

Five input formats, detected from a row's keys (first match wins, in this order):

| format              | needs                      | optional                    |
|---------------------|----------------------------|-----------------------------|
| `messages`          | messages                   | id, meta                    |
| `sharegpt`          | conversations              | system                      |
| `alpaca`            | instruction, output        | input, system, history      |
| `prompt_completion` | prompt, completion         |                             |
| `text`              | text                       |                             |

Images (LLaVA-style multimodal data): every format also takes a row-level `images` list (TRL) or
`image` (LLaVA: one reference or a list) -- a `text` row with an image is LLaVA's plain stage-1 form,
`<image>` + caption, every token but the image's trained -- and OpenAI content parts
`{"type": "image_url", "image_url": {"url": ...}}` / `{"type": "image", "image": ...}`; a bare
`{"type": "image"}` part takes the next entry of the row's `images`. Each image stands in the text as
the `<image>` placeholder; `Conversation.images` lists them in placeholder order (see `ImageRefs`).

Every problem in a row is collected (not only the first) and raised as one `RowError`, whose
problems carry a short reason code (`unknown_role`, `empty_content`, ...) used to count skips.

A message keeps only its role and content. Any other key of a message object (OpenAI `name`,
`tool_calls`, Axolotl's per-turn `weight`, ...) is dropped, and every drop is counted per key in
`RowNotes.ignored_keys` so the loader can report it; it is never an error. Extra keys of the row
itself are not dropped: they go to `Conversation.meta`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sftlab.conversation import IMAGE_PLACEHOLDER, ROLES, Conversation, Message
from sftlab.errors import DataError, Problem

FORMATS: tuple[str, ...] = ("messages", "sharegpt", "alpaca", "prompt_completion", "text")

REQUIRED: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
# Row-level image fields (any conversation format): TRL's `images` list, LLaVA's `image`.
IMAGE_KEYS: tuple[str, ...] = ("images", "image")
OPTIONAL: dict[str, tuple[str, ...]] = {
    "messages": IMAGE_KEYS,
    "sharegpt": ("system", *IMAGE_KEYS),
    "alpaca": ("input", "system", "history", *IMAGE_KEYS),
    "prompt_completion": IMAGE_KEYS,
    "text": IMAGE_KEYS,  # LLaVA's plain stage-1 rows: {"text": "<image>A red circle ...", "image": "x.png"}
}
# Formats whose fields hold a conversation; a row matching two of them is ambiguous (text is not one:
# a `text` column beside `messages` is commonly a rendered copy, kept in meta).
CONVERSATION_FORMATS: tuple[str, ...] = ("messages", "sharegpt", "alpaca", "prompt_completion")
# Row keys that every format understands: our own canonical fields (see Conversation.to_json).
COMMON_KEYS = ("id", "meta", "source")
# Names accepted as keys of `columns=` (our field name -> the user's column name).
FIELD_NAMES: tuple[str, ...] = tuple(
    dict.fromkeys(k for f in FORMATS for k in REQUIRED[f] + OPTIONAL[f] if k not in IMAGE_KEYS)
) + ("id", *IMAGE_KEYS)

# Role names seen in the wild -> ours. Matched case-insensitively. `function_call` is the
# model's own tool call in LLaMA-Factory's ShareGPT (human, function_call, observation, gpt), so
# it is an assistant turn (trained); `observation`/`function` are the tool's answer (not trained).
ROLE_ALIASES: dict[str, str] = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "function_call": "assistant",
    "tool": "tool",
    "observation": "tool",
    "function": "tool",
}
ALIAS_TEXT = ", ".join(f"{k}->{v}" for k, v in ROLE_ALIASES.items() if k != v)
ROLES_TEXT = ", ".join(ROLES)

# Per-turn training switches of other trainers: Axolotl's ShareGPT `weight` (0 = not trained) and
# chat_template `training` / `train_detail`, mistral-finetune's `weight`. sftlab does not honour
# them (a Message has no such field; the renderer trains every assistant turn), so a turn marked
# "do not train" IS trained; the loader counts those turns separately and says so.
TRAINING_FLAG_KEYS = frozenset({"weight", "training", "train"})  # 0/false = do not train
_FLAG_NOTE = "per-turn training flag, NOT honoured (every assistant turn is trained)"
# What dropping a key of a popular format means, shown next to its count. Keys not listed here are
# reported with their count only.
MESSAGE_KEY_NOTES: dict[str, str] = {
    "name": "speaker name (OpenAI); not passed to the chat template",
    "tool_calls": "structured tool calls (OpenAI); only the content text is kept",
    "tool_call_id": "tool result's call id (OpenAI); only the content text is kept",
    "function_call": "legacy OpenAI function call; only the content text is kept",
    "refusal": "OpenAI refusal text; only the content text is kept",
    "reasoning_content": "reasoning text; not rendered, not trained",
    "markdown": "ShareGPT scrape: a markdown copy of the turn; 'value' is used",
    "weight": _FLAG_NOTE,
    "training": _FLAG_NOTE,
    "train": _FLAG_NOTE,
    "train_detail": "per-character training spans (Axolotl), NOT honoured",
}


def says_do_not_train(key: str, value: Any) -> bool:
    """A training-flag value that means "do not train this turn": 0, 0.0, false, "false", "0"."""
    if key not in TRAINING_FLAG_KEYS or isinstance(value, (list, dict)):
        return False
    if isinstance(value, str):
        return value.strip().lower() in ("0", "0.0", "false", "no")
    return value is not None and not value  # False, 0, 0.0


class RowError(Exception):
    """One row cannot be used. `problems` are (reason, Problem) pairs; the first reason counts."""

    def __init__(self, problems: list[tuple[str, Problem]]):
        self.problems = problems
        super().__init__("; ".join(str(p) for _, p in problems))

    @property
    def reason(self) -> str:
        return self.problems[0][0]


def short(value: Any, n: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= n else text[: n - 3] + "..."


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def detect_format(keys) -> str | None:
    """The format a row's keys say it is in, or None. Order matters: `messages` beats `text`."""
    for fmt in FORMATS:
        if all(k in keys for k in REQUIRED[fmt]):
            return fmt
    return None


def formats_help() -> str:
    return "; ".join(f"{f}: {', '.join(REQUIRED[f])}" for f in FORMATS)


def rename_columns(rec: dict, columns: dict[str, str] | None) -> dict:
    """Apply `columns` (our field -> user's column). The user's column wins over an existing key."""
    if not columns or not isinstance(rec, dict):
        return rec
    rec = dict(rec)
    for ours, theirs in columns.items():
        if theirs in rec:
            rec[ours] = rec.pop(theirs)
    return rec


# ---- the pieces ----------------------------------------------------------------------------


@dataclass(slots=True)
class RowNotes:
    """What loading one good row changed without failing it, for the loader's counts."""

    dropped_system: int = 0  # empty system messages removed
    # message key -> [messages that had it, of those: training flags saying "do not train"]
    ignored_keys: dict[str, list[int]] = field(default_factory=dict)
    placeholders_added: int = 0  # 1: LLaVA's rule put `<image>\n` before the first user turn (images, no placeholder)
    placeholder_without_images: bool = False  # `<image>` in the text of a row with no images: loaded as text


# Where an image part with its own reference stands in a message's text until the row's images are
# put in placeholder order (NUL never occurs in loaded JSON text; see _Row.content).
_PART_MARK = re.compile("\x00img(\\d+)\x00|" + re.escape(IMAGE_PLACEHOLDER))


class _Row:
    """Collects problems for one row so all of them are reported together."""

    __slots__ = ("where", "problems", "dropped_system", "ignored_keys", "part_images", "bare_parts")

    def __init__(self, where: str):
        self.where = where
        self.problems: list[tuple[str, Problem]] = []
        self.dropped_system = 0
        self.ignored_keys: dict[str, list[int]] = {}
        self.part_images: list[tuple[str, Any]] = []  # (field, value) of image parts that carry their own reference
        self.bare_parts: list[str] = []  # fields of {"type": "image"} parts without one (they take the row's `images`)

    def ignore_keys(self, m: dict, used: tuple[str, str], assistant: bool) -> None:
        """Count the keys of message `m` other than `used`. A null value counts as absent: Parquet
        and `datasets` give every message every struct field, null where a row had none. A "do not
        train" flag counts as overridden only on an assistant turn (other turns are never trained)."""
        ignored = self.ignored_keys
        for k, v in m.items():
            if v is None or k in used:
                continue
            seen = ignored.get(k)
            if seen is None:
                seen = ignored[k] = [0, 0]
            seen[0] += 1
            if assistant and k in TRAINING_FLAG_KEYS and says_do_not_train(k, v):
                seen[1] += 1

    def add(self, reason: str, field: str, message: str, fix: str = "") -> None:
        self.problems.append((reason, Problem(self.where, field, message, fix)))

    def string(self, value: Any, field: str, *, optional: bool = False) -> str:
        if value is None and optional:
            return ""
        if isinstance(value, str):
            return value
        if value is None:
            self.add("missing_field", field, f"'{field}' is missing or null", f"give '{field}' a string value")
        else:
            self.add(
                "wrong_type", field, f"expected a string, got {type_name(value)} {short(value)}",
                f"make '{field}' a JSON string",
            )
        return ""

    def image_part(self, part: dict, pf: str) -> str | None:
        """An image content part -> its place in the text, or None (a problem was added). With its own
        reference (image_url.url, image_url as a string, image/url/path of a {"type": "image"} part) it
        is marked for to_conversation to put in order; a bare {"type": "image"} is the `<image>`
        placeholder that takes the next entry of the row's `images`."""
        if part.get("type") == "image_url":
            url = part.get("image_url")
            key, value = (f"{pf}.image_url.url", url.get("url")) if isinstance(url, dict) else (f"{pf}.image_url", url)
            if value is None:
                self.add("missing_field", key, "image_url part without a url",
                         'write it as {"type": "image_url", "image_url": {"url": "path, file://, data: or http(s) URL"}}')
                return None
        else:
            key = next((k for k in ("image", "url", "path") if part.get(k) is not None), None)
            if key is None:
                self.bare_parts.append(pf)
                return IMAGE_PLACEHOLDER
            key, value = f"{pf}.{key}", part[key]
        self.part_images.append((key, value))
        return f"\x00img{len(self.part_images) - 1}\x00"

    def content(self, value: Any, field: str, message: dict) -> str | None:
        """Message content: a string, or a list of parts joined by \\n: {"type": "text", "text": ...},
        and image parts, each of which stands in the text as `<image>` (see image_part)."""
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            texts = []
            for j, part in enumerate(value):
                pf = f"{field}[{j}]"
                kind = part.get("type", "text") if isinstance(part, dict) else None
                if not isinstance(part, dict):
                    self.add("wrong_type", pf, f"content part must be an object, got {type_name(part)} {short(part)}",
                             'write parts as {"type": "text", "text": "..."}')
                elif kind in ("image_url", "image"):
                    text = self.image_part(part, pf)
                    if text is not None:
                        texts.append(text)
                elif kind != "text":
                    self.add("unsupported_part", pf + ".type",
                             f"content part of type {short(part.get('type'))} is not supported; only 'text' and image "
                             "('image_url', 'image') parts are",
                             "remove other parts (audio, files) or drop this row")
                elif not isinstance(part.get("text"), str):
                    self.add("wrong_type", pf + ".text",
                             f"text part needs a string 'text', got {type_name(part.get('text'))}",
                             'write parts as {"type": "text", "text": "..."}')
                else:
                    texts.append(part["text"])
            return "\n".join(texts)
        if value is None and message.get("tool_calls"):
            self.add("unsupported_tool_calls", field,
                     "message has tool_calls and null content; structured tool calls are not supported",
                     "write the tool call into the content as text")
            return None
        self.add("wrong_type", field, f"content must be a string (or a list of text parts), got {type_name(value)} {short(value)}",
                 "make the content a JSON string")
        return None

    def message_list(self, items: Any, field: str, sharegpt: bool = False) -> list[tuple[int, Message]]:
        """Parse role/content (or ShareGPT from/value) objects; empty system messages are dropped."""
        role_keys, content_keys = (("from", "role"), ("value", "content")) if sharegpt else (("role", "from"), ("content", "value"))
        shape = '{"from": ..., "value": ...}' if sharegpt else '{"role": ..., "content": ...}'
        if not isinstance(items, list):
            self.add("wrong_type", field, f"expected a list of {shape} objects, got {type_name(items)} {short(items)}",
                     f"make '{field}' a JSON list of {shape} objects")
            return []
        if not items:
            self.add("no_messages", field, f"'{field}' is an empty list", "drop this row or add its messages")
            return []
        out: list[tuple[int, Message]] = []
        for i, m in enumerate(items):
            if not isinstance(m, dict):
                f = f"{field}[{i}]"
                self.add("wrong_type", f, f"each message must be an object {shape}, got {type_name(m)} {short(m)}",
                         f"write messages as {shape}")
                continue
            rk = role_keys[1] if role_keys[0] not in m and role_keys[1] in m else role_keys[0]
            ck = content_keys[1] if content_keys[0] not in m and content_keys[1] in m else content_keys[0]
            raw_role = m.get(rk)
            role = ROLE_ALIASES.get(raw_role) if type(raw_role) is str else None  # fast path: exact names
            if role is not None:
                pass
            elif raw_role is None:
                self.add("missing_role", f"{field}[{i}].{rk}", f"message has no '{rk}'",
                         f"add '{rk}': one of {ROLES_TEXT} (aliases: {ALIAS_TEXT})")
            elif not isinstance(raw_role, str):
                self.add("wrong_type", f"{field}[{i}].{rk}", f"role must be a string, got {type_name(raw_role)} {short(raw_role)}",
                         f"use one of {ROLES_TEXT}")
            else:
                role = ROLE_ALIASES.get(raw_role.strip().lower())
                if role is None:
                    self.add("unknown_role", f"{field}[{i}].{rk}", f"unknown role {short(raw_role)}; allowed: {ROLES_TEXT} "
                             f"(ShareGPT aliases: {ALIAS_TEXT})",
                             "rename the role, or map it in your data before loading")
            if len(m) > 2:  # role and content are all a Message keeps; the rest is counted
                self.ignore_keys(m, (rk, ck), role == "assistant")
            content = m.get(ck)
            if type(content) is not str:
                content = self.content(content, f"{field}[{i}].{ck}", m)
            if role is None or content is None:
                continue
            if not content or content.isspace():
                if role == "system":
                    self.dropped_system += 1  # an empty system prompt carries nothing; counted, not silent
                    continue
                if role in ("user", "assistant"):
                    self.add("empty_content", f"{field}[{i}].{ck}", f"empty {role} content",
                             f"write the {role} text, or drop this row")
                    continue
            out.append((i, Message(role, content)))
        return out

    def check_turns(self, msgs: list[tuple[int, Message]], field: str, require_response: bool,
                    allow_assistant_first: bool = False) -> None:
        """Order rules: the first turn is not the assistant's, an assistant turn exists, the last
        turn is the assistant's, no two in a row."""
        if not msgs or self.problems:
            return
        if msgs[0][1].role == "assistant" and not allow_assistant_first:
            i = msgs[0][0]
            self.add("starts_with_assistant", f"{field}[{i}]",
                     "conversation starts with an assistant message; expected a user (or system) message first, "
                     "so the assistant answers something",
                     "add the user message it answers (or a system prompt) before it, or drop this row")
        for (_, prev), (i, cur) in zip(msgs, msgs[1:]):
            if prev.role == cur.role == "assistant":
                self.add("consecutive_assistant", f"{field}[{i}]",
                         "two assistant turns in a row; a user (or tool) turn must come between them",
                         "merge the two assistant messages into one, or insert the missing user turn")
        if not require_response:
            return
        if not any(m.role == "assistant" for _, m in msgs):
            self.add("no_assistant", field, "conversation has no assistant turn, so there is nothing to train on",
                     "add the assistant's answer, or drop this row")
        elif msgs[-1][1].role != "assistant":
            i, last = msgs[-1]
            self.add(f"ends_on_{last.role}", f"{field}[{i}]",
                     f"conversation ends on a {last.role} turn; the trainer would have nothing to learn after it",
                     f"drop the trailing {last.role} turn or add the assistant's answer after it")


# ---- adapters: row -> list of (original index, Message) ------------------------------------


def _messages(rec: dict, row: _Row, require_response: bool) -> list[Message]:
    msgs = row.message_list(rec["messages"], "messages")
    row.check_turns(msgs, "messages", require_response, allow_assistant_first=_saved_text(rec) and len(msgs) == 1)
    return [m for _, m in msgs]


def _saved_text(rec: dict) -> bool:
    """A text document saved in the canonical form: "kind": "text" (files written before the kind
    existed say it in meta.format)."""
    return rec.get("kind") == "text" or (isinstance(rec.get("meta"), dict) and rec["meta"].get("format") == "text")


def _sharegpt(rec: dict, row: _Row, require_response: bool) -> list[Message]:
    system = row.string(rec.get("system"), "system", optional=True)
    msgs = row.message_list(rec["conversations"], "conversations", sharegpt=True)
    # the `system` field comes first in the conversation, so an assistant turn may follow it
    row.check_turns(msgs, "conversations", require_response, allow_assistant_first=bool(system.strip()))
    out = [m for _, m in msgs]
    return ([Message("system", system)] if system.strip() else []) + out


def _alpaca(rec: dict, row: _Row, require_response: bool) -> list[Message]:
    instruction = row.string(rec["instruction"], "instruction")
    inp = row.string(rec.get("input"), "input", optional=True)
    output = row.string(rec["output"], "output")
    system = row.string(rec.get("system"), "system", optional=True)
    out = [Message("system", system)] if system.strip() else []
    history = rec.get("history")
    if history not in (None, ""):
        if not isinstance(history, list):
            row.add("wrong_type", "history", f"expected a list of [instruction, output] pairs, got {type_name(history)}",
                    'write history as [["question", "answer"], ...]')
        else:
            for i, pair in enumerate(history):
                if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                        or not all(isinstance(x, str) and x.strip() for x in pair)):
                    row.add("wrong_type", f"history[{i}]", f"expected a pair of non-empty strings, got {short(pair)}",
                            'write history as [["question", "answer"], ...]')
                else:
                    out += [Message("user", pair[0]), Message("assistant", pair[1])]
    user = instruction if not inp.strip() else (f"{instruction}\n\n{inp}" if instruction.strip() else inp)
    if isinstance(rec["instruction"], str) and not user.strip():
        row.add("empty_content", "instruction", "empty instruction (and no input)", "write the instruction text, or drop this row")
    if isinstance(rec["output"], str) and not output.strip():
        row.add("empty_content", "output", "empty assistant content (output)", "write the answer, or drop this row")
    return out + [Message("user", user), Message("assistant", output)]


def _prompt_completion(rec: dict, row: _Row, require_response: bool) -> list[Message]:
    indexed: list[tuple[int, Message]] = []
    for name, role in (("prompt", "user"), ("completion", "assistant")):
        value = rec[name]
        if isinstance(value, list):
            parsed = row.message_list(value, name)
            indexed += [(len(indexed) + k, m) for k, (_, m) in enumerate(parsed)]
        elif isinstance(value, str):
            if not value.strip():
                row.add("empty_content", name, f"empty {name}", f"write the {name} text, or drop this row")
            indexed.append((len(indexed), Message(role, value)))
        else:
            row.add("wrong_type", name, f"expected a string or a list of messages, got {type_name(value)} {short(value)}",
                    f"make '{name}' a JSON string")
    row.check_turns(indexed, "prompt+completion", require_response)
    return [m for _, m in indexed]


def _text(rec: dict, row: _Row, require_response: bool) -> list[Message]:
    text = row.string(rec["text"], "text")
    if isinstance(rec["text"], str) and not text.strip():
        row.add("empty_content", "text", "empty text", "drop this row")
    # Plain documents: the renderer trains on every token of these, without a chat template.
    return [Message("assistant", text)]


# ---- images ----------------------------------------------------------------------------------


class ImageRefs:
    """How a loader turns the image values of rows into checked references (`Conversation.images`).

    A string is resolved by sftlab.multimodal.images.resolve_image_ref: a relative path against
    `base_dir` (the data file's folder, or the source's `image_dir`), a file:// URL to its path,
    data: and http(s) URLs kept. Image bytes (a {"bytes", "path"} struct as `datasets` and Parquet
    hold them, raw bytes) and decoded PIL images are written once to the image cache and referenced
    by that path. Every reference is checked (it exists, and opens and decodes with PIL; a remote
    URL is downloaded, or refused while offline), each distinct one once per ImageRefs."""

    def __init__(self, base_dir: str | Path | None = None, *, check: bool = True, from_image_dir: bool = False):
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.check = check
        self.from_image_dir = from_image_dir  # base_dir is the source's image_dir (for the messages)
        self._checked: dict[str, tuple[str, str, str] | None] = {}

    def _where_relative(self, value: str) -> str:
        base = "the source's image_dir" if self.from_image_dir else "the data file's folder"
        return f"{value.strip()!r} is relative to {base}, {self.base_dir}"

    def reference(self, value: Any, field: str, row: _Row) -> str | None:
        """One image value -> a checked reference, or None (a problem was added to `row`)."""
        from sftlab.multimodal import images as im

        relative = ""  # the path as written, when it is relative to base_dir
        try:
            if isinstance(value, dict) and ("bytes" in value or "path" in value):
                data, path = value.get("bytes"), value.get("path")
                if isinstance(data, (bytes, bytearray, memoryview)) and len(data):
                    ref = im.store_image_bytes(bytes(data), path if isinstance(path, str) else "")
                elif isinstance(path, str) and path:
                    ref = im.resolve_image_ref(path, self.base_dir)
                    relative = path if self._is_relative(path) else ""
                else:
                    row.add("missing_image", field, f"image struct has neither bytes nor a path: {short(value, 80)}",
                            'give {"bytes": <image file bytes>} or {"path": "..."}')
                    return None
            elif isinstance(value, str) or (isinstance(value, dict) and isinstance(value.get("url"), str)):
                text = value if isinstance(value, str) else value["url"]
                ref = im.resolve_image_ref(text, self.base_dir)
                relative = text if self._is_relative(text) else ""
            elif isinstance(value, (bytes, bytearray)):
                ref = im.store_image_bytes(bytes(value))
            elif hasattr(value, "save") and hasattr(value, "size") and hasattr(value, "mode"):  # a PIL image
                ref = im.store_pil_image(value)
            else:
                row.add("wrong_type", field, f"an image must be a path or URL string (or image bytes), got "
                        f"{type_name(value)} {short(value)}", "write the image's path, or a file://, data: or http(s) URL")
                return None
        except DataError as e:
            p = e.problems[0]
            row.add("bad_image_ref", field, p.message, p.fix)
            return None
        if not self.check:
            return ref
        if ref not in self._checked:
            self._checked[ref] = im.image_problem(ref)
        problem = self._checked[ref]
        if problem is None:
            return ref
        reason, message, fix = problem
        if relative:  # say it in the user's terms: the folder as given, not an absolute path
            message = message.replace(ref, str(self.base_dir / relative.strip()))
            message = f"{message} ({self._where_relative(relative)})"
            if reason == "missing_image" and self.from_image_dir:
                fix = "put the image there, or correct `image_dir:` on the data source (relative image paths start there)"
            elif reason == "missing_image":
                fix = ("put the image there, or set `image_dir:` on the data source to the folder the relative image "
                       "paths start from (default: the data file's folder)")
        row.add(reason, field, message, fix)
        return None

    @staticmethod
    def _is_relative(text: str) -> bool:
        text = text.strip()
        return not (text.startswith(("~", "data:", "http://", "https://")) or "://" in text or Path(text).is_absolute())


def _row_image_values(rec: dict, row: _Row) -> tuple[str, list[tuple[str, Any]]] | None:
    """The row-level images (`images` list or LLaVA `image`: one value or a list) as (field, value)
    pairs with the key they came from; None if the row has none (absent, null, "" or [])."""
    given = [k for k in IMAGE_KEYS if rec.get(k) is not None and not (isinstance(rec[k], (str, list, tuple)) and not rec[k])]
    if not given:
        return None
    if len(given) > 1:
        row.add("two_image_fields", given[1], "row has both `images` and `image`; only one list of images can be "
                "matched to the placeholders", "keep one of them (several images go in one list)")
        return None
    key = given[0]
    value = rec[key]
    if isinstance(value, (list, tuple)):
        return key, [(f"{key}[{i}]", v) for i, v in enumerate(value)]
    return key, [(key, value)]


def _attach_images(rec: dict, fmt: str, messages: list[Message], row: _Row,
                   refs: ImageRefs | None) -> tuple[list[Message], tuple[str, ...], int, bool]:
    """Put a row's images in placeholder order: (messages with every image as `<image>`, image
    references, 1 if the LLaVA rule put `<image>\\n` before the first user turn, whether `<image>` is
    in the text of a row that has no images). Problems go to `row`."""
    listed = _row_image_values(rec, row)
    if listed is None and not row.part_images and not row.bare_parts:
        if row.problems:
            return messages, (), 0, False
        return messages, (), 0, any(IMAGE_PLACEHOLDER in m.content for m in messages)
    key, values = listed if listed is not None else ("images", [])
    slots = sum(m.content.count(IMAGE_PLACEHOLDER) for m in messages)
    added = 0
    if slots == 0 and not row.part_images and values:
        # LLaVA's rule: an image with no placeholder goes before the first user turn's text
        first = next((i for i, m in enumerate(messages) if m.role == "user"), None)
        if first is None:
            row.add("no_placeholder", key, f"row has {len(values)} image(s), no `<image>` placeholder and no user turn to "
                    "put one in", "write `<image>` where each image belongs, or drop this row")
            return messages, (), 0, False
        m = messages[first]
        put = (IMAGE_PLACEHOLDER + "\n") * len(values)
        messages = [*messages[:first], Message(m.role, put + m.content), *messages[first + 1:]]
        slots, added = len(values), 1
    if slots != len(values):
        holds = f"{slots} `<image>` placeholder(s) (in the text or as bare {{\"type\": \"image\"}} parts)"
        has = f"{len(values)} image(s) in `{key}`" if listed is not None else "no `images` list"
        own = (f"; the {len(row.part_images)} image part(s) with their own url/image take none of them"
               if row.part_images else "")
        if slots > len(values):
            where = key if listed is not None else (row.bare_parts[0] if row.bare_parts else REQUIRED[fmt][0])
            row.add("too_many_placeholders", where, f"the messages hold {holds} but the row has {has}{own}; "
                    "each placeholder takes the next image of the list, in order",
                    f"give one image per placeholder, in order (add the missing ones to `{key}`), or remove the extra "
                    "`<image>`")
        else:
            row.add("too_few_placeholders", key, f"the row has {has} but the messages hold only {holds}{own}; "
                    "each image needs its own placeholder where it belongs",
                    f"write one `<image>` per image, in order, in the messages' text, or drop the extra images from `{key}` "
                    "(a row with no placeholder at all gets `<image>\\n` before its first user turn)")
        return messages, (), 0, False
    ordered: list[tuple[str, Any]] = []
    listed_iter = iter(values)

    def place(match: re.Match) -> str:
        k = match.group(1)
        ordered.append(row.part_images[int(k)] if k is not None else next(listed_iter))
        return IMAGE_PLACEHOLDER

    out = [m if "\x00" not in m.content and IMAGE_PLACEHOLDER not in m.content
           else Message(m.role, _PART_MARK.sub(place, m.content)) for m in messages]
    refs = refs if refs is not None else ImageRefs()
    images = tuple(refs.reference(v, f, row) for f, v in ordered)
    return out, images, added, False


ADAPTERS = {
    "messages": _messages,
    "sharegpt": _sharegpt,
    "alpaca": _alpaca,
    "prompt_completion": _prompt_completion,
    "text": _text,
}


_CONSUMED = {f: frozenset(REQUIRED[f] + OPTIONAL[f] + COMMON_KEYS) for f in FORMATS}


def to_conversation(rec: Any, fmt: str, source: str, *, require_response: bool = True,
                    detected: bool = False, images: ImageRefs | None = None) -> tuple[Conversation, RowNotes]:
    """One row -> (Conversation, RowNotes: empty system messages dropped, message keys ignored,
    image placeholders added). Raises RowError. `detected`: the format was detected, not chosen, so
    a row that also holds another format's conversation (e.g. both `messages` and `conversations`)
    is an error instead of one of them going to meta unnoticed. `images`: how image values become
    checked references (default: relative paths against the current folder, every image checked)."""
    row = _Row(source)
    if not isinstance(rec, dict):
        row.add("not_an_object", "", f"expected a JSON object, got {type_name(rec)} {short(rec)}",
                "write one object per row, e.g. {\"messages\": [...]}")
        raise RowError(row.problems)
    missing = [k for k in REQUIRED[fmt] if rec.get(k) is None]
    if missing:
        row.add("missing_field", missing[0],
                f"missing {', '.join(repr(k) for k in missing)} (format {fmt} needs {', '.join(REQUIRED[fmt])}; "
                f"row has keys: {', '.join(map(str, rec)) or 'none'})",
                "add the field, or on the data source map your column to it with `columns:` or set the right "
                "`format:` (docs/config.md)")
        raise RowError(row.problems)
    if detected:
        other = next((f for f in CONVERSATION_FORMATS if f != fmt and all(rec.get(k) is not None for k in REQUIRED[f])), None)
        if other is not None:
            ours, theirs = " and ".join(map(repr, REQUIRED[fmt])), " and ".join(map(repr, REQUIRED[other]))
            row.add("two_conversations", REQUIRED[other][0],
                    f"row has two conversations: {ours} ({fmt} format) and {theirs} ({other} format); "
                    f"only one is loaded, the other would be dropped silently",
                    f"keep one of them in the data, or choose which one to load with `format: {fmt}` or "
                    f"`format: {other}` on the data source")
            raise RowError(row.problems)
    messages = ADAPTERS[fmt](rec, row, require_response)
    if row.problems:
        raise RowError(row.problems)
    messages, image_refs, added, stray = _attach_images(rec, fmt, messages, row, images)
    if row.problems:
        raise RowError(row.problems)

    # A text document saved in the canonical form comes back as one assistant message: keep it a
    # text row, or the renderer would wrap it in a chat template.
    saved_text = fmt == "messages" and _saved_text(rec) and len(messages) == 1 and messages[0].role == "assistant"
    consumed = _CONSUMED[fmt] | {"kind"} if saved_text else _CONSUMED[fmt]
    meta: dict[str, Any] = {k: v for k, v in rec.items() if k not in consumed} if len(rec) > len(REQUIRED[fmt]) else {}
    saved_meta = rec.get("meta")
    if isinstance(saved_meta, dict):
        meta.update(saved_meta)
    if isinstance(rec.get("source"), str) and rec["source"]:
        meta["original_source"] = rec["source"]
    fmt = "text" if saved_text else fmt
    meta["format"] = fmt  # the format the row was read in (load stats by format)
    rid = rec.get("id")
    rid = str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid) else ""
    conv = Conversation(messages=tuple(messages), source=source, id=rid, meta=meta, kind="text" if fmt == "text" else "chat",
                        images=image_refs)
    return conv, RowNotes(row.dropped_system, row.ignored_keys, added, stray)
