"""Teacher and judge backends: one small interface, two implementations.

    backend.complete(conversations, max_tokens=256, temperature=0.7, seed=0) -> [CompletionResult]

- OpenAIBackend: any OpenAI-compatible HTTP server (vLLM, Ollama, llama.cpp server, OpenAI,
  `sftlab serve`). Requests run concurrently (asyncio + httpx, limited by a semaphore); each one is
  retried with exponential backoff and jitter on connection errors, timeouts, 5xx, 408 and 429
  (429 honours Retry-After). A call that still fails is returned with `error` set and counted in
  `stats` -- never raised -- so a pipeline can finish and report how many calls it lost.
- LocalBackend: a model loaded in this process (anything `sftlab.model.load_model` loads),
  answered in batches with `sftlab.generate.generate_batch`.

`backend_from_spec("local:MODEL" | "http://host:port/v1#model" | "openai:MODEL")` builds one from
a command-line string; `BackendConfig` builds one from YAML.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from sftlab.configbase import Strict
from sftlab.errors import ConfigError

# Status codes worth retrying: the request may succeed later. Other 4xx are the caller's bug.
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass
class CompletionResult:
    text: str
    error: str | None = None  # None = success; else what went wrong on the last attempt
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class BackendStats:
    calls: int = 0  # conversations asked
    ok: int = 0
    failed: int = 0  # gave up after all retries (or a non-retryable error)
    retries: int = 0  # extra attempts made
    rate_limited: int = 0  # 429 responses seen
    errors: dict[str, int] = field(default_factory=dict)  # failure reason -> count

    def add_failure(self, reason: str) -> None:
        self.failed += 1
        key = reason.split(":")[0][:60]
        self.errors[key] = self.errors.get(key, 0) + 1

    def summary(self) -> str:
        text = f"{self.calls} calls: {self.ok} ok, {self.failed} failed, {self.retries} retries, {self.rate_limited} rate-limited"
        if self.errors:
            text += " (failures: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.errors.items())) + ")"
        return text

    def to_dict(self) -> dict:
        return {"calls": self.calls, "ok": self.ok, "failed": self.failed, "retries": self.retries,
                "rate_limited": self.rate_limited, "errors": dict(self.errors)}


class ChatBackend:
    """Answers a batch of conversations. Subclasses set `name` (recorded as provenance)."""

    name: str = "backend"

    def __init__(self) -> None:
        self.stats = BackendStats()

    def complete(self, conversations: list[list[dict]], *, max_tokens: int = 256, temperature: float = 0.0,
                 seed: int | None = None) -> list[CompletionResult]:
        raise NotImplementedError

    def choose(self, conversations: list[list[dict]], *, prefix: str, choices: list[str], suffix: str = ""):
        """log P(each choice | prompt + forced prefix) -> [ChoiceResult] (see synth/choices.py)."""
        raise ConfigError(f"{self.name}: log-prob judging (method: logprobs) needs a local model (kind: local / local:NAME); "
                          "an OpenAI-compatible server cannot continue a forced answer prefix -- use method: text")

    def close(self) -> None:
        pass


# ---- OpenAI-compatible HTTP -------------------------------------------------------------------


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After is either seconds ("2", "0.5") or an HTTP date; None when absent/unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIBackend(ChatBackend):
    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        concurrency: int = 8,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        top_p: float | None = None,
    ):
        super().__init__()
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1").rstrip("/")
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        if concurrency < 1:
            raise ConfigError(f"concurrency must be >= 1, got {concurrency}")
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.top_p = top_p
        self.name = f"openai:{model}@{self.base_url}"

    def complete(self, conversations, *, max_tokens=256, temperature=0.0, seed=None):
        coro = self._complete_all(conversations, max_tokens, temperature, seed)
        return _run_coroutine(coro)

    async def _complete_all(self, conversations, max_tokens, temperature, seed):
        import httpx

        sem = asyncio.Semaphore(self.concurrency)
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=headers, limits=limits) as client:
            tasks = [self._one(client, sem, conv, max_tokens, temperature, seed) for conv in conversations]
            return await asyncio.gather(*tasks)

    def _delay(self, attempt: int) -> float:
        # exponential backoff with jitter in [50%, 100%] of the step, so retries spread out
        step = min(self.max_backoff_s, self.backoff_s * (2**attempt))
        return step * (0.5 + random.random() / 2)

    async def _one(self, client, sem, messages, max_tokens, temperature, seed) -> CompletionResult:
        import httpx

        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": temperature}
        if seed is not None:
            body["seed"] = seed
        if self.top_p is not None:
            body["top_p"] = self.top_p
        self.stats.calls += 1
        error = "not attempted"
        attempt = 0
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.stats.retries += 1
            wait = None
            async with sem:
                try:
                    resp = await client.post(f"{self.base_url}/chat/completions", json=body)
                except httpx.TimeoutException as e:
                    error = f"timeout: {type(e).__name__} after {self.timeout_s}s"
                except httpx.TransportError as e:
                    error = f"connection error: {type(e).__name__}: {e}"
                else:
                    if resp.status_code == 200:
                        try:
                            text = resp.json()["choices"][0]["message"]["content"]
                        except (ValueError, KeyError, IndexError, TypeError) as e:
                            error = f"bad response: {type(e).__name__}: {resp.text[:200]}"
                            self.stats.add_failure(error)  # a malformed 200 will not improve on retry
                            return CompletionResult("", error, attempt + 1)
                        self.stats.ok += 1
                        return CompletionResult(text or "", None, attempt + 1)
                    error = f"http {resp.status_code}: {resp.text[:200]}"
                    if resp.status_code == 429:
                        self.stats.rate_limited += 1
                        wait = retry_after_seconds(resp.headers.get("retry-after"))
                        if wait is not None:
                            wait = min(wait, self.max_retry_after_s)
                    elif resp.status_code not in RETRYABLE_STATUS:
                        self.stats.add_failure(f"http {resp.status_code}")
                        return CompletionResult("", error, attempt + 1)
            if attempt < self.max_retries:
                await asyncio.sleep(wait if wait is not None else self._delay(attempt))
        self.stats.add_failure(error)
        return CompletionResult("", error, attempt + 1)


def _run_coroutine(coro):
    """asyncio.run, also from code that already runs an event loop (e.g. a notebook)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: list = []
    thread = threading.Thread(target=lambda: box.append(asyncio.run(coro)))
    thread.start()
    thread.join()
    return box[0]


# ---- in-process model -------------------------------------------------------------------------


class LocalBackend(ChatBackend):
    """A model in this process. Batches of `batch_size` prompts go through generate_batch."""

    def __init__(self, model_name: str | None = None, *, model=None, tokenizer=None, batch_size: int = 8, top_p: float = 1.0):
        super().__init__()
        from sftlab.render import Renderer

        if model is None or tokenizer is None:
            from sftlab.model import DEFAULT_MODEL, load_model, load_tokenizer

            model_name = model_name or DEFAULT_MODEL
            tokenizer = load_tokenizer(model_name)
            model = load_model(model_name)
        self.model = model
        self.renderer = Renderer(tokenizer)
        self.batch_size = batch_size
        self.top_p = top_p
        self.name = f"local:{model_name or type(model).__name__}"

    def complete(self, conversations, *, max_tokens=256, temperature=0.0, seed=None):
        from sftlab.generate import SamplingParams, generate_batch

        params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=self.top_p, seed=seed or 0)
        results: list[CompletionResult] = []
        for start in range(0, len(conversations), self.batch_size):
            chunk = conversations[start : start + self.batch_size]
            self.stats.calls += len(chunk)
            try:
                texts = generate_batch(self.model, self.renderer, chunk, params, batch_size=self.batch_size, progress=False)
            except Exception as e:  # one bad batch is reported, the rest still run
                for _ in chunk:
                    self.stats.add_failure(f"{type(e).__name__}")
                results += [CompletionResult("", f"{type(e).__name__}: {e}") for _ in chunk]
                continue
            self.stats.ok += len(chunk)
            results += [CompletionResult(t) for t in texts]
        return results

    def choose(self, conversations, *, prefix, choices, suffix=""):
        from sftlab.synth.choices import score_choices

        self.stats.calls += len(conversations)
        out = score_choices(self.model, self.renderer, conversations, prefix, choices, suffix)
        self.stats.ok += len(out)
        return out


# ---- construction from config / command line --------------------------------------------------


class BackendConfig(Strict):
    """A teacher or judge. kind=openai: base_url (or env OPENAI_BASE_URL), api key from the env
    variable named by api_key_env. kind=local: model is anything `sftlab.model.load_model` loads."""

    kind: Literal["openai", "local"] = "openai"
    model: str = "default"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0)
    backoff_s: float = Field(0.5, ge=0)
    batch_size: int = Field(8, ge=1)  # local only

    def build(self) -> ChatBackend:
        if self.kind == "local":
            return LocalBackend(self.model, batch_size=self.batch_size)
        return OpenAIBackend(self.model, self.base_url, os.environ.get(self.api_key_env), concurrency=self.concurrency,
                             timeout_s=self.timeout_s, max_retries=self.max_retries, backoff_s=self.backoff_s)


def backend_from_spec(spec: str, *, batch_size: int = 8, **kw) -> ChatBackend:
    """'local:MODEL' | 'http(s)://host:port/v1#MODEL' | 'openai:MODEL' (base URL from OPENAI_BASE_URL).
    batch_size: prompts per generation batch of a local model; kw: OpenAIBackend options."""
    if spec.startswith(("http://", "https://")):
        url, _, model = spec.partition("#")
        return OpenAIBackend(model or "default", url, **kw)
    if spec.startswith("openai:"):
        return OpenAIBackend(spec[len("openai:"):], None, **kw)
    if spec.startswith("local:"):
        return LocalBackend(spec[len("local:"):], batch_size=batch_size)
    raise ConfigError(
        f"backend {spec!r} not understood; use local:MODEL (e.g. local:smollm2-135m-instruct), "
        "http://127.0.0.1:8000/v1#MODEL, or openai:MODEL with OPENAI_BASE_URL/OPENAI_API_KEY set"
    )
