"""Text generation with the chat template: batched (left padding) for evaluation, streamed for chat.

Prompts are rendered by the same Renderer as training, and generation stops at the template's
end-of-turn token, so what a tuned model learned to emit is exactly what ends its answers here.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from sftlab.render import Renderer


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0

    def generate_kwargs(self) -> dict:
        if self.temperature <= 0:
            return {"do_sample": False}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}


@torch.no_grad()
def generate_batch(
    model,
    renderer: Renderer,
    prompts: list[list[dict]],
    params: SamplingParams = SamplingParams(),
    batch_size: int = 16,
    progress: bool = True,
) -> list[str]:
    """Answers to many prompts (each a list of {"role","content"} ending before the answer).

    Prompts are sorted by length so each batch pads little; results come back in input order.
    """
    tok = renderer.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else renderer.stop_token_id
    encoded = [renderer.render_prompt(p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    results: list[str] = [""] * len(encoded)
    was_training = model.training
    model.eval()
    if params.temperature > 0:
        torch.manual_seed(params.seed)
    bar = tqdm(total=len(encoded), desc="generate", unit="prompt", disable=not progress, leave=False)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        att = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            seq = encoded[i]
            ids[row, width - len(seq) :] = torch.tensor(seq)
            att[row, width - len(seq) :] = 1
        out = model.generate(
            input_ids=ids,
            attention_mask=att,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=renderer.stop_token_ids,
            pad_token_id=pad_id,
            **params.generate_kwargs(),
        )
        for row, i in enumerate(idx):
            results[i] = decode_answer(tok, out[row, width:].tolist(), renderer.stop_token_ids)
        bar.update(len(idx))
    bar.close()
    if was_training:
        model.train()
    return results


def decode_answer(tokenizer, new_ids: list[int], stop_ids: list[int]) -> str:
    """Text up to (not including) the first stop token."""
    for k, t in enumerate(new_ids):
        if t in stop_ids:
            new_ids = new_ids[:k]
            break
    return tokenizer.decode(new_ids, skip_special_tokens=True).strip()


def stream_answer(model, renderer: Renderer, messages: list[dict], params: SamplingParams = SamplingParams()) -> Iterator[str]:
    """Yield the answer's text piece by piece as it is generated (for chat and the server)."""
    from transformers import TextIteratorStreamer

    tok = renderer.tokenizer
    ids = torch.tensor([renderer.render_prompt(messages)])
    streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=params.max_new_tokens,
        eos_token_id=renderer.stop_token_ids,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else renderer.stop_token_id,
        streamer=streamer,
        **params.generate_kwargs(),
    )
    if params.temperature > 0:
        torch.manual_seed(params.seed)
    errors: list[BaseException] = []

    def run():
        try:
            with torch.no_grad():
                model.generate(**kwargs)
        except BaseException as e:  # surfaced in the caller's thread below
            errors.append(e)
            streamer.end()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield from streamer
    thread.join()
    if errors:
        raise errors[0]
