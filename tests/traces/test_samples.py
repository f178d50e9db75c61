"""The bundled sample sessions (what the demo ingests): counts we planted on purpose."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from assets.traces.ingest import sample_files
from tests.traces.conftest import check_openai_messages, ingest

# relative path -> (source_format, steps, tool error kinds, quarantined, secrets)
# The numbers follow from scripts/build_samples.py, which wrote each of these on purpose.
EXPECTED = {
    "claude-code/-home-dev-invoicer/5b1e9f2a-7c3d-4e8f-9a0b-1c2d3e4f5a6b.jsonl": (
        "claude_code", 23,  # 24 assistant turns, one of them the <synthetic> API error
        {"test_failure": 1, "edit_mismatch": 2, "file_not_found": 3, "invalid_tool_input": 1, "command_not_found": 1},
        {"invalid_json": 1},  # the progress record cut mid-line
        {"anthropic_key": 1, "aws_access_key_id": 1, "aws_secret_key": 1, "env_secret": 1}),  # `cat .env`
    "claude-code/-home-dev-invoicer/9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a.jsonl": (
        "claude_code", 9, {"syntax_error": 1, "not_found": 1, "edit_mismatch": 1}, {}, {}),
    "claude-code/-home-dev-invoicer/agent-a3f9c21.jsonl": (
        "claude_code", 6, {"file_not_found": 1, "invalid_tool_input": 1}, {}, {}),
    "claude-code/-home-dev-invoicer/c0ffee00-1d2e-4f3a-8b9c-0d1e2f3a4b5c.jsonl": (
        "claude_code", 12, {"user_rejected": 1, "timeout": 1, "invalid_tool_input": 1, "file_not_read": 1}, {}, {}),
    # a release chore (2026-01-13) and a feature (2026-01-16), each with the mistakes of its kind
    "claude-code/-home-dev-invoicer/7e57a11e-0b3d-4c2a-9e8f-1a2b3c4d5e6f.jsonl": (
        "claude_code", 14, {"file_not_found": 1, "command_not_found": 1, "file_not_read": 1, "edit_mismatch": 1,
                            "invalid_tool_input": 1}, {}, {}),
    "claude-code/-home-dev-invoicer/c0de1c0d-2e3f-4a5b-8c7d-6e5f4a3b2c1d.jsonl": (
        "claude_code", 13, {"file_not_found": 2, "invalid_tool_input": 1, "edit_mismatch": 1, "command_not_found": 1,
                            "tool_unavailable": 1}, {}, {}),
    "claude-code/-home-dev-invoicer/b00b1e55-5a6b-4c7d-8e9f-0a1b2c3d4e5f.jsonl": (  # a security fix (2026-01-15)
        "claude_code", 14, {"file_not_found": 2, "invalid_tool_input": 2, "file_not_read": 1, "edit_mismatch": 1,
                            "command_not_found": 1, "permission_denied": 1}, {}, {}),
    # a small option (2026-01-14): five mistakes of five kinds, and a failing test read as information
    "claude-code/-home-dev-invoicer/d0e5da75-4b1c-4e2d-9f3a-7b6c5d4e3f2a.jsonl": (
        "claude_code", 15, {"file_not_found": 1, "edit_mismatch": 1, "command_not_found": 1, "test_failure": 1,
                            "invalid_tool_input": 1, "syntax_error": 1}, {}, {}),
    "codex/2026/01/15/rollout-2026-01-15T10-12-03-0199a0f4-3b1c-7e2d-9c4b-5a6f7e8d9c0b.jsonl": (
        "codex", 10, {"test_failure": 1, "edit_mismatch": 1, "file_not_found": 1, "command_not_found": 1}, {}, {}),
    "openai/support-bot-2026-01.jsonl": ("openai_messages", 14, {"not_found": 1, "permission_denied": 1,
                                                                 "invalid_tool_input": 1, "tool_unavailable": 1}, {}, {}),
    "sharegpt/invoicer-helpdesk.jsonl": ("sharegpt", 10, {"not_found": 1, "invalid_tool_input": 1}, {}, {}),
    # one pretty-printed JSON document: 6 agent actions (run, run, read, edit, run, finish); the first run
    # fails (a test), the second reads a misspelled path
    "openhands/invoicer__invoicer-12.json": ("openhands", 6, {"test_failure": 1, "file_not_found": 1}, {}, {}),
    # two traces: 2 GenAI chat spans around a tool run + 1 OpenInference LLM span
    "otel/helpdesk-spans.jsonl": ("otel_genai", 3, {}, {}, {}),
}


def test_sample_set(samples):
    assert sorted(str(p.relative_to(samples)) for p in sample_files()) == sorted(EXPECTED)


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_sample(samples, rel):
    fmt, n_steps, kinds, quarantined, secrets = EXPECTED[rel]
    raw, turns, steps, stats = ingest(samples / rel, rel.replace("/", "~"))
    assert stats["source_format"] == fmt
    assert stats["quarantined"] == quarantined
    assert stats["secrets"] == secrets
    assert {k: v for k, v in stats["tool_errors_by_kind"].items()} == kinds
    assert len(steps) == n_steps
    calls = {c["id"] for t in turns for c in orjson.loads(t["tool_calls"] or "[]")}
    assert all(t["tool_call_id"] in calls for t in turns if t["role"] == "tool")
    for s in steps:
        check_openai_messages(orjson.loads(s["messages"]))
        names = {t.get("function", t).get("name") for t in orjson.loads(s["tools"])}
        used = {c["function"]["name"] for c in orjson.loads(s["response"]).get("tool_calls", [])}
        # every tool the step calls is among the tools offered (but the planted call of an unknown tool)
        assert used <= names or s["caused_error_kind"] == "tool_unavailable"
    for r in raw:  # the planted secrets are gone from the stored text
        assert "DEMO0nly" not in r["raw"] and "wJalrXUtnFEMI" not in r["raw"]


def test_total_steps_fit_the_demo():
    assert 60 <= sum(v[1] for v in EXPECTED.values()) <= 160


def test_samples_hold_enough_mistakes_for_the_demo_pairs(samples):
    """The demo's teachers are asked about the steps whose own call was a mistake (recipes/
    teachers.yaml): each can give up to 3 error-site pairs; the demo needs >= 20 valid ones."""
    from assets.traces.failures import load_failure_policy, step_verdict

    policy = load_failure_policy()
    mistakes = 0
    for rel in EXPECTED:
        _, _, steps, _ = ingest(samples / rel, rel.replace("/", "~"))
        mistakes += sum(1 for s in steps if (v := step_verdict(s, policy)) is not None and v.is_mistake)
    assert mistakes >= 45


def test_samples_are_what_the_builder_writes(samples, tmp_path):
    """The committed samples are exactly the output of build_samples.py (no hand edits drift)."""
    import importlib.util

    builder = Path(__file__).resolve().parents[2] / "scripts" / "build_samples.py"
    spec = importlib.util.spec_from_file_location("build_samples", builder)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(tmp_path)
    for rel in EXPECTED:
        assert (tmp_path / rel).read_bytes() == (samples / rel).read_bytes(), rel
