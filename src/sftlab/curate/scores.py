"""Scores written into conversation.meta: complexity, diversity, tags (and tag coverage of a set).

complexity (meta["complexity"]), from the instruction = every user message before the last answer:

    complexity = constraints + log2(1 + instruction_words / 20) + 0.5 * (user_turns - 1)

  constraints: number of matches of CONSTRAINT_PATTERNS (phrases that add a requirement: "at least",
  "exactly", "in 50 words", "format", "bullet", "JSON", "must", "do not", ... and standalone
  numbers). The log term gives 1.0 at 20 words, 2.0 at 60, 3.0 at 140: length counts, but less
  than an explicit constraint. Each extra user turn adds 0.5 (context to keep track of).

diversity (meta["diversity"]): 1 - max cosine similarity to the examples before it in the stream
  (MiniLM embeddings); the first example gets 1.0.

tags (meta["tags"]): InsTag-like keyword tags from TAXONOMY, matched on the instruction.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

from pydantic import Field

from sftlab.conversation import Conversation
from sftlab.curate.blocks import Block, BlockConfig, instruction_text

CONSTRAINT_PATTERNS = (
    r"\bat (?:least|most)\b", r"\bexactly\b", r"\bno (?:more|less|fewer) than\b", r"\b(?:fewer|less|more) than\b",
    r"\bin \d+ (?:words|sentences|paragraphs|lines|steps|bullet points)\b",
    r"\b\d+ (?:words|sentences|paragraphs|lines|items|bullet points|bullets|steps|examples)\b",
    r"\bformat(?:ted|ting)?\b", r"\bbullet(?:s| points?)?\b", r"\bjson\b", r"\byaml\b", r"\bmarkdown\b",
    r"\btable\b", r"\bnumbered list\b", r"\bmust\b", r"\bdo not\b", r"\bdon't\b", r"\bwithout\b", r"\bonly\b",
    r"\binclude\b", r"\b(?:start|begin|end) with\b", r"\b(?:lower|upper)case\b", r"\bcapital(?:s|ized|ise|ize)?\b",
    r"\btitle\b", r"\bwrap\b", r"\bquot(?:e|ation)", r"\b(?:avoid|never|always)\b", r"\bsection\b",
    r"(?<![\w.])\d+(?:\.\d+)?(?![\w.])",
)
_CONSTRAINTS = re.compile("|".join(f"(?:{p})" for p in CONSTRAINT_PATTERNS), re.IGNORECASE)


def constraint_count(instruction: str) -> int:
    return len(_CONSTRAINTS.findall(instruction))


def complexity(conv: Conversation) -> float:
    instr = instruction_text(conv)
    user_turns = sum(m.role == "user" for m in conv.prompt_messages)
    return constraint_count(instr) + math.log2(1 + len(instr.split()) / 20) + 0.5 * max(0, user_turns - 1)


# ------------------------------------------------------------------------------------------- tags

TAXONOMY: dict[str, tuple[str, ...]] = {
    "coding": (r"\bcode\b", r"\bpython\b", r"\bjavascript\b", r"\bfunction\b", r"\bsql\b", r"\bbug\b", r"\bregex\b",
               r"\bprogram\b", r"\bscript\b", r"\bcompile", r"\bclass\b", r"```", r"\bapi\b", r"\balgorithm\b"),
    "math": (r"\bcalculate\b", r"\bsolve\b", r"\bequation\b", r"\bsum\b", r"\bproduct of\b", r"\bprobability\b",
             r"\bintegral\b", r"\bderivative\b", r"\bprime\b", r"\d+\s*[-+*/^x×]\s*\d+", r"\bhow many\b", r"\bmath"),
    "writing": (r"\bwrite\b", r"\bessay\b", r"\bstory\b", r"\bpoem\b", r"\bletter\b", r"\bemail\b", r"\bblog\b",
                r"\bdraft\b", r"\bcompose\b", r"\bslogan\b"),
    "extraction": (r"\bextract\b", r"\bfind all\b", r"\blist (?:all|the)\b", r"\bidentify\b", r"\bpull out\b",
                   r"\bwhich (?:words|names|numbers)\b"),
    "classification": (r"\bclassify\b", r"\bcategor", r"\bsentiment\b", r"\bis (?:this|it) (?:positive|negative)\b",
                       r"\blabel\b", r"\bwhich (?:category|class)\b", r"\bspam\b"),
    "translation": (r"\btranslat", r"\bin (?:french|german|spanish|italian|chinese|japanese|english)\b",
                    r"\binto (?:french|german|spanish|italian|chinese|japanese|english)\b"),
    "formatting": (r"\bjson\b", r"\byaml\b", r"\bcsv\b", r"\bmarkdown\b", r"\btable\b", r"\bbullet", r"\bformat",
                   r"\buppercase\b", r"\blowercase\b", r"\bnumbered list\b"),
    "summarization": (r"\bsummar", r"\btl;?dr\b", r"\bin (?:one|a) sentence\b", r"\bcondense\b", r"\bkey points\b"),
    "qa": (r"^\s*(?:what|who|when|where|why|how|which)\b", r"\bexplain\b", r"\bdefine\b", r"\bwhat is\b"),
    "rewriting": (r"\brewrite\b", r"\brephrase\b", r"\bparaphrase\b", r"\bedit\b", r"\bcorrect (?:the )?grammar\b",
                  r"\bsimplify\b", r"\bmake (?:it|this) (?:shorter|longer|formal|informal)\b"),
    "brainstorming": (r"\bideas?\b", r"\bbrainstorm\b", r"\bsuggest\b", r"\bcome up with\b", r"\brecommend"),
    "reasoning": (r"\bstep by step\b", r"\breason", r"\blogic", r"\bpuzzle\b", r"\bdeduce\b", r"\bif .+ then\b"),
}
_TAGS = {tag: re.compile("|".join(pats), re.IGNORECASE | re.MULTILINE) for tag, pats in TAXONOMY.items()}


def tags_of(conv: Conversation) -> list[str]:
    instr = instruction_text(conv)
    return [tag for tag, rx in _TAGS.items() if rx.search(instr)]


def tag_coverage(convs: Iterable[Conversation], taxonomy: Sequence[str] = tuple(TAXONOMY)) -> dict[str, Any]:
    """How many examples carry each tag, how many tags of the taxonomy are covered at all, and how
    many examples have no tag. Uses meta["tags"] when present, else computes the tags."""
    counts: Counter = Counter()
    n = untagged = 0
    for c in convs:
        n += 1
        tags = c.meta.get("tags")
        tags = tags_of(c) if tags is None else tags
        counts.update(tags)
        untagged += not tags
    covered = [t for t in taxonomy if counts[t]]
    return {"examples": n, "per_tag": {t: counts[t] for t in taxonomy}, "covered": len(covered),
            "taxonomy_size": len(taxonomy), "coverage": len(covered) / max(1, len(taxonomy)), "untagged": untagged}


# ---------------------------------------------------------------------------------- score blocks

class ComplexityScoreConfig(BlockConfig):
    type: Literal["complexity_score"] = "complexity_score"


class ComplexityScore(Block):
    Config = ComplexityScoreConfig

    def run(self, conversations: Iterable[Conversation]) -> Iterator[Conversation]:
        for conv in conversations:
            self.stats.seen += 1
            yield conv.with_meta(complexity=round(complexity(conv), 4))


class TagScoreConfig(BlockConfig):
    type: Literal["tags"] = "tags"


class TagScore(Block):
    Config = TagScoreConfig

    def run(self, conversations: Iterable[Conversation]) -> Iterator[Conversation]:
        counts: Counter = Counter()
        for conv in conversations:
            self.stats.seen += 1
            tags = tags_of(conv)
            counts.update(tags or ["(none)"])
            yield conv.with_meta(tags=tags)
        self.stats.notes["tag_counts"] = dict(counts.most_common())
        self.stats.notes["taxonomy_covered"] = f"{sum(counts[t] > 0 for t in TAXONOMY)}/{len(TAXONOMY)}"


class DiversityScoreConfig(BlockConfig):
    type: Literal["diversity_score"] = "diversity_score"
    batch_size: int = Field(64, ge=1)


class DiversityScore(Block):
    """meta["diversity"] = 1 - max cosine similarity to every earlier example (1.0 for the first).
    Keeps one embedding per row seen: O(n) memory, O(n) work per row."""

    Config = DiversityScoreConfig
    cfg: DiversityScoreConfig

    def __init__(self, config: DiversityScoreConfig | None = None, embedder=None, **kw):
        super().__init__(config, **kw)
        self.embedder = embedder

    def run(self, conversations: Iterable[Conversation]) -> Iterator[Conversation]:
        from sftlab.curate.dedup import _batches
        from sftlab.curate.embed import GrowingMatrix, get_embedder

        emb = self.embedder or get_embedder()
        seen = GrowingMatrix(emb.dim)
        for batch in _batches(conversations, self.cfg.batch_size):
            for conv, v in zip(batch, emb.encode(batch)):
                self.stats.seen += 1
                d = 1.0 - float((seen.rows @ v).max()) if seen.n else 1.0
                seen.append(v)
                yield conv.with_meta(diversity=round(d, 4))
