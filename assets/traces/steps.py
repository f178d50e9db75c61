"""TRACE_TURNS → AGENT_STEPS: one row per assistant step with the context it saw.

Which assistant turns are steps: every ``role="assistant"``, ``kind="message"`` turn
with visible text or tool calls, except

* Claude Code ``<synthetic>`` messages and ``isApiErrorMessage`` turns (placeholders
  the client wrote, e.g. "API Error: ..." / "No response requested." -- no model made
  them), and thinking-only / empty turns (nothing to imitate);
* turns whose context holds no user or system message (e.g. a resumed session whose
  first turns point at a parent in another file): there is no prompt to ask teachers with.

Context (``messages``, OpenAI chat format): the chain of ``parent_turn_id`` ancestors of
the step, oldest first, which is what the model saw:

* a sidechain step's chain stops where the sidechain starts (its own prompt), so a
  subagent never inherits the main thread;
* the chain stops at a compact summary (after a compaction the model sees the summary,
  not the history before it); compaction boundaries and other meta rows are skipped;
* tool results are placed right after the assistant message that called them, in the
  order of its ``tool_calls`` (Claude Code may write them interleaved with later lines
  of the same message); a call whose result was never recorded gets a placeholder tool
  message, so every ``tool_calls`` id is answered and every tool message answers a
  preceding call (orphan results are left out);
* thinking is not part of context messages (APIs drop earlier turns' thinking); it is
  kept in ``response.reasoning_content`` of the step itself.

``tools``: the conversation's real schemas when the source has them (OpenAI / ShareGPT
header rows), else schemas derived from the tools the thread used (main thread and
sidechains / agents separately) with the argument names seen.

``is_error_site``: the context ends with tool results (no user turn after them) and
one of them failed -> ``error_kind`` / ``error_text`` (first 2,000 chars) of that result.
``caused_error``: one of the step's own tool calls got a failed result.
``context_chars`` is the length of the ``messages`` JSON. Each message is serialized
once per session and the context JSON is a join of those pieces (no quadratic string
building beyond the output itself).
"""

from __future__ import annotations

from typing import Any

import orjson

from assets.traces.util import without_gc

__all__ = ["build_agent_steps", "is_step", "ERROR_TEXT_CHARS", "MISSING_RESULT"]

ERROR_TEXT_CHARS = 2000
MISSING_RESULT = "[no tool result recorded]"
SYNTHETIC_MODELS = {"<synthetic>"}


def _extra(t: dict) -> dict:
    e = t.get("extra")
    if not e or not isinstance(e, str) or not e.startswith("{"):
        return {}
    try:
        v = orjson.loads(e)
    except orjson.JSONDecodeError:
        return {}
    return v if isinstance(v, dict) else {}


def is_step(t: dict) -> bool:
    if t.get("role") != "assistant" or t.get("kind") != "message":
        return False
    if t.get("model") in SYNTHETIC_MODELS:
        return False
    if not (t.get("content") or t.get("tool_calls")):
        return False
    if t.get("extra") and '"api_error":true' in t["extra"]:
        return False
    return True


@without_gc
def build_agent_steps(turns: list[dict]) -> list[dict]:
    """AGENT_STEPS rows of TRACE_TURNS rows (any number of session files)."""
    by_key: dict[str, list[dict]] = {}
    for t in turns:
        by_key.setdefault(t["session_key"], []).append(t)
    out: list[dict] = []
    for key in by_key:
        out.extend(_file_steps(sorted(by_key[key], key=lambda r: r["turn_index"])))
    return out


def _calls(t: dict) -> list[dict]:
    tc = t.get("tool_calls")
    if not tc:
        return []
    try:
        v = orjson.loads(tc)
    except orjson.JSONDecodeError:
        return []
    return [c for c in v if isinstance(c, dict)] if isinstance(v, list) else []


def _json_type(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null"


class _Session:
    """Per-file caches: serialized messages, tool calls and results."""

    def __init__(self, turns: list[dict]):
        self.turns = turns
        self.by_id = {t["turn_id"]: t for t in turns}
        self.calls: dict[str, list[dict]] = {}
        self.results: dict[tuple, dict] = {}
        for t in turns:
            if t.get("role") == "assistant":
                self.calls[t["turn_id"]] = _calls(t)
            elif t.get("role") == "tool" and t.get("tool_call_id"):
                self.results.setdefault((t.get("session_id"), t["tool_call_id"]), t)
        self._frag: dict[str, bytes] = {}

    def frag(self, t: dict) -> bytes:
        f = self._frag.get(t["turn_id"])
        if f is None:
            f = orjson.dumps(self.message(t))
            self._frag[t["turn_id"]] = f
        return f

    def message(self, t: dict, *, with_reasoning: bool = False) -> dict:
        role = t["role"]
        if role == "assistant":
            m: dict[str, Any] = {"role": "assistant", "content": t.get("content") or ""}
            calls = self.calls.get(t["turn_id"]) or []
            if calls:
                m["tool_calls"] = calls
            if with_reasoning and t.get("thinking"):
                m["reasoning_content"] = t["thinking"]
            return m
        if role == "tool":
            return {"role": "tool", "tool_call_id": t.get("tool_call_id"), "name": t.get("tool_name") or "",
                    "content": t.get("content") or ""}
        return {"role": role, "content": t.get("content") or ""}

    def chain(self, step: dict) -> list[dict]:
        """Ancestors of a step, oldest first, cut at sidechain starts and compact summaries."""
        out: list[dict] = []
        seen = {step["turn_id"]}
        side = bool(step.get("is_sidechain"))
        cur = self.by_id.get(step.get("parent_turn_id"))
        while cur is not None and cur["turn_id"] not in seen:
            if side and not cur.get("is_sidechain"):
                break
            seen.add(cur["turn_id"])
            out.append(cur)
            if cur.get("is_compact_summary"):
                break
            cur = self.by_id.get(cur.get("parent_turn_id"))
        out.reverse()
        return out


def _derived_tools(turns: list[dict], sess: _Session) -> dict[tuple, str]:
    """Tool schemas per thread (session, sidechain?, agent) from the calls it made."""
    seen: dict[tuple, dict[str, dict[str, str]]] = {}
    for t in turns:
        if t.get("role") != "assistant":
            continue
        g = (t.get("session_id"), bool(t.get("is_sidechain")), t.get("agent_id"))
        names = seen.setdefault(g, {})
        for c in sess.calls.get(t["turn_id"]) or []:
            fn = c.get("function") or {}
            props = names.setdefault(str(fn.get("name") or ""), {})
            try:
                args = orjson.loads(fn.get("arguments") or "{}")
            except orjson.JSONDecodeError:
                args = {}
            if isinstance(args, dict):
                for k, v in args.items():
                    props.setdefault(str(k), _json_type(v))
    out = {}
    for g, names in seen.items():
        schemas = [
            {"type": "function", "function": {
                "name": n, "description": "",
                "parameters": {"type": "object", "properties": {k: {"type": ty} for k, ty in sorted(p.items())}},
            }}
            for n, p in sorted(names.items()) if n
        ]
        out[g] = orjson.dumps(schemas).decode()
    return out


def _header_tools(turns: list[dict]) -> dict[Any, str]:
    out = {}
    for t in turns:
        if t.get("kind") == "conversation" and t.get("extra"):
            tools = _extra(t).get("tools")
            if isinstance(tools, list) and tools:
                out[t.get("session_id")] = orjson.dumps(tools).decode()
    return out


def _file_steps(turns: list[dict]) -> list[dict]:
    sess = _Session(turns)
    header_tools = _header_tools(turns)
    derived = _derived_tools(turns, sess)
    rows: list[dict] = []
    for t in turns:
        if not is_step(t):
            continue
        sid = t.get("session_id")
        frags: list[bytes] = []
        has_prompt = False
        trailing_tools: list[dict] = []  # tool results since the last non-tool message
        for a in sess.chain(t):
            role = a.get("role")
            if role in ("user", "system"):
                frags.append(sess.frag(a))
                has_prompt = True
                trailing_tools = []
            elif role == "assistant":
                if a.get("model") in SYNTHETIC_MODELS or not (a.get("content") or a.get("tool_calls")):
                    continue
                frags.append(sess.frag(a))
                trailing_tools = []
                for c in sess.calls.get(a["turn_id"]) or []:
                    r = sess.results.get((sid, c.get("id")))
                    if r is not None and r["turn_index"] < t["turn_index"]:
                        frags.append(sess.frag(r))
                        trailing_tools.append(r)
                    else:
                        frags.append(orjson.dumps({"role": "tool", "tool_call_id": c.get("id"),
                                                   "name": (c.get("function") or {}).get("name") or "",
                                                   "content": MISSING_RESULT}))
            # tool rows are placed with their call; meta rows are not messages
        if not has_prompt:
            continue
        messages = "[" + b",".join(frags).decode() + "]"
        failed = next((r for r in trailing_tools if r.get("tool_error")), None)
        own = [sess.results.get((sid, c.get("id"))) for c in sess.calls.get(t["turn_id"]) or []]
        caused = next((r for r in own if r is not None and r.get("tool_error")), None)
        g = (sid, bool(t.get("is_sidechain")), t.get("agent_id"))
        rows.append({
            "session_key": t["session_key"],
            "step_id": t["turn_id"],
            "session_id": sid,
            "source_format": t["source_format"],
            "turn_id": t["turn_id"],
            "step_index": len(rows),
            "messages": messages,
            "tools": header_tools.get(sid) or derived.get(g) or "[]",
            "response": orjson.dumps(sess.message(t, with_reasoning=True)).decode(),
            "response_text": t.get("content"),
            "is_error_site": failed is not None,
            "error_kind": (failed.get("error_kind") or "other") if failed else None,
            "error_text": (failed.get("content") or "")[:ERROR_TEXT_CHARS] if failed else None,
            "caused_error": caused is not None,
            "caused_error_kind": (caused.get("error_kind") or "other") if caused else None,
            "model": t.get("model"),
            "is_sidechain": bool(t.get("is_sidechain")),
            "n_context_messages": len(frags),
            "context_chars": len(messages),
        })
    return rows
