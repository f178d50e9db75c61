"""Agent trajectories written as one JSON document per run.

* **SWE-agent** ``.traj``: ``history`` (OpenAI-style messages: ``tool_calls`` on assistant
  messages, ``role="tool"`` messages with ``tool_call_ids``) is what the model saw and is
  read when present; otherwise ``trajectory`` steps (``thought`` / ``response``,
  ``action``, ``observation``) become an assistant turn with one ``bash`` call + its
  result. ``info`` (exit status, submission, model stats) and ``environment`` go to the
  session header row.
* **mini-swe-agent** ``.traj.json``: a list of ``{role, content}`` messages (or
  ``{"messages": [...], "info": ..., "trajectory_format": "mini-swe-agent-1"}``).
  The bash block of an assistant message (a fenced ````` ```bash ````` /
  ````` ```mswea_bash_command ````` block) becomes a ``bash`` tool call, and the user
  message that follows it is that call's result (``<returncode>N</returncode>``: N != 0
  is a failure).
* **OpenHands** run outputs: ``{instance_id, instruction, history: [events], test_result,
  metadata, ...}`` (or a bare list of events). Action events of the agent (``run``,
  ``read``, ``edit``, ``message``, ``finish``, ...) become assistant turns (actions of one
  LLM response, sharing ``tool_call_metadata.model_response.id``, are one turn), their
  observations tool turns (``cause`` → the call answered; ``exit_code`` != 0 or an
  ``error`` observation is a failure). ``instance_id``, ``instruction`` and the test
  result are kept in the session header row.

A trajectory with more than ``_common.MAX_DOCUMENT_STEPS`` assistant steps is not
expanded: it stays one ``meta``/``unknown`` row with the reason (its bytes are in bronze).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from assets.traces.errors import classify_error
from assets.traces.formats import _common as shared

_FENCE = re.compile(r"```(?:bash|sh|shell|mswea_bash_command)[ \t]*\n(.*?)\n?```", re.S)
_RETURNCODE = re.compile(r"<returncode>\s*(-?\d+)\s*</returncode>")
_OUTPUT = re.compile(r"<output>\n?(.*?)</output>", re.S)


def _header(session_key: str, fmt: str, ids: shared.TurnIds, sid: str, line: int, meta: dict) -> dict:
    return shared.new_turn(session_key, fmt, ids.make("header", line), "meta", "conversation", session_id=sid,
                           record_type="trajectory", source_lines=[line], extra=shared.dumps(meta) if meta else None)




def _not_read(session_key: str, fmt: str, raw_rows: list[dict], reason: str) -> list[dict]:
    ids = shared.TurnIds(session_key)
    line = min((r["line_no"] for r in raw_rows), default=1)
    return [shared.unknown_row(session_key, fmt, ids, line, reason, session_id=session_key)]


def _done(rows: list[dict]) -> list[dict]:
    out = shared.finalize(rows, list(range(len(rows))))
    shared.link_linear(out)
    return out


# ------------------------------------------------------------------ SWE-agent

def parse_swe_agent(raw_rows: list[dict], session_key: str) -> list[dict]:
    fmt = "swe_agent"
    loaded = shared.load_document(raw_rows)
    if loaded is None or not isinstance(loaded[0], dict):
        return _not_read(session_key, fmt, raw_rows, "not a SWE-agent trajectory document")
    doc, line = loaded
    ids = shared.TurnIds(session_key)
    info = doc.get("info") if isinstance(doc.get("info"), dict) else {}
    sid = str(doc.get("trajectory_id") or info.get("instance_id") or session_key)
    hist = [m for m in doc.get("history") or [] if isinstance(m, dict)]
    traj = [s for s in doc.get("trajectory") or [] if isinstance(s, dict)]
    meta = {k: doc[k] for k in ("info", "environment", "replay_config") if k in doc}
    n_steps = sum(1 for m in hist if m.get("role") == "assistant") if hist else len(traj)
    big = shared.too_many_steps(session_key, fmt, ids, line, n_steps, sid)
    if big:
        return big
    rows = [_header(session_key, fmt, ids, sid, line, meta)]
    common = dict(session_id=sid, source_lines=[line])
    if hist:
        calls: dict[str, str] = {}
        for i, m in enumerate(hist):
            role = m.get("role")
            text = shared.text_of(m.get("content"))
            ex = {"agent": m.get("agent"), "message_type": m.get("message_type")}
            if role == "system":
                rows.append(shared.new_turn(session_key, fmt, ids.make(f"h{i}", line), "system", "message", content=text,
                                            record_type="history", extra=shared.extra_json(ex), **common))
            elif role == "user":
                rows.append(shared.new_turn(session_key, fmt, ids.make(f"h{i}", line), "user", "message", content=text,
                                            record_type="history", extra=shared.extra_json(ex), **common))
            elif role == "assistant":
                tcs = []
                for k, tc in enumerate(m.get("tool_calls") or []):
                    if not isinstance(tc, dict):
                        continue
                    fn = tc.get("function") if isinstance(tc.get("function"), dict) else tc
                    cid = str(tc.get("id") or f"call_h{i}_{k}")
                    tcs.append(shared.tool_call(cid, str(fn.get("name") or ""), fn.get("arguments")))
                    calls[cid] = str(fn.get("name") or "")
                if not tcs and m.get("action"):  # non-function-calling agents: the action is a command
                    cid = f"call_h{i}"
                    tcs.append(shared.tool_call(cid, "bash", {"command": shared.clip_text(m["action"])}))
                    calls[cid] = "bash"
                ex["thought"] = m.get("thought") if m.get("thought") != text else None
                rows.append(shared.new_turn(session_key, fmt, ids.make(f"h{i}", line), "assistant", "message",
                                            content=text or None, tool_calls=shared.dumps(tcs) if tcs else None,
                                            record_type="history", extra=shared.extra_json(ex), **common))
            elif role == "tool":
                cids = m.get("tool_call_ids") or ([m["tool_call_id"]] if m.get("tool_call_id") else [])
                cid = str(cids[0]) if cids else None
                name = calls.get(cid or "")
                err = shared.looks_like_error(text)
                rows.append(shared.new_turn(session_key, fmt, ids.make(f"h{i}", line), "tool", "tool_result",
                                            content=text, tool_call_id=cid, tool_name=name, tool_error=err,
                                            error_kind=classify_error(text, name) if err else None,
                                            record_type="history",
                                            extra=shared.extra_json({"orphan": cid not in calls, **ex}), **common))
            else:
                rows.append(shared.new_turn(session_key, fmt, ids.make(f"h{i}", line), "meta", "unknown",
                                            record_type="history", extra=shared.dumps(m), **common))
        return _done(rows)
    problem = doc.get("problem_statement") or info.get("problem_statement")
    if isinstance(problem, str) and problem:
        rows.append(shared.new_turn(session_key, fmt, ids.make("task", line), "user", "message", content=problem,
                                    record_type="problem_statement", **common))
    for i, s in enumerate(traj):
        cid = f"call_t{i}"
        action = shared.clip_text(s.get("action"))
        rows.append(shared.new_turn(session_key, fmt, ids.make(f"t{i}", line), "assistant", "message",
                                    content=shared.clip_text(s.get("response") or s.get("thought")) or None,
                                    tool_calls=shared.dumps([shared.tool_call(cid, "bash", {"command": action})]) if action else None,
                                    record_type="trajectory", extra=shared.extra_json({"thought": s.get("thought")}), **common))
        if action:
            obs = shared.clip_text(s.get("observation"))
            err = shared.looks_like_error(obs)
            rows.append(shared.new_turn(session_key, fmt, ids.make(f"t{i}:obs", line), "tool", "tool_result",
                                        content=obs, tool_call_id=cid, tool_name="bash", tool_error=err,
                                        error_kind=classify_error(obs, "bash") if err else None,
                                        record_type="trajectory", **common))
    return _done(rows)


# ------------------------------------------------------------------ mini-swe-agent

def _observation(text: str) -> tuple[str, int | None]:
    m = _RETURNCODE.search(text)
    return text, (int(m.group(1)) if m else None)


def parse_mini_swe_agent(raw_rows: list[dict], session_key: str) -> list[dict]:
    fmt = "mini_swe_agent"
    loaded = shared.load_document(raw_rows)
    if loaded is None:
        return _not_read(session_key, fmt, raw_rows, "not a mini-swe-agent trajectory document")
    doc, line = loaded
    meta: dict = {}
    if isinstance(doc, dict):
        msgs = doc.get("messages") or []
        meta = {k: v for k, v in doc.items() if k != "messages"}
    else:
        msgs = doc
    msgs = [m for m in msgs if isinstance(m, dict)]
    ids = shared.TurnIds(session_key)
    sid = session_key
    n_steps = sum(1 for m in msgs if m.get("role") == "assistant")
    big = shared.too_many_steps(session_key, fmt, ids, line, n_steps, sid)
    if big:
        return big
    rows = [_header(session_key, fmt, ids, sid, line, meta)]
    common = dict(session_id=sid, source_lines=[line], record_type="message")
    open_call: str | None = None
    for i, m in enumerate(msgs):
        role = m.get("role")
        text = shared.text_of(m.get("content"))
        if role == "assistant":
            blocks = _FENCE.findall(text)
            tcs = []
            if blocks:
                open_call = f"call_m{i}"
                tcs.append(shared.tool_call(open_call, "bash", {"command": blocks[0]}))
            else:
                open_call = None
            rows.append(shared.new_turn(session_key, fmt, ids.make(f"m{i}", line), "assistant", "message",
                                        content=text or None, tool_calls=shared.dumps(tcs) if tcs else None,
                                        extra=shared.extra_json({"bash_blocks": len(blocks) if len(blocks) > 1 else None}),
                                        **common))
        elif role in ("user", "tool") and open_call is not None:
            out, code = _observation(text)
            failed = code not in (None, 0)
            rows.append(shared.new_turn(session_key, fmt, ids.make(f"m{i}", line), "tool", "tool_result", content=out,
                                        tool_call_id=open_call, tool_name="bash", tool_error=failed,
                                        error_kind=classify_error(out, "bash", exit_code=code) if failed else None,
                                        extra=shared.extra_json({"exit_code": code}), **common))
            open_call = None
        elif role in ("system", "user"):
            rows.append(shared.new_turn(session_key, fmt, ids.make(f"m{i}", line), role, "message", content=text,
                                        **common))
        else:
            rows.append(shared.new_turn(session_key, fmt, ids.make(f"m{i}", line), "meta", "unknown", extra=shared.dumps(m),
                                        **common))
    return _done(rows)


# ------------------------------------------------------------------ OpenHands

_OH_SKIP_ARGS = {"thought", "security_risk", "confirmation_state", "is_confirmed", "hidden"}


def parse_openhands(raw_rows: list[dict], session_key: str) -> list[dict]:
    """One run per document, or one run per line (an evaluation's ``output.jsonl``)."""
    fmt = "openhands"
    ids = shared.TurnIds(session_key)
    loaded = shared.load_document(raw_rows)
    runs = [(loaded[1], loaded[0])] if loaded is not None else [
        (ln, {k: v for k, v in obj.items() if k != "__index__"}) for ln, obj, _ in shared.iter_records(raw_rows)]
    rows: list[dict] = []
    for line, doc in runs:
        if isinstance(doc, list):
            rows += _openhands_run(session_key, ids, line, doc, {}, session_key)
        elif isinstance(doc, dict) and isinstance(doc.get("history"), list):
            meta = {k: v for k, v in doc.items() if k != "history"}
            sid = str(meta.get("instance_id") or (session_key if len(runs) == 1 else f"{session_key}#L{line}"))
            rows += _openhands_run(session_key, ids, line, doc["history"], meta, sid)
        else:
            rows.append(shared.unknown_row(session_key, fmt, ids, line, "not an OpenHands run (no history list)", doc,
                                           session_id=session_key))
    if not rows:
        return _not_read(session_key, fmt, raw_rows, "not an OpenHands output document")
    out = shared.finalize(rows, list(range(len(rows))))
    shared.link_linear(out)
    return out


def _openhands_run(session_key: str, ids: shared.TurnIds, line: int, events: list, meta: dict, sid: str) -> list[dict]:
    fmt = "openhands"
    events = [e for e in events if isinstance(e, dict)]
    n_steps = sum(1 for e in events if e.get("source") == "agent" and "action" in e)
    big = shared.too_many_steps(session_key, fmt, ids, line, n_steps, sid)
    if big:
        return big
    rows = [_header(session_key, fmt, ids, sid, line, meta)]
    common = dict(session_id=sid, source_lines=[line])
    instruction = meta.get("instruction")
    has_user = any(e.get("source") == "user" and e.get("action") == "message" for e in events)
    if isinstance(instruction, str) and instruction and not has_user:
        rows.append(shared.new_turn(session_key, fmt, ids.make("instruction", line), "user", "message",
                                    content=instruction, record_type="instruction", **common))
    call_of_event: dict[Any, tuple[str, str]] = {}  # action event id -> (call id, name)
    current: dict | None = None  # the assistant turn of the current LLM response
    current_resp: Any = None
    for i, e in enumerate(events):
        eid = e.get("id", i)
        src = e.get("source")
        ts = shared.parse_ts(e.get("timestamp"))
        args = e.get("args") if isinstance(e.get("args"), dict) else {}
        if "action" in e:
            action = e.get("action")
            if action == "system":
                rows.append(shared.new_turn(session_key, fmt, ids.make(f"e{eid}", line), "system", "message",
                                            content=shared.clip_text(args.get("content") or e.get("message")), timestamp=ts,
                                            record_type="action:system", **common))
                current = None
                continue
            if src == "user" or (src != "agent" and action == "message"):
                rows.append(shared.new_turn(session_key, fmt, ids.make(f"e{eid}", line), "user", "message",
                                            content=shared.clip_text(args.get("content") or e.get("message")), timestamp=ts,
                                            record_type=f"action:{action}", **common))
                current = None
                continue
            if src != "agent":
                rows.append(shared.new_turn(session_key, fmt, ids.make(f"e{eid}", line), "meta", "event", timestamp=ts,
                                            record_type=f"action:{action}", extra=shared.dumps(e), **common))
                continue
            tcm = e.get("tool_call_metadata") if isinstance(e.get("tool_call_metadata"), dict) else {}
            resp = tcm.get("model_response") if isinstance(tcm.get("model_response"), dict) else {}
            resp_id = resp.get("id")
            thought = shared.clip_text(args.get("thought") or "")
            text = thought
            calls = []
            if action in ("message", "finish") and not tcm:
                text = shared.clip_text(args.get("content") or args.get("final_thought") or e.get("message")) or thought
            elif action != "think" or tcm:
                cid = str(tcm.get("tool_call_id") or f"call_e{eid}")
                name = str(tcm.get("function_name") or action)
                call_args = {k: v for k, v in args.items() if k not in _OH_SKIP_ARGS}
                calls.append(shared.tool_call(cid, name, call_args))
                call_of_event[eid] = (cid, name)
            else:
                text = thought or shared.clip_text(e.get("message"))
            if current is not None and resp_id is not None and resp_id == current_resp:
                prev = current["tool_calls"]
                merged = (list(orjson.loads(prev)) if prev else []) + calls
                current["tool_calls"] = shared.dumps(merged) if merged else None
                if text and text not in (current["content"] or ""):
                    current["content"] = "\n\n".join(x for x in (current["content"], text) if x)
                continue
            usage = resp.get("usage") if isinstance(resp.get("usage"), dict) else {}
            current = shared.new_turn(session_key, fmt, ids.make(f"e{eid}", line), "assistant", "message",
                                      content=text or None, tool_calls=shared.dumps(calls) if calls else None,
                                      model=resp.get("model") if isinstance(resp.get("model"), str) else None,
                                      input_tokens=shared.as_int(usage.get("prompt_tokens")),
                                      output_tokens=shared.as_int(usage.get("completion_tokens")), timestamp=ts,
                                      record_type=f"action:{action}", message_id=resp_id, **common)
            current_resp = resp_id
            rows.append(current)
            continue
        if "observation" in e:
            obs = e.get("observation")
            cause = e.get("cause")
            text = shared.clip_text(e.get("content") if e.get("content") is not None else e.get("message"))
            if cause in call_of_event:
                cid, name = call_of_event[cause]
                extras = e.get("extras") if isinstance(e.get("extras"), dict) else {}
                md = extras.get("metadata") if isinstance(extras.get("metadata"), dict) else {}
                code = shared.as_int(md.get("exit_code", extras.get("exit_code")))
                failed = obs == "error" or code not in (None, 0, -1)
                rows.append(shared.new_turn(session_key, fmt, ids.make(f"e{eid}", line), "tool", "tool_result",
                                            content=text, tool_call_id=cid, tool_name=name, tool_error=failed,
                                            error_kind=classify_error(text, name, exit_code=code) if failed else None,
                                            timestamp=ts, record_type=f"observation:{obs}",
                                            extra=shared.extra_json({"exit_code": code}), **common))
                current = None
                continue
            rows.append(shared.new_turn(session_key, fmt, ids.make(f"e{eid}", line), "meta", "event", content=text,
                                        timestamp=ts, record_type=f"observation:{obs}", extra=shared.dumps(e), **common))
            continue
        rows.append(shared.new_turn(session_key, fmt, ids.make(f"e{eid}", line), "meta", "unknown", timestamp=ts,
                                    record_type="event", extra=shared.dumps(e), **common))
    return rows
