"""ATIF trajectories (Harbor RFC 0001) in: one JSON document ``{schema_version: "ATIF-v1.x",
session_id, agent, steps, notes?, final_metrics?, extra?}``.

* ``system`` / ``user`` steps → system / user turns; an ``agent`` step → one assistant
  turn (``message`` → content, ``reasoning_content`` → thinking, ``tool_calls`` → OpenAI
  tool calls, ``model_name`` (or the agent's) → model, ``metrics`` → tokens: input =
  ``prompt_tokens - cached_tokens``, cache read = ``cached_tokens``; cost and other
  metrics in ``extra``);
* ``observation.results`` with a ``source_call_id`` → tool turns answering that call
  (a failure recorded by a tracelake export in ``extra.tracelake.tool_errors`` comes
  back as ``tool_error``; otherwise the error heuristics apply); results without one, or
  on system steps → ``meta``/``observation`` rows; ``subagent_trajectory_ref`` is kept
  in the row's ``extra``;
* a system step marked ``extra.tracelake.compaction_boundary`` → a compaction boundary
  row; a user step marked ``is_compact_summary`` → a compact summary.
* The root (agent, notes, final metrics, extra) is kept in the header row
  (``extra.atif``), and each step's ``extra`` in its turn, so an export gives them back.

The document is validated against :class:`assets.traces.atif.Trajectory` first; an
invalid one is still read (what can be read) and the header says why it is invalid.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from assets.traces.atif import validate
from assets.traces.errors import classify_error
from assets.traces.formats import _common as shared

FORMAT = "atif"


def parse(raw_rows: list[dict], session_key: str) -> list[dict]:
    ids = shared.TurnIds(session_key)
    loaded = shared.load_document(raw_rows)
    if loaded is None or not isinstance(loaded[0], dict) or not isinstance(loaded[0].get("steps"), list):
        line = min((r["line_no"] for r in raw_rows), default=1)
        return [shared.unknown_row(session_key, FORMAT, ids, line, "not an ATIF trajectory document",
                                   session_id=session_key)]
    doc, line = loaded
    problem = None
    try:
        validate(doc)
    except ValidationError as e:
        problem = f"invalid ATIF: {e.error_count()} error(s): {e.errors()[0].get('msg')}"
    sid = str(doc.get("session_id") or session_key)
    agent = doc.get("agent") if isinstance(doc.get("agent"), dict) else {}
    root = {k: doc.get(k) for k in ("schema_version", "session_id", "agent", "notes", "final_metrics", "extra")
            if doc.get(k) is not None}
    big = shared.too_many_steps(session_key, FORMAT, ids, line,
                                sum(1 for st in doc["steps"] if isinstance(st, dict) and st.get("source") == "agent"), sid)
    if big:
        return big
    rows = [shared.new_turn(session_key, FORMAT, ids.make("header", line), "meta", "conversation", session_id=sid,
                            record_type="trajectory", source_lines=[line],
                            extra=shared.dumps({"atif": root, "invalid": problem} if problem else {"atif": root}))]
    common = dict(session_id=sid, source_lines=[line])
    for i, st in enumerate(doc["steps"]):
        if not isinstance(st, dict):
            rows.append(shared.unknown_row(session_key, FORMAT, ids, line, f"step {i + 1} is not an object", st,
                                           session_id=sid))
            continue
        n = st.get("step_id", i + 1)
        src = st.get("source")
        ts = shared.parse_ts(st.get("timestamp"))
        sx = st.get("extra") if isinstance(st.get("extra"), dict) else {}
        tl = sx.get("tracelake") if isinstance(sx.get("tracelake"), dict) else {}
        keep = {k: v for k, v in sx.items() if k != "tracelake"}
        base = dict(timestamp=ts, record_type=f"step:{src}", **common)
        obs = st.get("observation") if isinstance(st.get("observation"), dict) else {}
        results = [r for r in obs.get("results") or [] if isinstance(r, dict)]
        if src in ("system", "user"):
            if tl.get("compaction_boundary"):
                rows.append(shared.new_turn(session_key, FORMAT, ids.make(f"s{n}", line), "meta", "compaction",
                                            is_compaction_boundary=True, extra=shared.extra_json({"atif_extra": keep}), **base))
                continue
            if src == "system" and not st.get("message") and results:
                pass  # an observation-only system step: its results follow
            else:
                rows.append(shared.new_turn(session_key, FORMAT, ids.make(f"s{n}", line), src,
                                            "summary" if tl.get("is_compact_summary") else "message",
                                            content=shared.clip_text(st.get("message")),
                                            is_compact_summary=bool(tl.get("is_compact_summary")),
                                            extra=shared.extra_json({"atif_extra": keep}), **base))
            for k, r in enumerate(results):
                rows.append(shared.new_turn(session_key, FORMAT, ids.make(f"s{n}:obs{k}", line), "meta", "observation",
                                            content=r.get("content"),
                                            extra=shared.extra_json({"attach": "system", "source_call_id": r.get("source_call_id"),
                                                                            "subagent_trajectory_ref": r.get("subagent_trajectory_ref"),
                                                                            "atif_extra": keep if src == "system" and not
                                                                            st.get("message") else None}), **base))
            continue
        if src != "agent":
            rows.append(shared.unknown_row(session_key, FORMAT, ids, line, f"step {n}: unknown source {src!r}", st,
                                           session_id=sid))
            continue
        calls = []
        for k, c in enumerate(st.get("tool_calls") or []):
            if isinstance(c, dict):
                calls.append(shared.tool_call(str(c.get("tool_call_id") or f"call_s{n}_{k}"),
                                              str(c.get("function_name") or ""), c.get("arguments")))
        names = {c["id"]: c["function"]["name"] for c in calls}
        m = st.get("metrics") if isinstance(st.get("metrics"), dict) else {}
        prompt, cached = shared.as_int(m.get("prompt_tokens")), shared.as_int(m.get("cached_tokens"))
        metrics_extra = m.get("extra") if isinstance(m.get("extra"), dict) else None
        cc = shared.as_int((metrics_extra or {}).get("cache_creation_input_tokens"))
        inp = None if prompt is None else prompt - (cached or 0) - (cc or 0)
        rl = {k: m[k] for k in ("prompt_token_ids", "completion_token_ids", "logprobs") if m.get(k) is not None}
        rows.append(shared.new_turn(
            session_key, FORMAT, ids.make(f"s{n}", line), "assistant", tl.get("kind") or "message",
            content=shared.clip_text(st.get("message")) or None, thinking=st.get("reasoning_content") or None,
            tool_calls=shared.dumps(calls) if calls else None,
            model=st.get("model_name") or agent.get("model_name"),
            input_tokens=inp, cache_read_tokens=cached, cache_creation_tokens=cc,
            output_tokens=shared.as_int(m.get("completion_tokens")),
            extra=shared.extra_json({"atif_extra": keep, "cost_usd": m.get("cost_usd"),
                                                   "reasoning_effort": st.get("reasoning_effort"), "metrics_extra": metrics_extra,
                                                   "rl": rl}), **base))
        errors = tl.get("tool_errors") if isinstance(tl.get("tool_errors"), dict) else {}
        for k, r in enumerate(results):
            cid = r.get("source_call_id")
            text = shared.clip_text(r.get("content")) if r.get("content") is not None else None
            if cid in names:
                known = cid in errors
                err = known or (not tl and shared.looks_like_error(text or ""))
                kind = errors.get(cid) or (classify_error(text, names[cid]) if err else None)
                rows.append(shared.new_turn(session_key, FORMAT, ids.make(f"s{n}:obs{k}", line), "tool", "tool_result",
                                            content=text, tool_call_id=cid, tool_name=names[cid], tool_error=err,
                                            error_kind=kind,
                                            extra=shared.extra_json({"subagent_trajectory_ref": r.get("subagent_trajectory_ref")}),
                                            **base))
            else:
                rows.append(shared.new_turn(session_key, FORMAT, ids.make(f"s{n}:obs{k}", line), "meta", "observation",
                                            content=r.get("content"),
                                            extra=shared.extra_json({"attach": "agent", "source_call_id": cid,
                                                                            "subagent_trajectory_ref": r.get("subagent_trajectory_ref")}),
                                            **base))
    out = shared.finalize(rows, list(range(len(rows))))
    shared.link_linear(out)
    return out
