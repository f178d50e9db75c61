"""Gemini CLI sessions (``~/.gemini/tmp/<project-hash>/chats/session-*.json`` / ``.jsonl``).

Two layouts, both read:

* one JSON document ``{sessionId, projectHash, startTime, lastUpdated, messages: [...]}``,
  rewritten in place as the session grows (a rewritten file simply re-ingests: the
  document is read whole every time);
* JSONL: a header line ``{sessionId, projectHash, startTime, ...}``, then one message per
  line, where a message id seen again replaces the earlier line (the latest line wins),
  and ``{"$set": {...}}`` lines update one message (``$set.id`` names it) or, without an
  id, the session's metadata. A ``$set`` for a message id never seen is kept as a
  ``meta``/``unknown`` row with its reason.

Messages: ``user`` → user turn; ``gemini`` → one assistant turn per message (one model
response): ``content`` → content, ``thoughts`` (subject + description) → thinking,
``toolCalls`` → OpenAI tool calls, ``tokens`` (input includes cached) → token columns,
``model``; each tool call's ``result`` (``functionResponse.response.output`` /
``error``) → a tool turn right after it, failed when ``status`` is error/cancelled or
the response holds an ``error``; ``info`` / ``error`` / ``warning`` → ``meta`` rows
(kind ``event``), kept for the record, not sent as context.
"""

from __future__ import annotations

from typing import Any

from assets.traces.errors import classify_error
from assets.traces.formats import _common as shared

FORMAT = "gemini_cli"
FAILED_STATUS = {"error", "cancelled", "canceled", "failed"}


def _result_text(tc: dict) -> tuple[str, bool]:
    """(text the model got back, failed?) of one Gemini tool call."""
    failed = str(tc.get("status") or "").lower() in FAILED_STATUS
    out: list[str] = []
    res = tc.get("result")
    for part in res if isinstance(res, list) else ([res] if res is not None else []):
        if isinstance(part, dict) and isinstance(part.get("functionResponse"), dict):
            resp = part["functionResponse"].get("response")
            if isinstance(resp, dict):
                if resp.get("error"):
                    failed = True
                    out.append(shared.clip_text(resp["error"]))
                if "output" in resp:
                    out.append(shared.clip_text(resp["output"]))
                elif not resp.get("error"):
                    out.append(shared.dumps(resp))
            elif resp is not None:
                out.append(shared.clip_text(resp))
        elif isinstance(part, dict) and "text" in part:
            out.append(shared.clip_text(part["text"]))
        elif part is not None:
            out.append(shared.clip_text(part))
    if not out and tc.get("resultDisplay"):
        out.append(shared.clip_text(tc["resultDisplay"]))
    return "\n".join(out), failed


def _thinking(thoughts: Any) -> str | None:
    if not thoughts:
        return None
    if isinstance(thoughts, str):
        return thoughts
    parts = []
    for t in thoughts if isinstance(thoughts, list) else [thoughts]:
        if isinstance(t, dict):
            subj, desc = t.get("subject"), t.get("description")
            parts.append("\n".join(x for x in (f"**{subj}**" if subj else None, desc) if x))
        else:
            parts.append(shared.clip_text(t))
    return "\n\n".join(p for p in parts if p) or None


def _collect(raw_rows: list[dict]) -> tuple[dict, list[tuple[int, dict]], list[tuple[int, dict, str]]]:
    """(session meta, [(line, message)] in first-seen order with the latest content,
    [(line, record, reason)] of records that could not be applied)."""
    loaded = shared.load_document(raw_rows)
    if loaded is not None and isinstance(loaded[0], dict) and isinstance(loaded[0].get("messages"), list):
        doc, line = loaded
        meta = {k: v for k, v in doc.items() if k != "messages"}
        msgs: dict[Any, tuple[int, dict]] = {}
        anon = 0
        for m in doc["messages"]:
            if isinstance(m, dict):
                key = m.get("id")
                if key is None:
                    key, anon = ("#anon", anon), anon + 1
                msgs[key] = (line, m)  # a repeated id: the latest wins (dict keeps first position)
        return meta, list(msgs.values()), []
    meta: dict = {}
    msgs = {}
    bad: list[tuple[int, dict, str]] = []
    anon = 0
    for line_no, obj, _ in shared.iter_records(raw_rows):
        obj = {k: v for k, v in obj.items() if k != "__index__"}
        if "$set" in obj:
            upd = obj["$set"]
            if not isinstance(upd, dict):
                bad.append((line_no, obj, "$set without an object"))
                continue
            mid = upd.get("id")
            if mid is None:
                meta.update(upd)
            elif mid in msgs:
                ln, m = msgs[mid]
                msgs[mid] = (line_no, {**m, **upd})
            else:
                bad.append((line_no, obj, f"$set for unknown message id {mid!r}"))
            continue
        if obj.get("type") in ("user", "gemini", "info", "error", "warning") and "content" in obj:
            key = obj.get("id")
            if key is None:
                key, anon = ("#anon", anon), anon + 1
            msgs[key] = (line_no, obj)
            continue
        if "sessionId" in obj or "projectHash" in obj:
            meta.update(obj)
            continue
        bad.append((line_no, obj, "not a Gemini CLI message"))
    return meta, list(msgs.values()), bad


def parse(raw_rows: list[dict], session_key: str) -> list[dict]:
    ids = shared.TurnIds(session_key)
    meta, msgs, bad = _collect(raw_rows)
    sid = meta.get("sessionId") if isinstance(meta.get("sessionId"), str) else session_key
    first_line = min((ln for ln, _ in msgs), default=1)
    big = shared.too_many_steps(session_key, FORMAT, ids, first_line,
                                sum(1 for _, m in msgs if m.get("type") == "gemini"), sid)
    if big:
        return big
    rows: list[dict] = []
    rows.append(shared.new_turn(session_key, FORMAT, ids.make("header", first_line), "meta", "conversation",
                                session_id=sid, record_type="session", source_lines=[first_line],
                                timestamp=shared.parse_ts(meta.get("startTime")), extra=shared.dumps(meta) if meta else None))
    for n, (line_no, m) in enumerate(msgs):
        t = m.get("type")
        mid = str(m.get("id") or f"m{n}")
        common = dict(session_id=sid, source_lines=[line_no], record_type=str(t), message_id=m.get("id"),
                      timestamp=shared.parse_ts(m.get("timestamp")))
        if t == "user":
            rows.append(shared.new_turn(session_key, FORMAT, ids.make(mid, line_no), "user", "message",
                                        content=shared.text_of(m.get("content")), **common))
            continue
        if t == "gemini":
            calls = [tc for tc in (m.get("toolCalls") or []) if isinstance(tc, dict)]
            tcs = []
            for k, tc in enumerate(calls):
                cid = str(tc.get("id") or f"{mid}:call{k}")
                tcs.append(shared.tool_call(cid, str(tc.get("name") or ""), tc.get("args")))
            tok = m.get("tokens") if isinstance(m.get("tokens"), dict) else {}
            inp, cached = shared.as_int(tok.get("input")), shared.as_int(tok.get("cached"))
            rows.append(shared.new_turn(
                session_key, FORMAT, ids.make(mid, line_no), "assistant", "message",
                content=shared.text_of(m.get("content")) or None, thinking=_thinking(m.get("thoughts")),
                tool_calls=shared.dumps(tcs) if tcs else None, model=m.get("model") if isinstance(m.get("model"), str)
                else None,
                input_tokens=(inp - cached) if (inp is not None and cached is not None) else inp,
                cache_read_tokens=cached, output_tokens=shared.as_int(tok.get("output")),
                extra=shared.extra_json({"thoughts_tokens": tok.get("thoughts"), "tool_tokens": tok.get("tool"),
                                                       "total_tokens": tok.get("total")}),
                **common))
            for k, tc in enumerate(calls):
                cid = tcs[k]["id"]
                name = tcs[k]["function"]["name"]
                text, failed = _result_text(tc)
                rows.append(shared.new_turn(
                    session_key, FORMAT, ids.make(f"{mid}:result{k}", line_no), "tool", "tool_result",
                    content=text, tool_call_id=cid, tool_name=name, tool_error=failed,
                    error_kind=classify_error(text, name) if failed else None,
                    session_id=sid, source_lines=[line_no], record_type="toolCall",
                    timestamp=shared.parse_ts(tc.get("timestamp")) or common["timestamp"],
                    extra=shared.extra_json({"status": tc.get("status"), "display_name": tc.get("displayName"),
                                                           "result_display": tc.get("resultDisplay")
                                                           if isinstance(tc.get("resultDisplay"), str) else None})))
            continue
        rows.append(shared.new_turn(session_key, FORMAT, ids.make(mid, line_no), "meta", "event",
                                    content=shared.text_of(m.get("content")), extra=shared.dumps(m), **common))
    for line_no, obj, reason in bad:
        rows.append(shared.unknown_row(session_key, FORMAT, ids, line_no, reason, obj, session_id=sid))
    out = shared.finalize(rows, list(range(len(rows))))
    shared.link_linear(out)
    return out
