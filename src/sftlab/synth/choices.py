"""Closed-set answers from a local model: the log-probability of each allowed answer after a
forced prefix, instead of generating free text and parsing it.

A small judge (SmolLM2-135M) asked for "Score: N" or "[[A]]" mostly writes something else: in a
probe of 15 judge prompts it produced 0 parseable pairwise verdicts, repeated "The score is 5
out of 5" whatever the answer, and ran to max_tokens (200 tokens, ~1 min per batch on a loaded
CPU). Scoring the allowed answers directly always gives an answer and costs one forward pass:

    prompt (chat template, generation prompt) + prefix ("Score: ", "[[", "Rating: [[")
    -> log P(choice tokens + suffix tokens | prompt + prefix) for every choice

This is the probability-weighted judging of G-Eval (Liu et al. 2023), generalised to answers of
several tokens ("10" is two tokens in SmolLM2's tokenizer): the prompt is run once with the KV
cache, the cache is repeated once per choice, and the choices' tokens run as one small batch.
`mass` (the summed probability of all choices) says how much the model itself put on the
allowed answers; it is reported, never hidden, because a low mass means the verdict is the best
of answers the model did not want to give.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from sftlab.errors import ConfigError


@dataclass
class ChoiceResult:
    choices: list[str]
    logprobs: list[float]  # log P(choice + suffix | prompt + prefix), over the full vocabulary

    @property
    def mass(self) -> float:
        """Probability the model put on the allowed answers together (<= 1)."""
        return float(sum(math.exp(lp) for lp in self.logprobs))

    @property
    def probs(self) -> dict[str, float]:
        """Renormalised over the allowed answers (sums to 1)."""
        top = max(self.logprobs)
        w = [math.exp(lp - top) for lp in self.logprobs]
        s = sum(w)
        return {c: x / s for c, x in zip(self.choices, w)}

    @property
    def best(self) -> str:
        return self.choices[max(range(len(self.choices)), key=lambda i: self.logprobs[i])]

    def expected(self) -> float:
        """Probability-weighted value when the choices are numbers (G-Eval's score)."""
        return float(sum(float(c) * p for c, p in self.probs.items()))


def choice_tokens(tokenizer, prefix: str, choices: list[str], suffix: str = "") -> tuple[list[int], list[list[int]]]:
    """Token ids of the forced prefix, and of each choice + suffix as they follow it.

    Each answer is tokenized whole (prefix + choice + suffix), as the tokenizer would write it;
    the forced prefix is the longest token prefix shared by the prefix alone and every answer.
    That handles tokenizers that merge a trailing space into the next token (GPT-2 style " 4"):
    "Score: " is then forced as "Score:" and the choices are " 1" ... " 5"."""
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    full = [enc(prefix + c + suffix) for c in choices]
    pre = enc(prefix)
    for f in full:
        k = 0
        while k < min(len(pre), len(f)) and pre[k] == f[k]:
            k += 1
        pre = pre[:k]
    conts = [f[len(pre):] for f in full]
    if len({tuple(c) for c in conts}) < len(conts):
        raise ConfigError(f"choices {choices} after prefix {prefix!r} tokenize to identical answers; they cannot be told apart")
    return pre, conts


@torch.no_grad()
def score_choices(model, renderer, conversations: list[list[dict]], prefix: str, choices: list[str],
                  suffix: str = "") -> list[ChoiceResult]:
    """For each conversation: log P(choice + suffix | rendered prompt + prefix) for every choice.

    Judge prompts share a long fixed preamble (chat template + judging instructions: ~200 of the
    ~500 tokens of a pairwise prompt), so the token prefix common to all conversations runs once
    and its KV cache is copied for each one. Then one conversation at a time (no padding, so no
    mask bookkeeping): the rest of its prompt runs keeping only the last position's logits (the
    vocabulary projection is ~20% of a SmolLM2-135M forward, needed here at one position), then
    the continuations run as one right-padded batch on copies of the cache; right padding is safe
    because only positions before each row's padding are read."""
    tok = renderer.tokenizer
    pre, conts = choice_tokens(tok, prefix, choices, suffix)
    n = len(conts)
    width = max(len(c) for c in conts)
    pad = tok.pad_token_id if tok.pad_token_id is not None else renderer.stop_token_id
    cont = torch.full((n, width), pad, dtype=torch.long)
    for i, c in enumerate(conts):
        cont[i, : len(c)] = torch.tensor(c)
    encoded = [renderer.render_prompt(m) + pre for m in conversations]
    if not encoded:
        return []
    shared = _common_prefix_len(encoded)
    shared = min(shared, min(len(e) for e in encoded) - 1)  # every conversation keeps >= 1 token to run
    was_training = model.training
    model.eval()
    out: list[ChoiceResult] = []
    try:
        base = None
        kw = _cache_kwarg(model)
        if shared >= 8:  # below that, copying the cache costs about what it saves
            base = _cache_of(model(input_ids=torch.tensor([encoded[0][:shared]]), use_cache=True, logits_to_keep=1))
        else:
            shared = 0
        for ids in encoded:
            cache = copy.deepcopy(base) if base is not None else None
            first = model(input_ids=torch.tensor([ids[shared:]]), **{kw: cache}, use_cache=True, logits_to_keep=1,
                          position_ids=torch.arange(shared, len(ids)).unsqueeze(0))
            lp_first = torch.log_softmax(first.logits[0, -1].float(), -1)  # (vocab,)
            total = lp_first[cont[:, 0]].clone()
            if width > 1:
                cache = _cache_of(first)
                cache.batch_repeat_interleave(n)
                pos = torch.arange(len(ids), len(ids) + width - 1).expand(n, -1)
                rest = model(input_ids=cont[:, :-1], **{kw: cache}, position_ids=pos, use_cache=True)
                lp_rest = torch.log_softmax(rest.logits.float(), -1)  # (n, width-1, vocab)
                for i, c in enumerate(conts):
                    for t in range(1, len(c)):
                        total[i] += lp_rest[i, t - 1, c[t]]
            out.append(ChoiceResult(list(choices), [float(x) for x in total]))
    finally:
        if was_training:
            model.train()
    return out


def _common_prefix_len(seqs: list[list[int]]) -> int:
    first = seqs[0]
    k = min(len(s) for s in seqs)
    for s in seqs[1:]:
        j = 0
        while j < k and s[j] == first[j]:
            j += 1
        k = j
    return k


def _cache_kwarg(model) -> str:
    """The forward's KV-cache argument: `cache` in transformers >= 5.2x, `past_key_values` before
    (still accepted there, with a FutureWarning, until 5.40)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
