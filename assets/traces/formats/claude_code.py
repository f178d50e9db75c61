"""Claude Code session transcripts (``~/.claude/projects/<project>/<session>.jsonl``).

Mapping (one TRACE_TURNS row per message; see PROVENANCE.md of the real test data):

* ``assistant`` lines sharing ``message.id`` (one API message written one content block
  per line) → ONE assistant turn: ``thinking`` blocks → ``thinking``, ``text`` →
  ``content``, ``tool_use`` → OpenAI ``tool_calls``; model and token usage from the
  message's last line; ``source_lines`` = every merged line. The turn sits at its first
  line's position; its id comes from the first line's ``uuid``.
* ``user`` lines: each ``tool_result`` block → its own ``role="tool"`` row linked by
  ``tool_call_id`` (tool name looked up from the tool_use; ``is_error`` → ``tool_error``
  + ``error_kind`` from :mod:`assets.traces.errors`); the text / image parts → one
  ``role="user"`` row after them. ``isCompactSummary`` → ``kind="summary"``,
  ``is_compact_summary``. ``isMeta`` user text is kept as a user message (the model
  sees it) with ``extra.is_meta``.
* ``system`` ``compact_boundary`` → ``role="meta"``, ``kind="compaction"``,
  ``is_compaction_boundary``; other system records → ``role="meta"``,
  ``kind="system_event"``, extra = raw record.
* ``summary`` records (session titles) → ``role="meta"``, ``kind="summary"``.
* every other record type (file-history-snapshot, queue-operation, progress, …, and
  types not invented yet) → ``role="meta"``, ``kind="meta"`` (known) / ``"unknown"``,
  extra = the raw (scrubbed) record. Nothing is dropped.
* ``parent_turn_id``: the turn of the record named by ``parentUuid`` (a parentUuid
  naming a line of a merged assistant message resolves to the merged turn). Rows split
  out of one record chain to each other. A parentUuid not in this file (a resumed
  session) leaves parent_turn_id null and is kept as ``extra.parent_uuid``.
* Sidechains: ``is_sidechain`` / ``agent_id`` from the record; agent files (2.0.x,
  records with ``agentId``) get ``parent_session_id = sessionId``. An inline (1.0.x)
  sidechain's first prompt is matched to the Task tool call that spawned it
  (``extra.spawned_by_tool_call_id`` / ``spawned_by_turn_id``); parent_turn_id stays
  the record's own (null) parentUuid so a sidechain's context never includes the main
  thread. A Task tool result that names its agent file gets ``extra.agent_id``.
* A line whose ``uuid`` already occurred (a record written twice) → ``role="meta"``,
  ``kind="duplicate"``; its content is not counted twice.
"""

from __future__ import annotations

from typing import Any

import orjson

from assets.traces.errors import classify_error
from assets.traces.formats._common import (
    TurnIds,
    as_int,
    dumps,
    extra_json,
    finalize,
    records,
    new_turn,
    parse_ts,
    text_of,
    tool_call,
)

FORMAT = "claude_code"
_dumps = orjson.dumps

KNOWN_META = {
    "file-history-snapshot", "queue-operation", "progress", "last-prompt", "attachment", "pr-link",
    "agent-name", "custom-title", "permission-mode", "ai-title", "tag", "mode",
}
TASK_TOOLS = {"Task", "Agent"}


def _blocks(content: Any) -> list:
    if isinstance(content, list):
        return content
    return []


def parse(raw_rows: list[dict], session_key: str) -> list[dict]:
    recs = records(raw_rows)
    ids = TurnIds(session_key)

    # ---- pre-pass: message groups, tool names, Task prompts, duplicates, session id
    groups: dict[str, list[tuple[int, dict]]] = {}
    continuation: dict[int, str] = {}  # line of a message's 2nd.. line -> its group
    tool_names: dict[str, str] = {}
    task_prompts: dict[str, str] = {}
    seen: set[str] = set()
    duplicate_lines: set[int] = set()
    file_session_id = None
    for line_no, obj, _ in recs:
        u = obj.get("uuid")
        if u.__class__ is str:
            if u in seen:
                duplicate_lines.add(line_no)
                continue
            seen.add(u)
        if file_session_id is None:
            sid = obj.get("sessionId")
            if sid.__class__ is str:
                file_session_id = sid
        if obj.get("type") != "assistant":
            continue
        msg = obj.get("message")
        if msg.__class__ is not dict:
            msg = {}
        mid = msg.get("id")
        gkey = mid if mid.__class__ is str else f"L{line_no}"
        group = groups.get(gkey)
        if group is None:
            groups[gkey] = [(line_no, obj)]
        else:
            group.append((line_no, obj))
            continuation[line_no] = gkey
        content = msg.get("content")
        if content.__class__ is not list:
            continue
        for b in content:
            if b.__class__ is dict and b.get("type") == "tool_use":
                tid = b.get("id")
                if tid.__class__ is not str:
                    continue
                name = b.get("name")
                tool_names[tid] = str(name or "")
                if name in TASK_TOOLS:
                    inp = b.get("input")
                    if inp.__class__ is dict and isinstance(inp.get("prompt"), str):
                        task_prompts.setdefault(inp["prompt"], tid)

    rows: list[dict] = []
    order: list[tuple] = []
    uuid_turn: dict[str, str] = {}  # record uuid -> turn id of the last row it produced
    pending_parent: list[tuple[dict, str | None]] = []  # (first row of a record, parentUuid)
    emitted: dict[str, str] = {}  # message group -> turn id
    tool_use_turn: dict[str, str] = {}

    def add(row: dict, key: tuple) -> dict:
        rows.append(row)
        order.append(key)
        return row

    template = new_turn(session_key, FORMAT, "", "", "")

    for line_no, obj, raw_row in recs:
        uuid = obj.get("uuid")
        if uuid.__class__ is not str:
            uuid = None
        if line_no in continuation:  # a later line of a message merged at its first line
            if uuid:
                uuid_turn[uuid] = emitted[continuation[line_no]]
            continue
        t = obj.get("type")
        base = uuid or f"L{line_no}"
        sid = obj.get("sessionId")
        if sid.__class__ is not str:
            sid = file_session_id
        agent_id = obj.get("agentId")
        if agent_id.__class__ is not str:
            agent_id = None
        common = {
            "session_id": sid,
            "is_sidechain": bool(obj.get("isSidechain")),
            "agent_id": agent_id,
            "parent_session_id": sid if agent_id else None,
            "timestamp": parse_ts(obj.get("timestamp")),
            "record_type": t if t.__class__ is str else None,
            "source_lines": [line_no],
        }
        parent_uuid = obj.get("parentUuid")
        if parent_uuid.__class__ is not str:
            parent_uuid = None

        if line_no in duplicate_lines:  # (new_turn inlined: the hot path of a re-written file)
            row = template.copy()
            row.update(common)
            row["turn_id"] = ids.make(base, line_no)
            row["role"] = "meta"
            row["kind"] = "duplicate"
            # = extra_json({"duplicate_of_uuid": uuid}) (uuid is a str here)
            row["extra"] = '{"duplicate_of_uuid":' + _dumps(uuid).decode() + "}" if uuid else None
            rows.append(row)
            order.append((line_no, 0))
            continue

        if t == "assistant":
            msg = obj.get("message")
            mid = msg.get("id") if msg.__class__ is dict else None
            gkey = mid if mid.__class__ is str else f"L{line_no}"
            row = _assistant_turn(session_key, ids, groups[gkey], common)
            emitted[gkey] = row["turn_id"]
            for ln, o in groups[gkey]:
                u = o.get("uuid")
                if u.__class__ is str:
                    uuid_turn[u] = row["turn_id"]
            for c in row["_calls"]:
                tool_use_turn[c["id"]] = row["turn_id"]
            add(row, (line_no, 0))
            pending_parent.append((row, parent_uuid))
            continue

        if t == "user":
            msg = obj.get("message") or {}
            content = msg.get("content")
            produced: list[dict] = []
            text_parts: list[str] = []
            tur = obj.get("toolUseResult")
            for k, b in enumerate(content if isinstance(content, list) else [content]):
                if isinstance(b, dict) and b.get("type") == "tool_result":
                    call_id = b.get("tool_use_id") if isinstance(b.get("tool_use_id"), str) else None
                    name = tool_names.get(call_id) if call_id else None
                    text = text_of(b.get("content"))
                    err = bool(b.get("is_error"))
                    row = new_turn(
                        session_key, FORMAT, ids.make(f"{base}/{call_id or k}", line_no), "tool", "tool_result",
                        content=text, tool_call_id=call_id, tool_name=name, tool_error=err,
                        error_kind=classify_error(text, name) if err else None, base=common,
                    )
                    ex: dict[str, Any] = {}
                    if call_id not in tool_names:
                        ex["orphan"] = True
                    if isinstance(tur, dict) and isinstance(tur.get("agentId"), str):
                        ex["agent_id"] = tur["agentId"]
                    row["_extra"] = ex
                    produced.append(add(row, (line_no, k)))
                elif isinstance(b, str):
                    text_parts.append(b)
                elif b is not None:
                    text_parts.append(text_of([b]))
            if text_parts or not produced:
                is_cs = bool(obj.get("isCompactSummary"))
                row = new_turn(
                    session_key, FORMAT, ids.make(base, line_no), "user", "summary" if is_cs else "message",
                    content="\n".join(p for p in text_parts if p), is_compact_summary=is_cs, base=common,
                )
                ex = {"is_meta": bool(obj.get("isMeta"))}
                if common["is_sidechain"] and parent_uuid is None and not agent_id:
                    spawned = task_prompts.get(row["content"])
                    if spawned:
                        ex["spawned_by_tool_call_id"] = spawned
                        ex["spawned_by_turn_id"] = tool_use_turn.get(spawned)
                row["_extra"] = ex
                produced.append(add(row, (line_no, 10_000)))
            for k in range(1, len(produced)):
                produced[k]["parent_turn_id"] = produced[k - 1]["turn_id"]
            pending_parent.append((produced[0], parent_uuid))
            if uuid:
                uuid_turn[uuid] = produced[-1]["turn_id"]
            continue

        # ---- non-message records: kept as meta rows
        if t == "system" and obj.get("subtype") == "compact_boundary":
            row = new_turn(
                session_key, FORMAT, ids.make(base, line_no), "meta", "compaction",
                content=obj.get("content") if isinstance(obj.get("content"), str) else None,
                is_compaction_boundary=True, base=common,
            )
            row["_extra"] = {"compact_metadata": obj.get("compactMetadata"),
                             "logical_parent_uuid": obj.get("logicalParentUuid")}
        elif t == "system":
            row = new_turn(
                session_key, FORMAT, ids.make(base, line_no), "meta", "system_event",
                content=obj.get("content") if isinstance(obj.get("content"), str) else None, base=common,
            )
            row["extra"] = raw_row.get("raw")
        elif t == "summary":
            row = new_turn(session_key, FORMAT, ids.make(base, line_no), "meta", "summary",
                           content=obj.get("summary") if isinstance(obj.get("summary"), str) else None, base=common)
            row["_extra"] = {"leaf_uuid": obj.get("leafUuid")}
        else:
            if common["timestamp"] is None and isinstance(obj.get("snapshot"), dict):
                common["timestamp"] = parse_ts(obj["snapshot"].get("timestamp"))
            row = new_turn(session_key, FORMAT, ids.make(base, line_no), "meta",
                           "meta" if t in KNOWN_META else "unknown", base=common)
            row["extra"] = raw_row.get("raw")
        add(row, (line_no, 0))
        if uuid:
            uuid_turn[uuid] = row["turn_id"]
            pending_parent.append((row, parent_uuid))

    # ---- resolve parents now that every uuid is known
    for row, pu in pending_parent:
        if pu is None:
            continue
        target = uuid_turn.get(pu)
        if target is not None and target != row["turn_id"]:
            row["parent_turn_id"] = target
        elif target is None:
            row.setdefault("_extra", {})["parent_uuid"] = pu

    for row in rows:
        row.pop("_calls", None)
        ex = row.pop("_extra", None)
        if ex is not None and row.get("extra") is None:  # meta rows already carry their raw record
            row["extra"] = extra_json(ex)
    return finalize(rows, order)


def _assistant_turn(session_key: str, ids: TurnIds, lines: list[tuple[int, dict]], common: dict) -> dict:
    texts: list[str] = []
    thinks: list[str] = []
    calls: list[dict] = []
    other: list[str] = []
    for _, o in lines:
        content = (o.get("message") or {}).get("content")
        if isinstance(content, str):
            texts.append(content)
            continue
        for b in _blocks(content):
            if not isinstance(b, dict):
                continue
            bt = b.get("type")
            if bt == "text":
                texts.append(b.get("text") or "")
            elif bt == "thinking":
                thinks.append(b.get("thinking") or "")
            elif bt == "redacted_thinking":
                thinks.append("[redacted thinking]")
            elif bt == "tool_use":
                calls.append(tool_call(str(b.get("id") or ""), str(b.get("name") or ""), b.get("input")))
            else:
                other.append(str(bt))
    first_line, first = lines[0]
    last = lines[-1][1]
    msg = last.get("message") or {}
    usage = msg.get("usage") if isinstance(msg.get("usage"), dict) else {}
    row = new_turn(
        session_key, FORMAT, ids.make(first.get("uuid") if isinstance(first.get("uuid"), str) else f"L{first_line}",
                                      first_line),
        "assistant", "message",
        content="\n\n".join(t for t in texts if t) or None,
        thinking="\n\n".join(t for t in thinks if t) or None,
        tool_calls=dumps(calls) if calls else None,
        model=msg.get("model") or (first.get("message") or {}).get("model"),
        message_id=msg.get("id"),
        input_tokens=as_int(usage.get("input_tokens")),
        output_tokens=as_int(usage.get("output_tokens")),
        cache_read_tokens=as_int(usage.get("cache_read_input_tokens")),
        cache_creation_tokens=as_int(usage.get("cache_creation_input_tokens")),
        base=common, source_lines=[ln for ln, _ in lines],
    )
    row["_calls"] = calls
    row["_extra"] = {
        "stop_reason": msg.get("stop_reason"),
        "request_id": last.get("requestId"),
        "api_error": bool(last.get("isApiErrorMessage")),
        "other_blocks": other,
    }
    return row
