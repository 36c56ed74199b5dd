"""A deliberately noisy training pool built from the built-in task suite (seen families only).

The curation ablation needs data whose flaws are KNOWN: every row records what was done to it in
meta["noise"] ("clean" for untouched rows), so a report can count what each selection kept.

| noise kind       | what the row is                                                           |
|------------------|---------------------------------------------------------------------------|
| exact_duplicate  | a byte-for-byte copy of a clean row                                       |
| near_duplicate   | a clean row with its prompt re-cased, re-spaced or re-punctuated          |
| wrong_answer     | a fresh prompt answered with another example's answer of the same family  |
| truncated        | a fresh prompt whose answer (2+ chars) is cut to its first half           |
| off_task         | a fresh prompt answered with the answer to another family's question      |
| refusal          | a fresh prompt answered with "As an AI language model, I cannot ..."      |
| trivial          | a fresh prompt answered with "OK." / "Sure!" / "I don't know." ...        |
| repeated         | a fresh prompt whose answer is repeated 25-40 times                       |

"Fresh" prompts are train-split prompts not used by any clean row, so a bad row never shares its
prompt with a good one (a model cannot learn the right answer for that prompt elsewhere). Everything
comes from `train_eval_split(seed=0)`'s TRAIN part: no eval prompt ever enters the pool.
Deterministic: the same config gives the same pool, row for row.
"""

from __future__ import annotations

from random import Random

from pydantic import Field, model_validator

from sftlab.configbase import Strict
from sftlab.conversation import Conversation, Message

NOISE_KINDS = ("exact_duplicate", "near_duplicate", "wrong_answer", "truncated", "off_task", "refusal", "trivial",
               "repeated")

# 40% noise in all: duplicates are the commonest flaw of scraped/synthetic instruction data, so
# they get the largest share; each content flaw gets 3-6%.
DEFAULT_NOISE = {"exact_duplicate": 0.08, "near_duplicate": 0.08, "wrong_answer": 0.06, "truncated": 0.05,
                 "off_task": 0.04, "refusal": 0.03, "trivial": 0.03, "repeated": 0.03}

REFUSALS = (
    "As an AI language model, I cannot help with that request.",
    "I'm sorry, but I cannot assist with this task.",
    "As an AI language model, I do not have the ability to do that.",
)
TRIVIAL = ("OK.", "Sure!", "I don't know.", "Done.", "Yes.")


class NoisyPoolConfig(Strict):
    size: int = Field(1200, ge=10, description="rows in the pool (clean + noisy)")
    noise: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_NOISE),
                                    description=f"fraction of the pool per noise kind ({', '.join(NOISE_KINDS)})")
    seed: int = Field(0, description="which clean rows, which noise, and the order")
    n_train_per_family: int = Field(200, ge=10, description="train prompts per seen family to draw from")

    @model_validator(mode="after")
    def _check(self) -> NoisyPoolConfig:
        unknown = sorted(set(self.noise) - set(NOISE_KINDS))
        if unknown:
            raise ValueError(f"unknown noise kinds {unknown}; use {list(NOISE_KINDS)}")
        bad = {k: v for k, v in self.noise.items() if not 0 <= v < 1}
        if bad:
            raise ValueError(f"noise fractions must be in [0, 1): {bad}")
        if sum(self.noise.values()) >= 1:
            raise ValueError(f"noise fractions sum to {sum(self.noise.values()):.2f}; they must leave room for clean rows (< 1)")
        return self

    def counts(self) -> dict[str, int]:
        """Rows per kind; rounding goes to the clean rows so the total is exactly `size`."""
        out = {k: int(round(self.size * self.noise.get(k, 0.0))) for k in NOISE_KINDS}
        out = {k: v for k, v in out.items() if v}
        out["clean"] = self.size - sum(out.values())
        return out


def build_noisy_pool(cfg: NoisyPoolConfig | None = None) -> list[Conversation]:
    """The pool, shuffled; each row has meta["noise"] and meta["pool_index"] (its position)."""
    from sftlab.builtin.tasks import train_eval_split

    cfg = cfg or NoisyPoolConfig()
    counts = cfg.counts()
    rng = Random(f"noisy-pool:{cfg.seed}")
    train = train_eval_split(seed=0, n_train_per_family=cfg.n_train_per_family, n_eval_per_family=40)[0]
    order = list(range(len(train)))
    rng.shuffle(order)
    fresh_needed = sum(v for k, v in counts.items() if k not in ("clean", "exact_duplicate", "near_duplicate"))
    # x2 headroom: truncation skips prompts whose answer is one character long
    if counts["clean"] + 2 * fresh_needed > len(train):
        raise ValueError(f"noisy pool of {cfg.size} needs {counts['clean'] + fresh_needed} distinct train prompts, "
                         f"the suite has {len(train)}; fix: raise n_train_per_family or lower size")
    clean = [train[i] for i in order[:counts["clean"]]]
    fresh = iter(train[i] for i in order[counts["clean"]:])
    by_family: dict[str, list[Conversation]] = {}
    for c in train:
        by_family.setdefault(c.meta["family"], []).append(c)

    rows: list[Conversation] = [_tag(c, "clean", "") for c in clean]
    for _ in range(counts.get("exact_duplicate", 0)):
        src = rng.choice(clean)
        rows.append(_tag(src, "exact_duplicate", f"copy of {src.source}"))
    for _ in range(counts.get("near_duplicate", 0)):
        src = rng.choice(clean)
        how, prompt = _near_variant(src.messages[0].content, rng)
        rows.append(_tag(_with(src, prompt=prompt), "near_duplicate", f"{how} of {src.source}"))
    for _ in range(counts.get("wrong_answer", 0)):
        c = next(fresh)
        others = [o for o in by_family[c.meta["family"]] if o.last_response != c.last_response]
        rows.append(_tag(_with(c, answer=rng.choice(others).last_response), "wrong_answer",
                         f"gold {c.last_response!r}"))
    for _ in range(counts.get("truncated", 0)):
        c = next(fresh)
        while len(c.last_response) < 2:  # a 1-character answer cannot be cut: take the next prompt
            c = next(fresh)
        ans = c.last_response
        rows.append(_tag(_with(c, answer=ans[:max(1, len(ans) // 2)]), "truncated", f"gold {ans!r}"))
    for _ in range(counts.get("off_task", 0)):
        c = next(fresh)
        other_family = rng.choice(sorted(f for f in by_family if f != c.meta["family"]))
        other = rng.choice(by_family[other_family])
        rows.append(_tag(_with(c, answer=other.last_response), "off_task", f"answer of a {other_family} question"))
    for kind, answers in (("refusal", REFUSALS), ("trivial", TRIVIAL)):
        for _ in range(counts.get(kind, 0)):
            c = next(fresh)
            rows.append(_tag(_with(c, answer=rng.choice(answers)), kind, f"gold {c.last_response!r}"))
    for _ in range(counts.get("repeated", 0)):
        c = next(fresh)
        rows.append(_tag(_with(c, answer=" ".join([c.last_response] * rng.randint(25, 40))), "repeated",
                         f"gold {c.last_response!r}"))
    rng.shuffle(rows)
    return [Conversation(r.messages, r.source, f"pool-{i:05d}", {**r.meta, "pool_index": i})
            for i, r in enumerate(rows)]


def noise_counts(convs: list[Conversation]) -> dict[str, int]:
    """meta["noise"] -> rows (rows without it count as "unknown")."""
    out: dict[str, int] = {}
    for c in convs:
        k = str(c.meta.get("noise", "unknown"))
        out[k] = out.get(k, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != "clean", kv[0])))


def _tag(c: Conversation, kind: str, detail: str) -> Conversation:
    return Conversation(c.messages, c.source, c.id, {**c.meta, "noise": kind, "noise_detail": detail})


def _with(c: Conversation, prompt: str | None = None, answer: str | None = None) -> Conversation:
    user, assistant = c.messages[0], c.messages[-1]
    msgs = (Message(user.role, prompt if prompt is not None else user.content),
            Message(assistant.role, answer if answer is not None else assistant.content))
    return Conversation(msgs, c.source, "", dict(c.meta))


def _near_variant(prompt: str, rng: Random) -> tuple[str, str]:
    """A prompt that normalises (lowercase, no punctuation, collapsed spaces) to the same text."""
    # Only the first word changes case: later words may be the task's input, whose case matters
    # (uppercase, reverse_word answers are case-sensitive).
    how = rng.choice(("first_word_case", "extra_spaces", "punctuation"))
    if how == "extra_spaces":
        out = "  " + prompt.replace(" ", "   ", 3) + " \n"
    elif how == "punctuation":
        out = prompt.rstrip(".!?:") + "!!" if prompt.rstrip()[-1:] in ".!?:" else prompt + " ..."
    else:
        first, sep, rest = prompt.partition(" ")
        out = (first.lower() if first != first.lower() else first.upper()) + sep + rest
    if out == prompt:  # e.g. already lower case: fall back to spacing, which always changes the text
        out = prompt + "  "
    return how, out
