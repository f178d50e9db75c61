"""Fixtures of the trace tests: the real transcripts in ../shared/realdata and helpers."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from assets.traces.ingest import SAMPLES_DIR, ingest_file
from assets.traces.tables import RAW_TRACES, AGENT_STEPS, TRACE_TURNS

REALDATA = Path(__file__).resolve().parents[2].parent / "shared" / "realdata"


@pytest.fixture(scope="session")
def realdata() -> Path:
    d = REALDATA / "claude-code"
    if not d.is_dir():
        pytest.skip(f"real transcripts not found at {d} (they live beside the project, in shared/realdata)")
    return d


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES_DIR


def ingest(path: Path, key: str | None = None):
    """(raw, turns, steps, stats), with every row checked against its table spec."""
    key = key or path.name
    raw, turns, steps, stats = ingest_file(path, key)
    RAW_TRACES.conform(raw)
    TRACE_TURNS.conform(turns)
    AGENT_STEPS.conform(steps)
    return raw, turns, steps, stats


def write_lines(tmp_path: Path, name: str, lines: list, *, trailing_newline: bool = True) -> Path:
    """Write records (dicts are JSON-encoded, str/bytes are written as is) one per line."""
    parts = []
    for x in lines:
        if isinstance(x, (dict, list)):
            parts.append(orjson.dumps(x))
        elif isinstance(x, str):
            parts.append(x.encode())
        else:
            parts.append(x)
    data = b"\n".join(parts) + (b"\n" if trailing_newline else b"")
    p = tmp_path / name
    p.write_bytes(data)
    return p


def check_openai_messages(messages: list[dict]) -> None:
    """Assert a context is valid OpenAI chat format with consistent tool-call linkage."""
    assert isinstance(messages, list)
    open_calls: set[str] = set()
    for m in messages:
        assert m["role"] in ("system", "user", "assistant", "tool"), m
        assert isinstance(m["content"], str)
        if m["role"] == "assistant":
            assert not open_calls, f"assistant message before all tool calls were answered: {open_calls}"
            for c in m.get("tool_calls") or []:
                assert c["type"] == "function" and c["id"]
                assert isinstance(c["function"]["name"], str) and c["function"]["name"]
                args = c["function"]["arguments"]
                assert isinstance(args, str)
                orjson.loads(args)  # a JSON string
                open_calls.add(c["id"])
        elif m["role"] == "tool":
            assert m["tool_call_id"] in open_calls, f"tool message answers no preceding call: {m['tool_call_id']}"
            open_calls.discard(m["tool_call_id"])
        else:
            assert not open_calls, f"{m['role']} message before all tool calls were answered: {open_calls}"
