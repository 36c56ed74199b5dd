"""EndpointGenerator against a real HTTP server on 127.0.0.1 (FastAPI + uvicorn in a thread),
and evaluate_models driven by endpoints whose answers are known, so accuracies are hand-computable."""

import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sftlab.builtin.tasks import train_eval_split
from sftlab.evaluate.generators import EndpointError, EndpointGenerator
from sftlab.evaluate.runner import evaluate_models
from sftlab.generate import SamplingParams, generate_batch
from sftlab.render import Renderer
from tiny import make_model, make_tokenizer

PROMPTS = [
    [{"role": "user", "content": "Reverse the word apple."}],
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 3?"}],
]


def _app():
    """/v1/chat/completions: model "tiny" answers with the tiny model; "oracle" with the built-in
    task's gold answer; "silent" with ""; the first request for each prompt of "flaky" gets a 503."""
    app = FastAPI()
    tok, model = make_tokenizer(), make_model()
    rd = Renderer(tok)
    gold = {c.messages[-2].content: c.last_response for c in train_eval_split(seed=0)[1]}
    failed_once: set[str] = set()
    lock = threading.Lock()
    app.state.requests = 0

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.requests += 1
        if request.headers.get("authorization") != "Bearer sekret":
            return JSONResponse({"error": "bad key"}, status_code=401)
        msgs, name = body["messages"], body["model"]
        last = msgs[-1]["content"]
        if name == "flaky":
            with lock:
                first = last not in failed_once
                failed_once.add(last)
            if first:
                return JSONResponse({"error": "busy"}, status_code=503)
            name = "tiny"
        if name == "tiny":
            text = generate_batch(model, rd, [msgs], SamplingParams(max_new_tokens=body["max_tokens"]), progress=False)[0]
        elif name == "oracle":
            text = gold.get(last, "")
        elif name == "silent":
            text = ""
        else:
            return JSONResponse({"error": f"unknown model {name}"}, status_code=404)
        return {"object": "chat.completion", "model": name, "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}

    return app


@pytest.fixture(scope="module")
def server():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = _app()
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "test server did not start"
    yield f"http://127.0.0.1:{port}/v1", app
    srv.should_exit = True
    thread.join(timeout=10)


def test_endpoint_answers_equal_in_process_generation_with_retries(server):
    url, app = server
    params = SamplingParams(max_new_tokens=10)
    local = generate_batch(make_model(), Renderer(make_tokenizer()), PROMPTS, params, progress=False)
    gen = EndpointGenerator(url, "flaky", "sekret", concurrency=2, backoff_s=0.01)
    assert gen.generate_batch(PROMPTS, params, progress=False) == local
    assert gen.stats["retries"] == len(PROMPTS)  # each prompt: one 503, then a success
    assert gen.stats["requests"] == 2 * len(PROMPTS)


def test_endpoint_errors_name_the_prompt_and_do_not_retry_client_errors(server):
    url, app = server
    before = app.state.requests
    with pytest.raises(EndpointError, match=r"prompt #0 was rejected \(HTTP 401"):
        EndpointGenerator(url, "tiny", "wrong", concurrency=1, backoff_s=0.01).generate_batch(PROMPTS[:1], progress=False)
    assert app.state.requests == before + 1  # 401 is not retried
    dead = EndpointGenerator("http://127.0.0.1:9/v1", "tiny", "sekret", retries=2, backoff_s=0.01, timeout_s=2)
    with pytest.raises(EndpointError, match="failed after 3 attempts"):
        dead.generate_batch(PROMPTS[:1], progress=False)
    with pytest.raises(EndpointError, match="base_url"):
        EndpointGenerator(None, "x")


def test_task_accuracy_and_paired_diff_from_known_answers(server, monkeypatch):
    url, _ = server
    monkeypatch.delenv("SFTLAB_ENDPOINT_URL", raising=False)
    models = {
        "base": EndpointGenerator(url, "silent", "sekret"),
        "tuned": EndpointGenerator(url, "oracle", "sekret"),
    }
    rep = evaluate_models(models, ifeval=False, max_task_examples_per_family=2, progress=False)
    rows = {m.name: m for m in rep.metrics()}
    n_families = len(set(rep.tasks.groups))
    assert len(rep.tasks.ids) == 2 * n_families
    assert rows["task accuracy: all"].values["base"].value == 0.0
    assert rows["task accuracy: all"].values["tuned"].value == 1.0
    d = rows["task accuracy: all"].diffs["tuned"]
    assert (d.value, d.low, d.high) == (1.0, 1.0, 1.0)  # every pair differs by exactly +1
    assert rows["task accuracy: held-out families"].values["tuned"].n == 16  # 8 held-out families x 2
    assert "perplexities not computed" in " ".join(rep.notes)  # endpoints give no token losses
    ex = rep.examples(3)
    assert len(ex) == 3 and all(e["answers"]["tuned"] == e["gold"] and e["answers"]["base"] == "" for e in ex)
    assert len({e["family"] for e in ex}) == 3  # one family after another
