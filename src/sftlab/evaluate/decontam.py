"""Decontamination: which eval prompts share a word n-gram with the training data.

The usual check (GPT-3 and Llama reports use 8- to 13-grams): lowercase, split into words,
and flag an eval prompt if any of its n consecutive words also occur consecutively in a
training conversation. n-grams never span two messages. Flagged prompts are listed with the
n-gram that matched, so a user can judge whether it is a real leak or a shared template phrase.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sftlab.conversation import Conversation

WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def ngrams(text: str, n: int) -> Iterable[tuple[str, ...]]:
    w = words(text)
    return (tuple(w[i : i + n]) for i in range(len(w) - n + 1))


@dataclass
class ContaminatedPrompt:
    id: str
    where: str
    ngram: str  # the first matching n-gram, as words joined by spaces
    prompt: str


@dataclass
class DecontamReport:
    n: int
    eval_prompts: int
    train_conversations: int
    train_ngrams: int
    contaminated: list[ContaminatedPrompt] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return len(self.contaminated) / self.eval_prompts if self.eval_prompts else 0.0

    def summary(self) -> str:
        return (
            f"decontamination ({self.n}-grams of lowercased words): {len(self.contaminated)} of "
            f"{self.eval_prompts} eval prompts ({100 * self.fraction:.1f}%) share an n-gram with "
            f"{self.train_conversations} training conversations"
        )

    def to_json(self) -> dict:
        return {
            "ngram": self.n,
            "eval_prompts": self.eval_prompts,
            "train_conversations": self.train_conversations,
            "train_ngrams": self.train_ngrams,
            "contaminated_count": len(self.contaminated),
            "contaminated_fraction": round(self.fraction, 6),
            "contaminated": [c.__dict__ for c in self.contaminated],
        }


def eval_text(item: Conversation | str) -> list[str]:
    """The texts of an eval item checked for overlap: every message of a conversation (prompt and
    reference answer — a leaked answer is contamination too), or the prompt string itself."""
    if isinstance(item, Conversation):
        return [m.content for m in item.messages]
    return [item]


def decontaminate(
    train: Iterable[Conversation], eval_items: list[tuple[str, str, Conversation | str]], n: int = 8
) -> DecontamReport:
    """eval_items: (id, where, conversation or prompt text). Returns every contaminated item."""
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    seen: set[tuple[str, ...]] = set()
    n_train = 0
    for conv in train:
        n_train += 1
        for m in conv.messages:
            seen.update(ngrams(m.content, n))
    report = DecontamReport(n=n, eval_prompts=len(eval_items), train_conversations=n_train, train_ngrams=len(seen))
    for item_id, where, item in eval_items:
        texts = eval_text(item)
        hit = next((g for t in texts for g in ngrams(t, n) if g in seen), None)
        if hit is not None:
            prompt = "\n".join(m.content for m in item.prompt_messages) if isinstance(item, Conversation) else item
            report.contaminated.append(ContaminatedPrompt(item_id, where, " ".join(hit), prompt))
    return report
