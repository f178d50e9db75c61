"""OpenAI chat-format JSONL: each line ``{"messages": [...], "tools"?: [...], ...}`` is one
conversation (also a ``.json`` file holding a JSON array of such objects).

* ``session_id`` = ``f"{session_key}#L{line_no}"`` (``#L{line}.{index}`` for array
  elements), turn ids ``f"{session_key}:L{line}:{i}"`` -- unique and stable.
* Each conversation starts with a ``role="meta"``, ``kind="conversation"`` header row
  whose ``extra`` holds the line's other top-level fields (``tools``, ``id``, ``model``,
  metadata): the agent-step builder takes the real tool schemas from there.
* roles: system/developer → system; user; assistant (``tool_calls`` normalized so that
  ``arguments`` is a JSON string; legacy ``function_call`` → one tool call with a
  synthetic id; ``reasoning_content`` / ``reasoning`` / ``thinking`` → ``thinking``);
  tool / legacy function → ``role="tool"`` rows, ``tool_name`` from the message or the
  matching call. A tool message without ``tool_call_id`` answers the oldest unanswered
  call (of that name, if named).
* tool errors: the format has no standard flag; ``is_error: true`` on the message, or
  text that starts like an error (``Error…``, a traceback, ``{"error": …}``, a non-zero
  ``Exit code``) → ``tool_error`` + ``error_kind``.
* unknown roles → ``role="meta"``, ``kind="unknown"`` rows with the message as extra.
"""

from __future__ import annotations

from typing import Any

import orjson

from assets.traces.errors import classify_error
from assets.traces.formats import _common as shared

FORMAT = "openai_messages"

SYSTEM_ROLES = {"system", "developer"}
TOOL_ROLES = {"tool", "function", "ipython"}


class CallTracker:
    """Tool calls of one conversation, and which of them are still unanswered."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.open: list[str] = []

    def called(self, call_id: str, name: str) -> None:
        self.names[call_id] = name
        self.open.append(call_id)

    def answer(self, call_id: str | None, name: str | None) -> str | None:
        if call_id is None:
            cands = [c for c in self.open if name is None or self.names.get(c) == name] or self.open
            call_id = cands[0] if cands else None
        if call_id in self.open:
            self.open.remove(call_id)
        return call_id


def conversation_id(line_no: int, obj: dict) -> str:
    idx = obj.get("__index__")
    return f"L{line_no}" if idx is None else f"L{line_no}.{idx}"


def header_row(session_key: str, fmt: str, ids: shared.TurnIds, conv: str, sid: str, line_no: int, obj: dict,
               skip: tuple[str, ...]) -> dict:
    meta = {k: v for k, v in obj.items() if k not in skip and k != "__index__"}
    tools = meta.get("tools")
    if isinstance(tools, str):  # some exports store the schema list as a JSON string
        try:
            meta["tools"] = orjson.loads(tools)
        except orjson.JSONDecodeError:
            pass
    return shared.new_turn(session_key, fmt, ids.make(f"{conv}:h", line_no), "meta", "conversation", session_id=sid,
                           record_type="conversation", source_lines=[line_no], extra=shared.dumps(meta) if meta else None,
                           timestamp=shared.parse_ts(obj.get("created_at") or obj.get("timestamp") or obj.get("created")))


def parse(raw_rows: list[dict], session_key: str) -> list[dict]:
    ids = shared.TurnIds(session_key)
    rows: list[dict] = []
    order: list[tuple] = []
    for line_no, obj, raw_row in shared.iter_records(raw_rows):
        conv = conversation_id(line_no, obj)
        sid = f"{session_key}#{conv}"
        msgs = obj.get("messages")
        sub = obj.get("__index__") or 0
        if not isinstance(msgs, list):
            rows.append(shared.new_turn(session_key, FORMAT, ids.make(conv, line_no), "meta", "unknown", session_id=sid,
                                        record_type=raw_row.get("record_type"), source_lines=[line_no],
                                        extra=shared.dumps({k: v for k, v in obj.items() if k != "__index__"})))
            order.append((line_no, sub, -1))
            continue
        rows.append(header_row(session_key, FORMAT, ids, conv, sid, line_no, obj, ("messages",)))
        order.append((line_no, sub, -1))
        default_model = obj.get("model") if isinstance(obj.get("model"), str) else None
        calls = CallTracker()
        for i, m in enumerate(msgs):
            row = message_row(session_key, FORMAT, ids, f"{conv}:{i}", sid, line_no, m, calls, default_model)
            rows.append(row)
            order.append((line_no, sub, i))
    out = shared.finalize(rows, order)
    shared.link_linear(out)
    return out


def message_row(session_key: str, fmt: str, ids: shared.TurnIds, local_id: str, sid: str, line_no: int, m: Any,
                calls: CallTracker, default_model: str | None) -> dict:
    tid = ids.make(local_id, line_no)
    common = dict(session_id=sid, source_lines=[line_no], record_type="message")
    if not isinstance(m, dict):
        return shared.new_turn(session_key, fmt, tid, "meta", "unknown", extra=shared.dumps(m), **common)
    role = m.get("role")
    ts = shared.parse_ts(m.get("timestamp") or m.get("created_at"))
    if role in SYSTEM_ROLES:
        return shared.new_turn(session_key, fmt, tid, "system", "message", content=shared.text_of(m.get("content")), timestamp=ts,
                               extra=shared.extra_json({"original_role": role if role != "system" else None}), **common)
    if role == "user":
        return shared.new_turn(session_key, fmt, tid, "user", "message", content=shared.text_of(m.get("content")), timestamp=ts,
                               **common)
    if role == "assistant":
        tcs: list[dict] = []
        for k, tc in enumerate(m.get("tool_calls") or []):
            if not isinstance(tc, dict):
                continue
            fn = tc.get("function") if isinstance(tc.get("function"), dict) else tc
            cid = tc.get("id") if isinstance(tc.get("id"), str) and tc.get("id") else f"call_{local_id}_{k}"
            name = str(fn.get("name") or "")
            tcs.append(shared.tool_call(cid, name, fn.get("arguments")))
            calls.called(cid, name)
        fc = m.get("function_call")
        if isinstance(fc, dict):
            cid = f"call_{local_id}_fc"
            tcs.append(shared.tool_call(cid, str(fc.get("name") or ""), fc.get("arguments")))
            calls.called(cid, str(fc.get("name") or ""))
        thinking = m.get("reasoning_content") or m.get("reasoning") or m.get("thinking")
        return shared.new_turn(
            session_key, fmt, tid, "assistant", "message",
            content=shared.text_of(m.get("content")) or None,
            thinking=shared.text_of(thinking) if thinking else None,
            tool_calls=shared.dumps(tcs) if tcs else None,
            model=m.get("model") if isinstance(m.get("model"), str) else default_model,
            timestamp=ts,
            extra=shared.extra_json({"weight": m.get("weight"), "name": m.get("name")}),
            **common,
        )
    if role in TOOL_ROLES:
        name = m.get("name") if isinstance(m.get("name"), str) else None
        given = m.get("tool_call_id") if isinstance(m.get("tool_call_id"), str) else None
        cid = calls.answer(given, name)
        name = name or calls.names.get(cid or "")
        text = shared.text_of(m.get("content"))
        err = bool(m.get("is_error")) or shared.looks_like_error(text)
        return shared.new_turn(
            session_key, fmt, tid, "tool", "tool_result", content=text, tool_call_id=cid, tool_name=name,
            tool_error=err, error_kind=classify_error(text, name) if err else None, timestamp=ts,
            extra=shared.extra_json({"orphan": cid is None or (cid not in calls.names),
                                                   "matched_by_order": given is None and cid is not None}),
            **common,
        )
    return shared.new_turn(session_key, fmt, tid, "meta", "unknown", extra=shared.dumps(m), timestamp=ts, **common)
