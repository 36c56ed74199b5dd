"""OpenAIBackend over real HTTP: retries with backoff, 429 + Retry-After, failures counted,
the concurrency limit; LocalBackend and OpenAIBackend-against-`sftlab serve` agree."""

import time

import pytest

from sftlab.serve import build_app, server_in_thread
from sftlab.synth.backends import LocalBackend, OpenAIBackend, backend_from_spec, retry_after_seconds
from helpers import scripted_app
from tiny import make_model, make_tokenizer


@pytest.fixture(scope="module")
def scripted():
    app = scripted_app()
    with server_in_thread(app) as url:
        yield url, app


def convs(n, tag=""):
    return [[{"role": "user", "content": f"question {tag}{i}"}] for i in range(n)]


def test_retries_429_with_retry_after_then_503_then_success(scripted):
    url, _ = scripted
    be = OpenAIBackend("flaky", url, concurrency=4, max_retries=4, backoff_s=0.01)
    t0 = time.time()
    res = be.complete(convs(3, "flaky"), max_tokens=8)
    assert time.time() - t0 >= 0.3  # Retry-After: 0.3 honoured
    assert all(r.ok and r.attempts == 3 for r in res)
    assert be.stats.rate_limited == 3 and be.stats.retries == 6 and be.stats.failed == 0


def test_failures_counted_not_raised(scripted):
    url, _ = scripted
    be = OpenAIBackend("down", url, max_retries=2, backoff_s=0.01)
    res = be.complete(convs(4, "down"), max_tokens=8)
    assert all(not r.ok and r.attempts == 3 and "http 500" in r.error for r in res)
    assert be.stats.failed == 4 and be.stats.retries == 8
    bad = OpenAIBackend("bad-request", url, max_retries=3, backoff_s=0.01)
    res = bad.complete(convs(2, "bad"), max_tokens=8)
    assert all(r.attempts == 1 for r in res) and bad.stats.errors == {"http 400": 2}  # not retried
    nowhere = OpenAIBackend("x", "http://127.0.0.1:9/v1", max_retries=1, backoff_s=0.01)
    assert "connection error" in nowhere.complete(convs(1), max_tokens=4)[0].error


def test_concurrency_limit(scripted):
    url, app = scripted
    app.state.max_inflight = 0
    be = OpenAIBackend("slow", url, concurrency=2)
    res = be.complete(convs(8, "slow"), max_tokens=4)
    assert all(r.ok for r in res) and app.state.max_inflight == 2


def test_retry_after_parsing():
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert 0 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") < 1  # a past date -> now


def test_local_and_http_backends_agree_on_a_served_model(tmp_path):
    d = tmp_path / "m"
    make_model().save_pretrained(d, safe_serialization=True)
    make_tokenizer().save_pretrained(d)
    local = LocalBackend(str(d), batch_size=2)
    questions = convs(3, "same")
    want = [r.text for r in local.complete(questions, max_tokens=6)]
    with server_in_thread(build_app(str(d))) as url:
        http = backend_from_spec(f"{url}#tiny")
        got = [r.text for r in http.complete(questions, max_tokens=6)]
    assert got == want and local.stats.ok == 3 and http.stats.ok == 3
