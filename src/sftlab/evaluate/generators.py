"""Where eval answers come from: the model in this process, or an OpenAI-compatible endpoint.

Both expose `generate_batch(prompts, params, batch_size, progress) -> list[str]` — the call shape
of sftlab.generate.generate_batch without the model and renderer — so the evaluator does not
care which one it holds. Answers come back in prompt order.

EndpointGenerator: POST {base_url}/chat/completions per prompt, at most `concurrency` in flight
(threads sharing one httpx.Client, which is thread-safe). Transport errors, timeouts, 429 and
5xx are retried with exponential backoff (backoff * 2**attempt, or the server's Retry-After);
other 4xx are the caller's mistake and fail at once with the server's message.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from sftlab.errors import SftlabError
from sftlab.generate import SamplingParams

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EndpointError(SftlabError):
    """An endpoint that failed after all retries, or rejected a request."""


@dataclass
class LocalGenerator:
    """In-process generation with sftlab.generate.generate_batch."""

    model: object
    renderer: object

    def generate_batch(self, prompts: list[list[dict]], params: SamplingParams = SamplingParams(), batch_size: int = 16, progress: bool = True) -> list[str]:
        from sftlab.generate import generate_batch

        return generate_batch(self.model, self.renderer, prompts, params, batch_size=batch_size, progress=progress)

    def describe(self) -> str:
        return "in-process (transformers generate, batched)"


@dataclass
class EndpointGenerator:
    """Answers from an OpenAI-compatible /v1/chat/completions endpoint.

    base_url: e.g. http://127.0.0.1:8000/v1 (env SFTLAB_ENDPOINT_URL or OPENAI_BASE_URL)
    model:    the model name the server knows (env SFTLAB_ENDPOINT_MODEL)
    api_key:  sent as a bearer token (env SFTLAB_API_KEY or OPENAI_API_KEY; optional)
    """

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    concurrency: int = 8
    timeout_s: float = 120.0
    retries: int = 4  # attempts after the first
    backoff_s: float = 0.5
    stats: dict = field(default_factory=lambda: {"requests": 0, "retries": 0})
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.base_url = (self.base_url or os.environ.get("SFTLAB_ENDPOINT_URL") or os.environ.get("OPENAI_BASE_URL") or "").rstrip("/")
        self.model = self.model or os.environ.get("SFTLAB_ENDPOINT_MODEL") or ""
        self.api_key = self.api_key or os.environ.get("SFTLAB_API_KEY") or os.environ.get("OPENAI_API_KEY")
        missing = [n for n, v in (("base_url", self.base_url), ("model", self.model)) if not v]
        if missing:
            raise EndpointError(
                f"endpoint generation needs {' and '.join(missing)}: pass --endpoint URL (e.g. http://127.0.0.1:8000/v1) "
                "and a model name, or set SFTLAB_ENDPOINT_URL / SFTLAB_ENDPOINT_MODEL"
            )
        if self.concurrency < 1:
            raise EndpointError(f"endpoint concurrency must be >= 1, got {self.concurrency}")

    def describe(self) -> str:
        return f"endpoint {self.base_url} (model {self.model!r}, concurrency {self.concurrency})"

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def _payload(self, messages: list[dict], params: SamplingParams) -> dict:
        body = {"model": self.model, "messages": messages, "max_tokens": params.max_new_tokens, "temperature": params.temperature}
        if params.temperature > 0:
            body.update(top_p=params.top_p, seed=params.seed)
        return body

    def _one(self, client, index: int, messages: list[dict], params: SamplingParams) -> str:
        import httpx

        url = f"{self.base_url}/chat/completions"
        last = ""
        for attempt in range(self.retries + 1):
            self._count("requests")
            wait = self.backoff_s * 2**attempt
            try:
                resp = client.post(url, json=self._payload(messages, params))
            except httpx.TransportError as e:  # connect errors, timeouts, broken connections
                last = f"{type(e).__name__}: {e}"
            else:
                if resp.status_code == 200:
                    try:
                        return resp.json()["choices"][0]["message"]["content"] or ""
                    except (ValueError, KeyError, IndexError, TypeError) as e:
                        raise EndpointError(
                            f"{url}: prompt #{index}: the response is not an OpenAI chat completion "
                            f"({type(e).__name__}: {e}); body starts {resp.text[:200]!r}"
                        ) from e
                last = f"HTTP {resp.status_code}: {resp.text[:300]}"
                if resp.status_code not in RETRYABLE_STATUS:
                    raise EndpointError(f"{url}: prompt #{index} was rejected ({last}); check the model name and request limits")
                retry_after = resp.headers.get("retry-after")
                if retry_after and retry_after.replace(".", "", 1).isdigit():
                    wait = max(wait, float(retry_after))
            if attempt < self.retries:
                self._count("retries")
                time.sleep(wait)
        raise EndpointError(
            f"{url}: prompt #{index} failed after {self.retries + 1} attempts; last error: {last}. "
            "Check that the server is up, or raise --endpoint-timeout / lower --endpoint-concurrency."
        )

    def generate_batch(self, prompts: list[list[dict]], params: SamplingParams = SamplingParams(), batch_size: int = 16, progress: bool = True) -> list[str]:
        """batch_size is accepted for call-shape compatibility; the server batches, we bound concurrency."""
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        results: list[str] = [""] * len(prompts)
        bar = tqdm(total=len(prompts), desc="endpoint", unit="prompt", disable=not progress, leave=False)
        with httpx.Client(headers=headers, timeout=self.timeout_s, limits=limits) as client, ThreadPoolExecutor(self.concurrency) as pool:
            futures = {pool.submit(self._one, client, i, list(p), params): i for i, p in enumerate(prompts)}
            try:
                for fut in futures:  # in order; the first failure cancels what has not started
                    results[futures[fut]] = fut.result().strip()
                    bar.update(1)
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
            finally:
                bar.close()
        return results
