"""The non-Claude parsers against real files nobody on this project wrote (../shared/realdata).

Expected figures were counted from the files with jq, independently of our code:

* Codex 0.125 rollout: ``jq -c 'select(.type=="response_item" and .payload.type=="function_call_output")
  | select(.payload.output|test("Process exited with code [1-9]"))'`` → 4 outputs (exit 2, 1, 1, 1), and
  one output starting ``write_stdin failed:``; 66 ``token_count`` events = 66 model responses;
  99 function_call + 3 custom_tool_call = 102 calls, each answered.
* Gemini CLI: ``jq '.messages[] | .type'`` → 3 user, 11 gemini; ``jq '[.messages[].toolCalls // [] | length] | add'`` → 10.
* SWE-agent: ``jq '.history[] | .role'`` → 5 assistant (one tool call each), 5 tool.
* mini-swe-agent: ``jq '.[] | .role'`` → 10 assistant, each with one bash block; returncode 1 twice.
* Langfuse: ``jq '[.observations[] | select(.type=="GENERATION")] | length'`` → 2, 2, 4.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest

from tests.traces.conftest import REALDATA, check_openai_messages, ingest


@pytest.fixture(scope="module")
def shared() -> Path:
    if not (REALDATA / "codex").is_dir():
        pytest.skip(f"real third-party traces not found at {REALDATA} (they live beside the project)")
    return REALDATA


def _calls(turns):
    out = {}
    for t in turns:
        for c in orjson.loads(t["tool_calls"] or "[]"):
            out[c["id"]] = c["function"]["name"]
            orjson.loads(c["function"]["arguments"])
    return out


def _check_steps(steps):
    for s in steps:
        msgs = orjson.loads(s["messages"])
        check_openai_messages(msgs)
        assert msgs[0]["role"] in ("user", "system")


def test_codex_current_rollout(shared):
    raw, turns, steps, stats = ingest(shared / "codex" / "rollout-0.125-function-calls.jsonl")
    assert stats["source_format"] == "codex" and not stats["quarantined"]
    errs = [t for t in turns if t["tool_error"]]
    assert len(errs) == 5
    exits = sorted(orjson.loads(t["extra"])["exit_code"] for t in errs if "exit_code" in (t["extra"] or ""))
    assert exits == [1, 1, 1, 2]  # the 4 non-zero exits
    stdin = [t for t in errs if t["tool_name"] == "write_stdin" and t["content"].startswith("write_stdin failed")]
    assert len(stdin) == 1 and stdin[0]["error_kind"] == "session_closed"
    assert all(t["error_kind"] for t in errs)
    assert stats["steps"] == 66  # one step per model response
    assert stats["error_sites"] == 5 and stats["caused_errors"] == 5
    sites = [s for s in steps if s["is_error_site"]]
    assert sorted(s["error_text"][:200] for s in sites) == sorted(t["content"][:200] for t in errs)
    calls = _calls(turns)
    assert len(calls) == 102 and Counter(calls.values())["apply_patch"] == 3
    results = [t for t in turns if t["role"] == "tool"]
    assert {r["tool_call_id"] for r in results} == set(calls)
    # its 25 reasoning items are encrypted: counted apart, never mixed into the visible text
    asst = [t for t in turns if t["role"] == "assistant"]
    assert sum(orjson.loads(t["extra"]).get("encrypted_reasoning_items", 0) for t in asst if t["extra"]) == 25
    assert not any("gAAAA" in (t["content"] or "") for t in asst)
    _check_steps(steps)


def test_gemini_cli_session(shared):
    path = next((shared / "gemini-cli").glob("session-*.json"))
    raw, turns, steps, stats = ingest(path)
    assert stats["source_format"] == "gemini_cli" and not stats["quarantined"]
    roles = Counter(t["role"] for t in turns)
    assert roles["user"] == 3 and roles["assistant"] == 11 and roles["tool"] == 10
    calls = _calls(turns)
    assert len(calls) == 10
    results = [t for t in turns if t["role"] == "tool"]
    assert {r["tool_call_id"] for r in results} == set(calls) and all(r["content"] for r in results)
    assert all(r["tool_name"] == calls[r["tool_call_id"]] for r in results)
    assert stats["steps"] == 11
    asst = [t for t in turns if t["role"] == "assistant"]
    assert all(t["model"] for t in asst) and all(t["output_tokens"] is not None for t in asst)
    assert sum(1 for t in asst if t["thinking"]) > 0
    _check_steps(steps)


def test_gemini_rewritten_document_reingests_cleanly(shared, tmp_path):
    """Gemini CLI rewrites the whole document as the session grows: the new version is read
    whole, with the same ids for the messages it shares with the old one."""
    src = next((shared / "gemini-cli").glob("session-*.json"))
    doc = orjson.loads(src.read_bytes())
    p = tmp_path / "session.json"
    short = {**doc, "messages": doc["messages"][:4]}
    p.write_bytes(orjson.dumps(short, option=orjson.OPT_INDENT_2))
    _, t1, _, s1 = ingest(p, "g")
    p.write_bytes(orjson.dumps(doc))  # rewritten (compact this time), not appended
    _, t2, _, s2 = ingest(p, "g")
    assert not s1["quarantined"] and not s2["quarantined"]
    ids1 = [t["turn_id"] for t in t1 if t["role"] != "meta"]
    ids2 = [t["turn_id"] for t in t2 if t["role"] != "meta"]
    assert ids2[:len(ids1)] == ids1
    assert Counter(t["role"] for t in t2)["assistant"] == 11


def test_swe_agent_traj(shared):
    raw, turns, steps, stats = ingest(shared / "swe-agent" / "function_calling_simple.traj")
    assert stats["source_format"] == "swe_agent" and not stats["quarantined"]
    assert len(raw) == len((shared / "swe-agent" / "function_calling_simple.traj").read_bytes().splitlines())
    roles = Counter(t["role"] for t in turns)
    assert roles["assistant"] == 5 and roles["tool"] == 5
    assert stats["steps"] == 5
    calls = _calls(turns)
    assert {t["tool_call_id"] for t in turns if t["role"] == "tool"} == set(calls)
    _check_steps(steps)


def test_mini_swe_agent_traj(shared):
    raw, turns, steps, stats = ingest(shared / "mini-swe-agent" / "github_issue.traj.json")
    assert stats["source_format"] == "mini_swe_agent"
    assert stats["steps"] == 10
    calls = _calls(turns)
    assert len(calls) == 10 and set(calls.values()) == {"bash"}
    results = [t for t in turns if t["role"] == "tool"]
    assert len(results) == 10 and {r["tool_call_id"] for r in results} == set(calls)
    errs = [r for r in results if r["tool_error"]]
    assert len(errs) == 2 and {r["error_kind"] for r in errs} == {"file_not_found", "nonzero_exit"}
    assert stats["error_sites"] == 2
    _check_steps(steps)


@pytest.mark.parametrize("name,generations", [("langgraph-2025-08-22.json", 2), ("openai-agents-2025-09-30.json", 2),
                                              ("pydantic-ai-tools-2025-12-04.json", 4)])
def test_langfuse_exports(shared, name, generations):
    path = shared / "langfuse" / name
    doc = orjson.loads(path.read_bytes())
    assert sum(o["type"] == "GENERATION" for o in doc["observations"]) == generations
    raw, turns, steps, stats = ingest(path)
    assert stats["source_format"] == "langfuse" and not stats["quarantined"]
    assert stats["steps"] == generations  # one step per model call
    gens = {o["id"]: o for o in doc["observations"] if o["type"] == "GENERATION"}
    for s in steps:
        t = next(t for t in turns if t["turn_id"] == s["turn_id"])
        ex = orjson.loads(t["extra"])
        o = gens[ex["observation_id"]]
        assert t["model"] == o["model"] and t["output_tokens"] == o["usageDetails"]["output"]
        assert ex["cost_usd"] == o["costDetails"]["total"]
    # tool results are linked to the calls they answer
    calls = _calls(turns)
    results = [t for t in turns if t["role"] == "tool"]
    assert results and all(r["tool_call_id"] in calls for r in results)
    for s in steps:  # a later call's context holds the earlier answer and its results
        msgs = orjson.loads(s["messages"])
        for m in msgs:
            if m["role"] == "tool":
                assert m["content"] != "[no tool result recorded]"
    _check_steps(steps)
    for s in steps:  # the real tool schemas the calls were offered (not derived from use)
        offered = {t["function"]["name"]: t["function"] for t in orjson.loads(s["tools"])}
        used = {c["function"]["name"] for c in orjson.loads(s["response"]).get("tool_calls", [])}
        assert used <= set(offered) and all(f.get("parameters") for f in offered.values())
    header = next(t for t in turns if t["kind"] == "conversation")
    scores = doc["trace"]["scores"]
    if scores:
        labels = orjson.loads(header["extra"])["labels"]
        assert labels == {s["name"]: s["stringValue"] if s.get("stringValue") is not None else s["value"]
                          for s in scores}
