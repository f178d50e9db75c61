"""Codex CLI rollouts (``~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl``).

Lines are ``{timestamp, type, payload}`` with type ``session_meta``, ``turn_context``,
``response_item``, ``event_msg`` or ``compacted``; legacy (pre-0.30) rollouts write
bare response items (``{"type": "message", ...}``) after an ``{id, timestamp,
instructions}`` first line, and ``{"record_type": "state"}`` lines. Both are read.

* ``response_item`` runs of assistant output -- ``reasoning``, assistant ``message``,
  ``function_call``, ``custom_tool_call`` (apply_patch), ``local_shell_call``,
  ``web_search_call`` -- not interrupted by a user message or a tool output form ONE
  assistant turn (one model response): reasoning summaries → ``thinking``, output text
  → ``content``, calls → OpenAI ``tool_calls`` (a custom tool's free-form input becomes
  ``{"input": "..."}``; a local shell action its own JSON).
* ``function_call_output`` / ``custom_tool_call_output`` → ``role="tool"`` rows. The
  ``content`` is the output string exactly as the model saw it. It is a failure when
  the output JSON has ``metadata.exit_code != 0``, the text starts ``Exit code: N``
  with N != 0, an output object says ``success: false``, or the text is a Codex
  harness error ("failed to parse function arguments", "aborted", ...).
* user / developer ``message`` items → user / system rows (developer → ``system``,
  ``extra.original_role``); the environment-context and AGENTS.md messages are kept,
  the model saw them.
* ``event_msg`` ``token_count`` (``last_token_usage``) fills the token columns of the
  assistant turn it follows; every ``event_msg`` / ``turn_context`` /
  ``session_meta`` line is also kept as a ``role="meta"`` row (extra = raw).
  ``turn_context.model`` sets ``model`` of later assistant turns.
* ``compacted`` → a ``compaction`` boundary row plus a ``summary`` user row holding
  the compacted history's summary (``is_compact_summary``).
* ``parent_turn_id`` = the previous row (a rollout is linear).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from assets.traces.errors import classify_error
from assets.traces.formats import _common as shared

FORMAT = "codex"

ASSISTANT_ITEMS = {"reasoning", "function_call", "custom_tool_call", "local_shell_call", "web_search_call"}
OUTPUT_ITEMS = {"function_call_output", "custom_tool_call_output"}
ITEM_TYPES = ASSISTANT_ITEMS | OUTPUT_ITEMS | {"message"}
_EXIT_RE = re.compile(r"^(?:Exit code|exit_code|Process exited with code):? ?(-?\d+)", re.I | re.M)
_RUNNING_RE = re.compile(r"^Process running with session ID (\d+)", re.M)
_EXIT_HEAD = 600  # unified exec writes "Chunk ID / Wall time / Process exited with code N" first
_HARNESS_ERR = re.compile(
    r"^(?:failed to parse function arguments|aborted|execution error|error:|sandbox (?:error|denied)"
    r"|unsupported call|unknown tool|patch rejected|apply_patch verification failed|[a-z_]+ failed: )",
    re.I,
)


def _split(obj: dict) -> tuple[str, dict, Any]:
    """(line type, payload, timestamp) for new and legacy rollout lines."""
    if isinstance(obj.get("type"), str) and "payload" in obj:
        p = obj["payload"]
        return obj["type"], p if isinstance(p, dict) else {"value": p}, obj.get("timestamp")
    if obj.get("type") in ITEM_TYPES:
        return "response_item", obj, obj.get("timestamp")
    if isinstance(obj.get("record_type"), str):
        return str(obj["record_type"]), obj, obj.get("timestamp")
    if "instructions" in obj and "id" in obj:
        return "session_meta", obj, obj.get("timestamp")
    return str(obj.get("type") or "unknown"), obj, obj.get("timestamp")


def _tool_output(out: Any) -> tuple[str, str, int | None, bool, dict]:
    """(content as the model saw it, text to classify, exit code, failed?, extra)."""
    extra: dict[str, Any] = {}
    exit_code: int | None = None
    failed = False
    if isinstance(out, dict):
        content = shared.text_of(out.get("content")) if "content" in out else shared.dumps(out)
        if out.get("success") is False:
            failed = True
        return content, content, None, failed, extra
    content = out if isinstance(out, str) else shared.text_of(out)
    inner = content
    if content.startswith("{"):
        try:
            j = orjson.loads(content)
        except orjson.JSONDecodeError:
            j = None
        if isinstance(j, dict) and "output" in j:
            inner = j["output"] if isinstance(j["output"], str) else shared.dumps(j["output"])
            md = j.get("metadata") if isinstance(j.get("metadata"), dict) else {}
            exit_code = shared.as_int(md.get("exit_code"))
            if md.get("duration_seconds") is not None:
                extra["duration_seconds"] = md.get("duration_seconds")
    if exit_code is None:
        m = _EXIT_RE.search(content, 0, _EXIT_HEAD)
        if m:
            exit_code = int(m.group(1))
    if exit_code is not None:
        extra["exit_code"] = exit_code
        failed = exit_code != 0
    elif _HARNESS_ERR.match(content.lstrip()):
        failed = True
    return content, inner, exit_code, failed, extra


def _apply_exec_ends(exec_ends: list[tuple[int, dict]], process_rows: dict[str, list[dict]]) -> None:
    """``exec_command_end`` events carry a command's exit code. A command that ran on
    (unified exec) reports its exit in a later ``write_stdin`` output: when no output of
    that command already shows a non-zero exit, the last one is marked failed with it."""
    for line_no, p in exec_ends:
        code = shared.as_int(p.get("exit_code"))
        if code in (None, 0):
            continue
        cid = p.get("call_id") if isinstance(p.get("call_id"), str) else None
        proc = str(p["process_id"]) if p.get("process_id") is not None else None
        cands = list(process_rows.get("call:" + cid, []) if cid else [])
        for r in process_rows.get(proc, []) if proc else []:
            if r not in cands:
                cands.append(r)
        if not cands or any(r.get("_exit") not in (None, 0) for r in cands):
            continue
        r = max(cands, key=lambda x: x["source_lines"][0])
        text = r.get("content") or ""
        r["tool_error"] = True
        r["_exit"] = code
        r["error_kind"] = classify_error(text, r.get("tool_name"), exit_code=code)
        r["_extra"] = {**(r.get("_extra") or {}), "exit_code": code, "exit_code_from_line": line_no}


def parse(raw_rows: list[dict], session_key: str) -> list[dict]:
    ids = shared.TurnIds(session_key)
    rows: list[dict] = []
    order: list[tuple] = []
    session_id: str | None = None
    model: str | None = None
    call_names: dict[str, str] = {}
    call_process: dict[str, str] = {}  # call id -> unified-exec session id it started / polled
    pending: list[tuple[int, dict, Any]] = []
    last_assistant: dict | None = None

    def add(row: dict, key: tuple) -> dict:
        rows.append(row)
        order.append(key)
        return row

    def flush() -> None:
        nonlocal pending, last_assistant
        if not pending:
            return
        texts, thinks, calls, other = [], [], [], []
        encrypted = 0
        message_id = None
        for _, p, _ in pending:
            pt = p.get("type")
            if pt == "message":
                texts.append(shared.text_of(p.get("content")))
                message_id = message_id or p.get("id")
            elif pt == "reasoning":
                if p.get("encrypted_content"):
                    encrypted += 1
                thinks.append(shared.text_of(p.get("summary")))
                if p.get("content"):
                    thinks.append(shared.text_of(p.get("content")))
            elif pt == "function_call":
                calls.append(shared.tool_call(str(p.get("call_id") or p.get("id") or ""), str(p.get("name") or ""),
                                              p.get("arguments")))
            elif pt == "custom_tool_call":
                calls.append(shared.tool_call(str(p.get("call_id") or p.get("id") or ""), str(p.get("name") or ""),
                                              {"input": p.get("input")}))
            elif pt == "local_shell_call":
                calls.append(shared.tool_call(str(p.get("call_id") or p.get("id") or ""), "local_shell", p.get("action")))
            else:
                other.append({"type": pt, "action": p.get("action")})
        first_line, _, ts = pending[0]
        row = shared.new_turn(
            session_key, FORMAT, ids.make(f"L{first_line}", first_line), "assistant", "message",
            content="\n\n".join(t for t in texts if t) or None,
            thinking="\n\n".join(t for t in thinks if t) or None,
            tool_calls=shared.dumps(calls) if calls else None,
            model=model, message_id=message_id, timestamp=shared.parse_ts(ts), record_type="response_item",
            source_lines=sorted({ln for ln, _, _ in pending}),
        )
        row["_extra"] = {"other_items": other, "encrypted_reasoning_items": encrypted}
        add(row, (first_line, 0))
        last_assistant = row
        pending = []

    records = list(shared.iter_records(raw_rows))
    # prompts the rollout also wrote as response_item user messages (newer rollouts may hold
    # a prompt only as an event_msg user_message)
    item_prompts = set()
    for _, obj, _ in records:
        t, p, _ = _split(obj)
        if t == "response_item" and p.get("type") == "message" and p.get("role") == "user":
            item_prompts.add(shared.text_of(p.get("content")).strip())
    process_rows: dict[str, list[dict]] = {}  # unified-exec session id -> its output rows
    exec_ends: list[tuple[int, dict]] = []
    for line_no, obj, raw_row in records:
        t, p, ts = _split(obj)
        if t == "response_item":
            pt = p.get("type")
            role = p.get("role")
            if pt in ASSISTANT_ITEMS or (pt == "message" and role == "assistant"):
                if pt in ("function_call", "custom_tool_call", "local_shell_call"):
                    cid = str(p.get("call_id") or p.get("id") or "")
                    call_names[cid] = "local_shell" if pt == "local_shell_call" else str(p.get("name") or "")
                    if p.get("name") == "write_stdin":  # polls a running exec session
                        try:
                            a = orjson.loads(p.get("arguments") or "{}")
                        except (orjson.JSONDecodeError, TypeError):
                            a = {}
                        if isinstance(a, dict) and a.get("session_id") is not None:
                            call_process[cid] = str(a["session_id"])
                pending.append((line_no, p, ts))
                continue
            if pt in OUTPUT_ITEMS:
                flush()
                cid = p.get("call_id") if isinstance(p.get("call_id"), str) else None
                name = call_names.get(cid) if cid else None
                content, inner, exit_code, failed, ex = _tool_output(p.get("output"))
                row = shared.new_turn(
                    session_key, FORMAT, ids.make(f"L{line_no}", line_no), "tool", "tool_result",
                    content=content, tool_call_id=cid, tool_name=name, tool_error=failed,
                    error_kind=classify_error(inner, name, exit_code=exit_code) if failed else None,
                    timestamp=shared.parse_ts(ts), record_type=pt, source_lines=[line_no],
                )
                if cid not in call_names:
                    ex["orphan"] = True
                row["_extra"] = ex
                row["_exit"] = exit_code
                add(row, (line_no, 0))
                if cid:
                    process_rows.setdefault("call:" + cid, []).append(row)
                    proc = call_process.get(cid)
                    running = _RUNNING_RE.search(content, 0, _EXIT_HEAD)
                    if running:
                        proc = running.group(1)
                        call_process[cid] = proc
                    if proc:
                        process_rows.setdefault(proc, []).append(row)
                continue
            if pt == "message":
                flush()
                r = "system" if role in ("developer", "system") else "user"
                row = shared.new_turn(session_key, FORMAT, ids.make(f"L{line_no}", line_no), r, "message",
                                      content=shared.text_of(p.get("content")), timestamp=shared.parse_ts(ts),
                                      record_type="message", source_lines=[line_no])
                row["_extra"] = {"original_role": role if role not in ("user", "system") else None}
                add(row, (line_no, 0))
                continue
            # an item type we do not know: keep it, do not break the running response
            row = shared.new_turn(session_key, FORMAT, ids.make(f"L{line_no}", line_no), "meta", "unknown",
                                  timestamp=shared.parse_ts(ts), record_type=str(pt), source_lines=[line_no],
                                  extra=raw_row.get("raw"))
            add(row, (line_no, 0))
            continue

        if t == "compacted":
            flush()
            summary = p.get("message") if isinstance(p.get("message"), str) else shared.text_of(p.get("message"))
            add(shared.new_turn(session_key, FORMAT, ids.make(f"L{line_no}", line_no), "meta", "compaction",
                                is_compaction_boundary=True, timestamp=shared.parse_ts(ts), record_type=t,
                                source_lines=[line_no]), (line_no, 0))
            add(shared.new_turn(session_key, FORMAT, ids.make(f"L{line_no}#summary", line_no), "user", "summary",
                                content=summary, is_compact_summary=True, timestamp=shared.parse_ts(ts), record_type=t,
                                source_lines=[line_no]), (line_no, 1))
            continue

        if t == "event_msg" and p.get("type") == "user_message":
            text = shared.text_of(p.get("message"))
            if text.strip() and text.strip() not in item_prompts:
                flush()
                row = shared.new_turn(session_key, FORMAT, ids.make(f"L{line_no}", line_no), "user", "message",
                                      content=text, timestamp=shared.parse_ts(ts), record_type="user_message",
                                      source_lines=[line_no])
                row["_extra"] = {"from_event": True}
                add(row, (line_no, 0))
                continue
        if t == "event_msg" and p.get("type") == "exec_command_end":
            exec_ends.append((line_no, p))
        if t == "session_meta":
            session_id = session_id or (p.get("id") if isinstance(p.get("id"), str) else None)
        elif t == "turn_context":
            if isinstance(p.get("model"), str):
                model = p["model"]
        elif t == "event_msg" and p.get("type") == "token_count":
            info = p.get("info") if isinstance(p.get("info"), dict) else {}
            last = info.get("last_token_usage") if isinstance(info.get("last_token_usage"), dict) else None
            target = None
            if pending:
                flush()  # the response is complete once its token count arrives
            if last_assistant is not None and last_assistant.get("input_tokens") is None:
                target = last_assistant
            if last and target is not None:
                cached = shared.as_int(last.get("cached_input_tokens"))
                inp = shared.as_int(last.get("input_tokens"))
                target["input_tokens"] = inp - cached if (inp is not None and cached is not None) else inp
                target["cache_read_tokens"] = cached
                target["output_tokens"] = shared.as_int(last.get("output_tokens"))
        kind = "event" if t == "event_msg" else ("meta" if t in ("session_meta", "turn_context", "state") else "unknown")
        add(shared.new_turn(session_key, FORMAT, ids.make(f"L{line_no}", line_no), "meta", kind,
                            timestamp=shared.parse_ts(ts), record_type=t,
                            source_lines=[line_no], extra=raw_row.get("raw")), (line_no, 0))
    flush()
    _apply_exec_ends(exec_ends, process_rows)

    out = shared.finalize(rows, order)
    for r in out:
        r["session_id"] = session_id or session_key
        r.pop("_exit", None)
        ex = r.pop("_extra", None)
        if ex is not None and r.get("extra") is None:
            r["extra"] = shared.extra_json(ex)
    shared.link_linear(out)
    return out
