"""`sftlab serve MODEL`: an OpenAI-compatible chat server for one model (FastAPI + uvicorn).

    POST /v1/chat/completions   messages, temperature, top_p, max_tokens, stop, seed, stream; n=1 only
    GET  /v1/models

Requests are accepted concurrently, but generation runs one request at a time under a lock:
one model on CPU gains nothing from interleaving and would need one KV cache per request.
Errors use OpenAI's shape: {"error": {"message", "type", "param", "code"}}, so clients such as
the official `openai` package raise their usual exceptions with our message.
Bound to 127.0.0.1 by default; any other host prints a warning (and a second one without --api-key).
"""


import asyncio
import hmac
import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str | list[dict[str, Any]]
    name: str | None = None

    @field_validator("content")
    @classmethod
    def _text_only(cls, v):
        if isinstance(v, list):  # OpenAI content parts: only text parts can reach a text model
            texts = []
            for part in v:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ValueError(f"only text content parts are supported, got type {part.get('type')!r}")
                texts.append(part["text"])
            return "".join(texts)
        return v


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
    seed: int | None = None
    user: str | None = None
    stream_options: dict[str, Any] | None = None


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


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


class ChatEngine:
    """The model, its renderer and the generation lock."""

    def __init__(self, model, tokenizer, model_name: str, default_max_tokens: int = 512):
        from sftlab.render import Renderer

        self.model = model
        self.renderer = Renderer(tokenizer)
        self.model_name = model_name
        self.default_max_tokens = default_max_tokens
        self.lock = threading.Lock()

    def generate(self, req: ChatRequest) -> Iterator[tuple[str, str | None]]:
        """Yields (text piece, None) ..., then ("", finish_reason). Must be consumed under self.lock."""
        from sftlab.generate import SamplingParams, stream_answer

        max_tokens = req.max_completion_tokens or req.max_tokens or self.default_max_tokens
        params = SamplingParams(max_new_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, seed=req.seed or 0)
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        matcher = StopMatcher(stops)
        produced = []
        # The generator is consumed to the end even after a stop string: stream_answer's worker
        # thread keeps generating until max_tokens or end-of-turn, and must finish under the lock.
        for piece in stream_answer(self.model, self.renderer, messages, params):
            produced.append(piece)
            out = matcher.feed(piece)
            if out:
                yield out, None
        tail = matcher.flush()
        if tail:
            yield tail, None
        if matcher.stopped:
            reason = "stop"
        else:
            # "length" when the answer used the whole budget (re-tokenized count: close, not exact)
            n = len(self.renderer.tokenizer("".join(produced), add_special_tokens=False)["input_ids"])
            reason = "length" if n >= max_tokens else "stop"
        yield "", reason

    def prompt_tokens(self, req: ChatRequest) -> int:
        return len(self.renderer.render_prompt([{"role": m.role, "content": m.content} for m in req.messages]))


def create_app(engine: ChatEngine, api_key: str | None = None):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app = FastAPI(title="sftlab", version="1")
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(_, exc: ApiError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_, exc: RequestValidationError):
        errs = exc.errors()
        parts, param = [], None
        for e in errs[:5]:
            loc = ".".join(str(x) for x in e["loc"] if x != "body")
            param = param or loc or None
            msg = e["msg"]
            if e["type"] == "extra_forbidden":
                msg = ("unsupported parameter; supported: " + ", ".join(ChatRequest.model_fields)) if "." not in loc else \
                    "unknown field in a message; a message has role, content (and name)"
            if e["type"] == "literal_error" and loc.endswith("role"):
                msg = f"role must be 'system', 'user' or 'assistant', got {e.get('input')!r}"
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

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        return {"object": "list", "data": [{"id": engine.model_name, "object": "model", "created": created, "owned_by": "sftlab"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request, req: ChatRequest):
        check_key(request)
        if req.n != 1:
            raise ApiError(400, f"n={req.n} is not supported: this server returns exactly one choice (n=1); "
                                "send n separate requests instead", param="n", code="unsupported_value")
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        now = int(time.time())
        if req.stream:
            return StreamingResponse(_stream(req, cid, now), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        text, reason, n_prompt, n_out = await run_in_threadpool(_complete, req)
        return {
            "id": cid, "object": "chat.completion", "created": now, "model": engine.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": n_out, "total_tokens": n_prompt + n_out},
        }

    def _complete(req: ChatRequest):
        with engine.lock:
            pieces, reason = [], "stop"
            for piece, fin in engine.generate(req):
                pieces.append(piece)
                reason = fin or reason
            n_prompt = engine.prompt_tokens(req)
        text = "".join(pieces).strip()
        n_out = len(engine.renderer.tokenizer(text, add_special_tokens=False)["input_ids"])
        return text, reason, n_prompt, n_out

    async def _stream(req: ChatRequest, cid: str, now: int):
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def work():  # runs in its own thread; hands pieces to the event loop as they come
            try:
                with engine.lock:
                    for item in engine.generate(req):
                        loop.call_soon_threadsafe(queue.put_nowait, item)
            except Exception as e:  # reported to the client as a final error event
                loop.call_soon_threadsafe(queue.put_nowait, e)
            loop.call_soon_threadsafe(queue.put_nowait, None)

        threading.Thread(target=work, daemon=True).start()

        def chunk(delta: dict, reason: str | None) -> str:
            body = {"id": cid, "object": "chat.completion.chunk", "created": now, "model": engine.model_name,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        yield chunk({"role": "assistant", "content": ""}, None)
        first = True
        while (item := await queue.get()) is not None:
            if isinstance(item, Exception):
                err = ApiError(500, f"generation failed: {type(item).__name__}: {item}", "server_error").body()
                yield f"data: {json.dumps(err)}\n\n"
                continue
            piece, reason = item
            if first and piece:
                piece = piece.lstrip()  # match the stripped non-streaming answer
                first = not piece
            if piece or reason:
                yield chunk({"content": piece} if piece else {}, reason)
        yield "data: [DONE]\n\n"

    return app


def build_app(model_name: str, api_key: str | None = None, default_max_tokens: int = 512):
    """Load MODEL (any name sftlab.model loads) and build its app."""
    from sftlab.model import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_name)
    model = load_model(model_name)
    model.eval()
    return create_app(ChatEngine(model, tokenizer, model_name, default_max_tokens), api_key)


def host_warnings(host: str, api_key: str | None) -> list[str]:
    if host in LOOPBACK:
        return []
    out = [f"warning: binding to {host} makes the model reachable from other machines"]
    if not api_key:
        out.append("warning: no --api-key given: anyone who can reach this port can use the model")
    return out


def serve(model_name: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None) -> None:
    import uvicorn

    for line in host_warnings(host, api_key):
        print(line, file=sys.stderr)
    app = build_app(model_name, api_key)
    print(f"serving {model_name} at http://{host}:{port}/v1 (OpenAI-compatible)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")


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
        thread.join(timeout=10)
        sock.close()
