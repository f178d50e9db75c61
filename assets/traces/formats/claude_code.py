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

from datetime import datetime, timezone
from typing import Any

import orjson

from assets.traces.errors import classify_error
from assets.traces.formats import _common as shared

FORMAT = "claude_code"
_dumps = orjson.dumps

KNOWN_META = {
    "file-history-snapshot", "queue-operation", "progress", "last-prompt", "attachment", "pr-link",
    "agent-name", "custom-title", "permission-mode", "ai-title", "tag", "mode",
}
TASK_TOOLS = {"Task", "Agent"}



_UTC = timezone.utc
_fromisoformat = datetime.fromisoformat
_OPT = orjson.OPT_NON_STR_KEYS
_NUM = (int, float)  # extra_json keeps 0 / 0.0 (and drops False, None, empty values)


def parse(raw_rows: list[dict], session_key: str) -> list[dict]:
    """One streaming pass: each record is decoded, turned into rows and released while it
    is still in the CPU cache (holding every parsed record for a second pass costs more
    than the parsing itself). What needs the whole file -- tool names, Task prompts, the
    session id of records before the first one naming it, parents -- is resolved at the end
    (:meth:`_FileParse.finish`). Each record type has its own method of :class:`_FileParse`.
    """
    p = _FileParse(session_key)
    groups = p.groups
    uuid_turn = p.uuid_turn
    no_sid = p.no_sid
    tool_names, task_prompts = p.tool_names, p.task_prompts
    duplicate, assistant, user, other = p.duplicate, p.assistant, p.user, p.other
    file_session_id = None
    seen: set[str] = set()
    seen_add = seen.add
    # Every row starts as a copy of this (the TURN_COLUMNS, in order, with their defaults).
    copy = shared.new_turn(session_key, FORMAT, "", "", "").copy

    for line_no, obj, raw_row in shared.iter_records(raw_rows):
        get = obj.get
        uuid = get("uuid")
        if uuid.__class__ is not str:
            uuid = None
            dup = False
        elif uuid in seen:
            dup = True
        else:
            dup = False
            seen_add(uuid)
        t = get("type")
        if t == "assistant" and not dup:
            msg = get("message")
            mid = msg.get("id") if msg.__class__ is dict else None
            gkey = mid if mid.__class__ is str else f"L{line_no}"
            st = groups.get(gkey)
            if st is not None:  # a later line of a message: merged into its first line's turn
                if file_session_id is None:
                    sid = get("sessionId")
                    if sid.__class__ is str:
                        file_session_id = sid
                if uuid is not None:
                    uuid_turn[uuid] = st[0]["turn_id"]
                st[6].append(line_no)
                _assistant_more(obj, st, tool_names, task_prompts)
                continue

        # ---- the fields every row of a record shares
        sid = get("sessionId")
        if sid.__class__ is not str:
            sid = file_session_id
        elif file_session_id is None and not dup:
            file_session_id = sid
        agent_id = get("agentId")
        if agent_id.__class__ is not str:
            agent_id = None
        v = get("timestamp")
        if v.__class__ is str:  # (parse_ts with the usual "...Z" inlined)
            try:
                ts = _fromisoformat(v)
            except ValueError:
                ts = None
            else:
                if ts.tzinfo is not _UTC:
                    ts = shared.parse_ts(v)
        else:
            ts = None if v is None else shared.parse_ts(v)
        parent_uuid = get("parentUuid")
        if parent_uuid.__class__ is not str:
            parent_uuid = None
        row = copy()
        row["session_id"] = sid
        row["is_sidechain"] = bool(get("isSidechain"))
        row["agent_id"] = agent_id
        row["parent_session_id"] = sid if agent_id else None
        row["record_type"] = t if t.__class__ is str else None
        row["timestamp"] = ts
        row["source_lines"] = [line_no]
        if sid is None:
            no_sid.append((row, agent_id))

        if dup:
            duplicate(row, uuid, line_no)
        elif t == "assistant":  # the first line of a message
            assistant(obj, row, gkey, uuid, parent_uuid, line_no)
        elif t == "user":
            user(obj, row, uuid, parent_uuid, line_no)
        else:
            other(obj, row, raw_row, t, uuid, parent_uuid, line_no)
    return p.finish(file_session_id)


class _FileParse:
    """The state of one file's pass: the rows so far and what the end of the file resolves."""

    __slots__ = ("make", "tool_names", "task_prompts", "no_sid",
                 "groups", "tool_rows", "spawn_rows", "rows", "order", "uuid_turn", "pending_parent",
                 "extras")

    def __init__(self, session_key: str) -> None:
        self.make = shared.TurnIds(session_key).make  # the file's unique turn ids
        self.tool_names: dict[str, str] = {}
        self.task_prompts: dict[str, str] = {}
        self.no_sid: list[tuple[dict, Any]] = []  # rows of records before the file's session id is known
        # message group -> [row, extra, texts, thinks, calls, other, source_lines, first line's model]
        self.groups: dict[str, list] = {}
        self.tool_rows: list[tuple[dict, dict, Any, Any]] = []  # (row, extra, call_id, toolUseResult.agentId)
        self.spawn_rows: list[tuple[dict, dict, int]] = []  # inline sidechain first prompts
        self.rows: list[dict] = []
        self.order: list[tuple] = []
        self.uuid_turn: dict[str, str] = {}  # record uuid -> turn id of the last row it produced
        # (first row of a record, parentUuid, the row's extra fields or None)
        self.pending_parent: list[tuple[dict, str | None, dict | None]] = []
        self.extras: list[tuple[dict, dict]] = []  # (row, its extra fields): row["extra"] = their JSON

    # ---------------------------------------------------------------- record types

    def duplicate(self, row: dict, uuid: str, line_no: int) -> None:
        """A record written twice: a meta row pointing at the first; its content is not counted."""
        row["turn_id"] = self.make(uuid or f"L{line_no}", line_no)
        row["role"] = "meta"
        row["kind"] = "duplicate"
        # = extra_json({"duplicate_of_uuid": uuid}) (uuid is a str here)
        row["extra"] = '{"duplicate_of_uuid":' + _dumps(uuid).decode() + "}" if uuid else None
        self.rows.append(row)
        self.order.append((line_no, 0))

    def assistant(self, obj: dict, row: dict, gkey: str, uuid: str | None, parent_uuid: str | None,
                  line_no: int) -> None:
        """The first line of an assistant message: its turn (later lines merge into it)."""
        get = obj.get
        # (an empty-string uuid is kept as the turn's local id here)
        local = uuid if uuid is not None else f"L{line_no}"
        row["turn_id"] = tid = self.make(local, line_no)
        row["role"] = "assistant"
        row["kind"] = "message"
        m = get("message") or {}
        texts: list = []
        thinks: list = []
        calls: list = []
        other: list = []
        content = m.get("content")
        if content.__class__ is str:
            texts.append(content)
        elif isinstance(content, list):
            _blocks(m, content, texts, thinks, calls, other, self.tool_names, self.task_prompts)
        elif isinstance(content, str):
            texts.append(content)
        if texts:
            if len(texts) == 1 and texts[0].__class__ is str:
                row["content"] = texts[0] or None
            else:
                row["content"] = "\n\n".join([x for x in texts if x]) or None
        if thinks:
            row["thinking"] = "\n\n".join([x for x in thinks if x]) or None
        if calls:
            row["tool_calls"] = shared.dumps(calls)
        model = m.get("model")
        row["model"] = model
        row["message_id"] = m.get("id")
        usage = m.get("usage")
        if usage.__class__ is dict or isinstance(usage, dict):
            v = usage.get("input_tokens")
            row["input_tokens"] = v if v.__class__ is int else shared.as_int(v)
            v = usage.get("output_tokens")
            row["output_tokens"] = v if v.__class__ is int else shared.as_int(v)
            v = usage.get("cache_read_input_tokens")
            row["cache_read_tokens"] = v if v.__class__ is int else shared.as_int(v)
            v = usage.get("cache_creation_input_tokens")
            row["cache_creation_tokens"] = v if v.__class__ is int else shared.as_int(v)
        ex: dict = {}
        v = m.get("stop_reason")
        if v or v.__class__ in _NUM:
            ex["stop_reason"] = v
        v = get("requestId")
        if v or v.__class__ in _NUM:
            ex["request_id"] = v
        if get("isApiErrorMessage"):
            ex["api_error"] = True
        if other:
            ex["other_blocks"] = other
        self.groups[gkey] = [row, ex, texts, thinks, calls, other, row["source_lines"], model]
        if uuid is not None:
            self.uuid_turn[uuid] = tid
        self.extras.append((row, ex))
        self.rows.append(row)
        self.order.append((line_no, 0))
        self.pending_parent.append((row, parent_uuid, ex))

    def user(self, obj: dict, row: dict, uuid: str | None, parent_uuid: str | None, line_no: int) -> None:
        """Each tool_result block → a tool row; the text / image parts → one user row after them."""
        get = obj.get
        base = uuid or f"L{line_no}"
        sid, agent_id = row["session_id"], row["agent_id"]
        rows_append, order_append, extras_append = self.rows.append, self.order.append, self.extras.append
        msg = get("message") or {}
        content = msg.get("content")
        first = last_row = first_ex = None
        text_parts: list[str] = []
        tur = get("toolUseResult")
        for k, b in enumerate(content if isinstance(content, list) else [content]):
            if b.__class__ is str:
                text_parts.append(b)
            elif isinstance(b, dict) and b.get("type") == "tool_result":
                call_id = b.get("tool_use_id")
                if not isinstance(call_id, str):
                    call_id = None
                text = b.get("content")
                if text.__class__ is not str:
                    text = shared.text_of(text)
                local = f"{base}/{call_id or k}"
                trow = row.copy()
                trow["turn_id"] = self.make(local, line_no)
                trow["role"] = "tool"
                trow["kind"] = "tool_result"
                trow["content"] = text
                trow["tool_call_id"] = call_id
                trow["tool_error"] = bool(b.get("is_error"))
                trow["source_lines"] = [line_no]
                if sid is None:
                    self.no_sid.append((trow, agent_id))
                ex = {}
                a = tur.get("agentId") if isinstance(tur, dict) else None
                self.tool_rows.append((trow, ex, call_id, a))  # tool_name, error_kind: at the end
                extras_append((trow, ex))
                rows_append(trow)
                order_append((line_no, k))
                if first is None:
                    first = trow
                    first_ex = ex
                else:
                    trow["parent_turn_id"] = last_row["turn_id"]
                last_row = trow
            elif isinstance(b, str):
                text_parts.append(b)
            elif b is not None:
                text_parts.append(shared.text_of([b]))
        if text_parts or first is None:
            is_cs = bool(get("isCompactSummary"))
            row["turn_id"] = self.make(base, line_no)
            row["role"] = "user"
            row["kind"] = "summary" if is_cs else "message"
            if len(text_parts) == 1:
                text = text_parts[0]
            else:
                text = "\n".join([p for p in text_parts if p])
            row["content"] = text
            row["is_compact_summary"] = is_cs
            ex = {"is_meta": True} if get("isMeta") else {}
            if row["is_sidechain"] and parent_uuid is None and not agent_id:
                self.spawn_rows.append((row, ex, line_no))
            extras_append((row, ex))
            rows_append(row)
            order_append((line_no, 10_000))
            if first is None:
                first = row
                first_ex = ex
            else:
                row["parent_turn_id"] = last_row["turn_id"]
            last_row = row
        self.pending_parent.append((first, parent_uuid, first_ex))
        if uuid:
            self.uuid_turn[uuid] = last_row["turn_id"]

    def other(self, obj: dict, row: dict, raw_row: dict, t: Any, uuid: str | None, parent_uuid: str | None,
              line_no: int) -> None:
        """Every non-message record, kept as a meta row (system, summary, snapshots, unknown types)."""
        get = obj.get
        base = uuid or f"L{line_no}"
        row["role"] = "meta"
        ex = None
        if t == "system" and get("subtype") == "compact_boundary":
            row["turn_id"] = self.make(base, line_no)
            row["kind"] = "compaction"
            c = get("content")
            row["content"] = c if isinstance(c, str) else None
            row["is_compaction_boundary"] = True
            ex = {}
            v = get("compactMetadata")
            if v or v.__class__ in _NUM:
                ex["compact_metadata"] = v
            v = get("logicalParentUuid")
            if v or v.__class__ in _NUM:
                ex["logical_parent_uuid"] = v
            self.extras.append((row, ex))
        elif t == "system":
            row["turn_id"] = self.make(base, line_no)
            row["kind"] = "system_event"
            c = get("content")
            row["content"] = c if isinstance(c, str) else None
            row["extra"] = raw_row.get("raw")
        elif t == "summary":
            row["turn_id"] = self.make(base, line_no)
            row["kind"] = "summary"
            c = get("summary")
            row["content"] = c if isinstance(c, str) else None
            ex = {}
            v = get("leafUuid")
            if v or v.__class__ in _NUM:
                ex["leaf_uuid"] = v
            self.extras.append((row, ex))
        else:
            if row["timestamp"] is None and isinstance(get("snapshot"), dict):
                row["timestamp"] = shared.parse_ts(obj["snapshot"].get("timestamp"))
            row["turn_id"] = self.make(base, line_no)
            row["kind"] = "meta" if t in KNOWN_META else "unknown"
            row["extra"] = raw_row.get("raw")
        self.rows.append(row)
        self.order.append((line_no, 0))
        if uuid:
            self.uuid_turn[uuid] = row["turn_id"]
            self.pending_parent.append((row, parent_uuid, ex))

    # ---------------------------------------------------------------- the end of the file

    def finish(self, file_session_id: str | None) -> list[dict]:
        """Resolve what needs the whole file, then order and number the rows."""
        if self.no_sid and file_session_id is not None:
            for row, agent_id in self.no_sid:
                row["session_id"] = file_session_id
                if agent_id:
                    row["parent_session_id"] = file_session_id
        tool_names = self.tool_names
        for row, ex, call_id, agent in self.tool_rows:
            name = tool_names.get(call_id) if call_id else None
            row["tool_name"] = name
            if row["tool_error"]:
                row["error_kind"] = classify_error(row["content"], name)
            if call_id not in tool_names:
                ex["orphan"] = True
            if isinstance(agent, str) and agent:
                ex["agent_id"] = agent
        if self.spawn_rows:
            self._link_spawned_sidechains()
        self._link_parents()
        for row, ex in self.extras:
            if ex and row["extra"] is None:  # meta rows already carry their raw record
                row["extra"] = _dumps(ex, option=_OPT).decode()
        return shared.finalize(self.rows, self.order)

    def _link_spawned_sidechains(self) -> None:
        """An inline sidechain's first prompt → the Task tool call (and its turn) that spawned it."""
        tool_use_turn: dict[str, list[tuple[int, str]]] = {}  # tool_use id -> [(message's first line, turn)]
        for st in self.groups.values():
            first_line, tid = st[6][0], st[0]["turn_id"]
            for c in st[4]:
                tool_use_turn.setdefault(c["id"], []).append((first_line, tid))
        for row, ex, line_no in self.spawn_rows:
            spawned = self.task_prompts.get(row["content"])
            if spawned:
                ex["spawned_by_tool_call_id"] = spawned
                # the turn of the message holding that call, as known when this line is reached
                best = None
                for first_line, tid in tool_use_turn.get(spawned, ()):
                    if first_line < line_no and (best is None or first_line >= best[0]):
                        best = (first_line, tid)
                if best is not None and best[1]:
                    ex["spawned_by_turn_id"] = best[1]

    def _link_parents(self) -> None:
        """parent_turn_id of each record's first row, now that every uuid is known."""
        uuid_turn = self.uuid_turn
        for row, pu, ex in self.pending_parent:
            if pu is None:
                continue
            target = uuid_turn.get(pu)
            if target is not None:
                if target != row["turn_id"]:
                    row["parent_turn_id"] = target
            elif pu:  # (extra_json drops an empty string)
                if ex is None:
                    ex = {}
                    self.extras.append((row, ex))
                ex["parent_uuid"] = pu


def _task_prompt(b: dict, cid: str, task_prompts: dict) -> None:
    inp = b.get("input")
    if inp.__class__ is dict and isinstance(inp.get("prompt"), str):
        task_prompts.setdefault(inp["prompt"], cid)


def _blocks(m: Any, content: list, texts: list, thinks: list, calls: list, other: list, tool_names: dict,
            task_prompts: dict) -> None:
    """An assistant line's content blocks sorted into texts, thinking, tool calls and other
    block types; each tool call's name and Task prompt noted (as a pre-pass over every line would)."""
    names = m.__class__ is dict and content.__class__ is list
    for b in content:
        if b.__class__ is not dict and not isinstance(b, dict):
            continue
        bt = b.get("type")
        if bt == "text":
            texts.append(b.get("text") or "")
        elif bt == "tool_use":
            cid = b.get("id")
            name = b.get("name")
            if names and cid.__class__ is str and b.__class__ is dict:
                tool_names[cid] = str(name or "")
                if name in TASK_TOOLS:
                    _task_prompt(b, cid, task_prompts)
            calls.append(shared.tool_call(str(cid or ""), str(name or ""), b.get("input")))
        elif bt == "thinking":
            thinks.append(b.get("thinking") or "")
        elif bt == "redacted_thinking":
            thinks.append("[redacted thinking]")
        else:
            other.append(str(bt))


def _assistant_more(o: dict, st: list, tool_names: dict, task_prompts: dict) -> None:
    """Merge a later line of an assistant message into its turn ``st`` (see :func:`parse`):
    the turn's fields are recomputed from all its blocks so far and this (last) line."""
    row, ex, texts, thinks, calls, other = st[0], st[1], st[2], st[3], st[4], st[5]
    m = o.get("message")
    content = (m or {}).get("content")
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        _blocks(m, content, texts, thinks, calls, other, tool_names, task_prompts)
    if texts:
        row["content"] = "\n\n".join([x for x in texts if x]) or None
    if thinks:
        row["thinking"] = "\n\n".join([x for x in thinks if x]) or None
    if calls:
        row["tool_calls"] = shared.dumps(calls)
    msg = m or {}
    usage = msg.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    row["model"] = msg.get("model") or st[7]
    row["message_id"] = msg.get("id")
    row["input_tokens"] = shared.as_int(usage.get("input_tokens"))
    row["output_tokens"] = shared.as_int(usage.get("output_tokens"))
    row["cache_read_tokens"] = shared.as_int(usage.get("cache_read_input_tokens"))
    row["cache_creation_tokens"] = shared.as_int(usage.get("cache_creation_input_tokens"))
    ex.clear()
    v = msg.get("stop_reason")
    if v or v.__class__ in _NUM:
        ex["stop_reason"] = v
    v = o.get("requestId")
    if v or v.__class__ in _NUM:
        ex["request_id"] = v
    if o.get("isApiErrorMessage"):
        ex["api_error"] = True
    if other:
        ex["other_blocks"] = other
