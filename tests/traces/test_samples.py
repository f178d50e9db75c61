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
    # 8 more tasks of the same project (2026-01-12 to 16), four mistakes each, every one recovered from:
    # a wrong path, a misspelled program or test file (pytest's "not found"), an unknown or mistyped
    # tool parameter, an edit target misremembered or a file edited before it was read
    "claude-code/-home-dev-invoicer/f1ceb2dc-27bf-4aaa-8659-c7ef5fd5496c.jsonl": (  # export --currency
        "claude_code", 13, {"file_not_found": 1, "invalid_tool_input": 1, "edit_mismatch": 1, "command_not_found": 1},
        {}, {}),
    "claude-code/-home-dev-invoicer/0da0b47f-cf11-4cfc-b063-af4338c8f067.jsonl": (  # round each line
        "claude_code", 13, {"file_not_found": 1, "edit_mismatch": 1, "not_found": 1, "invalid_tool_input": 1}, {}, {}),
    "claude-code/-home-dev-invoicer/ccc8e024-0825-4b41-9085-b859cb888551.jsonl": (  # a CSV header row
        "claude_code", 13, {"file_not_found": 1, "invalid_tool_input": 1, "edit_mismatch": 1, "command_not_found": 1},
        {}, {}),
    "claude-code/-home-dev-invoicer/7182db29-a841-4d2b-b0a9-d6a892250e41.jsonl": (  # empty CSV import
        "claude_code", 14, {"file_not_found": 1, "edit_mismatch": 1, "invalid_tool_input": 1, "command_not_found": 1},
        {}, {}),
    "claude-code/-home-dev-invoicer/032647db-590d-4bcd-aecf-5b17a01ef44f.jsonl": (  # rename fmt
        "claude_code", 14, {"invalid_tool_input": 2, "edit_mismatch": 1, "not_found": 1}, {}, {}),
    "claude-code/-home-dev-invoicer/6c11dd4b-7b8c-4904-8a8c-2f9d7a05963a.jsonl": (  # webhook tests
        "claude_code", 11, {"file_not_found": 1, "edit_mismatch": 1, "not_found": 1, "command_not_found": 1}, {}, {}),
    "claude-code/-home-dev-invoicer/7b594c74-65d4-47ba-837b-3698306cc6f3.jsonl": (  # 0.5.0 and --version
        "claude_code", 14, {"file_not_found": 1, "invalid_tool_input": 1, "file_not_read": 1, "command_not_found": 1},
        {}, {}),
    # a failing test read as information (not a mistake) besides the four mistakes
    "claude-code/-home-dev-invoicer/72a69cc6-9491-40d6-b12f-27b15c63fa3a.jsonl": (
        "claude_code", 12, {"test_failure": 1, "file_not_found": 1, "edit_mismatch": 1, "command_not_found": 1,
                            "invalid_tool_input": 1}, {}, {}),
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
    # the demo's teacher stage asks about at most 8 mistake steps per session (recipes/teachers.yaml:
    # ask_steps: mistakes, max_steps_per_session: 8), so its cost follows the mistakes, not the step count
    assert 60 <= sum(v[1] for v in EXPECTED.values()) <= 260


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
