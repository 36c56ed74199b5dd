"""Rules that reject generated instructions and responses. Each returns a reason (str) or None,
so callers count rejections by reason."""

from __future__ import annotations

import re

# Self-Instruct's keyword filter: tasks a text-only model cannot do.
BLACKLIST = ("image", "images", "graph", "graphs", "picture", "pictures", "file", "files", "map", "maps",
             "draw", "plot", "go to", "video", "audio", "music", "flowchart", "diagram")
_BLACKLIST_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in BLACKLIST) + r")\b", re.IGNORECASE)
# Starts that are chatter about the task rather than the task ("Sure, here are...", "Task 3 ...").
_NON_INSTRUCTION_START = re.compile(r"^(sure|here (is|are)|okay|ok\b|as an ai|i (can|will|am)|task\s*\d|note:|output:|input:)", re.IGNORECASE)

# WizardLM elimination: words from the rewriting prompt leaking into the result.
LEAK_WORDS = ("#the given prompt#", "#rewritten prompt#", "#given prompt#", "#created prompt#", "given prompt",
              "rewritten prompt", "created prompt")
REFUSAL = re.compile(r"\b(sorry|i apologi[sz]e|i cannot|i can't|as an ai language model)\b", re.IGNORECASE)
STOP_WORDS = set("a an the and or but if of to in on at by for with is are was were be been it this that i you he she we they".split())


def instruction_problem(text: str, min_words: int = 3, max_words: int = 150) -> str | None:
    words = text.split()
    if len(words) < min_words:
        return "too_short"
    if len(words) > max_words:
        return "too_long"
    if _BLACKLIST_RE.search(text):
        return "mentions_unsupported_media"  # image/graph/file/...
    if text.lower().startswith("write a program"):
        return "write_a_program"
    if not text[0].isalnum() and text[0] not in "\"'(":
        return "starts_with_punctuation"
    if not text[0].isascii():
        return "starts_non_english"
    if _NON_INSTRUCTION_START.match(text):
        return "starts_with_non_instruction"
    return None


def response_problem(text: str, min_words: int = 1) -> str | None:
    if not text.strip():
        return "empty_response"
    if len(text.split()) < min_words:
        return "response_too_short"
    return None


def evolution_problem(parent: str, child: str, response: str, min_response_words: int = 3) -> str | None:
    """WizardLM's elimination rules, minus the teacher 'Equal' check (done by the pipeline)."""
    if not child.strip():
        return "empty_instruction"
    low = child.lower()
    if any(w in low for w in LEAK_WORDS):
        return "leaked_prompt_words"
    if _normalise(child) == _normalise(parent):
        return "no_new_information"
    words = response.split()
    # "sorry" in a relatively short answer (the paper: < 80 words) = the evolved task is too hard
    if REFUSAL.search(response) and len(words) < 80:
        return "refusal"
    if words and all(_normalise(w) in STOP_WORDS or not _normalise(w) for w in words):
        return "only_punctuation_and_stop_words"
    if len(words) < min_response_words:
        return "response_too_short"
    return None


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


class NoveltyFilter:
    """Self-Instruct's ROUGE-L novelty test: a new instruction is rejected when its ROUGE-L F1 with
    any instruction already in the pool exceeds `threshold` (0.7 in the paper)."""

    def __init__(self, pool: list[str], threshold: float = 0.7):
        from rouge_score import rouge_scorer

        self.scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        self.threshold = threshold
        self.pool: list[str] = []
        for p in pool:
            self.add(p)

    def add(self, text: str) -> None:
        self.pool.append(text)

    def most_similar(self, text: str) -> tuple[float, str]:
        best, who = 0.0, ""
        for p in self.pool:
            f = self.scorer.score(p, text)["rougeL"].fmeasure
            if f > best:
                best, who = f, p
        return best, who

    def is_novel(self, text: str) -> tuple[bool, float]:
        score, _ = self.most_similar(text)
        return score <= self.threshold, score
