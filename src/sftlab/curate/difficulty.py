"""IFD difficulty score (Cherry LLM / Superfiltering, Li et al. 2024), computed with a small model.

For the last assistant answer A of a conversation with prompt Q:

    answer_loss       = mean cross-entropy of A's tokens given Q        (the chat-templated prompt)
    answer_loss_alone = mean cross-entropy of the SAME tokens given an empty user turn
    IFD               = answer_loss / answer_loss_alone

Both losses score exactly the same token ids (the answer plus the template's stop token, i.e. what
training would train) behind the same template scaffolding, so the ratio measures only how much
the instruction helps predict the answer:
  * IFD well below 1: the instruction makes the answer much easier (typical of a good pair);
  * IFD near 1: the answer is as predictable without the instruction (generic or easy);
  * IFD >= 1: the instruction does not help at all (an answer to another question, off-task text):
    Superfiltering drops these as misaligned, and then keeps the HIGHEST remaining IFDs as the most
    instruction-dependent (difficult) examples. Their finding that a 124M GPT-2 ranks data about as
    well as a 7B model is why a 135M model is the default scorer here.

The paper's "direct answer score" conditions on nothing; an instruction-tuned chat model is never
shown an answer without its chat scaffolding, so the unconditional context here is the template's
prompt for an empty user message (with the template's own default system prompt, if it has one).

Written to meta: "ifd", "answer_loss", "answer_loss_alone". Rows that cannot be scored (no assistant
answer, template refuses the content) are dropped with a reason and counted, never scored as 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Literal

from pydantic import Field, model_validator

from sftlab.conversation import Conversation
from sftlab.curate.blocks import Block, BlockConfig
from sftlab.errors import SftlabError
from sftlab.model import DEFAULT_MODEL


class IFDScoreConfig(BlockConfig):
    type: Literal["ifd_score"] = "ifd_score"
    model: str = Field(DEFAULT_MODEL, description="the scoring model (hub id, folder, .gguf or the embedded alias)")
    template: str = Field("auto", description="chat template: the tokenizer's own, or chatml | llama3 | alpaca")
    max_ifd: float | None = Field(None, gt=0, description="drop rows with IFD >= this (Superfiltering: 1.0); null = keep all")
    min_ifd: float | None = Field(None, ge=0, description="drop rows with IFD < this (too easy); null = keep all")
    max_len: int = Field(1024, ge=16, description="longer prompts are cut from the left (counted in the stats)")
    batch_tokens: int = Field(4096, ge=64, description="tokens per packed forward pass")
    chunk_rows: int = Field(64, ge=1, description="rows scored per chunk (the block streams chunk by chunk)")

    @model_validator(mode="after")
    def _bounds(self) -> IFDScoreConfig:
        if self.min_ifd is not None and self.max_ifd is not None and self.min_ifd >= self.max_ifd:
            raise ValueError(f"min_ifd ({self.min_ifd}) must be below max_ifd ({self.max_ifd})")
        return self


class IFDScore(Block):
    """Difficulty: IFD = loss of the answer given its instruction / loss of the same answer tokens after an empty user turn (Superfiltering), computed with a small model; meta ifd, answer_loss, answer_loss_alone; optional max_ifd / min_ifd filters (IFD >= 1: the instruction does not help, e.g. an answer to another question).

    Rows are packed into forward passes (position ids restart per row); tests/test_curate_ifd.py
    checks the packed scores against a one-row-at-a-time computation."""

    Config = IFDScoreConfig
    cfg: IFDScoreConfig

    def __init__(self, config: IFDScoreConfig | None = None, model=None, tokenizer=None, **kw):
        super().__init__(config, **kw)
        self.model, self.tokenizer = model, tokenizer

    def _load(self):
        if self.model is None:
            from sftlab.model import load_model, load_tokenizer
            from sftlab.templates import apply_template

            self.tokenizer = load_tokenizer(self.cfg.model)
            # without add_missing_tokens a template needing new tokens is a TemplateError (an untrained
            # new embedding would make every score meaningless)
            apply_template(self.tokenizer, self.cfg.template)
            self.model = load_model(self.cfg.model)
        self.model.eval()
        from sftlab.render import Renderer

        return Renderer(self.tokenizer, train_on="last_assistant")

    def run(self, conversations: Iterable[Conversation]) -> Iterator[Conversation]:
        from tqdm.auto import tqdm

        from sftlab.curate.dedup import _batches

        renderer = self._load()
        empty_prompt = renderer.render_prompt([{"role": "user", "content": ""}])
        ifds: list[float] = []
        bar = tqdm(desc="ifd_score", unit="row")
        self.stats.notes["prompt_cut_from_left"] = 0
        for chunk in _batches(conversations, self.cfg.chunk_rows):
            self.stats.seen += len(chunk)
            scored = self._score_chunk(renderer, empty_prompt, chunk)
            for conv, result in zip(chunk, scored):
                if isinstance(result, str):
                    self.stats.drop(conv, "unscorable", result)
                    continue
                loss, alone = result
                ifd = loss / alone if alone > 0 else math.inf
                ifds.append(ifd)
                out = conv.with_meta(ifd=round(ifd, 4), answer_loss=round(loss, 4), answer_loss_alone=round(alone, 4))
                if self.cfg.max_ifd is not None and ifd >= self.cfg.max_ifd:
                    self.stats.drop(out, "ifd_above_max", f"IFD {ifd:.3f} >= {self.cfg.max_ifd}: the instruction does not help predict the answer")
                elif self.cfg.min_ifd is not None and ifd < self.cfg.min_ifd:
                    self.stats.drop(out, "ifd_below_min", f"IFD {ifd:.3f} < {self.cfg.min_ifd}")
                else:
                    yield out
            bar.update(len(chunk))
        bar.close()
        if ifds:
            s = sorted(ifds)
            q = lambda p: round(s[min(len(s) - 1, int(p * len(s)))], 4)  # noqa: E731
            self.stats.notes["ifd_quantiles"] = {"p05": q(0.05), "p25": q(0.25), "p50": q(0.5), "p75": q(0.75), "p95": q(0.95)}
            self.stats.notes["ifd_at_least_1"] = sum(x >= 1 for x in ifds)

    def _score_chunk(self, renderer, empty_prompt: list[int], chunk: list[Conversation]) -> list[tuple[float, float] | str]:
        """(answer_loss, answer_loss_alone) per row, or the reason it cannot be scored."""
        from sftlab.render import Rendered

        results: list[tuple[float, float] | str] = [""] * len(chunk)
        pairs: list[tuple[int, Rendered, Rendered]] = []
        for i, conv in enumerate(chunk):
            if not conv.messages or conv.messages[-1].role != "assistant":
                results[i] = "no assistant answer to score"
                continue
            try:
                r = renderer.render(conv)
            except SftlabError as e:
                results[i] = f"template: {str(e).splitlines()[0]}"
                continue
            if 1 not in r.loss_mask:
                results[i] = "the answer has no trained tokens"
                continue
            first = r.loss_mask.index(1)
            last = len(r.loss_mask) - 1 - r.loss_mask[::-1].index(1)
            if 0 in r.loss_mask[first:last + 1]:
                results[i] = "the last answer is not one contiguous trained span"
                continue
            answer = r.input_ids[first:last + 1]  # answer + stop token; template text after it is not scored
            keep_prompt = max(1, self.cfg.max_len - len(answer))
            prompt = r.input_ids[:first]
            if len(prompt) > keep_prompt:
                prompt = prompt[-keep_prompt:]
                self.stats.notes["prompt_cut_from_left"] += 1
            cond = Rendered(prompt + answer, [0] * len(prompt) + [1] * len(answer))
            alone = Rendered(empty_prompt + answer, [0] * len(empty_prompt) + [1] * len(answer))
            pairs.append((i, cond, alone))
        if pairs:
            losses = mean_answer_losses(self.model, [p for _, c, a in pairs for p in (c, a)], self.cfg.batch_tokens)
            for k, (i, _, _) in enumerate(pairs):
                results[i] = (losses[2 * k], losses[2 * k + 1])
        return results


def mean_answer_losses(model, rows: list, batch_tokens: int) -> list[float]:
    """Mean cross-entropy over each row's trained tokens (evaluate.perplexity.packed_loss_sums,
    forwards of at most `batch_tokens` tokens or the longest row)."""
    from sftlab.evaluate.perplexity import packed_loss_sums

    sums, counts = packed_loss_sums(model, rows, max(batch_tokens, max(len(r) for r in rows)))
    return [float(s / n) if n else math.nan for s, n in zip(sums, counts)]
