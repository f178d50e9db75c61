"""The whole trace path as pure functions: file → raw rows → turn rows → step rows.

Each stage is a function of the previous stage's rows only, so the Dagster assets can
run them separately (raw_traces reads the file; trace_turns parses raw rows read back
from Delta; agent_steps reads turns)::

    raw, raw_stats = read_raw_lines(path, key)      # assets.traces.raw
    turns = raw_to_turns(raw, key)                   # = formats.parse_turns
    steps = turns_to_steps(turns)                    # = steps.build_agent_steps

or all at once with :func:`ingest_file`. Rows read back from Delta
(``pyarrow.Table.to_pylist()``: datetimes, lists, in any order) are accepted by every
stage.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from assets.traces.formats import parse_turns
from assets.traces.raw import read_raw_lines
from assets.traces.steps import build_agent_steps

__all__ = ["ingest_file", "raw_to_turns", "turns_to_steps", "turn_stats", "step_stats", "SAMPLES_DIR",
           "sample_files"]

SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


def raw_to_turns(raw_rows: list[dict], session_key: str | None = None) -> list[dict]:
    return parse_turns(raw_rows, session_key)


def turns_to_steps(turn_rows: list[dict]) -> list[dict]:
    return build_agent_steps(turn_rows)


def turn_stats(turns: list[dict]) -> dict[str, Any]:
    return {
        "turns": len(turns),
        "by_role": dict(Counter(t["role"] for t in turns)),
        "by_kind": dict(Counter(t["kind"] for t in turns)),
        "tool_errors": sum(1 for t in turns if t.get("tool_error")),
        "tool_errors_by_kind": dict(Counter(t["error_kind"] for t in turns if t.get("tool_error"))),
        "sidechain_turns": sum(1 for t in turns if t.get("is_sidechain")),
        "compactions": sum(1 for t in turns if t.get("is_compaction_boundary")),
    }


def step_stats(steps: list[dict]) -> dict[str, Any]:
    return {
        "steps": len(steps),
        "error_sites": sum(1 for s in steps if s["is_error_site"]),
        "caused_errors": sum(1 for s in steps if s["caused_error"]),
        "sidechain_steps": sum(1 for s in steps if s.get("is_sidechain")),
    }


def ingest_file(
    path: str | Path,
    session_key: str,
    *,
    max_line_bytes: int = 8 * 1024 * 1024,
    now: datetime | None = None,
) -> tuple[list[dict], list[dict], list[dict], dict[str, Any]]:
    """``(raw_rows, turn_rows, step_rows, stats)`` of one session file."""
    raw, stats = read_raw_lines(path, session_key, max_line_bytes=max_line_bytes, now=now)
    turns = raw_to_turns(raw, session_key)
    steps = turns_to_steps(turns)
    return raw, turns, steps, {**stats, **turn_stats(turns), **step_stats(steps)}


def sample_files() -> list[Path]:
    """The bundled sample sessions (relative layout as a session root: claude-code/, codex/, ...)."""
    return sorted(p for p in SAMPLES_DIR.rglob("*") if p.suffix in (".jsonl", ".json", ".traj") and p.is_file())
