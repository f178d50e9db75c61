"""Realistic plain rows for the pairs tests: agent steps (Claude Code style, in the
AGENT_STEPS shape) and teacher answers (TEACHER_RESPONSES shape) like the tiny local
SmolLM2 teacher gives: short, often alike, sometimes looping."""

from __future__ import annotations

import datetime as dt
import json

TS = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

SYSTEM = "You are Claude Code, an interactive CLI tool that helps users with software engineering tasks."
TOOLS = [
    {"type": "function", "function": {
        "name": "Bash", "description": "Run a shell command.",
        "parameters": {"type": "object", "properties": {
            "command": {"type": "string", "description": "The command to run"},
            "timeout": {"type": "number", "description": "Optional timeout in ms"}},
            "required": ["command"]}}},
    {"type": "function", "function": {
        "name": "Read", "description": "Read a file from the local filesystem.",
        "parameters": {"type": "object", "properties": {
            "file_path": {"type": "string"}, "limit": {"type": "number"}, "offset": {"type": "number"}},
            "required": ["file_path"]}}},
    {"type": "function", "function": {
        "name": "Edit", "description": "Replace a string in a file.",
        "parameters": {"type": "object", "properties": {
            "file_path": {"type": "string"}, "old_string": {"type": "string"},
            "new_string": {"type": "string"}, "replace_all": {"type": "boolean", "default": False}},
            "required": ["file_path", "old_string", "new_string"]}}},
]


def call(cid: str, name: str, **args) -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def asst(content: str = "", *calls: dict) -> dict:
    m = {"role": "assistant", "content": content}
    if calls:
        m["tool_calls"] = list(calls)
    return m


def tool(cid: str, name: str, content: str) -> dict:
    return {"role": "tool", "tool_call_id": cid, "name": name, "content": content}


def step(session: str, i: int, context: list[dict], response: dict, *, caused_error: bool = False,
         caused_error_kind: str | None = None, is_error_site: bool = False,
         error_kind: str | None = None, error_text: str | None = None, model: str = "claude-sonnet-4-5") -> dict:
    return {
        "session_key": session, "step_id": f"{session}:{i}", "session_id": session,
        "source_format": "claude_code", "turn_id": f"{session}:t{i}", "step_index": i,
        "messages": json.dumps(context), "tools": json.dumps(TOOLS), "response": json.dumps(response),
        "response_text": response.get("content"), "is_error_site": is_error_site,
        "error_kind": error_kind, "error_text": error_text, "caused_error": caused_error,
        "caused_error_kind": caused_error_kind, "model": model, "is_sidechain": False,
        "n_context_messages": len(context), "context_chars": len(json.dumps(context)),
    }


def teacher(step_row: dict, name: str, content: str = "", *calls: dict, status: str = "ok",
            flags: list[str] | None = None, model: str = "smollm2-135m") -> dict:
    msg = asst(content, *calls)
    return {
        "session_key": step_row["session_key"], "step_id": step_row["step_id"], "teacher": name,
        "provider": "local", "model": model, "request_hash": f"{step_row['step_id']}:{name}",
        "status": status, "message": json.dumps(msg) if status == "ok" else None,
        "text": content if status == "ok" else None, "finish_reason": "stop", "flags": flags or [],
        "input_tokens": 100, "output_tokens": 20, "cost_usd": 0.0, "latency_ms": 50.0, "attempts": 1,
        "error": None if status == "ok" else "timeout", "cached": False, "created_at": TS,
    }


def session(key: str) -> tuple[list[dict], list[dict]]:
    """One agent session: 4 steps, one failing tool call (step 1) and its error site (step 2)."""
    u = {"role": "user", "content": "The tests in tests/test_utils.py fail, please fix utils.py."}
    c0 = [{"role": "system", "content": SYSTEM}, u]
    r0 = asst("I'll run the failing tests first to see the error.",
              call(f"{key}c0", "Bash", command="pytest tests/test_utils.py -q"))
    c1 = c0 + [r0, tool(f"{key}c0", "Bash", "FAILED tests/test_utils.py::test_slugify - AssertionError: "
                                            "assert 'hello-world-' == 'hello-world'")]
    r1 = asst("", call(f"{key}c1", "Read", file_path="/repo/src/utils.py", offset=-5))
    err = "InputValidationError: offset must be a non-negative number"
    c2 = c1 + [r1, tool(f"{key}c1", "Read", err)]
    r2 = asst("Let me read the whole file instead.", call(f"{key}c2", "Read", file_path="/repo/src/utils.py"))
    c3 = c2 + [r2, tool(f"{key}c2", "Read", "def slugify(s):\n    return re.sub(r'\\W+', '-', s.lower())\n")]
    r3 = asst("The trailing separator is not stripped. I'll fix slugify to strip dashes.",
              call(f"{key}c3", "Edit", file_path="/repo/src/utils.py",
                   old_string="return re.sub(r'\\W+', '-', s.lower())",
                   new_string="return re.sub(r'\\W+', '-', s.lower()).strip('-')"))
    steps = [
        step(key, 0, c0, r0),
        step(key, 1, c1, r1, caused_error=True, caused_error_kind="invalid_tool_input"),
        step(key, 2, c2, r2, is_error_site=True, error_kind="invalid_tool_input", error_text=err),
        step(key, 3, c3, r3),
    ]
    s0, s1, s2, s3 = steps
    teachers = [
        # step 0: all agree with the original except one rambling, looping answer
        teacher(s0, "smol-a", "I'll run the failing tests first to see the error.",
                call("t0a", "Bash", command="pytest tests/test_utils.py -q")),
        teacher(s0, "smol-b", "I will run the tests to see the error.",
                call("t0b", "Bash", command="pytest tests/test_utils.py -q")),
        teacher(s0, "smol-c", "Sure! Sure! Sure! Sure! Sure! Sure! Sure! Sure! Sure! Sure! Sure! Sure!"),
        # step 1 (caused an error): teachers read the file without the bad offset
        teacher(s1, "smol-a", "Let me read utils.py.", call("t1a", "Read", file_path="/repo/src/utils.py")),
        teacher(s1, "smol-b", "", call("t1b", "Read", file_path="/repo/src/utils.py", offset=-5)),  # same bad call
        teacher(s1, "smol-c", "I can't help with that.", flags=["refusal"]),
        # step 2: short, similar answers; one failed teacher
        teacher(s2, "smol-a", "Let me read the whole file.", call("t2a", "Read", file_path="/repo/src/utils.py")),
        teacher(s2, "smol-b", status="error"),
        # step 3: teachers disagree with the original edit
        teacher(s3, "smol-a", "I'll fix slugify so it strips the trailing dash.",
                call("t3a", "Edit", file_path="/repo/src/utils.py",
                     old_string="return re.sub(r'\\W+', '-', s.lower())",
                     new_string="return re.sub(r'\\W+', '-', s.lower()).strip('-')")),
        teacher(s3, "smol-b", "The test expects no trailing dash, so strip it in slugify.",
                call("t3b", "Edit", file_path="/repo/src/utils.py",
                     old_string="return re.sub(r'\\W+', '-', s.lower())",
                     new_string="return re.sub(r'\\W+', '-', s.lower()).strip('-')")),
        teacher(s3, "smol-c", "Je pense qu'il faut réécrire toute la fonction avec une expression régulière."),
    ]
    return steps, teachers


def pair_row(i: int, chosen: dict | str, rejected: dict | str, prompt: list[dict] | None = None,
             session_key: str = "s1", strategy: str = "consensus") -> dict:
    """A PREFERENCE_PAIRS row from messages (or plain strings)."""
    chosen = asst(chosen) if isinstance(chosen, str) else chosen
    rejected = asst(rejected) if isinstance(rejected, str) else rejected
    prompt = prompt or [{"role": "user", "content": "Please fix the failing test in utils.py"}]
    return {
        "pair_id": f"p{i}", "session_key": session_key, "step_id": f"{session_key}:{i}",
        "prompt": json.dumps(prompt), "chosen": json.dumps([chosen]), "rejected": json.dumps([rejected]),
        "tools": None, "chosen_source": "smol-a", "rejected_source": "original",
        "chosen_model": "smollm2-135m", "rejected_model": "claude", "strategy": strategy,
        "score_chosen": 1.0, "score_rejected": 0.0, "created_at": TS,
    }
