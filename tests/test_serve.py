"""`sftlab serve` against the official openai client: a real uvicorn server on 127.0.0.1 serving a
tiny model saved to disk (safetensors), real HTTP requests."""

import threading
import time

import httpx
import openai
import pytest

from sftlab.render import Renderer
from sftlab.serve import StopMatcher, build_app, host_warnings, server_in_thread
from tiny import make_model, make_tokenizer

KEY = "test-key-123"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-model")
    make_model().save_pretrained(d, safe_serialization=True)
    make_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def base_url(model_dir):
    app = build_app(str(model_dir), api_key=KEY, default_max_tokens=16)
    with server_in_thread(app) as url:
        yield url


@pytest.fixture
def client(base_url):
    return openai.OpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=60)


MSGS = [{"role": "user", "content": "Reverse the word apple."}]


def test_non_streaming_and_models(client, model_dir):
    r = client.chat.completions.create(model="x", messages=MSGS, max_tokens=8, temperature=0)
    assert r.object == "chat.completion"
    assert len(r.choices) == 1 and r.choices[0].message.role == "assistant"
    assert isinstance(r.choices[0].message.content, str)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens == len(Renderer(make_tokenizer()).render_prompt(MSGS))  # the templated prompt, counted
    again = client.chat.completions.create(model="x", messages=MSGS, max_tokens=8, temperature=0)
    assert again.choices[0].message.content == r.choices[0].message.content  # greedy is deterministic
    models = client.models.list()
    assert [m.id for m in models.data] == [str(model_dir)]


def test_streaming_matches_non_streaming(client):
    full = client.chat.completions.create(model="x", messages=MSGS, max_tokens=10, temperature=0)
    stream = client.chat.completions.create(model="x", messages=MSGS, max_tokens=10, temperature=0, stream=True)
    pieces, reasons = [], []
    for chunk in stream:
        pieces.append(chunk.choices[0].delta.content or "")
        reasons.append(chunk.choices[0].finish_reason)
    assert "".join(pieces).strip() == full.choices[0].message.content
    assert reasons[-1] in ("stop", "length") and all(r is None for r in reasons[:-1])


def test_sse_wire_format_ends_with_done(base_url):
    body = {"messages": MSGS, "max_tokens": 4, "stream": True}
    with httpx.stream("POST", f"{base_url}/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]" and len(events) >= 3


def test_concurrent_requests_all_answered(client):
    prompts = [[{"role": "user", "content": f"What is {i} + {i}?"}] for i in range(4)]
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def ask(i):
        try:
            results[i] = client.chat.completions.create(model="x", messages=prompts[i], max_tokens=6, temperature=0).choices[0].message.content
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and sorted(results) == [0, 1, 2, 3]
    # the lock serialises generation: each concurrent answer equals the one asked alone
    for i in range(4):
        alone = client.chat.completions.create(model="x", messages=prompts[i], max_tokens=6, temperature=0)
        assert alone.choices[0].message.content == results[i]


def _post(base_url, body, key=KEY):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{base_url}/chat/completions", json=body, headers=headers, timeout=60)


def test_bad_requests_get_openai_shaped_4xx(base_url, client):
    r = _post(base_url, {"model": "x"})
    assert r.status_code == 400
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and "messages" in err["message"]

    r = _post(base_url, {"messages": [{"role": "wizard", "content": "hi"}]})
    assert r.status_code == 400 and "role must be" in r.json()["error"]["message"]

    r = _post(base_url, {"messages": MSGS, "n": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n" and "n=2" in r.json()["error"]["message"]

    r = _post(base_url, {"messages": MSGS, "frequency_penaltyy": 1})
    assert r.status_code == 400 and "unsupported parameter" in r.json()["error"]["message"]

    r = _post(base_url, {"messages": []})
    assert r.status_code == 400

    with pytest.raises(openai.BadRequestError, match="n=2"):
        client.chat.completions.create(model="x", messages=MSGS, n=2)


def test_api_key_required(base_url):
    assert _post(base_url, {"messages": MSGS}, key=None).status_code == 401
    bad = openai.OpenAI(base_url=base_url, api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="API key"):
        bad.chat.completions.create(model="x", messages=MSGS, max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_stop_strings_cut_across_chunks():
    m = StopMatcher(["END"])
    out = m.feed("hello E") + m.feed("N") + m.feed("D more") + m.flush()
    assert out == "hello " and m.stopped
    m = StopMatcher([])
    assert m.feed("abc") + m.flush() == "abc"


def test_binding_elsewhere_warns():
    assert host_warnings("127.0.0.1", None) == []
    w = host_warnings("0.0.0.0", None)
    assert len(w) == 2 and "0.0.0.0" in w[0] and "api-key" in w[1]
    assert len(host_warnings("0.0.0.0", "k")) == 1


def test_chat_command_one_shot_and_interactive(model_dir, capsys):
    import io
    from types import SimpleNamespace

    from sftlab.commands.model_cmd import run_chat

    args = SimpleNamespace(model=str(model_dir), prompt="Reverse the word apple.", system=None, max_tokens=6,
                           temperature=0.0, top_p=1.0, seed=0)
    assert run_chat(args) == 0
    one_shot = capsys.readouterr().out.strip()
    out = io.StringIO()
    args.prompt = None
    assert run_chat(args, stdin=io.StringIO("Reverse the word apple.\n/reset\nReverse the word apple.\n/exit\n"), stdout=out) == 0
    text = out.getvalue()
    # after /reset the same question gets the same (greedy) answer as the one-shot run: history was cleared
    answers = [line.split("assistant> ", 1)[1] for line in text.splitlines() if "assistant> " in line]
    assert "(history cleared)" in text and answers == [one_shot, one_shot]
