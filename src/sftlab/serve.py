"""`sftlab serve MODEL`: an OpenAI-compatible chat server for one model (FastAPI + uvicorn).

    POST /v1/chat/completions   see "Parameters" below
    GET  /v1/models
    GET  /health                {"status", "generating", "waiting"}; needs no API key

Scheduling: one generation at a time, a bounded queue, everything else always answered.
  - Generation runs in its own thread, one request at a time: one model on a CPU (or one small
    GPU) gains nothing from interleaving requests, and batching them would need a KV cache per
    request; one at a time also keeps `seed` reproducible (sampling uses torch's global RNG).
  - A generation request arriving while one runs waits its turn, first come first served, for at
    most --queue-timeout seconds, and at most --max-waiting requests wait; beyond either it gets
    503 "server busy" with Retry-After (OpenAI clients and `sftlab eval --endpoint` retry those).
    A client that gives up while waiting leaves the queue. Without the bound one slow client could
    park any number of requests (and threads, sockets, memory) behind it.
  - /v1/models and /health never wait for the generation slot.
Bounded work per request: prompt + max_tokens must fit the model's context
(max_position_embeddings); a prompt that alone fills it, or a max_tokens that does not fit, is a
400 with the numbers (as OpenAI and vLLM do), and without max_tokens the answer is at most
--max-tokens (default 512) or what fits.
Stopping: generation checks, between every two tokens, whether its client disconnected or closed
the stream, whether a stop string was seen, and whether the server is shutting down (SIGINT or
SIGTERM); any of them ends it at once, so the slot is free again and shutdown takes about one
token's time instead of waiting for max_tokens.
Prompts: message text containing one of the tokenizer's special-token strings (e.g. "<|im_end|>")
is refused with 400, exactly as training refuses it (render.py): it would be read as a real control
token and let a user fake a turn boundary or a system message.

Images (a vision-language model: a VLM folder, or a LoRA adapter on one): user messages may hold
OpenAI image_url parts. Accepted by default: data:image/...;base64, URLs only; local paths and file://
URLs need `--allow-local-images`, http(s) URLs `--allow-remote-images` (the server reads or fetches
nothing a client names unless told to). At most --max-images (8) per request; an image over 20 MP
(width x height, read from its header before decoding) is refused: a small file can decode to
gigabytes. Decoding runs in a worker thread, never on the event loop. A text-only model refuses image
parts with a 400 naming the part (param messages[i].content[j].image_url).

Parameters. Honoured: model (informational: the one loaded model answers), messages (system,
developer = system, user, assistant; text content or text parts; image_url parts for a
vision-language model), temperature, top_p, max_tokens,
max_completion_tokens, stop, seed, n (=1), stream, stream_options.include_usage,
presence_penalty and frequency_penalty (OpenAI's additive penalties over generated tokens, not
mapped to transformers' multiplicative repetition_penalty), logit_bias. Without `seed` every
request samples with a fresh random seed; the same seed gives the same text.
Refused with 400 because ignoring them would change what the client gets: n > 1, tools/functions
and tool_choice/function_call other than none, logprobs/top_logprobs, response_format other than
text, audio output. Accepted and ignored (they do not change the text), named in the response's
"warnings" list: user, metadata, store, service_tier, parallel_tool_calls, prediction,
reasoning_effort, a message's name. Any other parameter is a 400 (a typo is not silently ignored).

Errors use OpenAI's shape: {"error": {"message", "type", "param", "code"}}, so clients such as
the official `openai` package raise their usual exceptions with our message.
One log line per request on stderr: time, method, path, status, prompt and completion tokens,
finish reason, seconds (never message content). Status 499: the client went away first.
Bound to 127.0.0.1 by default; any other host prints a warning (and a second one without --api-key).
"""


import asyncio
import hmac
import json
import secrets
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sftlab.conversation import IMAGE_PLACEHOLDER

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
DEFAULT_MAX_TOKENS = 512
DEFAULT_MAX_WAITING = 16
DEFAULT_QUEUE_TIMEOUT_S = 120.0
# A model whose config names no context length (rare) still gets a bound on each answer.
UNKNOWN_CONTEXT_MAX_TOKENS = 4096
# How often a waiting request or a running one checks for a disconnect / shutdown.
POLL_S = 0.1
# uvicorn's backstop: after a signal, requests still open after this many seconds are cancelled.
GRACEFUL_SHUTDOWN_S = 5
# images per request and decoded pixels per image (a decompression-bomb guard), for vision-language models
DEFAULT_MAX_IMAGES = 8
DEFAULT_MAX_IMAGE_PIXELS = 20_000_000
IGNORED_PARAMS = ("user", "metadata", "store", "service_tier", "parallel_tool_calls", "prediction", "reasoning_effort")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]
    name: str | None = None
    # what the openai client puts on an assistant message it returned, when sent back as history:
    # accepted empty, refused when set (see ChatEngine._check_refused)
    refusal: str | None = None
    tool_calls: list[Any] | None = None
    function_call: Any = None
    annotations: list[Any] | None = None
    audio: Any = None

    @field_validator("content")
    @classmethod
    def _parts(cls, v):
        """OpenAI content parts: text parts are joined into one string; a list with image_url parts is
        kept (normalised to {"type": "text", "text"} / {"type": "image_url", "url"}) for ChatEngine.prepare,
        which refuses it for a text-only model and decodes the images for a vision-language one."""
        if not isinstance(v, list):
            return v
        parts, has_image = [], False
        for j, part in enumerate(v):
            kind = part.get("type")
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise ValueError(f"content[{j}]: a text part needs a string 'text'")
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image_url":
                ref = part.get("image_url")
                url = ref.get("url") if isinstance(ref, dict) else ref
                if not isinstance(url, str):
                    raise ValueError(f"content[{j}]: an image_url part needs image_url.url, a string "
                                     "(data:image/png;base64,...)")
                parts.append({"type": "image_url", "url": url})
                has_image = True
            else:
                raise ValueError(f"content[{j}]: content parts of type {kind!r} are not supported; "
                                 "only 'text' and 'image_url' parts are")
        return parts if has_image else "".join(p["text"] for p in parts)


class ChatRequest(BaseModel):
    # Unknown parameters are refused (400) rather than silently ignored.
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int = 1
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = Field(None, ge=-(2**63), lt=2**64)
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    # refused unless empty / off (ChatEngine._check_refused)
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    modalities: list[str] | None = None
    audio: Any = None
    # accepted, ignored, named in "warnings"
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    parallel_tool_calls: bool | None = None
    prediction: Any = None
    reasoning_effort: str | None = None


SUPPORTED_PARAMS = ("model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "n",
                    "stream", "stream_options", "seed", "presence_penalty", "frequency_penalty", "logit_bias")


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ClientGone(Exception):
    """The client disconnected before its answer was ready (logged as status 499)."""


class StopMatcher:
    """Cuts streamed text at the first stop string, holding back just enough characters to see one
    that straddles two chunks."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        if self.stopped:
            return ""
        self.buffer += piece
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.buffer = self.buffer[: min(hits)], ""
            return out
        cut = max(0, len(self.buffer) - self.hold)
        out, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out


class GenerationSlot:
    """One generation at a time; up to `max_waiting` requests wait for it, first come first served,
    each for at most `timeout_s`. Lives on the event loop: acquire() there; release() is handed to
    the loop by the generation thread when it ends (call_soon_threadsafe)."""

    def __init__(self, max_waiting: int, timeout_s: float):
        self.max_waiting, self.timeout_s = max_waiting, timeout_s
        self.busy = False
        self.waiters: deque[asyncio.Future] = deque()
        self.loop: asyncio.AbstractEventLoop | None = None

    async def acquire(self, gone: Callable[[], Awaitable[bool]], shutdown: threading.Event) -> None:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # a new server (tests reuse an app): start from a clean state
            self.loop, self.busy, self.waiters = loop, False, deque()
        if shutdown.is_set():
            raise _shutting_down()
        if not self.busy:
            self.busy = True
            return
        if len(self.waiters) >= self.max_waiting:
            raise ApiError(503, f"server busy: a generation is running and {len(self.waiters)} requests are already "
                                f"waiting (the limit, `sftlab serve --max-waiting`); retry later",
                           "server_error", code="server_busy", headers={"Retry-After": "1"})
        fut = loop.create_future()
        self.waiters.append(fut)
        deadline = loop.time() + self.timeout_s
        try:
            while not fut.done():
                await asyncio.wait([fut], timeout=POLL_S)
                if fut.done():
                    break
                if shutdown.is_set():
                    raise _shutting_down()
                if await gone():
                    raise ClientGone()
                if loop.time() >= deadline:
                    raise ApiError(503, f"server busy: waited {self.timeout_s:g} s for the running generation(s) to "
                                        "finish (`sftlab serve --queue-timeout`); retry later",
                                   "server_error", code="server_busy", headers={"Retry-After": "1"})
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # the slot was handed to us just as we gave up: pass it on
            else:
                fut.cancel()
                self.waiters.remove(fut)
            raise

    def release(self) -> None:
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # ownership passes straight to the next in line
                return
        self.busy = False


def _shutting_down() -> ApiError:
    return ApiError(503, "the server is shutting down; the generation was not run or was stopped",
                    "server_error", code="shutting_down")


@dataclass
class Prepared:
    """A validated request, ready to generate."""

    prompt_ids: list[int]
    params: Any  # sftlab.generate.SamplingParams
    stops: list[str]
    warnings: list[str] = field(default_factory=list)
    inputs: dict = field(default_factory=dict)  # extra model inputs: the images' pixel_values


class Job:
    """One generation running in its own thread; its results go to `queue` on the event loop as
    ("text", str) ..., then ("end", finish_reason) or ("error", exception)."""

    def __init__(self, engine: "ChatEngine", prepared: Prepared, loop: asyncio.AbstractEventLoop):
        self.engine, self.prepared, self.loop = engine, prepared, loop
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancel = threading.Event()  # set by the request side: client gone, handler ended
        self.stream = None  # the AnswerStream, once started
        self.finish_reason: str | None = None

    @property
    def completion_tokens(self) -> int:
        return self.stream.completion_tokens if self.stream is not None else 0

    def _put(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    def run(self) -> None:
        from sftlab.generate import AnswerStream

        engine = self.engine
        try:
            self.stream = AnswerStream(engine.model, engine.renderer, self.prepared.prompt_ids, self.prepared.params,
                                       should_stop=lambda: self.cancel.is_set() or engine.shutdown.is_set(),
                                       inputs=self.prepared.inputs)
            matcher = StopMatcher(self.prepared.stops)
            for piece in self.stream:
                out = matcher.feed(piece)
                if out:
                    self._put(("text", out))
                if matcher.stopped:
                    break  # leaving the loop stops the model (AnswerStream)
            tail = matcher.flush()
            if tail:
                self._put(("text", tail))
            reason = "stop" if matcher.stopped else self.stream.finish_reason
            if reason == "cancelled" and engine.shutdown.is_set() and not self.cancel.is_set():
                reason = "shutdown"
            self.finish_reason = reason
            self._put(("end", reason))
        except BaseException as e:  # reported to the client
            self.finish_reason = "error"
            self._put(("error", e))
        finally:
            with engine.counter_lock:
                engine.running -= 1
            try:
                self.loop.call_soon_threadsafe(engine.slot.release)
            except RuntimeError:
                pass

    async def next_item(self, is_disconnected: Callable[[], Awaitable[bool]]):
        """The next item; ("gone",) after the client disconnected (and the generation was told to stop)."""
        while True:
            try:
                return await asyncio.wait_for(self.queue.get(), POLL_S)
            except asyncio.TimeoutError:
                if await is_disconnected():
                    self.cancel.set()
                    return ("gone",)


class ChatEngine:
    """The model, its renderer, request validation and the generation slot."""

    def __init__(self, model, tokenizer, model_name: str, default_max_tokens: int = DEFAULT_MAX_TOKENS,
                 max_waiting: int = DEFAULT_MAX_WAITING, queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S,
                 processor=None, allow_local_images: bool = False, allow_remote_images: bool = False,
                 max_images: int = DEFAULT_MAX_IMAGES, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS):
        """`processor`: a vision-language model's processor (its tokenizer is `tokenizer`); without one
        image_url parts are refused. Images: data: URLs always; local paths / file:// URLs only with
        allow_local_images; http(s) URLs only with allow_remote_images; at most `max_images` per request,
        each at most `max_image_pixels` (checked before decoding)."""
        from sftlab.generate import context_length
        from sftlab.render import Renderer

        self.model = model
        self.renderer = Renderer(tokenizer)
        self.vision = None
        if processor is not None:
            from sftlab.multimodal.vision import VisionInputs

            self.vision = VisionInputs(processor, cache_mb=0)
        self.allow_local_images, self.allow_remote_images = allow_local_images, allow_remote_images
        self.max_images, self.max_image_pixels = max_images, max_image_pixels
        self.model_name = model_name
        self.default_max_tokens = default_max_tokens
        self.context = context_length(model)
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.vocab_size = getattr(cfg, "vocab_size", None) or len(tokenizer)
        self.slot = GenerationSlot(max_waiting, queue_timeout_s)
        self.shutdown = threading.Event()  # set on SIGINT/SIGTERM (serve) or by the embedding program
        self.running = 0  # generation threads alive
        self.counter_lock = threading.Lock()

    # ---- validation -------------------------------------------------------------------------
    def prepare(self, req: ChatRequest) -> Prepared:
        """Check a request and render its prompt; raises ApiError (400) with what to change."""
        from sftlab.errors import TemplateError
        from sftlab.generate import SamplingParams

        self._check_refused(req)
        warnings = [f"parameter '{p}' is ignored by this server" for p in IGNORED_PARAMS if getattr(req, p) is not None]
        messages, image_urls = [], []  # image_urls: (param, url) in the order of their placeholders
        for i, m in enumerate(req.messages):
            parts = m.content if isinstance(m.content, list) else [{"type": "text", "text": m.content}]
            for part in parts:
                if part["type"] != "text":
                    continue
                found = next((t for t in self.renderer.special_strings if t in part["text"]), None)
                if found is not None:  # as training does (Renderer.check_no_special_tokens): refused
                    raise ApiError(400, f"messages[{i}] ({m.role}) contains {found!r}, a special token of this model's "
                                        "tokenizer; it would be read as a real control token (a fake turn boundary), so "
                                        "it is refused, as in training. Remove it or write it differently.",
                                   param=f"messages[{i}].content", code="special_token_in_content")
            if m.name is not None:
                warnings.append(f"messages[{i}].name is ignored (the chat template has no field for it)")
            content = m.content
            if isinstance(content, list):  # image_url parts: `<image>` in the text, parts joined by \n as in training data
                content = "\n".join(p["text"] if p["type"] == "text" else IMAGE_PLACEHOLDER for p in parts)
                image_urls += [(f"messages[{i}].content[{j}].image_url", p["url"], m.role)
                               for j, p in enumerate(parts) if p["type"] == "image_url"]
            messages.append({"role": "system" if m.role == "developer" else m.role, "content": content})
        images = self._images(image_urls)
        try:
            if images:
                from sftlab.multimodal.use import prompt_inputs

                prompt_ids, inputs = prompt_inputs(self.vision, self.renderer, messages, images)
            else:
                prompt_ids, inputs = self.renderer.render_prompt(messages), {}
        except TemplateError as e:
            raise ApiError(400, f"the model's chat template refused these messages: {e}", param="messages") from e
        except ValueError as e:  # the template dropped or duplicated an image placeholder
            raise ApiError(400, f"the images do not match the rendered prompt: {e}", param="messages") from e
        if inputs:
            from sftlab.generate import model_inputs

            inputs = model_inputs(self.model, [inputs])
        max_tokens = self._max_tokens(req, len(prompt_ids))
        bias = self._logit_bias(req.logit_bias)
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        if len(stops) > 16:
            raise ApiError(400, f"stop: at most 16 stop strings, got {len(stops)}", param="stop")
        params = SamplingParams(
            max_new_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p,
            # without a seed each request samples differently; with one, the same seed -> the same text
            seed=req.seed if req.seed is not None else secrets.randbits(63),
            presence_penalty=req.presence_penalty, frequency_penalty=req.frequency_penalty, logit_bias=bias,
        )
        return Prepared(prompt_ids, params, stops, warnings, inputs)

    def _images(self, image_urls: list[tuple[str, str, str]]) -> list:
        """The request's images, decoded (PIL, RGB), under the server's image policy; ApiError 400 otherwise.
        Runs in a worker thread (prepare), never on the event loop."""
        if not image_urls:
            return []
        param = image_urls[0][0]
        if self.vision is None:
            raise ApiError(400, f"{param}: image_url content parts need a vision-language model; {self.model_name} is "
                                "a text-only model. Send text content only, or serve a vision-language model.",
                           param=param, code="images_not_supported")
        for p, _, role in image_urls:
            if role != "user":
                raise ApiError(400, f"{p}: image_url parts are accepted in user messages only, not in a {role} message",
                               param=p, code="invalid_image_url")
        if len(image_urls) > self.max_images:
            raise ApiError(400, f"{len(image_urls)} images in one request; this server accepts at most {self.max_images} "
                                "(`sftlab serve --max-images`)", param="messages", code="too_many_images")
        from sftlab.multimodal.use import ImageRefused, decode_image_url

        out = []
        for p, url, _ in image_urls:
            try:
                out.append(decode_image_url(url, allow_local=self.allow_local_images, allow_remote=self.allow_remote_images,
                                            max_pixels=self.max_image_pixels))
            except ImageRefused as e:
                raise ApiError(400, f"{p}: {e}", param=p, code=e.code) from None
        return out

    def _check_refused(self, req: ChatRequest) -> None:
        def refuse(param: str, why: str):
            raise ApiError(400, f"{param} is not supported: {why}", param=param, code="unsupported_parameter")

        if req.n != 1:
            raise ApiError(400, f"n={req.n} is not supported: this server returns exactly one choice (n=1); "
                                "send n separate requests instead", param="n", code="unsupported_value")
        if req.tools or req.functions:
            refuse("tools" if req.tools else "functions", "this server does not do tool/function calling; "
                   "send the request without tools")
        for name in ("tool_choice", "function_call"):
            value = getattr(req, name)
            if value not in (None, "none", "auto"):
                refuse(name, "this server does not do tool/function calling")
        if req.logprobs or req.top_logprobs is not None:
            refuse("logprobs" if req.logprobs else "top_logprobs", "this server does not return log probabilities")
        if req.response_format is not None and req.response_format.get("type") != "text":
            refuse("response_format", "this server cannot constrain the output to JSON; only {\"type\": \"text\"}")
        if (req.modalities and req.modalities != ["text"]) or req.audio is not None:
            refuse("modalities" if req.audio is None else "audio", "this server produces text only")
        for i, m in enumerate(req.messages):
            if m.tool_calls or m.function_call is not None or m.audio is not None:
                refuse(f"messages[{i}]", "tool calls and audio in messages are not supported")

    def _max_tokens(self, req: ChatRequest, n_prompt: int) -> int:
        """Answer budget: the request's, bounded by what fits in the context after the prompt."""
        requested = req.max_completion_tokens or req.max_tokens
        param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
        if self.context is None:
            room = UNKNOWN_CONTEXT_MAX_TOKENS
            if requested and requested > room:
                raise ApiError(400, f"{param}={requested} is too large: this model's config names no context length, "
                                    f"so answers are limited to {room} tokens", param=param, code="context_length_exceeded")
            return requested or min(self.default_max_tokens, room)
        room = self.context - n_prompt
        if room <= 0:
            raise ApiError(400, f"the prompt is {n_prompt} tokens but this model's context is {self.context} tokens "
                                "(max_position_embeddings), leaving no room for an answer; shorten the messages",
                           param="messages", code="context_length_exceeded")
        if requested and requested > room:
            raise ApiError(400, f"{param}={requested} does not fit: this model's context is {self.context} tokens and "
                                f"the prompt uses {n_prompt}, so at most {room} completion tokens; lower {param} or "
                                "shorten the messages", param=param, code="context_length_exceeded")
        return requested or min(self.default_max_tokens, room)

    def _logit_bias(self, bias: dict[str, float] | None) -> dict[int, float]:
        out = {}
        for key, value in (bias or {}).items():
            if not key.lstrip("-").isdigit() or not 0 <= int(key) < self.vocab_size:
                raise ApiError(400, f"logit_bias: {key!r} is not a token id of this model (0..{self.vocab_size - 1})",
                               param="logit_bias")
            if not -100 <= value <= 100:
                raise ApiError(400, f"logit_bias[{key}]={value}: a bias must be within -100..100", param="logit_bias")
            out[int(key)] = float(value)
        return out

    # ---- running ------------------------------------------------------------------------------
    def start(self, prepared: Prepared, loop: asyncio.AbstractEventLoop) -> Job:
        """Start generating in a new thread, which owns the generation slot until it ends."""
        job = Job(self, prepared, loop)
        with self.counter_lock:
            self.running += 1
        try:
            threading.Thread(target=job.run, daemon=True, name="sftlab-serve-job").start()
        except BaseException:
            with self.counter_lock:
                self.running -= 1
            self.slot.release()
            raise
        return job


class RequestLog:
    """ASGI middleware: one line per request once it has ended (the response sent, or the client
    gone): time, method, path, status, prompt/completion tokens, finish reason, seconds.
    Handlers put the counts into the request's state (`request.state.usage`)."""

    def __init__(self, app, log: Callable[[str], None]):
        self.app, self.log = app, log

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        status = [None]
        state = scope.setdefault("state", {})

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            usage = state.get("usage") or {}
            code = status[0] if status[0] is not None else 500
            if usage.get("finish") == "gone":
                code = 499
            self.log(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {scope['method']} {scope['path']} {code} "
                     f"prompt_tokens={usage.get('prompt', '-')} completion_tokens={usage.get('completion', '-')} "
                     f"finish={usage.get('finish', '-')} {time.perf_counter() - t0:.2f}s")


def _stderr_log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def create_app(engine: ChatEngine, api_key: str | None = None, log: Callable[[str], None] | None = _stderr_log):
    """The FastAPI app; `log` gets one line per request (None: no request log)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="sftlab", version="1")
    app.state.engine = engine
    if log is not None:
        app.add_middleware(RequestLog, log=log)
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(_, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ClientGone)
    async def _client_gone(request: Request, _):
        usage = getattr(request.state, "usage", None) or {}
        request.state.usage = {**usage, "finish": "gone"}
        return Response(status_code=499)  # nobody reads it; for the log (nginx's "client closed request")

    @app.exception_handler(RequestValidationError)
    async def _validation(_, exc: RequestValidationError):
        errs = exc.errors()
        parts, param = [], None
        for e in errs[:5]:
            loc = ".".join(str(x) for x in e["loc"] if x != "body")
            param = param or loc or None
            msg = e["msg"]
            if e["type"] == "extra_forbidden":
                msg = ("unsupported parameter; supported: " + ", ".join(SUPPORTED_PARAMS)) if "." not in loc else \
                    "unknown field in a message; a message has role, content (and name)"
            if e["type"] == "literal_error" and loc.endswith("role"):
                msg = f"role must be 'system', 'developer', 'user' or 'assistant', got {e.get('input')!r}"
            parts.append(f"{loc or 'body'}: {msg}")
        return JSONResponse(ApiError(400, "; ".join(parts), param=param).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_, exc: StarletteHTTPException):
        return JSONResponse(ApiError(exc.status_code, str(exc.detail)).body(), status_code=exc.status_code)

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise ApiError(401, "invalid or missing API key: send the header 'Authorization: Bearer <key>' "
                                "with the key given to `sftlab serve --api-key`", code="invalid_api_key")

    @app.get("/health")
    async def health():
        return {"status": "shutting_down" if engine.shutdown.is_set() else "ok",
                "generating": engine.slot.busy, "waiting": len(engine.slot.waiters)}

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        return {"object": "list", "data": [{"id": engine.model_name, "object": "model", "created": created, "owned_by": "sftlab"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request, req: ChatRequest):
        check_key(request)
        prepared = await run_in_threadpool(engine.prepare, req)
        n_prompt = len(prepared.prompt_ids)
        request.state.usage = {"prompt": n_prompt, "completion": 0}
        await engine.slot.acquire(request.is_disconnected, engine.shutdown)
        job = engine.start(prepared, asyncio.get_running_loop())  # no await in between: the slot cannot leak
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        now = int(time.time())
        if req.stream:
            include_usage = bool((req.stream_options or {}).get("include_usage"))
            return _JobStreamingResponse(job, _stream(request, job, cid, now, n_prompt, include_usage),
                                         media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            pieces = []
            while True:
                item = await job.next_item(request.is_disconnected)
                if item[0] == "text":
                    pieces.append(item[1])
                elif item[0] == "gone":
                    raise ClientGone()
                elif item[0] == "error":
                    raise ApiError(500, f"generation failed: {type(item[1]).__name__}: {item[1]}", "server_error")
                else:
                    reason = item[1]
                    break
        finally:
            job.cancel.set()  # no effect after the end; stops the generation if this handler is cancelled
            request.state.usage = {"prompt": n_prompt, "completion": job.completion_tokens,
                                   "finish": job.finish_reason or "gone"}
        if reason == "shutdown":
            raise _shutting_down()
        n_out = job.completion_tokens
        body = {
            "id": cid, "object": "chat.completion", "created": now, "model": engine.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(pieces).strip()},
                         "finish_reason": reason}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out},
        }
        if prepared.warnings:
            body["warnings"] = prepared.warnings
        return body

    class _JobStreamingResponse(StreamingResponse):
        """Tells the job to stop whenever the response ends, however it ends (finished, client gone,
        cancelled), even if the body iterator never started."""

        def __init__(self, job: Job, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.job = job

        async def __call__(self, scope, receive, send):
            try:
                await super().__call__(scope, receive, send)
            finally:
                self.job.cancel.set()

    async def _stream(request: Request, job: Job, cid: str, now: int, n_prompt: int, include_usage: bool):
        def event(body: dict) -> str:
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        def chunk(delta: dict, reason: str | None) -> str:
            return event({"id": cid, "object": "chat.completion.chunk", "created": now, "model": engine.model_name,
                          "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]})

        def usage(finish: str) -> None:
            request.state.usage = {"prompt": n_prompt, "completion": job.completion_tokens, "finish": finish}

        first_chunk = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": engine.model_name,
                       "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
        if job.prepared.warnings:
            first_chunk["warnings"] = job.prepared.warnings
        try:
            yield event(first_chunk)
            first = True
            while True:
                item = await job.next_item(request.is_disconnected)
                kind = item[0]
                if kind == "gone":
                    usage("gone")
                    return
                if kind == "error":
                    usage("error")
                    err = ApiError(500, f"generation failed: {type(item[1]).__name__}: {item[1]}", "server_error")
                    yield event(err.body())
                    break
                if kind == "end":
                    usage(item[1])
                    if item[1] == "shutdown":
                        yield event(_shutting_down().body())
                    else:
                        yield chunk({}, item[1])
                    break
                piece = item[1]
                if first:
                    piece = piece.lstrip()  # match the stripped non-streaming answer
                    first = not piece
                if piece:
                    yield chunk({"content": piece}, None)
            if include_usage:
                n_out = job.completion_tokens
                yield event({"id": cid, "object": "chat.completion.chunk", "created": now, "model": engine.model_name,
                             "choices": [], "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out,
                                                      "total_tokens": n_prompt + n_out}})
            yield "data: [DONE]\n\n"
        finally:
            job.cancel.set()
            if "finish" not in request.state.usage:
                usage("gone")

    return app


def build_app(model_name: str, api_key: str | None = None, default_max_tokens: int = DEFAULT_MAX_TOKENS,
              max_waiting: int = DEFAULT_MAX_WAITING, queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S,
              log: Callable[[str], None] | None = _stderr_log, *, allow_local_images: bool = False,
              allow_remote_images: bool = False, max_images: int = DEFAULT_MAX_IMAGES):
    """Load MODEL (any name sftlab.model loads; a vision-language model folder, or a LoRA adapter on
    one, with its processor) and build its app (`app.state.engine` is the ChatEngine)."""
    from sftlab.multimodal.use import is_vlm

    processor = None
    if is_vlm(model_name):
        from sftlab.multimodal.use import load_vlm_model

        model, processor = load_vlm_model(model_name, merge_adapter=True)
        tokenizer = processor.tokenizer
    else:
        from sftlab.model import load_model, load_tokenizer

        tokenizer = load_tokenizer(model_name)
        model = load_model(model_name, merge_adapter=True)  # serving only: LoRA folded in, faster decoding
    model.eval()
    engine = ChatEngine(model, tokenizer, model_name, default_max_tokens, max_waiting, queue_timeout_s, processor=processor,
                        allow_local_images=allow_local_images, allow_remote_images=allow_remote_images, max_images=max_images)
    return create_app(engine, api_key, log)


def host_warnings(host: str, api_key: str | None) -> list[str]:
    if host in LOOPBACK:
        return []
    out = [f"warning: binding to {host} makes the model reachable from other machines"]
    if not api_key:
        out.append("warning: no --api-key given: anyone who can reach this port can use the model")
    return out


def _listen(host: str, port: int) -> socket.socket:
    from sftlab.errors import SftlabError

    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise SftlabError(f"cannot listen on {host}:{port}: {e.strerror or e}; choose another --port") from e
    return sock


def serve(model_name: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          default_max_tokens: int = DEFAULT_MAX_TOKENS, max_waiting: int = DEFAULT_MAX_WAITING,
          queue_timeout_s: float = DEFAULT_QUEUE_TIMEOUT_S, *, allow_local_images: bool = False,
          allow_remote_images: bool = False, max_images: int = DEFAULT_MAX_IMAGES) -> None:
    """Serve until SIGINT/SIGTERM. On the signal a running generation stops at its next token (its
    client gets a "shutting down" error), waiting requests get 503, and the process exits."""
    import uvicorn

    for line in host_warnings(host, api_key):
        print(line, file=sys.stderr)
    app = build_app(model_name, api_key, default_max_tokens, max_waiting, queue_timeout_s, allow_local_images=allow_local_images,
                    allow_remote_images=allow_remote_images, max_images=max_images)
    engine: ChatEngine = app.state.engine

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:  # the signal handler: generation sees the flag between tokens
            engine.shutdown.set()
            super().handle_exit(sig, frame)

    sock = _listen(host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {model_name} at http://{shown}:{sock.getsockname()[1]}/v1 (OpenAI-compatible)", flush=True)
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    Server(config).run(sockets=[sock])


@contextmanager
def server_in_thread(app, host: str = "127.0.0.1") -> Iterator[str]:
    """Run `app` with uvicorn on a free port of `host` in a background thread; yields the base URL
    (".../v1"). The socket is bound before the server starts, so there is no port race."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started:
        if time.time() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start within 20 s")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        engine = getattr(getattr(app, "state", None), "engine", None)
        if engine is not None:  # stop a generation still running, as a signal would
            engine.shutdown.set()
        thread.join(timeout=10)
        sock.close()
        if engine is not None:
            engine.shutdown.clear()  # the app may be served again
