"""Helpers shared by the format parsers (plain data in, TRACE_TURNS row dicts out)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import Any, Iterator

import orjson

from assets.traces.raw import JSON_ARRAY, JSON_FRAGMENT, document_of

TURN_COLUMNS = (
    "session_key", "session_id", "source_format", "turn_id", "turn_index", "parent_turn_id", "role", "kind",
    "content", "thinking", "tool_calls", "tool_call_id", "tool_name", "tool_error", "error_kind",
    "is_sidechain", "agent_id", "parent_session_id", "is_compact_summary", "is_compaction_boundary",
    "record_type", "model", "message_id", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_creation_tokens", "timestamp", "source_lines", "extra",
)

IMAGE_PLACEHOLDER = "[image]"

# A document (trajectory, ATIF, Gemini session) with more assistant steps than this is not
# expanded into turns: it stays one meta/unknown row saying so (its bytes are in bronze).
# Every step's context holds the steps before it, so agent_steps grows with the square.
MAX_DOCUMENT_STEPS = 10_000


_TEMPLATE = dict.fromkeys(TURN_COLUMNS)
_TEMPLATE.update(turn_index=0, is_sidechain=False, is_compact_summary=False, is_compaction_boundary=False)


def new_turn(session_key: str, source_format: str, turn_id: str, role: str, kind: str, base: dict | None = None,
             **kw: Any) -> dict:
    """A TRACE_TURNS row: defaults, then ``base`` (shared fields of a record), then ``kw``."""
    row = _TEMPLATE.copy()
    if base:
        row.update(base)
    row["session_key"] = session_key
    row["source_format"] = source_format
    row["turn_id"] = turn_id
    row["role"] = role
    row["kind"] = kind
    row.update(kw)
    return row


_dumps = orjson.dumps
_NON_STR_KEYS = orjson.OPT_NON_STR_KEYS


def dumps(obj: Any) -> str:
    return _dumps(obj, option=_NON_STR_KEYS).decode()


def extra_json(d: dict | None) -> str | None:
    """JSON of the set fields of ``d`` (None, False and empty values left out), or None."""
    if not d:
        return None
    d = {k: v for k, v in d.items() if v or v.__class__ in (int, float)}  # keeps 0, drops False
    return _dumps(d, option=_NON_STR_KEYS).decode() if d else None


_ZERO = timedelta(0)
_UTC = timezone.utc
_fromisoformat = datetime.fromisoformat


def parse_ts(value: Any) -> datetime | None:
    """ISO-8601 (``...Z``) or epoch seconds/ms → aware UTC datetime; None if unusable."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            d = _fromisoformat(value)
        except ValueError:
            return None
        if d.tzinfo is _UTC:  # the usual "...Z"
            return d
        off = d.utcoffset()
        if off is None:
            return d.replace(tzinfo=timezone.utc)
        return d if off == _ZERO and d.tzinfo is timezone.utc else d.astimezone(timezone.utc)
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        v = float(value)
        if v > 1e11:  # milliseconds
            v /= 1000.0
        try:
            return datetime.fromtimestamp(v, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def as_int(v: Any) -> int | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        return int(v)
    return None


def arguments_json(args: Any) -> str:
    """OpenAI ``function.arguments``: always a JSON *string*."""
    if isinstance(args, str):
        try:
            orjson.loads(args)
            return args
        except orjson.JSONDecodeError:
            return dumps({"input": args})
    if args is None:
        return "{}"
    return dumps(args)


def tool_call(call_id: str, name: str, args: Any) -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments_json(args)}}


def text_of(content: Any, *, join: str = "\n") -> str:
    """Visible text of a message content: a string, or a list of typed parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return str(content)
    out = []
    for part in content:
        if isinstance(part, str):
            out.append(part)
            continue
        if not isinstance(part, dict):
            continue
        t = part.get("type")
        if t in ("text", "input_text", "output_text", "summary_text", "reasoning_text"):
            out.append(part.get("text") or "")
        elif t in ("image", "image_url", "input_image"):
            out.append(IMAGE_PLACEHOLDER)
        elif t in ("document", "file", "input_file"):
            out.append("[document]")
        elif "text" in part and isinstance(part["text"], str):
            out.append(part["text"])
        elif "content" in part:
            out.append(text_of(part["content"], join=join))
    return join.join(out)


_LINE_NO = itemgetter("line_no")


def iter_records(raw_rows: list[dict]) -> Iterator[tuple[int, dict, dict]]:
    """(line_no, parsed object, raw row) of every parseable row, in line order.

    Quarantined rows are skipped; a ``json_array`` line yields each element (line_no of
    the line); ``json_fragment`` rows are rebuilt into one document first. Lazy: a parser
    that consumes each record as it comes keeps the decoded objects hot in the CPU cache.
    """
    rows = sorted(raw_rows, key=_LINE_NO)
    frags = [r for r in rows if r.get("record_type") == JSON_FRAGMENT]
    if frags:
        doc = document_of(frags)
        items = doc if isinstance(doc, list) else [doc]
        for idx, item in enumerate(items):
            if isinstance(item, dict):
                yield frags[0]["line_no"], {"__index__": idx, **item}, frags[0]
        rows = [r for r in rows if r.get("record_type") != JSON_FRAGMENT]
    loads = orjson.loads
    JSONDecodeError = orjson.JSONDecodeError
    for r in rows:
        if r.get("quarantined"):
            continue
        raw = r.get("raw")
        if not raw:
            continue
        try:
            obj = loads(raw)
        except JSONDecodeError:
            continue
        if obj.__class__ is dict or isinstance(obj, dict):
            yield r["line_no"], obj, r
        elif isinstance(obj, list) and r.get("record_type") == JSON_ARRAY:
            line_no = r["line_no"]
            for idx, item in enumerate(obj):
                if isinstance(item, dict):
                    yield line_no, {"__index__": idx, **item}, r


class TurnIds:
    """Hands out turn ids unique within a file (a duplicate gets a line suffix)."""

    def __init__(self, session_key: str):
        self.prefix = session_key + ":"
        self.used: set[str] = set()

    def make(self, local: str, line_no: int | None = None) -> str:
        tid = self.prefix + local
        used = self.used
        if tid in used:
            base = tid + (f"~L{line_no}" if line_no is not None else "~dup")
            tid, k = base, 1
            while tid in used:
                k += 1
                tid = f"{base}.{k}"
        used.add(tid)
        return tid


def finalize(rows: list[dict], order: list[tuple]) -> list[dict]:
    """Sort rows by their order keys and number them (turn_index = position in file)."""
    idx = sorted(range(len(rows)), key=order.__getitem__)
    out = [rows[i] for i in idx]
    for n, r in enumerate(out):
        r["turn_index"] = n
    return out


def link_linear(rows: list[dict], conv_key: str = "session_id") -> None:
    """parent_turn_id = the previous row of the same conversation (for linear formats)."""
    last: dict[Any, str] = {}
    for r in rows:
        k = r.get(conv_key)
        if r.get("parent_turn_id") is None and k in last:
            r["parent_turn_id"] = last[k]
        last[k] = r["turn_id"]


def looks_like_error(text: str) -> bool:
    """Heuristic failure signal for formats without an error flag (OpenAI / ShareGPT)."""
    head = text.lstrip()[:200]
    low = head.lower()
    if low.startswith(("error", "traceback (most recent call last)", "exception", "fatal:", "failed")):
        return True
    if low.startswith("{") and ('"error"' in low[:60] or "'error'" in low[:60]):
        return True
    return head.startswith("Exit code") and not head.startswith("Exit code 0") and not head.startswith("Exit code: 0")


def load_document(raw_rows: list[dict]) -> tuple[Any, int] | None:
    """``(document, first line_no)`` of a file stored as one JSON document (``json_fragment``
    rows, or a single JSON line), else None."""
    rows = sorted(raw_rows, key=_LINE_NO)
    frags = [r for r in rows if r.get("record_type") == JSON_FRAGMENT]
    if frags:
        try:
            return document_of(frags), frags[0]["line_no"]
        except orjson.JSONDecodeError:
            return None
    good = [r for r in rows if not r.get("quarantined") and r.get("raw")]
    if len(good) == 1:
        try:
            return orjson.loads(good[0]["raw"]), good[0]["line_no"]
        except orjson.JSONDecodeError:
            return None
    return None


def unknown_row(session_key: str, fmt: str, ids: "TurnIds", line_no: int, reason: str, obj: Any = None,
                **kw: Any) -> dict:
    """A ``role="meta"``, ``kind="unknown"`` row that says why a record was not read."""
    extra = {"reason": reason}
    if obj is not None:
        extra["record"] = obj
    return new_turn(session_key, fmt, ids.make(f"L{line_no}:unknown", line_no), "meta", "unknown",
                    source_lines=[line_no], extra=dumps(extra), **kw)


def too_many_steps(session_key: str, fmt: str, ids: "TurnIds", line: int, n: int, sid: str) -> list[dict] | None:
    """The single row of a document over :data:`MAX_DOCUMENT_STEPS` steps, else None."""
    import assets.traces.formats._common as _self  # read the limit at call time (users may change it)

    if n <= _self.MAX_DOCUMENT_STEPS:
        return None
    return [unknown_row(session_key, fmt, ids, line,
                        f"too_many_steps: {n} assistant steps > MAX_DOCUMENT_STEPS={_self.MAX_DOCUMENT_STEPS}; "
                        "not expanded (the file is kept in raw_traces)", session_id=sid)]


def clip_text(v: Any) -> str:
    """A value as text: strings as they are, anything else as JSON."""
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    return dumps(v)
