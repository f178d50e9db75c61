"""Thin Dagster assets of the trace family: session files → session_files + raw_traces
(bronze, one step) → trace_turns → agent_steps (silver).

All of them are partitioned by day (assets/traces/partitions.py). A run rewrites the sessions its
registry step recorded (the changed files the sensor handed it, or every file of its days
on a backfill), in groups of bounded size, and never the other sessions of its days.
"""


import time
from collections import Counter
from datetime import datetime, timezone
from typing import Optional

import dagster as dg
import orjson
import polars as pl
import pyarrow.compute as pc
from pydantic import Field

from assets.metadata import SessionSums, md_counts, md_table
from assets.traces.partitions import (
    SESSION_BACKFILL, SESSIONS, RunSessions, check_scope, partition_days, run_id_of, run_sessions,
    sessions_from_registry,
)
from assets.traces.formats import parse_turns
from assets.traces.registry import read_change
from assets.traces.steps import build_agent_steps
from assets.traces.tables import AGENT_STEPS, RAW_TRACES, SESSION_FILES, TRACE_TURNS
from resources import privacy
from resources.lake import DeltaLake, SessionScope, string_field
from resources.sessions import SessionSource

GROUP = "traces"
READ_CHUNK_BYTES = 64 * 1024 * 1024  # files read (and written to bronze) per group


def _rows_by_key(table, keys):
    rows = table.to_pylist()
    out = {k: [] for k in keys}
    for r in rows:
        out.setdefault(r["session_key"], []).append(r)
    return out


# ------------------------------------------------------------------ session_files + raw_traces

class FileChange(dg.Config):
    key: str
    path: str
    change: str = Field(description="new | appended | rewritten | deleted")
    size: int = -1
    mtime_ns: int = -1
    day: str = ""
    prev_day: Optional[str] = None


class SessionFilesConfig(dg.Config):
    changes: list[FileChange] = Field(
        default=[],
        description="The files this run reads (the session_files sensor fills it in). Empty: every file the "
                    "registry holds for the run's days (a backfill).")


def _registry_rows(lake: DeltaLake, keys: list[str]) -> dict[str, dict]:
    if not keys:
        return {}
    t = lake.read(SESSION_FILES, filter=string_field("session_key").isin(keys))
    return {r["session_key"]: r for r in t.to_pylist()}


def _backfill(lake: DeltaLake, root, days: list[str], log, names=None) -> tuple[list[tuple[str, str, str]], dict]:
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
        log.warning(f"session file {path}: {what}")
    return [changes[k] for k in sorted(changes)], reg


@dg.multi_asset(
    name="read_session_files",
    specs=[
        dg.AssetSpec(SESSION_FILES.asset_key, group_name=GROUP, kinds={"delta", "bronze"},
                     description=SESSION_FILES.description),
        dg.AssetSpec(RAW_TRACES.asset_key, group_name=GROUP, kinds={"delta", "bronze"},
                     description=RAW_TRACES.description, deps=[SESSION_FILES.asset_key]),
    ],
    partitions_def=SESSIONS,
    backfill_policy=SESSION_BACKFILL,
)
def read_session_files(context: dg.AssetExecutionContext, config: SessionFilesConfig, lake: DeltaLake,
                       sessions: SessionSource):
    """Register the run's files (day, size, head fingerprint, status) and read them into bronze."""
    t0 = time.perf_counter()
    root = sessions.root_path()
    names = sessions.names(lake.root)  # paths are stored with user names pseudonymized
    run_id = run_id_of(context)
    days = partition_days(context)
    now = datetime.now(timezone.utc)
    if config.changes:
        changes = [(c.key, c.path, c.change) for c in config.changes]
        prev = _registry_rows(lake, [c[0] for c in changes])
    else:  # a backfill: every file the registry holds for these days, and what changed on disk there
        changes, prev = _backfill(lake, root, days, context.log, names)
    registry: list[dict] = []
    problems: list[list[str]] = []
    raw_stats = Counter()
    quarantined: Counter = Counter()
    secrets: Counter = Counter()
    personal: Counter = Counter()
    scrubber = privacy.for_lake(lake.root)
    sums = SessionSums({"lines": lambda r: 1, "quarantined": lambda r: r["quarantined"],
                        "secrets_scrubbed": lambda r: r["secrets_scrubbed"]})
    writes = []
    i = 0
    while i < len(changes):
        group, nbytes = [], 0
        while i < len(changes) and (not group or nbytes < READ_CHUNK_BYTES):
            key, path, change = changes[i]
            fr = read_change(root, key, path, change, prev.get(key), run_id=run_id, now=now, privacy=scrubber,
                             real_relpath=names.real(path))
            i += 1
            if not fr.registry:
                problems.append([path, fr.stats.get("skipped", "skipped")])
                continue
            group.append(fr)
            nbytes += max(fr.registry.get("size") or 0, 0)
        rs = sessions_from_registry([fr.registry for fr in group])
        raw = [r for fr in group for r in fr.raw if r["session_key"] in rs.day_of]
        if rs.keys:
            writes.append(lake.replace_sessions(RAW_TRACES, raw, rs.scope))
        sums.add(raw)
        for fr in group:
            registry.append(fr.registry)
            st = fr.stats
            raw_stats["bytes"] += st.get("bytes", 0)
            quarantined.update(st.get("quarantined", {}))
            secrets.update(st.get("secrets", {}))
            personal.update(st.get("personal_data", {}))
            if fr.registry["status"] not in ("ingested", "deleted"):
                problems.append([fr.registry["path"], fr.registry["status"] + (
                    f": {fr.registry['reason']}" if fr.registry.get("reason") else "")])
        del raw, group
    reg_write = lake.merge(SESSION_FILES, registry) if registry else None
    for p in problems:
        context.log.warning(f"session file {p[0]}: {p[1]}")
    outside = sorted({r["day"] for r in registry} - set(days)) if days else []
    by_change = Counter(r["change"] for r in registry)
    by_status = Counter(r["status"] for r in registry)
    read_s = time.perf_counter() - t0
    common = {
        "files": dg.MetadataValue.int(len(registry)),
        "files_by_change": md_counts("change", dict(by_change)),
        "files_by_status": md_counts("status", dict(by_status)),
        "deleted_files": dg.MetadataValue.int(by_status.get("deleted", 0)),
        "problems": md_table(["file", "what"], problems[:50], empty="_none_"),
        "days": ", ".join(sorted({r["day"] for r in registry})[:31]),
    }
    if outside:
        common["days_outside_run"] = ", ".join(outside[:31])
    reg_md = (reg_write.metadata() if reg_write else {}) | common | {
        "formats": md_counts("format", dict(Counter(r.get("format") or "n/a" for r in registry))),
        "bytes_registered": dg.MetadataValue.int(sum(max(r.get("size") or 0, 0) for r in registry)),
    }
    last = writes[-1].metadata() if writes else {}
    raw_md = last | common | {
        "dagster/row_count": dg.MetadataValue.int(sums.total("lines")),
        "rows_written": dg.MetadataValue.int(sums.total("lines")),
        "writes": dg.MetadataValue.int(len(writes)),
        "sessions": dg.MetadataValue.int(sums.sessions()),
        "lines": dg.MetadataValue.int(sums.total("lines")),
        "bytes_read": dg.MetadataValue.int(raw_stats["bytes"]),
        "lines_quarantined": dg.MetadataValue.int(sum(quarantined.values())),
        "quarantined_by_reason": md_counts("reason", dict(quarantined)),
        "secrets_scrubbed": dg.MetadataValue.int(sum(secrets.values())),
        "secrets_by_kind": md_counts("secret kind", dict(secrets)),
        "personal_data_replaced": dg.MetadataValue.int(sum(personal.values())),
        "personal_data_by_kind": md_counts("personal data kind", dict(personal)),
        "per_session": sums.md(),
        "read_mb_per_s": round(raw_stats["bytes"] / 1e6 / read_s, 2) if read_s > 0 else 0.0,
        "seconds": dg.MetadataValue.float(round(read_s, 3)),
    }
    yield dg.MaterializeResult(asset_key=SESSION_FILES.asset_key, metadata=reg_md)
    yield dg.MaterializeResult(asset_key=RAW_TRACES.asset_key, metadata=raw_md)


# ------------------------------------------------------------------ trace_turns, agent_steps

def _rewrite(lake: DeltaLake, rs: RunSessions, src, dst, build, sums: "SessionSums", extra=None):
    """For each group of the run's sessions: read ``src`` rows, build ``dst`` rows, replace them."""
    writes = []
    for chunk in rs.chunks():
        rows_by = _rows_by_key(lake.read(src, scope=chunk.scope), chunk.keys)
        out = []
        for key in sorted(chunk.day_of):
            out.extend(build(rows_by.get(key, []), key))
        out = chunk.stamp(out)
        writes.append(lake.replace_sessions(dst, out, chunk.scope))
        sums.add(out)
        if extra is not None:
            extra(out)
    return writes


def _write_md(writes, sums: "SessionSums", count_col: str) -> dict:
    md = writes[-1].metadata() if writes else {}
    n = sums.total(count_col)
    return md | {"rows_written": dg.MetadataValue.int(n), "dagster/row_count": dg.MetadataValue.int(n),
                 "writes": dg.MetadataValue.int(len(writes))}


@dg.asset(
    key=TRACE_TURNS.asset_key,
    group_name=GROUP,
    deps=[RAW_TRACES.asset_key],
    partitions_def=SESSIONS,
    backfill_policy=SESSION_BACKFILL,
    kinds={"delta", "silver"},
    description=TRACE_TURNS.description,
)
def trace_turns(context: dg.AssetExecutionContext, lake: DeltaLake):
    rs = run_sessions(context, lake, RAW_TRACES)
    sums = SessionSums({"turns": lambda r: 1, "tool_errors": lambda r: r.get("tool_error"),
                        "input_tokens": lambda r: r.get("input_tokens"),
                        "output_tokens": lambda r: r.get("output_tokens"),
                        "cache_read_tokens": lambda r: r.get("cache_read_tokens"),
                        "sidechain": lambda r: r.get("is_sidechain"),
                        "compactions": lambda r: r.get("is_compaction_boundary"),
                        "meta": lambda r: r.get("role") == "meta"})
    roles, error_kinds, formats = Counter(), Counter(), Counter()

    def count(rows):
        roles.update(r["role"] for r in rows)
        error_kinds.update(r["error_kind"] for r in rows if r.get("tool_error"))
        formats.update(r["source_format"] for r in rows)

    writes = _rewrite(lake, rs, RAW_TRACES, TRACE_TURNS, lambda raw, key: parse_turns(raw, key), sums, count)
    return dg.MaterializeResult(
        metadata=_write_md(writes, sums, "turns") | {
            "sessions": sums.sessions(),
            "sessions_cleared": len(rs.cleared),
            "turns": sums.total("turns"),
            "turns_by_role": md_counts("role", dict(roles)),
            "tool_errors": sums.total("tool_errors"),
            "tool_errors_by_kind": md_counts("error kind", dict(error_kinds)),
            "sidechain_turns": sums.total("sidechain"),
            "compactions": sums.total("compactions"),
            "unknown_records_kept": sums.total("meta"),
            "formats": md_counts("format", dict(formats)),
            "input_tokens": sums.total("input_tokens"),
            "output_tokens": sums.total("output_tokens"),
            "cache_read_tokens": sums.total("cache_read_tokens"),
            "per_session": sums.md(["turns", "tool_errors", "input_tokens", "output_tokens"]),
        }
    )


@dg.asset(
    key=AGENT_STEPS.asset_key,
    group_name=GROUP,
    deps=[TRACE_TURNS.asset_key],
    partitions_def=SESSIONS,
    backfill_policy=SESSION_BACKFILL,
    kinds={"delta", "silver"},
    description=AGENT_STEPS.description,
)
def agent_steps(context: dg.AssetExecutionContext, lake: DeltaLake):
    rs = run_sessions(context, lake, TRACE_TURNS)
    sums = SessionSums({"steps": lambda r: 1, "error_sites": lambda r: r["is_error_site"],
                        "caused_errors": lambda r: r["caused_error"],
                        "sidechain": lambda r: r.get("is_sidechain"),
                        "context_messages": lambda r: r.get("n_context_messages")})
    writes = _rewrite(lake, rs, TRACE_TURNS, AGENT_STEPS,
                      lambda turns, key: build_agent_steps(sorted(turns, key=lambda r: r["turn_index"])), sums)
    n = sums.total("steps")
    return dg.MaterializeResult(
        metadata=_write_md(writes, sums, "steps") | {
            "steps": n,
            "error_sites": sums.total("error_sites"),
            "steps_that_caused_errors": sums.total("caused_errors"),
            "sidechain_steps": sums.total("sidechain"),
            "mean_context_messages": round(sums.total("context_messages") / n, 1) if n else 0.0,
            "per_session": sums.md(["steps", "error_sites", "caused_errors"]),
        }
    )


# ------------------------------------------------------------------ asset checks
@dg.asset_check(asset=TRACE_TURNS.asset_key, description="Every tool result answers a tool call of its session.")
def tool_results_have_tool_use(context: dg.AssetCheckExecutionContext, lake: DeltaLake) -> dg.AssetCheckResult:
    """Fails on a tool result whose call is missing; results the parser marked as orphans
    (a session resumed from another file answers calls made there) only warn. Checks the
    sessions of its run (the whole table when run on its own)."""
    t = lake.read(TRACE_TURNS, columns=["session_key", "role", "tool_calls", "tool_call_id", "extra"],
                  scope=check_scope(context, lake))
    keys, roles = t["session_key"].to_pylist(), t["role"].to_pylist()
    calls = {(k, c.get("id")) for k, tc in zip(keys, t["tool_calls"].to_pylist()) if tc
             for c in orjson.loads(tc)}
    orphans, marked = [], 0
    for k, role, cid, extra in zip(keys, roles, t["tool_call_id"].to_pylist(), t["extra"].to_pylist()):
        if role == "tool" and (k, cid) not in calls:
            if extra and orjson.loads(extra).get("orphan"):
                marked += 1
            else:
                orphans.append((k, cid))
    return dg.AssetCheckResult(
        passed=not orphans and not marked,
        severity=dg.AssetCheckSeverity.ERROR if orphans else dg.AssetCheckSeverity.WARN,
        metadata={"tool_results": roles.count("tool"), "unlinked": len(orphans),
                  "marked_orphans": marked, "unlinked_sample": str(orphans[:5])},
    )


@dg.asset_check(asset=TRACE_TURNS.asset_key, description="Every ingested session with parseable lines has turns.")
def every_session_has_turns(context: dg.AssetCheckExecutionContext, lake: DeltaLake) -> dg.AssetCheckResult:
    scope = check_scope(context, lake)
    raw = lake.read(RAW_TRACES, columns=["session_key", "quarantined"], scope=scope)
    good = raw.filter(pc.invert(raw["quarantined"]))
    ingested = set(pc.unique(good["session_key"]).to_pylist())
    with_turns = set(pc.unique(lake.read(TRACE_TURNS, columns=["session_key"], scope=scope)["session_key"]).to_pylist())
    missing = sorted(ingested - with_turns)
    return dg.AssetCheckResult(
        passed=not missing,
        metadata={"sessions": len(ingested), "without_turns": len(missing), "sample": str(missing[:5])},
    )


@dg.asset_check(asset=RAW_TRACES.asset_key, description="No line was lost: line numbers are contiguous per file.")
def no_lost_lines(context: dg.AssetCheckExecutionContext, lake: DeltaLake) -> dg.AssetCheckResult:
    t = lake.read(RAW_TRACES, columns=["session_key", "line_no"], scope=check_scope(context, lake))
    g = pl.from_arrow(t).group_by("session_key").agg(
        pl.len().alias("n"), pl.col("line_no").max().alias("last"), pl.col("line_no").n_unique().alias("u")
    )
    bad = g.filter((pl.col("n") != pl.col("last")) | (pl.col("u") != pl.col("n")))
    return dg.AssetCheckResult(
        passed=bad.height == 0,
        metadata={"sessions": g.height, "sessions_with_gaps": bad.height},
    )


ASSETS = [read_session_files, trace_turns, agent_steps]
CHECKS = [tool_results_have_tool_use, every_session_has_turns, no_lost_lines]

defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS)
