"""Format parsers on small hand-written records: Codex, OpenAI messages, ShareGPT, Claude Code edge cases."""

from __future__ import annotations

import json

import orjson

from assets.traces import errors
from assets.traces.errors import classify_error
from assets.traces.formats import parse_turns
from assets.traces.raw import read_raw_lines
from assets.traces.steps import build_agent_steps
from assets.traces.tables import TRACE_TURNS
from tests.traces.conftest import check_openai_messages, write_lines


def _turns(tmp_path, lines, name="s.jsonl"):
    rows, stats = read_raw_lines(write_lines(tmp_path, name, lines), "k")
    turns = parse_turns(rows, "k")
    TRACE_TURNS.conform(turns)
    return turns, stats


def _codex(typ, payload, ts="2026-01-15T10:00:00.000Z"):
    return {"timestamp": ts, "type": typ, "payload": payload}


def test_codex_grouping_errors_usage(tmp_path):
    lines = [
        _codex("session_meta", {"id": "sess-1", "cwd": "/w", "cli_version": "0.46.0"}),
        _codex("turn_context", {"model": "gpt-5-codex", "cwd": "/w"}),
        _codex("response_item", {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "be brief"}]}),
        _codex("response_item", {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "fix it"}]}),
        _codex("response_item", {"type": "reasoning", "summary": [{"type": "summary_text", "text": "**Plan**"}]}),
        _codex("event_msg", {"type": "agent_reasoning", "text": "**Plan**"}),
        _codex("response_item", {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Running tests."}]}),
        _codex("response_item", {"type": "function_call", "name": "shell", "call_id": "c1",
                                 "arguments": json.dumps({"command": ["bash", "-lc", "pytest -q"]})}),
        _codex("response_item", {"type": "local_shell_call", "call_id": "c2", "status": "completed",
                                 "action": {"type": "exec", "command": ["ls"]}}),
        _codex("event_msg", {"type": "token_count", "info": {"last_token_usage": {
            "input_tokens": 1000, "cached_input_tokens": 800, "output_tokens": 50}}}),
        _codex("response_item", {"type": "function_call_output", "call_id": "c1",
                                 "output": json.dumps({"output": "1 failed, 3 passed", "metadata": {"exit_code": 1}})}),
        _codex("response_item", {"type": "function_call_output", "call_id": "c2", "output": "Exit code: 0\nOutput:\na.py"}),
        _codex("response_item", {"type": "custom_tool_call", "call_id": "c3", "name": "apply_patch", "input": "*** Begin Patch"}),
        _codex("response_item", {"type": "custom_tool_call_output", "call_id": "c3",
                                 "output": "failed to parse function arguments: missing field"}),
        _codex("response_item", {"type": "web_search_call", "status": "completed", "action": {"type": "search"}}),
        _codex("response_item", {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Done."}]}),
        _codex("compacted", {"message": "summary of the work so far"}),
        _codex("response_item", {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "thanks"}]}),
        _codex("response_item", {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "np"}]}),
        _codex("future_line_type", {"x": 1}),
    ]
    turns, stats = _turns(tmp_path, lines, "rollout-2026-01-15T10-00-00-x.jsonl")
    assert stats["source_format"] == "codex"
    body = [(t["role"], t["kind"], t["source_lines"]) for t in turns if t["role"] != "meta"]
    assert body == [
        ("system", "message", [3]), ("user", "message", [4]),
        ("assistant", "message", [5, 7, 8, 9]),  # reasoning + message + 2 calls, across an event line
        ("tool", "tool_result", [11]), ("tool", "tool_result", [12]),
        ("assistant", "message", [13]),
        ("tool", "tool_result", [14]),
        ("assistant", "message", [15, 16]),
        ("user", "summary", [17]), ("user", "message", [18]), ("assistant", "message", [19]),
    ]
    a = next(t for t in turns if t["source_lines"] == [5, 7, 8, 9])
    assert a["thinking"] == "**Plan**" and a["content"] == "Running tests." and a["model"] == "gpt-5-codex"
    assert [c["function"]["name"] for c in orjson.loads(a["tool_calls"])] == ["shell", "local_shell"]
    assert (a["input_tokens"], a["cache_read_tokens"], a["output_tokens"]) == (200, 800, 50)
    tools = [t for t in turns if t["role"] == "tool"]
    assert [(t["tool_name"], t["tool_error"], t["error_kind"]) for t in tools] == [
        ("shell", True, "test_failure"), ("local_shell", False, None), ("apply_patch", True, "invalid_tool_input")]
    patch = next(t for t in turns if t["source_lines"] == [13])
    assert orjson.loads(orjson.loads(patch["tool_calls"])[0]["function"]["arguments"]) == {"input": "*** Begin Patch"}
    assert {t["session_id"] for t in turns} == {"sess-1"}
    assert sum(t["is_compaction_boundary"] for t in turns) == 1
    assert [t["record_type"] for t in turns if t["kind"] == "unknown"] == ["future_line_type"]
    steps = build_agent_steps(turns)
    last = orjson.loads(steps[-1]["messages"])
    assert [m["role"] for m in last] == ["user", "user"]  # context restarts at the compaction summary
    assert last[0]["content"] == "summary of the work so far"
    first = orjson.loads(steps[0]["messages"])
    assert [m["role"] for m in first] == ["system", "user"]
    assert steps[1]["is_error_site"] and steps[1]["error_kind"] == "test_failure"
    for s in steps:
        check_openai_messages(orjson.loads(s["messages"]))


def test_codex_legacy_rollout(tmp_path):
    lines = [{"id": "legacy-1", "timestamp": "2025-05-01T00:00:00Z", "instructions": None},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
             {"record_type": "state"},
             {"type": "function_call", "name": "shell", "arguments": "{\"command\":[\"ls\"]}", "call_id": "c1"},
             {"type": "function_call_output", "call_id": "c1", "output": "{\"output\":\"x\",\"metadata\":{\"exit_code\":2}}"}]
    turns, stats = _turns(tmp_path, lines)
    assert stats["source_format"] == "codex"
    assert [(t["role"], t["tool_error"]) for t in turns if t["role"] != "meta"] == [
        ("user", None), ("assistant", None), ("tool", True)]
    assert next(t for t in turns if t["role"] == "tool")["error_kind"] == "nonzero_exit"


def test_openai_messages(tmp_path):
    tools = [{"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}}]
    lines = [
        {"messages": [
            {"role": "developer", "content": "sys"},
            {"role": "user", "content": [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}]},
            {"role": "assistant", "content": None, "reasoning_content": "hmm",
             "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "get", "arguments": {"q": 1}}},
                            {"type": "function", "function": {"name": "get", "arguments": "{\"q\": 2}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "Traceback (most recent call last):\nKeyError: 'q'"},
            {"role": "tool", "name": "get", "content": "ok"},  # no id: answers the open call
            {"role": "assistant", "content": "done"},
            {"role": "narrator", "content": "?"}],
         "tools": tools, "id": "conv-1"},
        {"messages": [{"role": "user", "content": "legacy"},
                      {"role": "assistant", "content": None, "function_call": {"name": "get", "arguments": "{}"}},
                      {"role": "function", "name": "get", "content": "{\"error\": \"boom\"}"},
                      {"role": "assistant", "content": "sorry"}]},
    ]
    turns, stats = _turns(tmp_path, lines)
    assert stats["source_format"] == "openai_messages"
    assert {t["session_id"] for t in turns} == {"k#L1", "k#L2"}
    c1 = [t for t in turns if t["session_id"] == "k#L1"]
    assert [t["role"] for t in c1] == ["meta", "system", "user", "assistant", "tool", "tool", "assistant", "meta"]
    assert c1[2]["content"] == "look\n[image]" and c1[3]["thinking"] == "hmm"
    calls = orjson.loads(c1[3]["tool_calls"])
    assert [orjson.loads(c["function"]["arguments"]) for c in calls] == [{"q": 1}, {"q": 2}]
    assert c1[4]["tool_error"] and c1[4]["error_kind"] == "other"
    assert c1[5]["tool_call_id"] == calls[1]["id"] and c1[5]["tool_error"] is False
    c2 = [t for t in turns if t["session_id"] == "k#L2"]
    assert c2[3]["role"] == "tool" and c2[3]["tool_call_id"] == orjson.loads(c2[2]["tool_calls"])[0]["id"]
    assert c2[3]["tool_error"]
    steps = build_agent_steps(turns)
    assert len(steps) == 4
    assert orjson.loads(steps[0]["tools"]) == tools  # real schemas from the line
    assert orjson.loads(steps[2]["tools"])[0]["function"]["name"] == "get"  # derived
    assert steps[1]["is_error_site"] and steps[1]["error_text"].startswith("Traceback")
    for s in steps:
        check_openai_messages(orjson.loads(s["messages"]))


def test_sharegpt(tmp_path):
    lines = [
        {"system": "be nice", "tools": json.dumps([{"name": "f", "parameters": {}}]), "conversations": [
            {"from": "human", "value": "q"},
            {"from": "gpt", "value": "calling"},
            {"from": "function_call", "value": json.dumps([{"name": "f", "arguments": {"a": 1}},
                                                           {"name": "f", "arguments": {"a": 2}}])},
            {"from": "observation", "value": "r1"},
            {"from": "observation", "value": "Error: bad a"},
            {"from": "gpt", "value": "answer"}]},
        {"conversations": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]},
    ]
    turns, stats = _turns(tmp_path, lines)
    assert stats["source_format"] == "sharegpt"
    c1 = [t for t in turns if t["session_id"] == "k#L1"]
    assert [t["role"] for t in c1] == ["meta", "system", "user", "assistant", "tool", "tool", "assistant"]
    calls = orjson.loads(c1[3]["tool_calls"])
    assert c1[3]["content"] == "calling" and len(calls) == 2
    assert [t["tool_call_id"] for t in c1[4:6]] == [c["id"] for c in calls]
    assert c1[5]["tool_error"] and not c1[4]["tool_error"]
    steps = build_agent_steps(turns)
    assert len(steps) == 3 and steps[1]["is_error_site"]
    assert orjson.loads(steps[0]["tools"]) == [{"name": "f", "parameters": {}}]


CC_BASE = {"sessionId": "S", "isSidechain": False, "timestamp": "2026-01-01T00:00:00Z"}


def _u(uuid, parent, content, **kw):
    return {**CC_BASE, "type": "user", "uuid": uuid, "parentUuid": parent,
            "message": {"role": "user", "content": content}, **kw}


def _a(uuid, parent, mid, blocks, **kw):
    return {**CC_BASE, "type": "assistant", "uuid": uuid, "parentUuid": parent,
            "message": {"id": mid, "role": "assistant", "model": "claude-x", "content": blocks,
                        "usage": {"input_tokens": 1, "output_tokens": 2}}, **kw}


def _use(tid, name="Bash", inp=None):
    return {"type": "tool_use", "id": tid, "name": name, "input": inp or {"command": "ls"}}


def _res(tid, text, err=False):
    return {"type": "tool_result", "tool_use_id": tid, "content": text, "is_error": err}


def test_claude_code_interleaved_results_unknown_records_duplicates(tmp_path):
    """Newer clients write a tool result between lines of the same message; records we
    do not know are kept; a record written twice is not counted twice."""
    lines = [
        _u("u1", None, "go"),
        _a("a1", "u1", "m1", [_use("t1")]),
        _u("r1", "a1", [_res("t1", "Exit code 1\nboom", True)]),
        _a("a2", "r1", "m1", [_use("t2", "Read", {"file_path": "/x"})]),
        _u("r2", "a2", [_res("t2", [{"type": "text", "text": "content"}, {"type": "image"}])]),
        {"type": "progress", "uuid": "p1", "parentUuid": "r2", "data": {"type": "hook_progress"}},
        {"type": "brand-new-record", "foo": {"bar": 1}},
        _a("a3", "p1", "m2", [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "ok"}]),
        _a("a3", "p1", "m2", [{"type": "text", "text": "ok"}]),  # duplicate uuid
        {"type": "summary", "summary": "Title", "leafUuid": "a3"},
        _u("u9", "a3", [{"type": "text", "text": "again"}, {"type": "image", "source": {}}]),
        _a("a9", "u9", "m9", [{"type": "text", "text": "API Error: 500"}], isApiErrorMessage=True),
        _a("a10", "zzz-not-in-file", "m10", [{"type": "text", "text": "orphan parent"}]),
    ]
    turns, stats = _turns(tmp_path, lines)
    kinds = [(t["role"], t["kind"], t["source_lines"]) for t in turns]
    assert kinds == [
        ("user", "message", [1]), ("assistant", "message", [2, 4]), ("tool", "tool_result", [3]),
        ("tool", "tool_result", [5]), ("meta", "meta", [6]), ("meta", "unknown", [7]),
        ("assistant", "message", [8]), ("meta", "duplicate", [9]), ("meta", "summary", [10]),
        ("user", "message", [11]), ("assistant", "message", [12]), ("assistant", "message", [13])]
    assert turns[3]["content"] == "content\n[image]" and turns[9]["content"] == "again\n[image]"
    assert turns[5]["extra"] == json.dumps(lines[6], separators=(",", ":"))  # unknown record kept raw
    assert turns[6]["content"] == "ok" and turns[6]["thinking"] == "hm"
    assert turns[11]["parent_turn_id"] is None and orjson.loads(turns[11]["extra"])["parent_uuid"] == "zzz-not-in-file"
    steps = build_agent_steps(turns)
    # a3 (its context) and a9 is an API error -> not a step; a10 has no prompt in context -> not a step
    assert [s["turn_id"] for s in steps] == [turns[1]["turn_id"], turns[6]["turn_id"]]
    ctx = orjson.loads(steps[1]["messages"])
    assert [m["role"] for m in ctx] == ["user", "assistant", "tool", "tool"]
    assert [m["tool_call_id"] for m in ctx[2:]] == ["t1", "t2"]
    assert steps[0]["caused_error"] and steps[0]["caused_error_kind"] == "nonzero_exit"
    assert not steps[1]["is_error_site"] or steps[1]["error_kind"] == "nonzero_exit"
    for s in steps:
        check_openai_messages(orjson.loads(s["messages"]))


def test_missing_tool_result_gets_placeholder(tmp_path):
    lines = [_u("u1", None, "go"), _a("a1", "u1", "m1", [_use("t1")]),
             _u("u2", "a1", "[Request interrupted by user]"), _a("a2", "u2", "m2", [{"type": "text", "text": "ok"}])]
    turns, _ = _turns(tmp_path, lines)
    steps = build_agent_steps(turns)
    ctx = orjson.loads(steps[1]["messages"])
    assert [m["role"] for m in ctx] == ["user", "assistant", "tool", "user"]
    assert ctx[2]["tool_call_id"] == "t1" and ctx[2]["content"] == "[no tool result recorded]"
    check_openai_messages(ctx)


def test_error_classifier():
    cases = {
        "Exit code 1\ncat: x: No such file or directory": "file_not_found",
        "Exit code 127\n/bin/bash: line 1: python: command not found": "command_not_found",
        "<tool_use_error>String to replace not found in file.</tool_use_error>": "edit_mismatch",
        "Found 3 matches of the string to replace, but replace_all is false.": "edit_mismatch",
        "<tool_use_error>File has not been read yet. Read it first before writing to it.</tool_use_error>": "file_not_read",
        "InputValidationError: The required parameter `prompt` is missing": "invalid_tool_input",
        "Command timed out after 2m 0.0s": "timeout",
        "The user doesn't want to proceed with this tool use. The tool use was rejected": "user_rejected",
        "[Request interrupted by user for tool use]": "interrupted",
        "Exit code 1\nbash: ./run.sh: Permission denied": "permission_denied",
        "FAILED tests/test_a.py::test_x - assert 1 == 2\n1 failed, 3 passed in 0.1s": "test_failure",
        "  File \"a.py\", line 3\n    def f(\n         ^\nSyntaxError: '(' was never closed": "syntax_error",
        "curl: (7) Failed to connect: Connection refused": "connection_error",
        "requests.exceptions.ConnectionError: HTTPSConnectionPool(host='x', port=443): Max retries exceeded":
            "connection_error",
        "Error: getaddrinfo ENOTFOUND registry.npmjs.org": "connection_error",
        "write_stdin failed: stdin is closed for this session": "session_closed",
        "Process exited with code 2": "nonzero_exit",
        "ls: cannot access 'x': Permission denied": "permission_denied",
        "bash: line 1: rg: command not found": "command_not_found",
        "ReadTimeout: HTTPSConnectionPool read timed out": "timeout",
        "Exit code 3": "nonzero_exit",
        "something odd happened": "other",
    }
    for text, kind in cases.items():
        assert classify_error(text) == kind, text
    assert classify_error("weird", exit_code=2) == "nonzero_exit"
    rule = errors.register("quota", r"(?i)quota exceeded", tools=["WebFetch"])
    try:
        assert classify_error("Quota exceeded; timed out", "WebFetch") == "quota"
        assert classify_error("Quota exceeded; timed out", "Bash") == "timeout"
    finally:
        errors.RULES.remove(rule)
