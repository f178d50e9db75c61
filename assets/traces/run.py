"""The trace stages of one run, Dagster-free: session files → raw_traces, raw_traces →
trace_turns, trace_turns → agent_steps.

Each stage works through the run's sessions in groups of bounded size (one
``replace_sessions`` per group, so memory stays flat on a big backfill) and returns a
report that renders its own metadata; the assets in ``assets.py`` read the run's scope,
call these, write what is left (the registry) and report ``write.metadata() | report``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Optional

import dagster as dg

from assets.metadata import SessionSums, md_counts, md_table
from assets.traces.partitions import RunSessions, sessions_from_registry
from assets.traces.registry import read_change
from assets.traces.tables import RAW_TRACES, SESSION_FILES
from resources.lake import DeltaLake, WriteResult, string_field

READ_CHUNK_BYTES = 64 * 1024 * 1024  # files read (and written to bronze) per group


# ------------------------------------------------------------------ session files → raw_traces

def registry_rows(lake: DeltaLake, keys: list[str]) -> dict[str, dict]:
    """The registry rows of ``keys`` (what the last read of each file recorded)."""
    if not keys:
        return {}
    t = lake.read(SESSION_FILES, filter=string_field("session_key").isin(keys))
    return {r["session_key"]: r for r in t.to_pylist()}


def backfill_changes(lake: DeltaLake, root, days: list[str], warn: Callable[[str], None], names=None
                     ) -> tuple[list[tuple[str, str, str]], dict]:
    """The files of a backfill over ``days``: those the registry holds for them (read again),
    plus what the directory holds that the registry does not know yet or that changed since
    (new files of those days, deleted ones): a day launched from the UI on a fresh instance
    reads its files too."""
    from assets.traces.scan import reconcile

    reg = {r["session_key"]: r for r in lake.read(SESSION_FILES).to_pylist()}
    wanted = set(days)
    changes = {k: (k, r["path"], "backfill") for k, r in reg.items()
               if r["day"] in wanted and r["status"] != "deleted"}
    found, problems = reconcile(root, reg, names)
    for c in found:
        if c.day in wanted or (c.prev_day or "") in wanted:
            changes[c.key] = (c.key, c.path, c.change)
    for path, what in problems:
        warn(f"session file {path}: {what}")
    return [changes[k] for k in sorted(changes)], reg


@dataclass
class ReadReport:
    """What reading a run's session files did. ``registry`` holds the rows for
    ``session_files`` (the asset merges them); the raw lines are already written."""

    days: list[str]
    registry: list[dict] = field(default_factory=list)
    problems: list[list[str]] = field(default_factory=list)  # [file, what]
    writes: list[WriteResult] = field(default_factory=list)
    bytes_read: int = 0
    quarantined: Counter = field(default_factory=Counter)
    secrets: Counter = field(default_factory=Counter)
    personal: Counter = field(default_factory=Counter)
    sums: SessionSums = field(default_factory=lambda: SessionSums({
        "lines": lambda r: 1, "quarantined": lambda r: r["quarantined"],
        "secrets_scrubbed": lambda r: r["secrets_scrubbed"],
        "personal_data_replaced": lambda r: r["personal_data_replaced"] or 0}))
    started: float = field(default_factory=time.perf_counter)

    def _common(self) -> dict[str, Any]:
        registry = self.registry
        by_change = Counter(r["change"] for r in registry)
        by_status = Counter(r["status"] for r in registry)
        common = {
            "files": dg.MetadataValue.int(len(registry)),
            "files_by_change": md_counts("change", dict(by_change)),
            "files_by_status": md_counts("status", dict(by_status)),
            "deleted_files": dg.MetadataValue.int(by_status.get("deleted", 0)),
            "problems": md_table(["file", "what"], self.problems[:50], empty="_none_"),
            "days": ", ".join(sorted({r["day"] for r in registry})[:31]),
        }
        outside = sorted({r["day"] for r in registry} - set(self.days)) if self.days else []
        if outside:
            common["days_outside_run"] = ", ".join(outside[:31])
        return common

    def registry_metadata(self) -> dict[str, Any]:
        """``session_files``' own figures (merge them with the registry write's metadata)."""
        return self._common() | {
            "formats": md_counts("format", dict(Counter(r.get("format") or "n/a" for r in self.registry))),
            "bytes_registered": dg.MetadataValue.int(sum(max(r.get("size") or 0, 0) for r in self.registry)),
        }

    def raw_metadata(self) -> dict[str, Any]:
        """``raw_traces``' metadata: the last group write's, then the run's figures."""
        read_s = time.perf_counter() - self.started
        lines = self.sums.total("lines")
        last = self.writes[-1].metadata() if self.writes else {}
        return last | self._common() | {
            "dagster/row_count": dg.MetadataValue.int(lines),
            "rows_written": dg.MetadataValue.int(lines),
            "writes": dg.MetadataValue.int(len(self.writes)),
            "sessions": dg.MetadataValue.int(self.sums.sessions()),
            "lines": dg.MetadataValue.int(lines),
            "bytes_read": dg.MetadataValue.int(self.bytes_read),
            "lines_quarantined": dg.MetadataValue.int(sum(self.quarantined.values())),
            "quarantined_by_reason": md_counts("reason", dict(self.quarantined)),
            "secrets_scrubbed": dg.MetadataValue.int(sum(self.secrets.values())),
            "secrets_by_kind": md_counts("secret kind", dict(self.secrets)),
            "personal_data_replaced": dg.MetadataValue.int(sum(self.personal.values())),
            "personal_data_by_kind": md_counts("personal data kind", dict(self.personal)),
            "per_session": self.sums.md(),
            "read_mb_per_s": round(self.bytes_read / 1e6 / read_s, 2) if read_s > 0 else 0.0,
            "seconds": dg.MetadataValue.float(round(read_s, 3)),
        }


def read_files(lake: DeltaLake, root, days: list[str], changes: Optional[list[tuple[str, str, str]]], *,
               run_id: str, now: datetime, privacy, warn: Callable[[str], None],
               chunk_bytes: int = READ_CHUNK_BYTES, names=None) -> ReadReport:
    """Read the run's files (``changes``: (key, path, change); None: a backfill of ``days``)
    into ``raw_traces``, a group of at most ``chunk_bytes`` of files per write, and return
    the registry rows with what the reading found. ``names``: how the files' paths are
    stored (resources.sessions.SessionNames: user names pseudonymized); the paths of
    ``changes`` and of the registry are stored ones, the real ones never leave it."""
    from resources.sessions import SessionNames

    names = names if names is not None else SessionNames(root)
    report = ReadReport(days=days)
    if changes is not None:
        prev = registry_rows(lake, [c[0] for c in changes])
    else:  # a backfill: every file the registry holds for these days, and what changed on disk there
        changes, prev = backfill_changes(lake, root, days, warn, names)
    i = 0
    while i < len(changes):
        group, nbytes = [], 0
        while i < len(changes) and (not group or nbytes < chunk_bytes):
            key, path, change = changes[i]
            fr = read_change(root, key, path, change, prev.get(key), run_id=run_id, now=now, privacy=privacy,
                             real_relpath=names.real(path))
            i += 1
            if not fr.registry:
                report.problems.append([path, fr.stats.get("skipped", "skipped")])
                continue
            group.append(fr)
            nbytes += max(fr.registry.get("size") or 0, 0)
        rs = sessions_from_registry([fr.registry for fr in group])
        raw = [r for fr in group for r in fr.raw if r["session_key"] in rs.day_of]
        if rs.keys:
            report.writes.append(lake.replace_sessions(RAW_TRACES, raw, rs.scope))
        report.sums.add(raw)
        for fr in group:
            report.registry.append(fr.registry)
            st = fr.stats
            report.bytes_read += st.get("bytes", 0)
            report.quarantined.update(st.get("quarantined", {}))
            report.secrets.update(st.get("secrets", {}))
            report.personal.update(st.get("personal_data", {}))
            if fr.registry["status"] not in ("ingested", "deleted"):
                report.problems.append([fr.registry["path"], fr.registry["status"] + (
                    f": {fr.registry['reason']}" if fr.registry.get("reason") else "")])
        del raw, group
    return report


# ------------------------------------------------------------------ raw_traces → trace_turns → agent_steps

def _rows_by_key(table, keys) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {k: [] for k in keys}
    for r in table.to_pylist():
        out.setdefault(r["session_key"], []).append(r)
    return out


@dataclass
class RewriteReport:
    """What rewriting one session table did: the group writes and per-session sums."""

    sums: SessionSums
    count_column: str
    sessions_cleared: int = 0
    writes: list[WriteResult] = field(default_factory=list)

    def write_metadata(self) -> dict[str, Any]:
        md = self.writes[-1].metadata() if self.writes else {}
        n = self.sums.total(self.count_column)
        return md | {"rows_written": dg.MetadataValue.int(n), "dagster/row_count": dg.MetadataValue.int(n),
                     "writes": dg.MetadataValue.int(len(self.writes))}

    def observe(self, rows: list[dict]) -> None:
        """Called with each group's rows as written (subclasses count more)."""


def rewrite(lake: DeltaLake, rs: RunSessions, src, dst, build: Callable[[list[dict], str], list[dict]],
            report: RewriteReport) -> RewriteReport:
    """For each group of the run's sessions: read ``src`` rows, build ``dst`` rows, replace them."""
    report.sessions_cleared = len(rs.cleared)
    for chunk in rs.chunks():
        rows_by = _rows_by_key(lake.read(src, scope=chunk.scope), chunk.keys)
        out = []
        for key in sorted(chunk.day_of):
            out.extend(build(rows_by.get(key, []), key))
        out = chunk.stamp(out)
        report.writes.append(lake.replace_sessions(dst, out, chunk.scope))
        report.sums.add(out)
        report.observe(out)
    return report


class TurnsReport(RewriteReport):
    """trace_turns: turns by role, tool errors by kind, formats, tokens."""

    def __init__(self) -> None:
        super().__init__(SessionSums({
            "turns": lambda r: 1, "tool_errors": lambda r: r.get("tool_error"),
            "input_tokens": lambda r: r.get("input_tokens"), "output_tokens": lambda r: r.get("output_tokens"),
            "cache_read_tokens": lambda r: r.get("cache_read_tokens"),
            "sidechain": lambda r: r.get("is_sidechain"), "compactions": lambda r: r.get("is_compaction_boundary"),
            "meta": lambda r: r.get("role") == "meta"}), "turns")
        self.roles: Counter = Counter()
        self.error_kinds: Counter = Counter()
        self.formats: Counter = Counter()

    def observe(self, rows: list[dict]) -> None:
        self.roles.update(r["role"] for r in rows)
        self.error_kinds.update(r["error_kind"] for r in rows if r.get("tool_error"))
        self.formats.update(r["source_format"] for r in rows)

    def metadata(self) -> dict[str, Any]:
        s = self.sums
        return self.write_metadata() | {
            "sessions": s.sessions(),
            "sessions_cleared": self.sessions_cleared,
            "turns": s.total("turns"),
            "turns_by_role": md_counts("role", dict(self.roles)),
            "tool_errors": s.total("tool_errors"),
            "tool_errors_by_kind": md_counts("error kind", dict(self.error_kinds)),
            "sidechain_turns": s.total("sidechain"),
            "compactions": s.total("compactions"),
            "unknown_records_kept": s.total("meta"),
            "formats": md_counts("format", dict(self.formats)),
            "input_tokens": s.total("input_tokens"),
            "output_tokens": s.total("output_tokens"),
            "cache_read_tokens": s.total("cache_read_tokens"),
            "per_session": s.md(["turns", "tool_errors", "input_tokens", "output_tokens"]),
        }


class StepsReport(RewriteReport):
    """agent_steps: steps, error sites, context sizes."""

    def __init__(self) -> None:
        super().__init__(SessionSums({
            "steps": lambda r: 1, "error_sites": lambda r: r["is_error_site"],
            "caused_errors": lambda r: r["caused_error"], "sidechain": lambda r: r.get("is_sidechain"),
            "context_messages": lambda r: r.get("n_context_messages")}), "steps")

    def metadata(self) -> dict[str, Any]:
        s = self.sums
        n = s.total("steps")
        return self.write_metadata() | {
            "steps": n,
            "error_sites": s.total("error_sites"),
            "steps_that_caused_errors": s.total("caused_errors"),
            "sidechain_steps": s.total("sidechain"),
            "mean_context_messages": round(s.total("context_messages") / n, 1) if n else 0.0,
            "per_session": s.md(["steps", "error_sites", "caused_errors"]),
        }
