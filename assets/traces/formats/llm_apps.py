"""Traces of LLM applications: Langfuse trace exports and OpenTelemetry GenAI spans.

Both are trees of observations (spans) in which some nodes are **model calls** (Langfuse
``GENERATION`` observations; OTel spans with ``gen_ai.operation.name`` chat / an
OpenInference ``LLM`` span) holding the full list of messages sent and the answer, and
some are **tool runs** (Langfuse ``TOOL``; OTel ``execute_tool`` / OpenInference
``TOOL``). Each model call becomes one assistant step whose context is exactly the
messages it was sent:

* the messages of every call are normalized to OpenAI chat messages, whatever the
  instrumentation wrote: OpenAI chat (LangChain's ``additional_kwargs.tool_calls`` too),
  Responses-API items (``message`` / ``function_call`` / ``function_call_output`` /
  ``reasoning``, the response's ``instructions`` as the system prompt), OTel GenAI
  ``parts`` (``text`` / ``tool_call`` / ``tool_call_response`` / ``reasoning``), and
  OpenInference ``llm.input_messages.N.message.*`` attributes;
* the calls of one trace share their common history: turns form a prefix tree
  (``parent_turn_id``), a message already seen under the same parent is the same turn,
  so a later call's context reuses the earlier answer and the tool results after it;
  messages that only appear as input (never produced by a call of this trace) are
  ``kind="context"`` assistant turns, not steps;
* tool runs are kept as ``meta``/``tool_run`` rows linked to the call they answer
  (``extra.tool_call_id``); a call whose result no later model call was sent gets its
  result from the matching tool run, as a tool turn;
* usage (input / output / cached tokens), cost and latency go to the step's turn; the
  trace's scores (evaluations), tags, user and metadata go to the session header row
  (``extra.labels`` = ``{score name: value}``, for filtering).

Tool definitions a LangChain export writes as ``role="tool"`` messages (a function
schema, no ``tool_call_id``) become the session's ``tools``.
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import orjson

from assets.traces.errors import classify_error
from assets.traces.formats import _common as shared

# ------------------------------------------------------------------ message normalization

_LC_ROLES = {"human": "user", "ai": "assistant", "AIMessage": "assistant", "HumanMessage": "user",
             "SystemMessage": "system", "ToolMessage": "tool", "model": "assistant", "developer": "system"}


def _args(v: Any) -> Any:
    """A JSON string's value (tool arguments, span attributes); anything else as it is."""
    if isinstance(v, str):
        try:
            return orjson.loads(v)
        except orjson.JSONDecodeError:
            return v
    return v


def _part_text(parts: Iterable[Any]) -> tuple[str, str]:
    text, reasoning = [], []
    for p in parts:
        if isinstance(p, str):
            text.append(p)
        elif isinstance(p, dict):
            t = p.get("type")
            if t in ("reasoning", "thinking"):
                reasoning.append(shared.clip_text(p.get("content") or p.get("text") or p.get("thinking")))
            elif t in (None, "text", "input_text", "output_text") or "content" in p or "text" in p:
                v = p.get("content") if "content" in p else p.get("text")
                text.append(shared.clip_text(v))
    return "\n".join(x for x in text if x), "\n".join(x for x in reasoning if x)


def _is_tool_schema(m: dict) -> dict | None:
    c = m.get("content")
    if m.get("role") == "tool" and not m.get("tool_call_id") and isinstance(c, dict) and (
            c.get("type") == "function" or "parameters" in c or "function" in c):
        return c if c.get("type") == "function" else {"type": "function", "function": c}
    return None


def to_messages(value: Any, tools: list[dict] | None = None) -> list[dict]:
    """OpenAI chat messages (``role``, ``content``, ``tool_calls``, ``tool_call_id``, ``name``,
    ``reasoning``) from any of the message shapes LLM-app instrumentations write."""
    if value is None:
        return []
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, dict):
        if isinstance(value.get("output"), list) and (value.get("object") == "response" or "instructions" in value):
            out = to_messages(value["output"], tools)
            return out
        if isinstance(value.get("choices"), list) and value["choices"]:
            ch = value["choices"][0]
            return to_messages(ch.get("message") if isinstance(ch, dict) else None, tools)
        if isinstance(value.get("messages"), list):
            return to_messages(value["messages"], tools)
        items = [value]
    elif isinstance(value, list):
        items = value
    else:
        return [{"role": "user", "content": shared.clip_text(value)}]
    out: list[dict] = []

    def assistant() -> dict:
        if out and out[-1]["role"] == "assistant" and not out[-1].get("_closed"):
            return out[-1]
        m = {"role": "assistant", "content": "", "tool_calls": []}
        out.append(m)
        return m

    for it in items:
        if not isinstance(it, dict):
            out.append({"role": "user", "content": shared.clip_text(it)})
            continue
        t = it.get("type")
        if t == "function_call":
            assistant()["tool_calls"].append(
                {"id": str(it.get("call_id") or it.get("id") or ""), "name": str(it.get("name") or ""),
                 "arguments": _args(it.get("arguments"))})
            continue
        if t in ("function_call_output", "custom_tool_call_output"):
            out.append({"role": "tool", "tool_call_id": str(it.get("call_id") or ""), "content": shared.clip_text(it.get("output"))})
            continue
        if t == "reasoning":
            a = assistant()
            a["reasoning"] = "\n".join(x for x in (a.get("reasoning"), shared.text_of(it.get("summary")),
                                                   shared.text_of(it.get("content"))) if x)
            continue
        schema = _is_tool_schema(it)
        if schema is not None:
            if tools is not None:
                tools.append(schema)
            continue
        role = it.get("role") or (t if t in _LC_ROLES else None)
        role = _LC_ROLES.get(role, role)
        if "parts" in it and isinstance(it["parts"], list):
            text, reasoning = _part_text(p for p in it["parts"]
                                         if not (isinstance(p, dict) and p.get("type") in ("tool_call", "tool_call_response")))
            calls = [p for p in it["parts"] if isinstance(p, dict) and p.get("type") == "tool_call"]
            results = [p for p in it["parts"] if isinstance(p, dict) and p.get("type") == "tool_call_response"]
            for r in results:
                out.append({"role": "tool", "tool_call_id": str(r.get("id") or ""), "name": r.get("name"),
                            "content": shared.clip_text(r.get("result", r.get("response")))})
            if role == "assistant":
                a = assistant() if not text else None
                if a is None:
                    a = {"role": "assistant", "content": text, "tool_calls": []}
                    out.append(a)
                a["tool_calls"] += [{"id": str(c.get("id") or ""), "name": str(c.get("name") or ""),
                                     "arguments": _args(c.get("arguments"))} for c in calls]
                if reasoning:
                    a["reasoning"] = reasoning
                a["_closed"] = True
            elif text or not results:
                out.append({"role": role or "user", "content": text})
            continue
        content = it.get("content")
        if role == "assistant":
            text, reasoning = (content, "") if isinstance(content, str) else _part_text(content or [])
            calls = it.get("tool_calls")
            if calls is None and isinstance(it.get("additional_kwargs"), dict):
                calls = it["additional_kwargs"].get("tool_calls")
            m = {"role": "assistant", "content": text or "", "tool_calls": [], "_closed": True}
            for c in calls or []:
                if isinstance(c, dict):
                    fn = c.get("function") if isinstance(c.get("function"), dict) else c
                    m["tool_calls"].append({"id": str(c.get("id") or ""), "name": str(fn.get("name") or ""),
                                            "arguments": _args(fn.get("arguments", fn.get("args")))})
            if reasoning or it.get("reasoning_content"):
                m["reasoning"] = reasoning or shared.clip_text(it.get("reasoning_content"))
            out.append(m)
            continue
        if role == "tool":
            out.append({"role": "tool", "tool_call_id": str(it.get("tool_call_id") or ""), "name": it.get("name"),
                        "content": shared.clip_text(content) if not isinstance(content, list) or not all(
                            isinstance(p, dict) and ("text" in p) for p in content) else _part_text(content)[0]})
            continue
        text = content if isinstance(content, str) else (
            _part_text(content)[0] if isinstance(content, list) else shared.clip_text(content))
        out.append({"role": role if role in ("system", "user") else "user", "content": text})
    for m in out:
        m.pop("_closed", None)
        if m.get("role") == "assistant" and not m.get("tool_calls"):
            m.pop("tool_calls", None)
    return out


def _sig(m: dict) -> bytes:
    """What makes two messages the same message (for sharing history between calls)."""
    calls = [(c.get("id"), c.get("name"), c.get("arguments")) for c in m.get("tool_calls") or []]
    return orjson.dumps([m.get("role"), (m.get("content") or "").strip(), calls, m.get("tool_call_id") or None],
                        option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)


def _nested_tool(t: dict) -> dict:
    """An OpenAI chat tool schema ``{"type": "function", "function": {...}}`` from the nested
    form, the flat (Responses API / GenAI) form or pydantic-ai's ``parameters_json_schema``."""
    if isinstance(t.get("function"), dict):
        return {"type": "function", "function": t["function"]}
    fn = {k: t[k] for k in ("name", "description", "parameters", "strict") if t.get(k) is not None}
    if "parameters" not in fn and isinstance(t.get("parameters_json_schema"), dict):
        fn["parameters"] = t["parameters_json_schema"]
    return {"type": "function", "function": fn}


_OI_TOOL = re.compile(r"llm[.]tools[.][0-9]+[.]tool[.]json_schema$")


def tools_of(attrs: dict, output: Any = None) -> list[dict]:
    """Tool schemas a model call was offered, from whichever attribute the instrumentation wrote."""
    out: list[dict] = []
    if isinstance(output, dict) and isinstance(output.get("tools"), list):  # Responses API response
        out += [_nested_tool(t) for t in output["tools"] if isinstance(t, dict) and t.get("type") == "function"]
    for k in sorted(attrs or {}):
        if _OI_TOOL.match(k):
            v = _args(attrs[k])
            if isinstance(v, dict):
                out.append(_nested_tool(v))
    defs = _args((attrs or {}).get("gen_ai.tool.definitions"))
    if isinstance(defs, list):
        out += [_nested_tool(t) for t in defs if isinstance(t, dict)]
    mrp = _args((attrs or {}).get("model_request_parameters"))
    if isinstance(mrp, dict):
        for key in ("function_tools", "output_tools"):
            out += [_nested_tool(t) for t in mrp.get(key) or [] if isinstance(t, dict)]
    return [t for t in out if t["function"].get("name")]


# ------------------------------------------------------------------ observations -> turns

class Obs(dict):
    """One observation / span in a common shape: id, parent, type (GENERATION | TOOL | other),
    name, start, end, input, output, model, usage {input, output, cache_read}, cost,
    tool_call_id, metadata."""


def build_turns(session_key: str, fmt: str, sid: str, observations: list[Obs], header: dict, line: int,
                ids: shared.TurnIds) -> list[dict]:
    rows: list[dict] = []
    tools: list[dict] = list(header.pop("tools", None) or [])
    by_id = {o["id"]: o for o in observations}

    def path(o: Obs) -> list[str]:
        out, seen, cur = [], set(), by_id.get(o.get("parent"))
        while cur is not None and cur["id"] not in seen:
            seen.add(cur["id"])
            out.append(str(cur.get("name") or cur.get("type")))
            cur = by_id.get(cur.get("parent"))
        return out[::-1]

    head = shared.new_turn(session_key, fmt, ids.make("header", line), "meta", "conversation", session_id=sid,
                           record_type="trace", source_lines=[line], timestamp=shared.parse_ts(header.get("timestamp")))
    rows.append(head)
    nodes: dict[tuple, dict] = {}
    call_turn: dict[str, dict] = {}  # call id -> the assistant turn that made it
    call_name: dict[str, str] = {}
    answered: set[str] = set()
    order = sorted(observations, key=lambda o: (str(o.get("start") or ""), str(o.get("end") or ""), o["id"]))
    common = dict(session_id=sid, source_lines=[line])

    def add_message(m: dict, parent: str | None, obs: Obs, n: int, *, answer: bool) -> dict:
        role = m["role"]
        local = f"{obs['id']}:{'out' if answer else n}"
        if role == "assistant":
            calls = [shared.tool_call(c["id"] or f"call_{obs['id']}_{k}", c["name"], c["arguments"])
                     for k, c in enumerate(m.get("tool_calls") or [])]
            row = shared.new_turn(session_key, fmt, ids.make(local, line), "assistant", "message" if answer else "context",
                                  content=m.get("content") or None, thinking=m.get("reasoning") or None,
                                  tool_calls=shared.dumps(calls) if calls else None, parent_turn_id=parent,
                                  record_type=str(obs.get("type")), **common)
            for c in calls:
                call_turn.setdefault(c["id"], row)
                call_name.setdefault(c["id"], c["function"]["name"])
        elif role == "tool":
            cid = m.get("tool_call_id") or None
            name = m.get("name") or call_name.get(cid or "")
            text = m.get("content") or ""
            err = shared.looks_like_error(text)
            row = shared.new_turn(session_key, fmt, ids.make(local, line), "tool", "tool_result", content=text,
                                  tool_call_id=cid, tool_name=name, tool_error=err,
                                  error_kind=classify_error(text, name) if err else None, parent_turn_id=parent,
                                  record_type=str(obs.get("type")), extra=shared.extra_json({"orphan": cid not in call_name}),
                                  **common)
            if cid:
                answered.add(cid)
        else:
            row = shared.new_turn(session_key, fmt, ids.make(local, line), role, "message", content=m.get("content") or "",
                                  parent_turn_id=parent, record_type=str(obs.get("type")), **common)
        rows.append(row)
        return row

    tool_runs: list[Obs] = []
    for o in order:
        if o.get("type") == "TOOL":
            tool_runs.append(o)
            continue
        if o.get("type") != "GENERATION":
            rows.append(shared.new_turn(session_key, fmt, ids.make(f"{o['id']}:span", line), "meta", "span",
                                        timestamp=shared.parse_ts(o.get("start")), record_type=str(o.get("type")),
                                        extra=shared.dumps({"observation_id": o["id"], "parent_observation_id": o.get("parent"),
                                                                   "name": o.get("name"), "input": o.get("input"),
                                                                   "output": o.get("output")}), **common))
            continue
        tools += o.get("tools") or []
        msgs = list(o.get("system") or []) + to_messages(o.get("input"), tools)
        parent = None
        for n, m in enumerate(msgs):
            key = (parent, _sig(m))
            row = nodes.get(key)
            if row is None:
                row = add_message(m, parent, o, n, answer=False)
                row["timestamp"] = shared.parse_ts(o.get("start"))
                nodes[key] = row
            parent = row["turn_id"]
        answers = [m for m in to_messages(o.get("output"), tools) if m["role"] == "assistant"]
        ans = answers[0] if answers else {"role": "assistant", "content": ""}
        for extra_m in answers[1:]:  # one model response: merge its assistant messages
            ans = {**ans, "content": "\n\n".join(x for x in (ans.get("content"), extra_m.get("content")) if x),
                   "tool_calls": (ans.get("tool_calls") or []) + (extra_m.get("tool_calls") or [])}
        row = add_message(ans, parent, o, 0, answer=True)
        u = o.get("usage") or {}
        row.update(model=o.get("model"), input_tokens=shared.as_int(u.get("input")), output_tokens=shared.as_int(u.get("output")),
                   cache_read_tokens=shared.as_int(u.get("cache_read")), timestamp=shared.parse_ts(o.get("start")),
                   message_id=o["id"])
        row["extra"] = shared.extra_json({"observation_id": o["id"], "parent_observation_id": o.get("parent"),
                                                 "name": o.get("name"), "path": path(o), "cost_usd": o.get("cost"),
                                                 "latency_s": o.get("latency"), "model_parameters": o.get("model_parameters"),
                                                 "labels": o.get("labels")})
        nodes.setdefault((parent, _sig(ans)), row)
    # tool runs: link each to the call it answers; give unanswered calls their result
    used: set[str] = set()
    for o in tool_runs:
        name = re.sub(r"^running tool:\s*", "", str(o.get("name") or ""))
        cid = o.get("tool_call_id")
        if not cid or cid not in call_turn:
            cid = next((c for c, n in call_name.items() if n == name and c not in used), None)
        if cid:
            used.add(cid)
        rows.append(shared.new_turn(session_key, fmt, ids.make(f"{o['id']}:tool", line), "meta", "tool_run",
                                    timestamp=shared.parse_ts(o.get("start")), record_type="TOOL", tool_name=name,
                                    tool_call_id=None,
                                    extra=shared.dumps({"observation_id": o["id"], "parent_observation_id": o.get("parent"),
                                                               "tool_call_id": cid, "input": o.get("input"), "output": o.get("output"),
                                                               "latency_s": o.get("latency"), "level": o.get("level")}), **common))
        if cid and cid not in answered and cid in call_turn:
            text = shared.clip_text(o.get("output"))
            err = o.get("level") == "ERROR" or shared.looks_like_error(text)
            rows.append(shared.new_turn(session_key, fmt, ids.make(f"{o['id']}:result", line), "tool", "tool_result",
                                        content=text, tool_call_id=cid, tool_name=call_name.get(cid), tool_error=err,
                                        error_kind=classify_error(text, name) if err else None,
                                        parent_turn_id=call_turn[cid]["turn_id"], timestamp=shared.parse_ts(o.get("end")),
                                        record_type="TOOL", extra=shared.extra_json({"from_tool_run": True}), **common))
            answered.add(cid)
    uniq: dict[str, dict] = {}
    for t in tools:  # one schema per tool name (the first seen)
        fn = t.get("function") if isinstance(t.get("function"), dict) else {}
        uniq.setdefault(fn.get("name") or shared.dumps(t), t)
    if uniq:
        header["tools"] = list(uniq.values())
    head["extra"] = shared.dumps(header) if header else None
    return rows


# ------------------------------------------------------------------ Langfuse

def _langfuse_obs(o: dict) -> Obs:
    u = o.get("usageDetails") if isinstance(o.get("usageDetails"), dict) else {}
    cache = next((u[k] for k in ("input_cache_read", "prompt_details.cache_read", "cache_read_input_tokens",
                                 "input_cached_tokens") if k in u), None)
    cost = o.get("costDetails") if isinstance(o.get("costDetails"), dict) else {}
    attrs = ((o.get("metadata") or {}).get("attributes") or {}) if isinstance(o.get("metadata"), dict) else {}
    system = []
    out = o.get("output")
    if isinstance(out, dict) and isinstance(out.get("instructions"), str) and out["instructions"]:
        system = [{"role": "system", "content": out["instructions"]}]
    return Obs(id=str(o.get("id")), parent=o.get("parentObservationId"), type=o.get("type"), name=o.get("name"),
               start=o.get("startTime"), end=o.get("endTime"), input=o.get("input"), output=out,
               model=o.get("model") if isinstance(o.get("model"), str) else None,
               usage={"input": u.get("input"), "output": u.get("output"), "cache_read": cache},
               cost=cost.get("total", o.get("totalCost")), latency=o.get("latency"), level=o.get("level"),
               model_parameters=o.get("modelParameters"), system=system,
               tool_call_id=attrs.get("gen_ai.tool.call.id") if isinstance(attrs, dict) else None,
               tools=tools_of(attrs if isinstance(attrs, dict) else {}, out))


def parse_langfuse(raw_rows: list[dict], session_key: str) -> list[dict]:
    fmt = "langfuse"
    ids = shared.TurnIds(session_key)
    loaded = shared.load_document(raw_rows)
    if loaded is None or not isinstance(loaded[0], dict) or not isinstance(loaded[0].get("observations"), list):
        line = min((r["line_no"] for r in raw_rows), default=1)
        return [shared.unknown_row(session_key, fmt, ids, line, "not a Langfuse trace export", session_id=session_key)]
    doc, line = loaded
    trace = doc.get("trace") if isinstance(doc.get("trace"), dict) else {}
    sid = str(trace.get("id") or session_key)
    scores = [s for s in trace.get("scores") or doc.get("scores") or [] if isinstance(s, dict)]
    header = {k: trace.get(k) for k in ("name", "userId", "sessionId", "tags", "release", "version", "metadata",
                                         "environment", "timestamp", "latency") if trace.get(k) not in (None, [], {})}
    if scores:
        header["scores"] = [{k: s.get(k) for k in ("name", "value", "stringValue", "dataType", "source", "comment",
                                                   "observationId") if s.get(k) is not None} for s in scores]
        header["labels"] = {s.get("name"): s.get("stringValue") if s.get("stringValue") is not None else s.get("value")
                            for s in scores if s.get("name")}
    obs = [_langfuse_obs(o) for o in doc["observations"] if isinstance(o, dict) and o.get("id")]
    for o in obs:  # a score given to one model call is also a label of that step
        mine = [s for s in scores if s.get("observationId") == o["id"]]
        if mine:
            o["labels"] = {s.get("name"): s.get("stringValue") if s.get("stringValue") is not None else s.get("value")
                           for s in mine if s.get("name")}
    big = shared.too_many_steps(session_key, fmt, ids, line, sum(o.get("type") == "GENERATION" for o in obs), sid)
    if big:
        return big
    rows = build_turns(session_key, fmt, sid, obs, header, line, ids)
    return shared.finalize(rows, list(range(len(rows))))


# ------------------------------------------------------------------ OpenTelemetry (OTLP JSON)

def _otlp_value(v: Any) -> Any:
    if not isinstance(v, dict):
        return v
    for k in ("stringValue", "boolValue", "doubleValue"):
        if k in v:
            return v[k]
    if "intValue" in v:
        try:
            return int(v["intValue"])
        except (TypeError, ValueError):
            return v["intValue"]
    if "arrayValue" in v:
        return [_otlp_value(x) for x in (v["arrayValue"] or {}).get("values") or []]
    if "kvlistValue" in v:
        return {kv.get("key"): _otlp_value(kv.get("value")) for kv in (v["kvlistValue"] or {}).get("values") or []}
    if "bytesValue" in v:
        return v["bytesValue"]
    return None


def _attrs(span: dict) -> dict:
    return {a.get("key"): _otlp_value(a.get("value")) for a in span.get("attributes") or [] if isinstance(a, dict)}


def _oi_messages(a: dict, prefix: str) -> list[dict]:
    """OpenInference flattened messages: ``{prefix}.N.message.role`` etc."""
    rx = re.compile(re.escape(prefix) + r"\.(\d+)\.message\.(.+)$")
    msgs: dict[int, dict] = {}
    for k, v in a.items():
        m = rx.match(k)
        if not m:
            continue
        i, field = int(m.group(1)), m.group(2)
        msg = msgs.setdefault(i, {})
        tc = re.match(r"tool_calls\.(\d+)\.tool_call\.(.+)$", field)
        if tc:
            call = msg.setdefault("_calls", {}).setdefault(int(tc.group(1)), {})
            call[tc.group(2)] = v
        elif field.startswith("contents."):
            cm = re.match(r"contents\.(\d+)\.message_content\.text$", field)
            if cm:
                msg.setdefault("_parts", {})[int(cm.group(1))] = v
        else:
            msg[field] = v
    out = []
    for i in sorted(msgs):
        m = msgs[i]
        content = m.get("content")
        if content is None and m.get("_parts"):
            content = "\n".join(shared.clip_text(m["_parts"][k]) for k in sorted(m["_parts"]))
        om: dict = {"role": m.get("role") or "user", "content": content if content is not None else ""}
        if m.get("tool_call_id"):
            om["tool_call_id"] = m["tool_call_id"]
        if m.get("name"):
            om["name"] = m["name"]
        calls = m.get("_calls") or {}
        if calls:
            om["tool_calls"] = [{"id": c.get("id") or f"call_{i}_{j}", "type": "function",
                                 "function": {"name": c.get("function.name") or "",
                                              "arguments": c.get("function.arguments") or "{}"}}
                                for j, c in sorted(calls.items())]
        out.append(om)
    return out


def _nanos_iso(v: Any) -> str | None:
    try:
        ns = int(v)
    except (TypeError, ValueError):
        return None
    from datetime import datetime, timezone
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat().replace("+00:00", "Z")


_GEN_OPS = {"chat", "text_completion", "generate_content", "completion"}


def _otel_obs(span: dict) -> Obs:
    a = _attrs(span)
    op = a.get("gen_ai.operation.name")
    kind = a.get("openinference.span.kind")
    inp = out = None
    system = []
    if "gen_ai.input.messages" in a or "gen_ai.output.messages" in a:
        inp = _args(a.get("gen_ai.input.messages"))
        out = _args(a.get("gen_ai.output.messages"))
        si = _args(a.get("gen_ai.system_instructions"))
        if si:
            text, _ = _part_text(si if isinstance(si, list) else [si])
            system = [{"role": "system", "content": text}]
    elif any(k.startswith("llm.input_messages.") for k in a):
        inp = _oi_messages(a, "llm.input_messages")
        out = _oi_messages(a, "llm.output_messages")
    if op in _GEN_OPS or kind == "LLM" or inp is not None:
        typ = "GENERATION"
    elif op == "execute_tool" or kind == "TOOL":
        typ = "TOOL"
    else:
        typ = "SPAN"
    tcid = a.get("gen_ai.tool.call.id")
    return Obs(id=str(span.get("spanId")), parent=span.get("parentSpanId") or None, type=typ,
               name=span.get("name"), start=_nanos_iso(span.get("startTimeUnixNano")),
               end=_nanos_iso(span.get("endTimeUnixNano")),
               input=inp if typ == "GENERATION" else _args(a.get("gen_ai.tool.call.arguments", a.get("input.value"))),
               output=out if typ == "GENERATION" else _args(a.get("gen_ai.tool.call.result", a.get("output.value"))),
               model=a.get("gen_ai.response.model") or a.get("gen_ai.request.model") or a.get("llm.model_name"),
               usage={"input": a.get("gen_ai.usage.input_tokens", a.get("llm.token_count.prompt")),
                      "output": a.get("gen_ai.usage.output_tokens", a.get("llm.token_count.completion")),
                      "cache_read": a.get("gen_ai.usage.cache_read.input_tokens",
                                          a.get("llm.token_count.prompt_details.cache_read"))},
               cost=None, latency=None, system=system, tool_call_id=tcid,
               level="ERROR" if (span.get("status") or {}).get("code") in (2, "STATUS_CODE_ERROR") else None,
               tool_name=a.get("gen_ai.tool.name") or a.get("tool.name"),
               tools=tools_of(a), _trace=span.get("traceId"))


def parse_otel(raw_rows: list[dict], session_key: str) -> list[dict]:
    fmt = "otel_genai"
    ids = shared.TurnIds(session_key)
    traces: dict[str, list[Obs]] = {}
    first_line: dict[str, int] = {}
    resources: dict[str, dict] = {}
    loaded = shared.load_document(raw_rows)
    records = [(loaded[1], loaded[0], None)] if loaded is not None and isinstance(loaded[0], dict) \
        else list(shared.iter_records(raw_rows))
    rows: list[dict] = []
    for line_no, obj, _ in records:
        rs_list = obj.get("resourceSpans")
        if not isinstance(rs_list, list):
            rows.append(shared.unknown_row(session_key, fmt, ids, line_no, "no resourceSpans", session_id=session_key))
            continue
        for rs in rs_list:
            if not isinstance(rs, dict):
                continue
            res = {a.get("key"): _otlp_value(a.get("value"))
                   for a in (rs.get("resource") or {}).get("attributes") or [] if isinstance(a, dict)}
            for ss in rs.get("scopeSpans") or []:
                for span in (ss or {}).get("spans") or []:
                    if not isinstance(span, dict) or not span.get("spanId"):
                        continue
                    o = _otel_obs(span)
                    tid = str(o.get("_trace") or session_key)
                    traces.setdefault(tid, []).append(o)
                    first_line.setdefault(tid, line_no)
                    resources.setdefault(tid, res)
    for tid, obs in traces.items():
        for o in obs:
            if o.get("type") == "TOOL" and o.get("tool_name"):
                o["name"] = o["tool_name"]
        big = shared.too_many_steps(session_key, fmt, ids, first_line[tid], sum(o.get("type") == "GENERATION" for o in obs),
                                    tid)
        if big:
            rows += big
            continue
        header = {"resource": resources.get(tid) or None, "trace_id": tid}
        rows += build_turns(session_key, fmt, tid, obs, {k: v for k, v in header.items() if v}, first_line[tid], ids)
    return shared.finalize(rows, list(range(len(rows))))
