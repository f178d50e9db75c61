"""Training sets derived from the traces (SFT, KTO, SDPO), as TRL conversational rows.

All functions are pure: AGENT_STEPS rows (and PREFERENCE_PAIRS rows for KTO) in, table
rows out, JSON columns as JSON strings (the exporter decodes them).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

from assets.pairs.messages import (
    assistant_message,
    clean_messages,
    clean_tools,
    content_hash,
    dumps,
    flatten_content,
    is_empty,
    loads,
    tool_call_ids,
)
from assets.pairs.strategies import ORIGINAL


def _step_parts(r: Mapping) -> tuple[list[dict], dict, str | None]:
    prompt = clean_messages(loads(r.get("messages"), []))
    answer = assistant_message(loads(r.get("response"), None), r.get("response_text"))
    tools = clean_tools(r.get("tools"))
    return prompt, answer, dumps(tools) if tools else None


def sft_rows(steps: Iterable[Mapping], created_at: dt.datetime | None = None
             ) -> tuple[list[dict], Counter]:
    """messages = context + the original assistant turn (with tool calls); error steps skipped."""
    rows, skipped = [], Counter()
    for r in steps:
        if r.get("caused_error"):
            skipped["caused_error"] += 1
            continue
        prompt, answer, tools = _step_parts(r)
        if is_empty(answer):
            skipped["empty_response"] += 1
            continue
        if not prompt:
            skipped["no_context"] += 1
            continue
        messages = dumps(prompt + [answer])
        rows.append({
            "example_id": content_hash(r["step_id"], "sft", messages),
            "session_key": r["session_key"], "step_id": r["step_id"],
            "messages": messages, "tools": tools, "source": ORIGINAL, "created_at": created_at,
        })
    return rows, skipped


def kto_rows(steps: Iterable[Mapping], pairs: Iterable[Mapping] = (),
             created_at: dt.datetime | None = None) -> tuple[list[dict], Counter]:
    """Desirable: original steps that did not cause errors + chosen teacher answers of the
    preference pairs. Undesirable: original steps that caused errors."""
    rows: dict[str, dict] = {}
    counts = Counter()

    def add(session_key, step_id, prompt, completion, label, tools, source):
        eid = content_hash(step_id, "kto", completion, label)
        if eid in rows:
            return
        rows[eid] = {"example_id": eid, "session_key": session_key, "step_id": step_id,
                     "prompt": prompt, "completion": completion, "label": label,
                     "tools": tools, "source": source, "created_at": created_at}
        counts["desirable" if label else "undesirable"] += 1

    for r in steps:
        prompt, answer, tools = _step_parts(r)
        if is_empty(answer) or not prompt:
            continue
        add(r["session_key"], r["step_id"], dumps(prompt), dumps([answer]),
            not r.get("caused_error"), tools, ORIGINAL)
    for p in pairs:
        if p.get("chosen_source") and p["chosen_source"] != ORIGINAL:
            add(p["session_key"], p["step_id"], p["prompt"], p["chosen"], True, p.get("tools"),
                p["chosen_source"])
    return list(rows.values()), counts


HINT_TEMPLATE = ("Hint: the previous attempt at this step failed with {kind}: {error} "
                 "Do not repeat it; take a different approach.")


def make_hint(kind: str | None, error: str | None, max_chars: int = 800) -> str:
    err = " ".join((error or "").split())
    if len(err) > max_chars:
        err = err[:max_chars].rstrip() + "…"
    if not err:
        return HINT_TEMPLATE.replace(": {error}", ".").format(kind=kind or "an error")
    return HINT_TEMPLATE.format(kind=kind or "an error", error=err)


def _failure_of(step: Mapping, answer: dict, later: Sequence[Mapping]) -> tuple[str | None, str | None]:
    """(error_kind, error text) of the tool result that ``step``'s call produced.

    Looks at the next steps of the session: the first whose context holds a tool result
    answering one of this step's tool calls (its ``error_text`` when it is the error
    site, else that tool message's text).
    """
    ids = set(tool_call_ids(answer))
    kind = step.get("caused_error_kind")
    for t in later:
        ctx = loads(t.get("messages"), [])
        hit = None
        for m in reversed(ctx[-64:]):
            if isinstance(m, dict) and m.get("role") == "tool" and m.get("tool_call_id") in ids:
                hit = m
                break
        if hit is None and ids:
            continue
        if t.get("is_error_site") and t.get("error_text"):
            return kind or t.get("error_kind"), t["error_text"]
        if hit is not None:
            return kind or t.get("error_kind"), flatten_content(hit.get("content"))
        if t.get("is_error_site"):  # no tool-call ids to match: the next error site
            return kind or t.get("error_kind"), t.get("error_text")
    return kind, None


def sdpo_rows(steps: Iterable[Mapping], created_at: dt.datetime | None = None,
              hint_role: str = "user", max_hint_chars: int = 800) -> tuple[list[dict], Counter]:
    """Error sites with a hint-injected context, as an SDPO collator builds them.

    One row per step that caused a failed tool result: ``prompt`` is its context,
    ``completion`` the original (failed) answer, ``hinted_prompt`` the context with the
    failure turned into a hint message (role ``hint_role``) right before the step.
    """
    by_session: dict[str, list[Mapping]] = defaultdict(list)
    for r in steps:
        by_session[r["session_key"]].append(r)
    rows, counts = [], Counter()
    for session_steps in by_session.values():
        session_steps.sort(key=lambda r: (r.get("step_index") or 0, r["step_id"]))
        for i, r in enumerate(session_steps):
            if not r.get("caused_error"):
                continue
            prompt, answer, tools = _step_parts(r)
            if not prompt or is_empty(answer):
                counts["skipped"] += 1
                continue
            later = [t for t in session_steps[i + 1:]
                     if bool(t.get("is_sidechain")) == bool(r.get("is_sidechain"))][:8]
            kind, error = _failure_of(r, answer, later)
            hint = make_hint(kind, error, max_hint_chars)
            counts["with_error_text" if error else "kind_only"] += 1
            rows.append({
                "example_id": content_hash(r["step_id"], "sdpo", hint),
                "session_key": r["session_key"], "step_id": r["step_id"],
                "prompt": dumps(prompt),
                "hinted_prompt": dumps(prompt + [{"role": hint_role, "content": hint}]),
                "completion": dumps([answer]),
                "hint": hint, "error_kind": kind, "tools": tools, "created_at": created_at,
            })
    return rows, counts
