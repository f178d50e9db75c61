"""Fixtures of the teacher tests: a real loopback OpenAI-compatible server, a tiny model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from testsupport.fake_openai import FakeOpenAI

TOOLS = [{"type": "function", "function": {
    "name": "read_file", "description": "Read a file",
    "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}}]


def step(i: int, content: str, session: str = "s1", tools: Any = TOOLS, system: str | None = None) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": "start the task"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c0", "type": "function", "function": {"name": "read_file", "arguments": '{"path": "a.py"}'}}]},
        {"role": "tool", "tool_call_id": "c0", "content": "print('hi')"},
        {"role": "user", "content": content},
    ]
    return {"session_key": session, "step_id": f"{session}:{i}", "step_index": i,
            "messages": json.dumps(msgs), "tools": json.dumps(tools) if tools is not None else None}


def agent_step_row(i: int, content: str, session: str = "s1") -> dict:
    """A full AGENT_STEPS row (what the traces family writes)."""
    s = step(i, content, session)
    return {**s, "source_format": "openai", "turn_id": f"{session}:t{i}", "session_id": session,
            "response": json.dumps({"role": "assistant", "content": "original answer"}),
            "response_text": "original answer", "is_error_site": False, "caused_error": False}


def http_teacher(url: str, name: str = "remote", **kw) -> dict:
    d = {"name": name, "provider": "openai_compatible", "base_url": url, "model": f"model-{name}",
         "timeout": 1.0, "max_attempts": 3, "backoff_base": 0.01, "backoff_max": 0.05,
         "max_concurrency": 8, "price_input_per_mtok": 1.0, "price_output_per_mtok": 2.0}
    d.update(kw)
    return d


def pool_yaml(teachers: list[dict], **kw) -> str:
    return json.dumps({"teachers": teachers, **kw})  # JSON is YAML


@pytest.fixture
def server():
    with FakeOpenAI(retry_after="1", slow_seconds=2.5) as srv:
        yield srv


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    from testsupport.models import build_tiny_llama

    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))
