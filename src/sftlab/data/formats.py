"""Format adapters: one parsed row (a dict) -> one validated `Conversation`.

Five input formats, detected from a row's keys (first match wins, in this order):

| format              | needs                      | optional                    |
|---------------------|----------------------------|-----------------------------|
| `messages`          | messages                   | id, meta                    |
| `sharegpt`          | conversations              | system                      |
| `alpaca`            | instruction, output        | input, system, history      |
| `prompt_completion` | prompt, completion         |                             |
| `text`              | text                       |                             |

Every problem in a row is collected (not only the first) and raised as one `RowError`, whose
problems carry a short reason code (`unknown_role`, `empty_content`, ...) used to count skips.

A message keeps only its role and content. Any other key of a message object (OpenAI `name`,
`tool_calls`, Axolotl's per-turn `weight`, ...) is dropped, and every drop is counted per key in
`RowNotes.ignored_keys` so the loader can report it; it is never an error. Extra keys of the row
itself are not dropped: they go to `Conversation.meta`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sftlab.conversation import ROLES, Conversation, Message
from sftlab.errors import Problem

FORMATS: tuple[str, ...] = ("messages", "sharegpt", "alpaca", "prompt_completion", "text")

REQUIRED: dict[str, tuple[str, ...]] = {
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
OPTIONAL: dict[str, tuple[str, ...]] = {
    "messages": (),
    "sharegpt": ("system",),
    "alpaca": ("input", "system", "history"),
    "prompt_completion": (),
    "text": (),
}
# Formats whose fields hold a conversation; a row matching two of them is ambiguous (text is not one:
# a `text` column beside `messages` is commonly a rendered copy, kept in meta).
CONVERSATION_FORMATS: tuple[str, ...] = ("messages", "sharegpt", "alpaca", "prompt_completion")
# Row keys that every format understands: our own canonical fields (see Conversation.to_json).
COMMON_KEYS = ("id", "meta", "source")
# Names accepted as keys of `columns=` (our field name -> the user's column name).
FIELD_NAMES: tuple[str, ...] = tuple(
    dict.fromkeys(k for f in FORMATS for k in REQUIRED[f] + OPTIONAL[f])
) + ("id",)

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


class _Row:
    """Collects problems for one row so all of them are reported together."""

    __slots__ = ("where", "problems", "dropped_system", "ignored_keys")

    def __init__(self, where: str):
        self.where = where
        self.problems: list[tuple[str, Problem]] = []
        self.dropped_system = 0
        self.ignored_keys: dict[str, list[int]] = {}

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

    def content(self, value: Any, field: str, message: dict) -> str | None:
        """Message content: a string, or a list of {"type": "text", "text": ...} parts (joined by \\n)."""
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            texts = []
            for j, part in enumerate(value):
                pf = f"{field}[{j}]"
                if not isinstance(part, dict):
                    self.add("wrong_type", pf, f"content part must be an object, got {type_name(part)} {short(part)}",
                             'write parts as {"type": "text", "text": "..."}')
                elif part.get("type", "text") != "text":
                    self.add("unsupported_part", pf + ".type",
                             f"content part of type {short(part.get('type'))} is not supported; only 'text' parts are",
                             "remove non-text parts (images, audio, files) or drop this row")
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


ADAPTERS = {
    "messages": _messages,
    "sharegpt": _sharegpt,
    "alpaca": _alpaca,
    "prompt_completion": _prompt_completion,
    "text": _text,
}


_CONSUMED = {f: frozenset(REQUIRED[f] + OPTIONAL[f] + COMMON_KEYS) for f in FORMATS}


def to_conversation(rec: Any, fmt: str, source: str, *, require_response: bool = True,
                    detected: bool = False) -> tuple[Conversation, RowNotes]:
    """One row -> (Conversation, RowNotes: empty system messages dropped, message keys ignored).
    Raises RowError. `detected`: the format was detected, not chosen, so a row that also holds
    another format's conversation (e.g. both `messages` and `conversations`) is an error instead
    of one of them going to meta unnoticed."""
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
    conv = Conversation(messages=tuple(messages), source=source, id=rid, meta=meta, kind="text" if fmt == "text" else "chat")
    return conv, RowNotes(row.dropped_system, row.ignored_keys)
