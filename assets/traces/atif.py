"""ATIF (Agent Trajectory Interchange Format, Harbor RFC 0001, v1.4): schema and export.

:class:`Trajectory` and its parts are pydantic models written from the RFC's tables
(required / optional fields, ``extra`` forbidden elsewhere) plus the RFC's rules: step
ids run 1..n; ``model_name``, ``reasoning_effort``, ``reasoning_content``, ``tool_calls``
and ``metrics`` only on agent steps; an observation only on agent or system steps, and
a result's ``source_call_id`` names a tool call of its own step. :func:`validate`
raises ``pydantic.ValidationError`` on any violation.

:func:`trajectories_from_turns` turns TRACE_TURNS rows into ATIF trajectories, one per
conversation (``session_key`` + ``session_id``), and one per sidechain thread
(subagent), referenced from the tool result of the call that spawned it
(``subagent_trajectory_ref``):

* system / user turns → ``system`` / ``user`` steps (a compact summary keeps
  ``extra.tracelake.is_compact_summary``); an assistant turn → an ``agent`` step
  (``message``, ``reasoning_content`` = thinking, ``tool_calls`` with object
  arguments, ``model_name``, ``metrics``: ``prompt_tokens`` = all input tokens incl.
  cached, ``cached_tokens``, ``completion_tokens``, ``cost_usd``);
* tool results → ``observation.results`` of the agent step that made the call (a
  failure is listed in the step's ``extra.tracelake.tool_errors``: ATIF has no error
  field); a result whose call is unknown → a system step with the observation;
* a compaction boundary → a system step with ``extra.tracelake.compaction_boundary``
  and an observation saying so (RFC v1.2: system steps record context management);
* other meta rows (events, snapshots) are not trajectory steps: their count is in the
  trajectory's ``extra.tracelake.meta_rows``.

A trajectory that came in as ATIF goes back out with its original agent, notes, root
``extra`` and step ``extra`` (see :mod:`assets.traces.formats.atif`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any, Literal, Optional, Union

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Trajectory", "validate", "trajectories_from_turns", "SCHEMA_VERSION", "AGENT_NAMES"]

SCHEMA_VERSION = "ATIF-v1.4"
AGENT_NAMES = {"claude_code": "claude-code", "codex": "codex-cli", "gemini_cli": "gemini-cli",
               "swe_agent": "swe-agent", "mini_swe_agent": "mini-swe-agent", "openhands": "openhands",
               "openai_messages": "openai-chat", "sharegpt": "sharegpt", "langfuse": "langfuse-trace",
               "otel_genai": "opentelemetry-genai"}
COMPACTION_NOTE = "context compacted: the history before this point was replaced by a summary"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Agent(_M):
    name: str
    version: str
    model_name: Optional[str] = None
    extra: Optional[dict[str, Any]] = None


class ToolCall(_M):
    tool_call_id: str
    function_name: str
    arguments: dict[str, Any]


class SubagentTrajectoryRef(_M):
    session_id: str
    trajectory_path: Optional[str] = None
    extra: Optional[dict[str, Any]] = None


class ObservationResult(_M):
    source_call_id: Optional[str] = None
    content: Optional[str] = None
    subagent_trajectory_ref: Optional[list[SubagentTrajectoryRef]] = None


class Observation(_M):
    results: list[ObservationResult]


class Metrics(_M):
    prompt_tokens: Optional[int] = None
    completion_tokens: Optional[int] = None
    cached_tokens: Optional[int] = None
    cost_usd: Optional[float] = None
    prompt_token_ids: Optional[list[int]] = None
    completion_token_ids: Optional[list[int]] = None
    logprobs: Optional[list[float]] = None
    extra: Optional[dict[str, Any]] = None


class FinalMetrics(_M):
    total_prompt_tokens: Optional[int] = None
    total_completion_tokens: Optional[int] = None
    total_cached_tokens: Optional[int] = None
    total_cost_usd: Optional[float] = None
    total_steps: Optional[int] = None
    extra: Optional[dict[str, Any]] = None


AGENT_ONLY = ("model_name", "reasoning_effort", "reasoning_content", "tool_calls", "metrics")


class Step(_M):
    step_id: int = Field(ge=1)
    timestamp: Optional[str] = None
    source: Literal["system", "user", "agent"]
    model_name: Optional[str] = None
    reasoning_effort: Optional[Union[str, float]] = None
    message: str
    reasoning_content: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    observation: Optional[Observation] = None
    metrics: Optional[Metrics] = None
    extra: Optional[dict[str, Any]] = None

    @model_validator(mode="after")
    def _rules(self) -> "Step":
        if self.source != "agent":
            bad = [f for f in AGENT_ONLY if getattr(self, f) is not None]
            if bad:
                raise ValueError(f"step {self.step_id}: {bad} only apply to agent steps")
        if self.observation is not None and self.source == "user":
            raise ValueError(f"step {self.step_id}: a user step has no observation")
        ids = {c.tool_call_id for c in self.tool_calls or []}
        if len(ids) != len(self.tool_calls or []):
            raise ValueError(f"step {self.step_id}: duplicate tool_call_id")
        for r in (self.observation.results if self.observation else []):
            if r.source_call_id is not None and r.source_call_id not in ids:
                raise ValueError(f"step {self.step_id}: source_call_id {r.source_call_id!r} names no tool call "
                                 "of this step")
        return self


class Trajectory(_M):
    schema_version: str = Field(pattern=r"^ATIF-v1\.\d+$")
    session_id: str
    agent: Agent
    steps: list[Step]
    notes: Optional[str] = None
    final_metrics: Optional[FinalMetrics] = None
    extra: Optional[dict[str, Any]] = None

    @model_validator(mode="after")
    def _ids(self) -> "Trajectory":
        got = [s.step_id for s in self.steps]
        if got != list(range(1, len(got) + 1)):
            raise ValueError("step_id must run 1, 2, ... n in order")
        return self


def validate(traj: dict) -> Trajectory:
    return Trajectory.model_validate(traj)


# ------------------------------------------------------------------ turns -> ATIF

def _loads(s: Any) -> Any:
    if not s or not isinstance(s, str):
        return None
    try:
        return orjson.loads(s)
    except orjson.JSONDecodeError:
        return None


def _ts(v: Any) -> str | None:
    if v is None:
        return None
    if hasattr(v, "isoformat"):
        return v.isoformat().replace("+00:00", "Z")
    return str(v)


def _args(s: str) -> dict:
    v = _loads(s) if isinstance(s, str) else s
    if isinstance(v, dict):
        return v
    return {} if v is None and s in (None, "", "{}") else {"input": v if v is not None else s}


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _thread_of(turns: list[dict]) -> dict[str, str | None]:
    """turn_id -> root turn id of its sidechain thread (None on the main thread)."""
    by_id = {t["turn_id"]: t for t in turns}
    out: dict[str, str | None] = {}
    for t in turns:
        if not t.get("is_sidechain"):
            out[t["turn_id"]] = None
            continue
        if t.get("agent_id"):
            out[t["turn_id"]] = "agent:" + str(t["agent_id"])
            continue
        cur, seen = t, set()
        while True:
            p = by_id.get(cur.get("parent_turn_id"))
            if p is None or not p.get("is_sidechain") or p["turn_id"] in seen:
                break
            seen.add(p["turn_id"])
            cur = p
        out[t["turn_id"]] = cur["turn_id"]
    return out


def trajectories_from_turns(turns: list[dict]) -> list[dict]:
    """ATIF trajectories (plain dicts, valid against :class:`Trajectory`) of TRACE_TURNS rows."""
    by_conv: dict[tuple, list[dict]] = defaultdict(list)
    for t in turns:
        by_conv[(t["session_key"], t.get("session_id") or t["session_key"])].append(t)
    out: list[dict] = []
    for (key, sid), rows in by_conv.items():
        rows.sort(key=lambda r: r["turn_index"])
        threads = _thread_of(rows)
        # a sidechain file whose every turn is a sidechain (an agent file) is its own main thread
        if all(v is not None for v in threads.values()):
            threads = dict.fromkeys(threads, None)
        groups: dict[str | None, list[dict]] = defaultdict(list)
        for r in rows:
            groups[threads[r["turn_id"]]].append(r)
        sub_ids = {g: f"{sid}/subagent/{g}" for g in groups if g is not None}
        spawned: dict[str, list[str]] = defaultdict(list)  # tool call id -> subagent session ids
        for g, grows in groups.items():
            if g is None:
                continue
            ex = _loads(grows[0].get("extra")) or {}
            cid = ex.get("spawned_by_tool_call_id") if isinstance(ex, dict) else None
            if cid:
                spawned[cid].append(sub_ids[g])
        for g, grows in groups.items():
            out.append(_trajectory(key, sid if g is None else sub_ids[g], grows, spawned,
                                   parent=None if g is None else sid))
    return out


def _trajectory(key: str, sid: str, rows: list[dict], spawned: dict[str, list[str]], parent: str | None) -> dict:
    steps: list[dict] = []
    call_step: dict[str, dict] = {}
    meta_rows = 0
    header: dict = {}
    last_agent: dict | None = None

    def add(step: dict) -> dict:
        step["step_id"] = len(steps) + 1
        steps.append(step)
        return step

    for t in rows:
        ex = _loads(t.get("extra"))
        ex = ex if isinstance(ex, dict) else {}
        role, kind = t["role"], t["kind"]
        ts = _ts(t.get("timestamp"))
        step_extra = dict(ex.get("atif_extra") or {}) if isinstance(ex.get("atif_extra"), dict) else {}
        tl: dict[str, Any] = {"turn_id": t["turn_id"]}
        if role == "meta":
            if kind == "conversation" and isinstance(ex.get("atif"), dict):
                header = ex["atif"]
            if t.get("is_compaction_boundary"):
                tl["compaction_boundary"] = True
                add(_drop_none({"timestamp": ts, "source": "system", "message": "",
                                "observation": {"results": [{"content": COMPACTION_NOTE}]},
                                "extra": {**step_extra, "tracelake": tl}}))
            elif kind == "observation":
                res = _drop_none({"content": t.get("content"),
                                  "subagent_trajectory_ref": ex.get("subagent_trajectory_ref")})
                if ex.get("attach") == "agent" and last_agent is not None:
                    last_agent.setdefault("observation", {"results": []})["results"].append(res)
                else:
                    add(_drop_none({"timestamp": ts, "source": "system", "message": "",
                                    "observation": {"results": [res]}, "extra": step_extra or None}))
            else:
                meta_rows += 1
            continue
        if role in ("system", "user"):
            if t.get("is_compact_summary"):
                tl["is_compact_summary"] = True
            add(_drop_none({"timestamp": ts, "source": role, "message": t.get("content") or "",
                            "extra": {**step_extra, "tracelake": tl}}))
            continue
        if role == "assistant":
            calls = _loads(t.get("tool_calls")) or []
            tcs = []
            for c in calls:
                if not isinstance(c, dict):
                    continue
                fn = c.get("function") or {}
                tcs.append({"tool_call_id": str(c.get("id")), "function_name": str(fn.get("name") or ""),
                            "arguments": _args(fn.get("arguments"))})
            inp, cr, cc = t.get("input_tokens"), t.get("cache_read_tokens"), t.get("cache_creation_tokens")
            prompt = None if inp is None and cr is None else (inp or 0) + (cr or 0) + (cc or 0)
            metrics = _drop_none({"prompt_tokens": prompt, "completion_tokens": t.get("output_tokens"),
                                  "cached_tokens": cr, "cost_usd": ex.get("cost_usd"),
                                  "extra": ex.get("metrics_extra") or (
                                      {"cache_creation_input_tokens": cc} if cc else None),
                                  **(ex.get("rl") if isinstance(ex.get("rl"), dict) else {})})
            if kind != "message":
                tl["kind"] = kind
            step = add(_drop_none({
                "timestamp": ts, "source": "agent", "model_name": t.get("model"),
                "reasoning_effort": ex.get("reasoning_effort"),
                "message": t.get("content") or "", "reasoning_content": t.get("thinking"),
                "tool_calls": tcs or None, "metrics": metrics or None,
                "extra": {**step_extra, "tracelake": tl}}))
            for c in tcs:
                call_step.setdefault(c["tool_call_id"], step)
            last_agent = step
            continue
        if role == "tool":
            cid = t.get("tool_call_id")
            res = _drop_none({"source_call_id": cid, "content": t.get("content")})
            refs = list(ex.get("subagent_trajectory_ref") or []) + [
                {"session_id": s} for s in spawned.get(cid or "", [])]
            if refs:
                res["subagent_trajectory_ref"] = refs
            target = call_step.get(cid or "")
            if target is None:
                res.pop("source_call_id", None)
                add(_drop_none({"timestamp": ts, "source": "system", "message": "",
                                "observation": {"results": [res]},
                                "extra": {"tracelake": {"turn_id": t["turn_id"], "unmatched_tool_result": cid,
                                                        "tool_name": t.get("tool_name")}}}))
                continue
            target.setdefault("observation", {"results": []})["results"].append(res)
            if t.get("tool_error"):
                errs = target["extra"]["tracelake"].setdefault("tool_errors", {})
                errs[cid] = t.get("error_kind") or "other"
            continue
        meta_rows += 1
    fmt = rows[0]["source_format"] if rows else "unknown"
    models = Counter(s.get("model_name") for s in steps if s.get("model_name"))
    agent = header.get("agent") if isinstance(header.get("agent"), dict) else {
        "name": AGENT_NAMES.get(fmt, fmt), "version": "unknown",
        "model_name": models.most_common(1)[0][0] if models else None}
    agent = _drop_none(dict(agent))
    agent.setdefault("name", AGENT_NAMES.get(fmt, fmt))
    agent.setdefault("version", "unknown")
    tot = defaultdict(float)
    seen = defaultdict(bool)
    for s in steps:
        m = s.get("metrics") or {}
        for k, tk in (("prompt_tokens", "total_prompt_tokens"), ("completion_tokens", "total_completion_tokens"),
                      ("cached_tokens", "total_cached_tokens"), ("cost_usd", "total_cost_usd")):
            if m.get(k) is not None:
                tot[tk] += m[k]
                seen[tk] = True
    final = {k: (round(v, 8) if k == "total_cost_usd" else int(v)) for k, v in tot.items() if seen[k]}
    final["total_steps"] = len(steps)
    root_extra = dict(header.get("extra") or {}) if isinstance(header.get("extra"), dict) else {}
    root_extra["tracelake"] = _drop_none({"session_key": key, "source_format": fmt, "meta_rows": meta_rows or None,
                                          "parent_session_id": parent})
    return _drop_none({
        "schema_version": header.get("schema_version") or SCHEMA_VERSION,
        "session_id": header.get("session_id") if parent is None and header.get("session_id") else sid,
        "agent": agent,
        "notes": header.get("notes"),
        "final_metrics": final,
        "extra": root_extra,
        "steps": steps,
    })
