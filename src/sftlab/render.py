"""Conversation -> (input_ids, loss_mask) with the tokenizer's own chat template.

How assistant spans are found for ANY Jinja template, without `{% generation %}` markers:
render the conversation prefix by prefix. For assistant turn i,
  before_i = template(messages[:i], add_generation_prompt=True)   # prompt up to the answer
  after_i  = template(messages[:i+1])                             # ... through the answer
and the trained text is after_i[len(before_i):] up to and including the template's stop token
(the end-of-turn token is trained, otherwise models never learn to stop). Each rendering must
be a prefix of the full rendering; a template that rewrites earlier turns when one is added
(e.g. strips reasoning from past turns) breaks that and is reported, not silently mis-masked.

The text is tokenized segment by segment (prompt part, trained part, prompt part, ...), which is
exactly how inference sees it: the prompt is tokenized, then the model emits the answer tokens.
loss_mask[t] == 1 means token t is a training target (predicted from tokens before it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sftlab.conversation import Conversation
from sftlab.errors import TemplateError

TrainOn = Literal["all_assistant", "last_assistant", "everything"]


@dataclass
class Rendered:
    input_ids: list[int]
    loss_mask: list[int]
    # token index just after each assistant turn's stop token: safe places to cut when splitting
    turn_ends: list[int] = field(default_factory=list)
    id: str = ""
    source: str = ""
    kind: str = "chat"  # "text" rows: plain documents, every token trained, no turns

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_trained(self) -> int:
        return sum(self.loss_mask)


class Renderer:
    """Renders conversations for one tokenizer. Build once, reuse (it probes the template once)."""

    def __init__(self, tokenizer, train_on: TrainOn = "all_assistant"):
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(
                "the tokenizer has no chat template; choose a built-in one with `template:` "
                "(chatml, llama3, alpaca)"
            )
        self.tokenizer = tokenizer
        self.train_on = train_on
        self.stop_text, self.stop_token_id = self._find_stop_token()
        self.bos_token_id = tokenizer.bos_token_id
        # Special-token strings inside message text are tokenized as the real control tokens, so
        # content could fake a turn boundary and shift the loss mask: such content is refused.
        self.special_strings = sorted({t for t in tokenizer.all_special_tokens if t}, key=len, reverse=True)

    # ---- template probing -------------------------------------------------------------------
    def _template(self, messages: list[dict], add_generation_prompt: bool) -> str:
        try:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        except Exception as e:  # a Jinja template may raise anything (raise_exception(), TypeError...)
            roles = [m["role"] for m in messages]
            raise TemplateError(f"the chat template raised {type(e).__name__}: {e} (roles: {roles})") from e

    def _find_stop_token(self) -> tuple[str, int]:
        """The special token the template puts right after an assistant answer."""
        probe = [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi there"}]
        before = self._template(probe[:1], add_generation_prompt=True)
        after = self._template(probe, add_generation_prompt=False)
        if not after.startswith(before):
            raise TemplateError(
                "the template's generation prompt is not a prefix of the rendered assistant turn:\n"
                f"  prompt : {before[-80:]!r}\n  turn   : {after[len(before) - 80 : len(before) + 40]!r}"
            )
        tail = after[len(before) :]
        idx = tail.find("Hi there")
        if idx < 0:
            raise TemplateError(f"the template does not render assistant content verbatim: {tail!r}")
        rest = tail[idx + len("Hi there") :]
        special = set(self.tokenizer.all_special_ids)
        for tid in self.tokenizer(rest, add_special_tokens=False)["input_ids"]:
            if tid in special:
                return self.tokenizer.convert_ids_to_tokens(tid), tid
        raise TemplateError(
            "the template ends an assistant turn without a special stop token "
            f"(text after the answer: {rest!r}); a model trained on it never learns to stop. "
            "Use a template that closes turns with an end-of-turn/eos token (e.g. `template: chatml`)."
        )

    # ---- rendering ----------------------------------------------------------------------------
    def check_no_special_tokens(self, conv: Conversation) -> None:
        for i, m in enumerate(conv.messages):
            found = next((t for t in self.special_strings if t in m.content), None)
            if found:
                raise TemplateError(
                    f"{conv.source or conv.id}: message {i + 1} ({m.role}) contains {found!r}, a special token of "
                    "the tokenizer; it would be read as a real control token (a fake turn boundary that breaks "
                    "the loss mask). Remove it from the data or replace it with plain text."
                )

    def render(self, conv: Conversation) -> Rendered:
        self.check_no_special_tokens(conv)
        if conv.meta.get("format") == "text":
            return self._render_text(conv)
        messages = conv.to_dicts()
        full = self._template(messages, add_generation_prompt=False)
        assistant_idx = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if self.train_on == "last_assistant":
            assistant_idx = assistant_idx[-1:]
        spans: list[tuple[int, int]] = []  # trained char spans in `full`
        for i in assistant_idx:
            before = self._template(messages[:i], add_generation_prompt=True)
            after = self._template(messages[: i + 1], add_generation_prompt=False)
            for name, text in (("prompt", before), ("turn", after)):
                if not full.startswith(text):
                    at = next((k for k, (a, b) in enumerate(zip(text, full)) if a != b), min(len(text), len(full)))
                    raise TemplateError(
                        f"{conv.source or conv.id}: the template renders turns 1..{i + 1} differently once "
                        f"later turns are added ({name} differs at char {at}: {text[at:at + 40]!r} vs "
                        f"{full[at:at + 40]!r}). Masks would be wrong; use a template that renders "
                        "earlier turns the same way (e.g. `template: chatml`)."
                    )
            start = len(before)
            stop_at = after.rfind(self.stop_text, start)
            if stop_at < 0:
                raise TemplateError(
                    f"{conv.source or conv.id}: assistant turn {i + 1} is not followed by the stop token "
                    f"{self.stop_text!r}; the model would not learn to stop."
                )
            spans.append((start, stop_at + len(self.stop_text)))
        if self.train_on == "everything":
            spans = [(0, len(full))]
        return self._tokenize_spans(full, spans, conv)

    def _tokenize_spans(self, full: str, spans: list[tuple[int, int]], conv: Conversation) -> Rendered:
        ids: list[int] = []
        mask: list[int] = []
        turn_ends: list[int] = []
        pos = 0
        tok = self.tokenizer
        for start, end in spans:
            if start > pos:
                part = tok(full[pos:start], add_special_tokens=False)["input_ids"]
                ids += part
                mask += [0] * len(part)
            part = tok(full[start:end], add_special_tokens=False)["input_ids"]
            ids += part
            mask += [1] * len(part)
            turn_ends.append(len(ids))
            pos = end
        if pos < len(full):
            part = tok(full[pos:], add_special_tokens=False)["input_ids"]
            ids += part
            mask += [0] * len(part)
        if self.train_on == "everything" and mask:
            mask[0] = 0  # nothing predicts the first token
        return Rendered(ids, mask, turn_ends, conv.id, conv.source)

    def _render_text(self, conv: Conversation) -> Rendered:
        """Plain text rows: no template, every token trained, eos appended so documents end."""
        text = "".join(m.content for m in conv.messages)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        if eos is not None:
            ids = ids + [eos]
        mask = [0] + [1] * (len(ids) - 1) if ids else []
        return Rendered(ids, mask, [len(ids)], conv.id, conv.source, kind="text")

    def render_prompt(self, messages: list[dict] | Conversation) -> list[int]:
        """Token ids of a prompt ending with the generation prompt (for generation and eval)."""
        if isinstance(messages, Conversation):
            messages = list(messages.to_dicts())
        text = self._template(list(messages), add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    @property
    def stop_token_ids(self) -> list[int]:
        """Generation stops at the end-of-turn token (and eos, when it differs)."""
        ids = [self.stop_token_id]
        eos = self.tokenizer.eos_token_id
        if eos is not None and eos not in ids:
            ids.append(eos)
        return ids


# ---- pre-flight -------------------------------------------------------------------------------
@dataclass
class PreflightReport:
    checked: int = 0
    no_trained_tokens: list[str] = field(default_factory=list)
    untrained_stop: list[str] = field(default_factory=list)
    double_bos: list[str] = field(default_factory=list)
    template_errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.no_trained_tokens or self.untrained_stop or self.double_bos or self.template_errors)

    def format(self) -> str:
        lines = [f"pre-flight checks on {self.checked} example(s):"]
        for title, items, fix in (
            ("examples with no trained tokens", self.no_trained_tokens, "check roles: every example needs an assistant turn"),
            ("assistant turns whose stop token is not trained", self.untrained_stop, "the template must close turns with its stop token"),
            ("double BOS at the start", self.double_bos, "the template already writes BOS; do not add another"),
            ("template problems", self.template_errors, "see message; `template: chatml` is a safe choice"),
        ):
            mark = "ok " if not items else "FAIL"
            lines.append(f"  [{mark}] {title}: {len(items)}")
            for item in items[:5]:
                lines.append(f"         {item}")
            if items:
                lines.append(f"         fix: {fix}")
        return "\n".join(lines)


def preflight(renderer: Renderer, conversations: list[Conversation], limit: int = 200) -> PreflightReport:
    """Render a sample and check the properties every training example must have."""
    report = PreflightReport()
    bos = renderer.bos_token_id
    for conv in conversations[:limit]:
        report.checked += 1
        try:
            r = renderer.render(conv)
        except TemplateError as e:
            report.template_errors.append(str(e))
            continue
        where = conv.source or conv.id
        if r.n_trained == 0:
            report.no_trained_tokens.append(where)
        if conv.meta.get("format") != "text" and renderer.train_on != "everything":
            stops = [t for t in r.turn_ends if t > 0 and (r.input_ids[t - 1] != renderer.stop_token_id or not r.loss_mask[t - 1])]
            if stops:
                report.untrained_stop.append(where)
        if bos is not None and len(r.input_ids) >= 2 and r.input_ids[0] == bos and r.input_ids[1] == bos:
            report.double_bos.append(where)
    return report


def format_mask(renderer: Renderer, rendered: Rendered, color: bool = True) -> str:
    """The rendered text with trained tokens highlighted (green) — for `sftlab data inspect`."""
    tok = renderer.tokenizer
    out: list[str] = []
    run: list[int] = []
    cur = None
    for tid, m in zip(rendered.input_ids, rendered.loss_mask):
        if m != cur and run:
            out.append(_span(tok.decode(run), cur, color))
            run = []
        cur = m
        run.append(tid)
    if run:
        out.append(_span(tok.decode(run), cur, color))
    return "".join(out)


def _span(text: str, trained: int | None, color: bool) -> str:
    if not trained:
        return f"\033[2m{text}\033[0m" if color else text
    return f"\033[1;32m{text}\033[0m" if color else f"[[{text}]]"
