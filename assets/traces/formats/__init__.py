"""Transcript formats → TRACE_TURNS rows.

Each module has ``parse(raw_rows, session_key) -> list[dict]`` over RAW_TRACES rows (as
written by :func:`assets.traces.raw.read_raw_lines`, or read back from Delta with
``to_pylist()``), returning rows with exactly the TRACE_TURNS columns.
:func:`parse_turns` dispatches on the rows' ``source_format``.
"""

from __future__ import annotations

from typing import Callable

from assets.traces.formats import (
    atif, claude_code, codex, gemini_cli, llm_apps, openai_messages, preference, sharegpt, trajectories,
)
from assets.traces.util import without_gc
from assets.traces.raw import JSON_FRAGMENT
from assets.traces.formats._common import (
    TURN_COLUMNS,
    dumps,
    load_document,
    unknown_row,
    TurnIds,
    finalize,
    iter_records,
    link_linear,
    new_turn,
    parse_ts,
)

__all__ = ["parse_turns", "PARSERS", "TURN_COLUMNS", "register_format"]


def _parse_unknown(raw_rows: list[dict], session_key: str) -> list[dict]:
    """A format we cannot read: keep every parseable record as a meta row."""
    ids = TurnIds(session_key)
    rows, order = [], []
    if any(r.get("record_type") == JSON_FRAGMENT for r in raw_rows):
        loaded = load_document(raw_rows)
        if loaded is not None:
            doc, line = loaded
            shape = f"keys {sorted(doc)[:12]}" if isinstance(doc, dict) else f"a list of {len(doc)} objects"
            return [unknown_row(session_key, "unknown", ids, line,
                                f"no parser claims this JSON document ({shape})", None,
                                session_id=session_key, record_type=JSON_FRAGMENT,
                                ) | {"extra": dumps({"reason": f"no parser claims this JSON document ({shape})",
                                                     "document": doc})}]
    for line_no, obj, raw_row in iter_records(raw_rows):
        rows.append(new_turn(session_key, "unknown", ids.make(f"L{line_no}", line_no), "meta", "unknown",
                             session_id=session_key, record_type=raw_row.get("record_type"),
                             timestamp=parse_ts(obj.get("timestamp")), source_lines=[line_no],
                             extra=raw_row.get("raw")))
        order.append((line_no, obj.get("__index__") or 0))
    out = finalize(rows, order)
    link_linear(out)
    return out


PARSERS: dict[str, Callable[[list[dict], str], list[dict]]] = {
    "claude_code": claude_code.parse,
    "codex": codex.parse,
    "openai_messages": openai_messages.parse,
    "sharegpt": sharegpt.parse,
    "gemini_cli": gemini_cli.parse,
    "swe_agent": trajectories.parse_swe_agent,
    "mini_swe_agent": trajectories.parse_mini_swe_agent,
    "openhands": trajectories.parse_openhands,
    "langfuse": llm_apps.parse_langfuse,
    "otel_genai": llm_apps.parse_otel,
    "atif": atif.parse,
    "preference": preference.parse,
    "unknown": _parse_unknown,
}


def register_format(name: str, parse: Callable[[list[dict], str], list[dict]]) -> None:
    """Add (or replace) the parser of a source_format."""
    PARSERS[name] = parse


@without_gc
def parse_turns(raw_rows: list[dict], session_key: str | None = None) -> list[dict]:
    """TRACE_TURNS rows of one session file's RAW_TRACES rows."""
    if not raw_rows:
        return []
    if session_key is None:
        session_key = raw_rows[0]["session_key"]
    fmt = next((r.get("source_format") for r in raw_rows if r.get("source_format")), None) or "unknown"
    return PARSERS.get(fmt, _parse_unknown)(raw_rows, session_key)
