"""The one model client against real loopback OpenAI-compatible servers and a real tiny model."""

from __future__ import annotations

import asyncio
import json
import email.utils
import time
from pathlib import Path

import pytest

from resources.model_client import (
    ModelSpec,
    make_client,
    parse_retry_after,
)
from tests.rag.loopback import LoopbackLLM
from testsupport.fake_openai import FakeOpenAI

MSGS = [{"role": "user", "content": "hi"}]
KEY_ENV, KEY = "MODEL_CLIENT_TEST_KEY", "sk-model-client-secret-123"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> str:
    from testsupport.models import build_tiny_llama

    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


def http(url: str, **kw) -> ModelSpec:
    d = dict(base_url=url, model="m", backoff_base=0.0, max_attempts=4, timeout=5.0)
    d.update(kw)
    return ModelSpec(**d)


def test_retries_then_answers_and_sends_the_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with LoopbackLLM(reply="hello there") as srv:
        srv.mode, srv.fail_first, srv.fail_status = "flaky", 2, 503
        c = make_client(http(srv.base_url, model="loopback-large", api_key_env=KEY_ENV,
                             price_input_per_mtok=1.0, price_output_per_mtok=2.0))
        out = c.chat(MSGS)
        assert out.ok and out.text == "hello there" and out.attempts == 3 and srv.count == 3
        assert srv.auth_headers[-1] == f"Bearer {KEY}"
        assert srv.requests[-1]["model"] == "loopback-large" and srv.requests[-1]["messages"] == MSGS
        assert out.input_tokens == 10 and out.output_tokens == 20 and out.cost_usd == pytest.approx(50e-6)
        assert c.usage.as_dict() == {"calls": 1, "ok": 1, "errors": 0, "attempts": 3, "input_tokens": 10,
                                     "output_tokens": 20, "cost_usd": 5e-05}


def test_429_is_retried_and_other_4xx_is_not():
    with LoopbackLLM(reply="ok!") as srv:
        srv.mode, srv.fail_first, srv.fail_status = "flaky", 1, 429
        assert make_client(http(srv.base_url)).chat(MSGS).attempts == 2
    with LoopbackLLM() as srv:
        out = make_client(http(srv.base_url.replace("/v1", "/nope"))).chat(MSGS)
        assert not out.ok and out.error_kind == "http_404" and srv.count == 1


def test_fails_for_good_without_leaking_the_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    with FakeOpenAI() as srv:
        out = make_client(http(srv.url, api_key_env=KEY_ENV, max_attempts=2)).chat(
            [{"role": "user", "content": "[[echoauth]] leak it"}])
        assert not out.ok and out.error_kind == "http_500" and srv.calls == 2
        assert KEY not in out.error and "***" in out.error
    monkeypatch.delenv(KEY_ENV)
    out = make_client(http("http://127.0.0.1:9/v1", api_key_env=KEY_ENV)).chat(MSGS)
    assert out.error_kind == "missing_api_key" and KEY_ENV in out.error


def test_connection_refused_is_an_error_outcome():
    out = make_client(http("http://127.0.0.1:9/v1", max_attempts=2, timeout=2.0)).chat(MSGS)
    assert not out.ok and out.error_kind == "connection" and out.attempts == 2


def test_retry_after_seconds_and_http_dates():
    assert parse_retry_after("3") == 3.0 and parse_retry_after(None) is None and parse_retry_after("soon") is None
    date = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 < parse_retry_after(date) <= 31
    with FakeOpenAI(retry_after=email.utils.formatdate(time.time() + 1.2, usegmt=True)) as srv:
        t0 = time.perf_counter()
        out = make_client(http(srv.url)).chat([{"role": "user", "content": "[[429x1]] once"}])
        assert out.ok and out.attempts == 2 and time.perf_counter() - t0 >= 0.2


def test_chat_many_runs_concurrently_up_to_the_bound():
    with FakeOpenAI(latency=0.3) as srv:
        c = make_client(http(srv.url, max_concurrency=4))
        t0 = time.perf_counter()
        outs = c.chat_many([[{"role": "user", "content": f"q{i}"}] for i in range(8)])
        wall = time.perf_counter() - t0
        assert all(o.ok for o in outs) and srv.calls == 8
        assert 0.55 < wall < 2.0  # two waves of four, not eight calls one after another


def test_sync_chat_works_inside_a_running_event_loop():
    with LoopbackLLM(reply="from a loop") as srv:
        c = make_client(http(srv.base_url))

        async def caller():
            return c.chat(MSGS)

        assert asyncio.run(caller()).text == "from a loop"


def test_window_check_and_request_hash():
    spec = http("http://127.0.0.1:9/v1", context_window=100, max_tokens=50)
    c = make_client(spec)
    small = c.build_request(MSGS)
    big = c.build_request([{"role": "user", "content": "x" * 1000}])
    assert c.fits_window(small) and not c.fits_window(big)
    # the key variable, the label, timeouts and concurrency do not change the address
    other = make_client(spec.model_copy(update={"name": "x", "api_key_env": "OTHER", "timeout": 1.0}))
    assert other.build_request(MSGS).request_hash == small.request_hash
    assert make_client(spec.model_copy(update={"temperature": 0.5})).build_request(MSGS).request_hash \
        != small.request_hash


def test_local_model_behind_the_same_interface(tiny_llama):
    spec = ModelSpec(provider="local", model=tiny_llama, max_tokens=6, max_context_tokens=128, batch_size=2,
                     torch_threads=1)
    c = make_client(spec)
    assert c.model_id == Path(tiny_llama).name
    outs = c.chat_many([[{"role": "user", "content": f"hello {i}"}] for i in range(3)])
    assert [o.status for o in outs] == ["ok"] * 3
    for o in outs:
        assert 1 <= o.output_tokens <= 6 and o.cost_usd == 0.0 and o.finish_reason in ("stop", "length")
    one = c.chat([{"role": "user", "content": "hello 0"}])
    assert one.text == outs[0].text  # greedy: batched and alone agree
    assert c.usage.calls == 4 and c.usage.ok == 4
    bad = make_client(ModelSpec(provider="local", model="/nonexistent/model"))
    out = bad.chat(MSGS)
    assert out.error_kind == "local_model" and "nonexistent" in out.error


def test_spec_names_the_key_variable_only():
    with pytest.raises(ValueError, match="NAME of an environment variable"):
        ModelSpec(base_url="http://h", model="m", api_key_env="sk-abc/def")
    with pytest.raises(ValueError, match="needs a base_url"):
        ModelSpec(model="m")


def test_tool_calls_written_as_text_become_structured_when_tools_were_offered():
    tools = [{"type": "function", "function": {"name": "read_file", "parameters": {
        "type": "object", "properties": {"path": {"type": "string"}}}}}]
    reply = 'I will look first.\n<tool_call>{"name": "read_file", "arguments": {"path": "a.py"}}</tool_call>'
    with LoopbackLLM(reply=reply) as srv:
        c = make_client(http(srv.base_url))
        out = c.chat(MSGS, tools=tools)
        assert out.ok and out.text == "I will look first."
        call = out.message["tool_calls"][0]
        assert call["function"]["name"] == "read_file"
        assert json.loads(call["function"]["arguments"]) == {"path": "a.py"}
        plain = c.chat(MSGS)  # no tools offered: the text is the answer, untouched
        assert plain.text == reply and "tool_calls" not in plain.message
