"""Verifiable instruction following, IFEval-style: constraints a program can check.

Why our own checkers: the reference code (google-research `instruction_following_eval`, copied in
lm-eval's `tasks/ifeval` and the `if-verifiable` package) loads NLTK's punkt model
(`nltk.data.load("tokenizers/punkt/english.pickle")`, `nltk.download` at import) and `langdetect`;
punkt cannot be downloaded here and shipping it is not ours to do. So sentences are split with a
small rule set (below) and the two language checks are dropped; everything else follows IFEval's
definitions, with the differences listed in each checker's docstring.

Scoring is IFEval's: a constraint passes *strictly* when the response satisfies it as is, and
*loosely* when any of 8 variants does (the response; without its first line; without its last
line; without both; and those four with every "*" removed). Prompt-level accuracy counts prompts
whose constraints all pass; instruction-level accuracy counts constraints.
"""

from __future__ import annotations

import inspect
import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from sftlab.data.readers import read_jsonl_objects
from sftlab.errors import DataError, Problem

# ---------------------------------------------------------------- text helpers

_ABBREVIATIONS = frozenset(
    "mr mrs ms dr prof sr jr st vs etc eg ie e.g i.e approx no fig inc ltd co dept est mt".split()
)
# End punctuation, optional closing quotes/brackets, then whitespace or the end of the text.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]\u201d\u2019]*(?=\s|$)")


def count_words(text: str) -> int:
    """Words as IFEval counts them: runs of \\w characters ("don't" is 2, "3.5" is 2)."""
    return len(re.findall(r"\w+", text))


def split_sentences(text: str) -> list[str]:
    """Split on . ! ? followed by whitespace, and on blank lines.

    Punctuation followed by a lower-case word does not end a sentence ('"Stop!" she said',
    "3 p.m. on Monday"), nor does a single "." after a known abbreviation (Dr., e.g., etc.) or a
    one-letter initial ("J."); "3.5" never splits (no whitespace after the point). Pieces without
    any word character (a lone "***" or "-") are not sentences.
    """
    sentences: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        start = 0
        for match in _SENTENCE_END.finditer(block):
            following = block[match.end():].lstrip()
            if following[:1].islower():  # '"Stop!" she said' / '3 p.m. on Monday': no new sentence
                continue
            if match.group().rstrip("\"')]\u201d\u2019") == ".":
                before = re.search(r"([\w.]+)\.$", block[: match.start() + 1])
                token = before.group(1).lower() if before else ""
                if token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()):
                    continue
            sentences.append(block[start : match.end()].strip())
            start = match.end()
        sentences.append(block[start:].strip())
    return [s for s in sentences if re.search(r"\w", s)]


def _compare(count: int, relation: str, target: int) -> bool:
    relations = {
        "at least": count >= target,
        "at most": count <= target,
        "less than": count < target,
        "more than": count > target,
        "exactly": count == target,
    }
    if relation not in relations:
        raise ValueError(f"relation {relation!r} is not one of {sorted(relations)}")
    return relations[relation]


def _positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _word_pattern(word: str) -> re.Pattern[str]:
    if not isinstance(word, str) or not word.strip():
        raise ValueError(f"keyword must be a non-empty string, got {word!r}")
    return re.compile(r"(?<!\w)" + re.escape(word.strip()) + r"(?!\w)", re.IGNORECASE)


# ---------------------------------------------------------------- the checkers

def number_words(response: str, *, num_words: int, relation: str) -> bool:
    """Word count (IFEval's \\w+ tokens) compared with num_words by relation."""
    return _compare(count_words(response), relation, _positive_int("num_words", num_words))


def number_sentences(response: str, *, num_sentences: int, relation: str) -> bool:
    """Sentence count (`split_sentences`, a rule splitter instead of punkt) against num_sentences."""
    return _compare(len(split_sentences(response)), relation, _positive_int("num_sentences", num_sentences))


def number_paragraphs(response: str, *, num_paragraphs: int) -> bool:
    """Exactly num_paragraphs paragraphs separated by *** lines; an empty inner paragraph fails.

    An empty piece before the first or after the last *** is ignored, as in IFEval.
    """
    target = _positive_int("num_paragraphs", num_paragraphs)
    pieces = re.split(r"\s?\*\*\*\s?", response)
    count = len(pieces)
    for i, piece in enumerate(pieces):
        if not piece.strip():
            if i in (0, len(pieces) - 1):
                count -= 1
            else:
                return False
    return count == target


def keyword_existence(response: str, *, keywords: list[str]) -> bool:
    """Every keyword appears as a whole word or phrase, any case (IFEval matches substrings)."""
    if not keywords:
        raise ValueError("keywords must be a non-empty list of strings")
    return all(_word_pattern(k).search(response) for k in keywords)


def forbidden_words(response: str, *, forbidden_words: list[str]) -> bool:
    """None of the forbidden words appears as a whole word, any case."""
    if not forbidden_words:
        raise ValueError("forbidden_words must be a non-empty list of strings")
    return not any(_word_pattern(w).search(response) for w in forbidden_words)


def keyword_frequency(response: str, *, keyword: str, frequency: int, relation: str) -> bool:
    """How often `keyword` occurs as a whole word (any case) compared with frequency."""
    count = len(_word_pattern(keyword).findall(response))
    return _compare(count, relation, _positive_int("frequency", frequency))


def letter_frequency(response: str, *, letter: str, let_frequency: int, let_relation: str) -> bool:
    """How often one letter occurs (any case) compared with let_frequency."""
    if not (isinstance(letter, str) and len(letter) == 1 and letter.isalpha()):
        raise ValueError(f"letter must be a single letter, got {letter!r}")
    count = Counter(response.lower())[letter.lower()]
    return _compare(count, let_relation, _positive_int("let_frequency", let_frequency))


def json_format(response: str) -> bool:
    """The whole response parses as JSON; a ```json ... ``` fence around it is allowed."""
    value = response.strip()
    for prefix in ("```json", "```Json", "```JSON", "```"):
        if value.startswith(prefix):
            value = value[len(prefix):]
            break
    value = value.removesuffix("```").strip()
    try:
        json.loads(value)
    except ValueError:
        return False
    return True


def number_bullet_lists(response: str, *, num_bullets: int) -> bool:
    """Exactly num_bullets markdown bullets: lines starting with "* ", "- " or "+ ".

    IFEval counts any line starting with "-" (so a "---" rule counts); we require the space.
    """
    bullets = re.findall(r"^[ \t]*[*+-][ \t]+\S", response, flags=re.MULTILINE)
    return len(bullets) == _positive_int("num_bullets", num_bullets)


def title(response: str) -> bool:
    """A title wrapped in double angular brackets, like <<A Day at Sea>>, somewhere."""
    return any(t.strip() for t in re.findall(r"<<([^\n]+?)>>", response))


def postscript(response: str, *, postscript_marker: str = "P.S.") -> bool:
    """A line that starts with the marker ("P.S." also matches "P. S." and any case)."""
    marker = postscript_marker.strip().lower()
    if not marker:
        raise ValueError("postscript_marker must be non-empty, e.g. 'P.S.'")
    if marker == "p.s.":
        pattern = r"^\s*p\.\s?s\."
    elif marker == "p.p.s":
        pattern = r"^\s*p\.\s?p\.\s?s"
    else:
        pattern = r"^\s*" + re.escape(marker)
    return re.search(pattern, response.lower(), flags=re.MULTILINE) is not None


def starts_with(response: str, *, phrase: str) -> bool:
    """The response begins with `phrase` (any case, surrounding whitespace ignored)."""
    if not phrase.strip():
        raise ValueError("phrase must be non-empty")
    return response.strip().lower().startswith(phrase.strip().lower())


def end_checker(response: str, *, end_phrase: str) -> bool:
    """The response ends with `end_phrase` (any case; an outer pair of double quotes ignored)."""
    if not end_phrase.strip():
        raise ValueError("end_phrase must be non-empty")
    return response.strip().strip('"').lower().endswith(end_phrase.strip().lower())


def english_lowercase(response: str) -> bool:
    """Has letters and none is upper case (IFEval also runs langdetect; we do not)."""
    return response.islower()


def english_capital(response: str) -> bool:
    """Has letters and none is lower case (IFEval also runs langdetect; we do not)."""
    return response.isupper()


def no_comma(response: str) -> bool:
    """No ASCII comma anywhere."""
    return "," not in response


def quotation(response: str) -> bool:
    """The whole response is wrapped in double quotes."""
    value = response.strip()
    return len(value) > 1 and value[0] == '"' and value[-1] == '"'


def multiple_sections(response: str, *, num_sections: int, section_spliter: str = "Section") -> bool:
    """Exactly num_sections headers "<spliter> <number>" at line starts (markdown # allowed).

    IFEval splits anywhere on the spliter and accepts at least N; "must have N sections" reads as
    exactly N, and a header in the middle of a sentence is not a header.
    """
    if not section_spliter.strip():
        raise ValueError("section_spliter must be non-empty, e.g. 'Section'")
    pattern = r"^[ \t]*(?:#+[ \t]*)?" + re.escape(section_spliter.strip()) + r"[ \t]*\d+"
    headers = re.findall(pattern, response, flags=re.MULTILINE | re.IGNORECASE)
    return len(headers) == _positive_int("num_sections", num_sections)


def number_placeholders(response: str, *, num_placeholders: int) -> bool:
    """At least num_placeholders non-empty [square bracket] placeholders, like [address]."""
    found = re.findall(r"\[[^\[\]\n]*\S[^\[\]\n]*\]", response)
    return len(found) >= _positive_int("num_placeholders", num_placeholders)


def number_highlighted_sections(response: str, *, num_highlights: int) -> bool:
    """At least num_highlights markdown highlights *like this* or **like this** (non-empty)."""
    singles = re.findall(r"\*[^\n*]*\*", response)
    doubles = re.findall(r"\*\*[^\n*]*\*\*", response)
    count = sum(1 for h in singles if h.strip("*").strip()) + sum(1 for h in doubles if h.strip("*").strip())
    return count >= _positive_int("num_highlights", num_highlights)


CHECKERS: dict[str, Callable[..., bool]] = {
    "length_constraints:number_words": number_words,
    "length_constraints:number_sentences": number_sentences,
    "length_constraints:number_paragraphs": number_paragraphs,
    "keywords:existence": keyword_existence,
    "keywords:forbidden_words": forbidden_words,
    "keywords:frequency": keyword_frequency,
    "keywords:letter_frequency": letter_frequency,
    "detectable_format:json_format": json_format,
    "detectable_format:number_bullet_lists": number_bullet_lists,
    "detectable_format:title": title,
    "detectable_format:multiple_sections": multiple_sections,
    "detectable_format:number_highlighted_sections": number_highlighted_sections,
    "detectable_content:postscript": postscript,
    "detectable_content:number_placeholders": number_placeholders,
    "startend:starts_with": starts_with,
    "startend:end_checker": end_checker,
    "startend:quotation": quotation,
    "change_case:english_lowercase": english_lowercase,
    "change_case:english_capital": english_capital,
    "punctuation:no_comma": no_comma,
}


# ---------------------------------------------------------------- prompts

@dataclass(frozen=True)
class IFEvalPrompt:
    id: str
    prompt: str
    constraints: tuple[tuple[str, dict[str, Any]], ...]


def default_prompts_path() -> Path:
    return Path(str(resources.files("sftlab.builtin") / "ifeval_prompts.jsonl"))


def _constraint_problem(where: str, index: int, item: Any) -> Problem | None:
    fld = f"constraints[{index}]"
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        return Problem(where, fld, f"expected {{\"id\": str, \"kwargs\": {{...}}}}, got {item!r}",
                       'write e.g. {"id": "punctuation:no_comma", "kwargs": {}}')
    cid, kwargs = item["id"], item.get("kwargs", {})
    if cid not in CHECKERS:
        return Problem(where, f"{fld}.id", f"unknown constraint {cid!r}", f"use one of {sorted(CHECKERS)}")
    if not isinstance(kwargs, dict):
        return Problem(where, f"{fld}.kwargs", f"expected an object, got {kwargs!r}", "write kwargs as a JSON object")
    checker = CHECKERS[cid]
    try:
        inspect.signature(checker).bind("", **kwargs)
        checker("", **kwargs)  # runs the value checks (relation names, letters, counts)
    except (TypeError, ValueError) as exc:
        params = [p for p in inspect.signature(checker).parameters if p != "response"]
        return Problem(where, f"{fld}.kwargs", f"{cid}: {exc}", f"{cid} takes keyword arguments {params}")
    return None


def load_prompts(path: str | Path | None = None) -> list[IFEvalPrompt]:
    """Read prompts from JSONL: {"id", "prompt", "constraints": [{"id", "kwargs"}]} per line.

    Defaults to the built-in set. All problems (bad JSON, unknown constraint, bad kwargs,
    duplicate id) are collected and raised together as one DataError naming file:line and field.
    """
    file = Path(path) if path is not None else default_prompts_path()
    prompts: list[IFEvalPrompt] = []
    seen_ids: dict[str, str] = {}
    rows, problems = read_jsonl_objects(file, '{"id": ..., "prompt": ..., "constraints": [...]}')
    for where, record in rows:
        line_problems = []
        for key in ("id", "prompt"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                line_problems.append(Problem(where, key, f"missing or empty (got {record.get(key)!r})",
                                             f"give a non-empty string {key!r}"))
        constraints = record.get("constraints")
        if not isinstance(constraints, list) or not constraints:
            line_problems.append(Problem(where, "constraints", f"expected a non-empty list, got {constraints!r}",
                                         "list at least one constraint"))
            constraints = []
        for i, item in enumerate(constraints):
            problem = _constraint_problem(where, i, item)
            if problem:
                line_problems.append(problem)
        pid = record.get("id")
        if isinstance(pid, str) and pid in seen_ids:
            line_problems.append(Problem(where, "id", f"duplicate id {pid!r} (first at {seen_ids[pid]})",
                                         "give every prompt its own id"))
        elif isinstance(pid, str):
            seen_ids[pid] = where
        if line_problems:
            problems.extend(line_problems)
            continue
        prompts.append(IFEvalPrompt(
            id=record["id"], prompt=record["prompt"],
            constraints=tuple((c["id"], dict(c.get("kwargs", {}))) for c in constraints),
        ))
    if problems:
        raise DataError(problems, header=f"{len(problems)} problem(s) in IFEval prompts {file}:")
    return prompts


# ---------------------------------------------------------------- scoring

def loose_variants(response: str) -> list[str]:
    """IFEval's 8 loose variants: as is / minus first line / minus last / minus both, x (with, without *)."""
    lines = response.split("\n")
    trimmed = [
        response,
        "\n".join(lines[1:]).strip(),
        "\n".join(lines[:-1]).strip(),
        "\n".join(lines[1:-1]).strip(),
    ]
    return trimmed + [t.replace("*", "") for t in trimmed]


def check_strict(constraint_id: str, kwargs: dict[str, Any], response: str) -> bool:
    return bool(response.strip()) and CHECKERS[constraint_id](response, **kwargs)


def check_loose(constraint_id: str, kwargs: dict[str, Any], response: str) -> bool:
    return any(check_strict(constraint_id, kwargs, v) for v in loose_variants(response))


@dataclass
class PromptResult:
    id: str
    constraint_ids: list[str]
    strict: list[bool]
    loose: list[bool]
    response: str

    @property
    def strict_all(self) -> bool:
        return all(self.strict)

    @property
    def loose_all(self) -> bool:
        return all(self.loose)


@dataclass
class IFEvalResult:
    n_prompts: int
    n_instructions: int
    prompt_strict: float       # fraction of prompts whose constraints all pass (strict)
    instruction_strict: float  # fraction of constraints that pass (strict)
    prompt_loose: float
    instruction_loose: float
    per_constraint: dict[str, dict[str, float]]  # id -> {"n", "strict", "loose"}
    details: list[PromptResult] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for row, result in zip(out["details"], self.details, strict=True):
            row["strict_all"], row["loose_all"] = result.strict_all, result.loose_all
        return out


def evaluate_responses(prompts: Sequence[IFEvalPrompt], responses: Sequence[str]) -> IFEvalResult:
    """Score one response per prompt, strictly and loosely, at prompt and instruction level."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses; fix: pass exactly one "
                         f"response per prompt, in the same order")
    if not prompts:
        raise ValueError("no prompts to evaluate; fix: pass load_prompts() or a non-empty list")
    details: list[PromptResult] = []
    per: dict[str, list[tuple[bool, bool]]] = {}
    for prompt, response in zip(prompts, responses, strict=True):
        strict = [check_strict(cid, kw, response) for cid, kw in prompt.constraints]
        loose = [check_loose(cid, kw, response) for cid, kw in prompt.constraints]
        details.append(PromptResult(prompt.id, [cid for cid, _ in prompt.constraints], strict, loose, response))
        for (cid, _), s, lo in zip(prompt.constraints, strict, loose, strict=True):
            per.setdefault(cid, []).append((s, lo))
    n_instr = sum(len(d.strict) for d in details)
    return IFEvalResult(
        n_prompts=len(details),
        n_instructions=n_instr,
        prompt_strict=sum(d.strict_all for d in details) / len(details),
        instruction_strict=sum(sum(d.strict) for d in details) / n_instr,
        prompt_loose=sum(d.loose_all for d in details) / len(details),
        instruction_loose=sum(sum(d.loose) for d in details) / n_instr,
        per_constraint={
            cid: {"n": len(v), "strict": sum(s for s, _ in v) / len(v), "loose": sum(lo for _, lo in v) / len(v)}
            for cid, v in sorted(per.items())
        },
        details=details,
    )
