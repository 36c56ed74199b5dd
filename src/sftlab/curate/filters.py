"""Quality filters. Each drops a conversation with a named reason; counts per reason are in `stats`.

Checks run on every assistant turn, paired with the nearest user message before it (`turns`):
one bad turn rejects the conversation (training on it would teach the bad turn).

| block              | reasons                                                          |
|--------------------|------------------------------------------------------------------|
| empty_response     | empty_response, trivial_response                                 |
| prompt_echo        | prompt_echo                                                      |
| response_length    | response_too_short, response_too_long, response_ratio_too_low/high |
| refusal            | refusal                                                          |
| repetition         | repeated_ngrams, repeated_lines                                  |
| formatting         | unbalanced_code_fence, truncated_json                            |
| garbage            | replacement_chars, control_chars, low_letter_fraction            |
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import Field

from sftlab.conversation import Conversation
from sftlab.curate.blocks import Block, BlockConfig, normalise, turns, words

# ------------------------------------------------------------------------------ empty / trivial

TRIVIAL_RESPONSES = ("ok", "okay", "k", "yes", "no", "yep", "nope", "sure", "thanks", "thank you", "n a",
                     "none", "null", "nothing", "i don t know", "idk", "done", "maybe", "true", "false", "fine")
YES_NO = ("yes", "no")
_YES_NO_QUESTION = re.compile(
    r"^\s*(is|are|was|were|am|do|does|did|can|could|will|would|should|shall|has|have|had|may|might|must)\b"
    r"[^?]*\?\s*$", re.IGNORECASE | re.DOTALL)


def is_yes_no_question(prompt: str) -> bool:
    """The last sentence is a question that starts with an auxiliary verb ('Is 7 prime?')."""
    last = re.split(r"(?<=[.!\n])\s+", prompt.strip())[-1] if prompt.strip() else ""
    return bool(_YES_NO_QUESTION.match(last))


class EmptyResponseConfig(BlockConfig):
    type: Literal["empty_response"] = "empty_response"
    trivial: list[str] = Field(default_factory=lambda: list(TRIVIAL_RESPONSES),
                               description="normalised responses that carry no content ('yes'/'no' are "
                                           "allowed when the prompt is a yes/no question)")


class EmptyResponseFilter(Block):
    Config = EmptyResponseConfig
    cfg: EmptyResponseConfig

    def reject(self, conv: Conversation) -> tuple[str, str] | None:
        trivial = {normalise(t) for t in self.cfg.trivial}
        for prompt, response in turns(conv) or [("", "")]:
            if not response.strip():
                return "empty_response", "assistant message is empty or whitespace"
            norm = normalise(response)
            if norm in trivial and not (norm in YES_NO and is_yes_no_question(prompt)):
                return "trivial_response", f"response is just {response.strip()!r}"
        return None


# ---------------------------------------------------------------------------------- prompt echo

def _ngrams(toks: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]


def echo_overlap(prompt: str, response: str, n: int = 3) -> float:
    """Fraction of the response's word n-grams that also occur in the prompt (unigrams when the
    response is shorter than n words)."""
    r, p = words(response), words(prompt)
    if not r:
        return 0.0
    k = n if len(r) >= n else 1
    rg, pg = _ngrams(r, k), set(_ngrams(p, k))
    return sum(g in pg for g in rg) / len(rg)


class PromptEchoConfig(BlockConfig):
    type: Literal["prompt_echo"] = "prompt_echo"
    max_overlap: float = Field(0.8, gt=0, le=1, description="reject when >= this fraction of response 3-grams "
                                                            "is copied from the prompt")
    ngram: int = Field(3, ge=1)


class PromptEchoFilter(Block):
    Config = PromptEchoConfig
    cfg: PromptEchoConfig

    def reject(self, conv: Conversation) -> tuple[str, str] | None:
        for prompt, response in turns(conv):
            ov = echo_overlap(prompt, response, self.cfg.ngram)
            if prompt.strip() and ov >= self.cfg.max_overlap:
                return "prompt_echo", f"{ov:.0%} of the response's {self.cfg.ngram}-grams are in the prompt"
        return None


# ------------------------------------------------------------------------------------- length

class ResponseLengthConfig(BlockConfig):
    type: Literal["response_length"] = "response_length"
    min_words: int = Field(1, ge=0)
    max_words: int | None = Field(4000, ge=1)
    min_ratio: float | None = Field(None, ge=0, description="response words / prompt words, lower bound")
    max_ratio: float | None = Field(None, gt=0, description="response words / prompt words, upper bound")


class ResponseLengthFilter(Block):
    Config = ResponseLengthConfig
    cfg: ResponseLengthConfig

    def reject(self, conv: Conversation) -> tuple[str, str] | None:
        c = self.cfg
        for prompt, response in turns(conv):
            nr, np_ = len(response.split()), max(1, len(prompt.split()))
            if nr < c.min_words:
                return "response_too_short", f"{nr} words < min_words {c.min_words}"
            if c.max_words is not None and nr > c.max_words:
                return "response_too_long", f"{nr} words > max_words {c.max_words}"
            ratio = nr / np_
            if c.min_ratio is not None and ratio < c.min_ratio:
                return "response_ratio_too_low", f"{nr} response / {np_} prompt words = {ratio:.2f} < {c.min_ratio}"
            if c.max_ratio is not None and ratio > c.max_ratio:
                return "response_ratio_too_high", f"{nr} response / {np_} prompt words = {ratio:.2f} > {c.max_ratio}"
        return None


# ------------------------------------------------------------------------------------ refusals

REFUSAL_PATTERNS = (
    r"\bas an ai(?: language)? model\b",
    r"\bas a (?:large )?language model\b",
    r"\bas an ai(?: assistant)?,? i (?:cannot|can't|don't|do not|am not)\b",
    r"\bi(?: am|'m) (?:sorry|afraid),? but i (?:cannot|can't|am unable|won't)\b",
    r"\bi (?:cannot|can't|can not) (?:help|assist) (?:you )?with\b",
    r"\bi (?:cannot|can't|won't) (?:fulfill|comply with|provide|create|generate) (?:this|that|your)\b",
    r"\bi(?: am|'m) (?:not able|unable) to (?:help|assist|provide|comply|fulfill)\b",
    r"\bi do not have the ability to\b",
    r"\bit is not appropriate for me to\b",
)


class RefusalConfig(BlockConfig):
    type: Literal["refusal"] = "refusal"
    patterns: list[str] = Field(default_factory=lambda: list(REFUSAL_PATTERNS),
                                description="case-insensitive regexes; replace the list to change them")
    scan_chars: int = Field(300, ge=1, description="look only at the start of a response: a long useful "
                                                   "answer that mentions 'I cannot help with X' later is kept")


class RefusalFilter(Block):
    Config = RefusalConfig
    cfg: RefusalConfig

    def __init__(self, config: RefusalConfig | None = None, **kw):
        super().__init__(config, **kw)
        self._re = re.compile("|".join(f"(?:{p})" for p in self.cfg.patterns), re.IGNORECASE)

    def reject(self, conv: Conversation) -> tuple[str, str] | None:
        for _, response in turns(conv):
            m = self._re.search(response[: self.cfg.scan_chars].replace("\u2019", "'"))
            if m:
                return "refusal", f"matched {m.group(0)!r}"
        return None


# ---------------------------------------------------------------------------------- repetition

def repeated_ngram_fraction(text: str, n: int = 3) -> float:
    """(n-grams - distinct n-grams) / n-grams: 0 for no repeats, near 1 for a loop."""
    g = _ngrams(words(text), n)
    return (len(g) - len(set(g))) / len(g) if g else 0.0


def repeated_line_fraction(text: str, min_chars: int = 10) -> tuple[float, int]:
    """Fraction of non-trivial lines (>= min_chars after stripping; short lines like '}' repeat
    legitimately in code) that repeat an earlier line; also returns how many lines were counted."""
    lines = [ln.strip() for ln in text.splitlines() if len(ln.strip()) >= min_chars]
    return ((len(lines) - len(set(lines))) / len(lines) if lines else 0.0), len(lines)


class RepetitionConfig(BlockConfig):
    type: Literal["repetition"] = "repetition"
    ngram: int = Field(3, ge=1)
    max_repeated_ngram_fraction: float = Field(0.3, gt=0, le=1)
    min_words: int = Field(20, ge=1, description="shorter responses are not judged on n-gram repeats")
    max_repeated_line_fraction: float = Field(0.3, gt=0, le=1)
    min_lines: int = Field(4, ge=2)


class RepetitionFilter(Block):
    Config = RepetitionConfig
    cfg: RepetitionConfig

    def reject(self, conv: Conversation) -> tuple[str, str] | None:
        c = self.cfg
        for _, response in turns(conv):
            if len(response.split()) >= c.min_words:
                f = repeated_ngram_fraction(response, c.ngram)
                if f > c.max_repeated_ngram_fraction:
                    return "repeated_ngrams", f"{f:.0%} of word {c.ngram}-grams are repeats"
            f, n = repeated_line_fraction(response)
            if n >= c.min_lines and f > c.max_repeated_line_fraction:
                return "repeated_lines", f"{f:.0%} of {n} lines repeat an earlier line"
        return None


# ---------------------------------------------------------------------------------- formatting

_FENCE = re.compile(r"^\s*```", re.MULTILINE)
_JSON_START = re.compile(r'^\s*(\{\s*("|\}|$)|\[\s*[\[{"\]])')
_JSON_FENCE = re.compile(r"```json\s*\n(.*?)```", re.DOTALL | re.IGNORECASE)


class FormattingConfig(BlockConfig):
    type: Literal["formatting"] = "formatting"
    check_json: bool = True
    check_code_fences: bool = True


class FormattingFilter(Block):
    """Unbalanced ``` fences (an odd number of fence lines: the answer was cut inside a code block)
    and truncated JSON (a response that starts like a JSON object/array, or a ```json block, that
    does not parse)."""

    Config = FormattingConfig
    cfg: FormattingConfig

    def reject(self, conv: Conversation) -> tuple[str, str] | None:
        for _, response in turns(conv):
            if self.cfg.check_code_fences:
                n = len(_FENCE.findall(response))
                if n % 2:
                    return "unbalanced_code_fence", f"{n} ``` fence lines (odd)"
            if self.cfg.check_json:
                blocks = _JSON_FENCE.findall(response)
                if _JSON_START.match(response):
                    blocks.append(response)
                for block in blocks:
                    try:
                        json.loads(block)
                    except json.JSONDecodeError as e:
                        return "truncated_json", f"looks like JSON but does not parse: {e.msg} at char {e.pos}"
        return None


# ------------------------------------------------------------------------------------- garbage

def _is_control(ch: str) -> bool:
    return (ord(ch) < 32 and ch not in "\n\t\r") or 0x7F <= ord(ch) < 0xA0


class GarbageConfig(BlockConfig):
    type: Literal["garbage"] = "garbage"
    max_replacement_chars: int = Field(0, ge=0, description="U+FFFD left by a bad UTF-8 decode")
    max_control_chars: int = Field(0, ge=0)
    min_letter_fraction: float = Field(0.25, ge=0, le=1, description="letters / non-space characters")
    min_chars_for_letter_check: int = Field(20, ge=1, description="short texts ('2+2=4') are not judged")


class GarbageFilter(Block):
    """Mojibake and binary junk in ANY message: replacement characters, control characters, or
    text that is mostly not letters (letters include every script, not just ASCII)."""

    Config = GarbageConfig
    cfg: GarbageConfig

    def reject(self, conv: Conversation) -> tuple[str, str] | None:
        c = self.cfg
        for i, m in enumerate(conv.messages):
            text = m.content
            n_repl = text.count("\ufffd")
            if n_repl > c.max_replacement_chars:
                return "replacement_chars", f"message {i} ({m.role}) has {n_repl} U+FFFD characters"
            n_ctrl = sum(map(_is_control, text))
            if n_ctrl > c.max_control_chars:
                return "control_chars", f"message {i} ({m.role}) has {n_ctrl} control characters"
            visible = [ch for ch in text if not ch.isspace()]
            if len(visible) >= c.min_chars_for_letter_check:
                frac = sum(ch.isalpha() for ch in visible) / len(visible)
                if frac < c.min_letter_fraction:
                    return "low_letter_fraction", f"message {i} ({m.role}): {frac:.0%} letters < {c.min_letter_fraction:.0%}"
        return None


QUALITY_FILTERS = (EmptyResponseFilter, PromptEchoFilter, ResponseLengthFilter, RefusalFilter, RepetitionFilter,
                   FormattingFilter, GarbageFilter)

__all__ = [c.__name__ for c in QUALITY_FILTERS] + ["echo_overlap", "is_yes_no_question", "repeated_line_fraction",
                                                   "repeated_ngram_fraction"]
