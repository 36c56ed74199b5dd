"""Text generation with the chat template: batched (left padding) for evaluation, streamed for chat.

Prompts are rendered by the same Renderer as training, and generation stops at the template's
end-of-turn token, so what a tuned model learned to emit is exactly what ends its answers here.
Prompts with images (a vision-language model): each `<image>` placeholder is expanded to the image's
tokens as in training, and the images' pixel_values go to `model.generate` (sftlab.multimodal.use).

`AnswerStream` (what `stream_answer` returns) generates in a background thread and can be stopped
between two tokens: by `should_stop()` (the server's client-gone and shutdown flags) or by leaving
the loop early; in both cases the model stops too, it does not run on unseen to max_new_tokens.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from sftlab.conversation import Conversation
from sftlab.render import Renderer


@dataclass
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0
    # OpenAI's additive penalties on tokens already generated (not the prompt), as vLLM applies them:
    # logit -= frequency_penalty * count + presence_penalty * (count > 0). Both 0 = off.
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> added to its logit

    def generate_kwargs(self, prompt_len: int = 0) -> dict:
        """`model.generate` keyword arguments. Penalties and biases are applied before temperature and
        top-p (as OpenAI and vLLM do); transformers runs custom processors after its own, so when any
        is set, temperature and top-p are passed as processors too, in that order."""
        procs = []
        if self.presence_penalty or self.frequency_penalty or self.logit_bias:
            procs.append(OpenAIPenalties(prompt_len, self.presence_penalty, self.frequency_penalty, self.logit_bias))
        if not procs:
            if self.temperature <= 0:
                return {"do_sample": False}
            return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        if self.temperature <= 0:
            return {"do_sample": False, "logits_processor": LogitsProcessorList(procs)}
        if self.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(self.temperature))
        if self.top_p < 1.0:
            procs.append(TopPLogitsWarper(self.top_p))
        return {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "logits_processor": LogitsProcessorList(procs)}


class OpenAIPenalties:
    """presence/frequency penalties over the generated tokens (ids after `prompt_len`) and logit_bias."""

    def __init__(self, prompt_len: int, presence: float, frequency: float, bias: dict[int, float]):
        self.prompt_len, self.presence, self.frequency = prompt_len, presence, frequency
        self.bias_ids = torch.tensor(list(bias), dtype=torch.long)
        self.bias_values = torch.tensor(list(bias.values()), dtype=torch.float32)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        if len(self.bias_ids):
            scores[:, self.bias_ids.to(scores.device)] += self.bias_values.to(scores.device, scores.dtype)
        generated = input_ids[:, self.prompt_len :]
        if generated.shape[1] and (self.presence or self.frequency):
            counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
            scores -= self.frequency * counts + self.presence * (counts > 0).to(scores.dtype)
        return scores


def context_length(model) -> int | None:
    """The most positions the model was built for (prompt + answer), from its config; None if unknown."""
    cfg = getattr(model, "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
        value = getattr(cfg, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def encode_prompt(renderer: Renderer, prompt: list[dict] | Conversation, vision=None) -> tuple[list[int], dict]:
    """(prompt ids, extra model inputs). A Conversation with images (one `<image>` placeholder per image
    in its text) needs `vision` (a sftlab.multimodal.vision.VisionInputs): its placeholders are
    expanded to the image tokens and its images become {"pixel_values": ...}; otherwise {}."""
    if isinstance(prompt, Conversation):
        messages, images = prompt.to_dicts(), prompt.images
    else:
        messages, images = list(prompt), ()
    if vision is None and not images:
        return renderer.render_prompt(messages), {}
    from sftlab.multimodal.use import prompt_inputs

    return prompt_inputs(vision, renderer, messages, images)


def model_inputs(model, rows: list[dict]) -> dict:
    """The extra inputs of a batch's rows (pixel_values, ...), concatenated in row order along dim 0 (the
    order transformers' LLaVA scatters image features into image tokens), floats in the model's dtype."""
    rows = [r for r in rows if r]
    if not rows:
        return {}
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    out = {}
    for k in rows[0]:
        v = torch.cat([r[k] for r in rows], dim=0)
        out[k] = v.to(dtype) if v.is_floating_point() else v
    return out


@torch.no_grad()
def generate_batch(
    model,
    renderer: Renderer,
    prompts: list[list[dict] | Conversation],
    params: SamplingParams = SamplingParams(),
    batch_size: int = 16,
    progress: bool = True,
    vision=None,
) -> list[str]:
    """Answers to many prompts (each a list of {"role","content"} ending before the answer, or a
    Conversation: with images, `vision` is the model's VisionInputs; see encode_prompt).

    Prompts are sorted by length so each batch pads little; results come back in input order.
    """
    tok = renderer.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else renderer.stop_token_id
    pairs = [encode_prompt(renderer, p, vision) for p in prompts]
    encoded = [ids for ids, _ in pairs]
    extras = [x for _, x in pairs]
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
        device = next(model.parameters()).device  # a model on a GPU (e.g. evaluated during training) gets its inputs there
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=att.to(device),
            max_new_tokens=params.max_new_tokens,
            eos_token_id=renderer.stop_token_ids,
            pad_token_id=pad_id,
            **{k: v.to(device) for k, v in model_inputs(model, [extras[i] for i in idx]).items()},
            **params.generate_kwargs(prompt_len=width),
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


def stream_answer(model, renderer: Renderer, messages: list[dict], params: SamplingParams = SamplingParams(),
                  should_stop: Callable[[], bool] | None = None, *, images=(), vision=None) -> AnswerStream:
    """The answer's text piece by piece as it is generated (for chat and the server): iterate it.
    `images` (paths, data: URLs or PIL images), one per `<image>` placeholder in the messages' text,
    need `vision`, the model's VisionInputs."""
    if not images and vision is None:
        return AnswerStream(model, renderer, renderer.render_prompt(messages), params, should_stop)
    from sftlab.multimodal.use import prompt_inputs

    ids, extra = prompt_inputs(vision, renderer, messages, images)
    return AnswerStream(model, renderer, ids, params, should_stop, inputs=model_inputs(model, [extra]))


class _StopWhen:
    """A transformers stopping criterion, called after every generated token: records progress in the
    AnswerStream and stops generation once it is abandoned or its `should_stop()` is true."""

    def __init__(self, stream: AnswerStream):
        self.stream = stream

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        s = self.stream
        s.completion_tokens = input_ids.shape[1] - s.prompt_tokens
        s.last_token = int(input_ids[0, -1])
        stop = s._abandoned.is_set() or (s.should_stop is not None and bool(s.should_stop()))
        s.cancelled = s.cancelled or stop
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class AnswerStream:
    """One answer generated in a background thread; iterating it (once) yields its text pieces.

    Generation ends at an end-of-turn token, after max_new_tokens, or between two tokens once
    `should_stop()` is true or the consumer leaves the loop (break, close, an exception): the model
    stops then, the thread is joined. Afterwards: `completion_tokens` (tokens generated, the stop
    token included) and `finish_reason`: "stop" (end of turn), "length" or "cancelled".
    The prompt's prefill is one forward pass and cannot be interrupted; every later token can.
    """

    def __init__(self, model, renderer: Renderer, prompt_ids: list[int], params: SamplingParams,
                 should_stop: Callable[[], bool] | None = None, inputs: dict | None = None):
        self.model, self.renderer, self.prompt_ids, self.params = model, renderer, list(prompt_ids), params
        self.inputs = dict(inputs or {})  # extra model inputs of the prompt (pixel_values of its images)
        self.should_stop = should_stop
        self.prompt_tokens = len(self.prompt_ids)
        self.completion_tokens = 0
        self.last_token: int | None = None
        self.cancelled = False
        self.finish_reason: str | None = None
        self._abandoned = threading.Event()
        self._started = False

    def __iter__(self) -> Iterator[str]:
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        if self._started:
            raise RuntimeError("an AnswerStream can be iterated only once")
        self._started = True
        tok = self.renderer.tokenizer
        ids = torch.tensor([self.prompt_ids])
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True)
        kwargs = dict(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=self.params.max_new_tokens,
            eos_token_id=self.renderer.stop_token_ids,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else self.renderer.stop_token_id,
            streamer=streamer,
            stopping_criteria=StoppingCriteriaList([_StopWhen(self)]),
            **self.inputs,
            **self.params.generate_kwargs(prompt_len=len(self.prompt_ids)),
        )
        errors: list[BaseException] = []

        def run():
            try:
                if self.params.temperature > 0:
                    torch.manual_seed(self.params.seed)
                with torch.no_grad():
                    self.model.generate(**kwargs)
            except BaseException as e:  # surfaced in the consumer's thread below
                errors.append(e)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True, name="sftlab-generate")
        thread.start()
        try:
            yield from streamer
        finally:
            self._abandoned.set()  # no effect once generation has ended; stops it otherwise
            thread.join()
            if self.last_token is not None and self.last_token in self.renderer.stop_token_ids:
                self.finish_reason = "stop"
            elif self.cancelled:
                self.finish_reason = "cancelled"
            else:
                self.finish_reason = "length"
        if errors:
            raise errors[0]
