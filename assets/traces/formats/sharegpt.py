"""ShareGPT JSONL: each line ``{"conversations": [{"from": ..., "value": ...}], "system"?,
"tools"?}`` is one conversation (also a ``.json`` JSON array of such objects).

* ``from``: human/user → user; gpt/assistant/model/chatgpt/bing/bard → assistant;
  system → system; ``function_call`` → tool call(s) of the assistant turn (value = JSON
  ``{"name", "arguments"}`` or a list of them); observation/tool/function/ipython →
  ``role="tool"`` rows. Entries written as ``{"role", "content"}`` are read too.
* A ``gpt`` message directly followed by ``function_call`` entries is one assistant
  turn (text + tool_calls), as the model produced them together.
* ShareGPT has no call ids: they are synthesized (``call_L{line}_{k}``), and the n-th
  observation after a call answers the n-th open call.
* Top-level ``system`` becomes a system turn; ``tools`` (a list or a JSON string) and
  other top-level fields go to the ``kind="conversation"`` header row's ``extra``.
* Ids and tool-error heuristics as for OpenAI messages.
"""

from __future__ import annotations

from typing import Any

import orjson

from assets.traces.errors import classify_error
from assets.traces.formats import _common as shared
from assets.traces.formats.openai_messages import CallTracker, conversation_id, header_row

FORMAT = "sharegpt"

ROLE_MAP = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "chatgpt": "assistant",
    "bing": "assistant", "bard": "assistant",
    "system": "system",
    "function_call": "function_call", "tool_call": "function_call",
    "observation": "tool", "tool": "tool", "function": "tool", "ipython": "tool", "tool_response": "tool",
}


def _calls_of(value: Any) -> list[tuple[str, Any]]:
    v = value
    if isinstance(v, str):
        try:
            v = orjson.loads(v)
        except orjson.JSONDecodeError:
            return [("unknown", {"raw": value})]
    items = v if isinstance(v, list) else [v]
    out = []
    for it in items:
        if isinstance(it, dict):
            out.append((str(it.get("name") or "unknown"), it.get("arguments", it.get("parameters"))))
        else:
            out.append(("unknown", {"raw": it}))
    return out


def parse(raw_rows: list[dict], session_key: str) -> list[dict]:
    ids = shared.TurnIds(session_key)
    rows: list[dict] = []
    order: list[tuple] = []

    def add(row: dict, key: tuple) -> dict:
        rows.append(row)
        order.append(key)
        return row

    for line_no, obj, raw_row in shared.iter_records(raw_rows):
        conv = conversation_id(line_no, obj)
        sid = f"{session_key}#{conv}"
        sub = obj.get("__index__") or 0
        turns = obj.get("conversations")
        if not isinstance(turns, list):
            add(shared.new_turn(session_key, FORMAT, ids.make(conv, line_no), "meta", "unknown", session_id=sid,
                                record_type=raw_row.get("record_type"), source_lines=[line_no],
                                extra=shared.dumps({k: v for k, v in obj.items() if k != "__index__"})), (line_no, sub, -2))
            continue
        add(header_row(session_key, FORMAT, ids, conv, sid, line_no, obj, ("conversations", "system")),
            (line_no, sub, -2))
        common = dict(session_id=sid, source_lines=[line_no], record_type="conversations")
        if isinstance(obj.get("system"), str) and obj["system"]:
            add(shared.new_turn(session_key, FORMAT, ids.make(f"{conv}:sys", line_no), "system", "message",
                                content=obj["system"], **common), (line_no, sub, -1))
        calls = CallTracker()
        assistant: dict | None = None  # the assistant turn function_call entries attach to
        for i, m in enumerate(turns):
            if not isinstance(m, dict):
                add(shared.new_turn(session_key, FORMAT, ids.make(f"{conv}:{i}", line_no), "meta", "unknown",
                                    extra=shared.dumps(m), **common), (line_no, sub, i))
                continue
            src = m.get("from", m.get("role"))
            value = m.get("value", m.get("content"))
            role = ROLE_MAP.get(str(src).lower()) if src is not None else None
            if role == "function_call":
                if assistant is None:
                    assistant = add(shared.new_turn(session_key, FORMAT, ids.make(f"{conv}:{i}", line_no), "assistant",
                                                    "message", **common), (line_no, sub, i))
                    assistant["_calls"] = []
                for name, args in _calls_of(value):
                    cid = f"call_{conv}_{i}_{len(assistant['_calls'])}"
                    assistant["_calls"].append(shared.tool_call(cid, name, args))
                    calls.called(cid, name)
                continue
            if role == "assistant":
                assistant = add(shared.new_turn(session_key, FORMAT, ids.make(f"{conv}:{i}", line_no), "assistant",
                                                "message", content=shared.text_of(value) or None, **common), (line_no, sub, i))
                assistant["_calls"] = []
                continue
            assistant = None
            if role == "tool":
                name = m.get("name") if isinstance(m.get("name"), str) else None
                cid = calls.answer(None, name)
                name = name or calls.names.get(cid or "")
                text = shared.text_of(value)
                err = bool(m.get("is_error")) or shared.looks_like_error(text)
                add(shared.new_turn(session_key, FORMAT, ids.make(f"{conv}:{i}", line_no), "tool", "tool_result",
                                    content=text, tool_call_id=cid, tool_name=name, tool_error=err,
                                    error_kind=classify_error(text, name) if err else None,
                                    extra=shared.extra_json({"orphan": cid is None}), **common), (line_no, sub, i))
            elif role in ("user", "system"):
                add(shared.new_turn(session_key, FORMAT, ids.make(f"{conv}:{i}", line_no), role, "message",
                                    content=shared.text_of(value), **common), (line_no, sub, i))
            else:
                add(shared.new_turn(session_key, FORMAT, ids.make(f"{conv}:{i}", line_no), "meta", "unknown",
                                    extra=shared.dumps(m), **common), (line_no, sub, i))
    for r in rows:
        c = r.pop("_calls", None)
        if c:
            r["tool_calls"] = shared.dumps(c)
    out = shared.finalize(rows, order)
    shared.link_linear(out)
    return out
