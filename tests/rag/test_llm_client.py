"""The synchronous OpenAI-compatible client against a real loopback server."""

import pytest

from assets.rag.llm import LLMError, OpenAICompatClient
from tests.rag.loopback import LoopbackLLM

MSGS = [{"role": "user", "content": "hi"}]


def test_retries_then_answers_and_sends_the_key(monkeypatch):
    monkeypatch.setenv("RAG_TEST_KEY", "sk-test-secret-123")
    with LoopbackLLM(reply="hello there") as srv:
        srv.mode, srv.fail_first, srv.fail_status = "flaky", 2, 503
        c = OpenAICompatClient(srv.base_url, "loopback-large", "RAG_TEST_KEY", backoff_s=0.0, max_retries=3)
        res = c.chat(MSGS)
        assert res.text == "hello there" and res.attempts == 3 and srv.count == 3
        assert srv.auth_headers[-1] == "Bearer sk-test-secret-123"
        assert srv.requests[-1]["model"] == "loopback-large" and srv.requests[-1]["messages"] == MSGS


def test_429_is_retried_and_other_4xx_is_not():
    with LoopbackLLM(reply="ok!") as srv:
        srv.mode, srv.fail_first, srv.fail_status = "flaky", 1, 429
        assert OpenAICompatClient(srv.base_url, "m", backoff_s=0.0).chat(MSGS).attempts == 2
    with LoopbackLLM() as srv:
        c = OpenAICompatClient(srv.base_url.replace("/v1", "/nope"), "m", backoff_s=0.0, max_retries=3)
        with pytest.raises(LLMError, match="HTTP 404"):
            c.chat(MSGS)
        assert srv.count == 1


def test_fails_for_good_without_leaking_the_key(monkeypatch):
    monkeypatch.setenv("RAG_TEST_KEY", "sk-test-secret-123")
    with LoopbackLLM() as srv:
        srv.mode = "fail"
        c = OpenAICompatClient(srv.base_url, "m", "RAG_TEST_KEY", backoff_s=0.0, max_retries=2)
        with pytest.raises(LLMError) as ei:
            c.chat(MSGS)
        assert srv.count == 3 and "sk-test" not in str(ei.value) and "HTTP 500" in str(ei.value)
    monkeypatch.delenv("RAG_TEST_KEY")
    with pytest.raises(LLMError, match="RAG_TEST_KEY"):
        OpenAICompatClient("http://127.0.0.1:9/v1", "m", "RAG_TEST_KEY").chat(MSGS)


def test_connection_refused_is_an_llm_error():
    c = OpenAICompatClient("http://127.0.0.1:9/v1", "m", timeout=2.0, backoff_s=0.0, max_retries=1)
    with pytest.raises(LLMError, match="ConnectError"):
        c.chat(MSGS)
