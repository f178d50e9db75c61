"""Thin Dagster assets of the trace family: file → raw_traces → trace_turns → agent_steps."""


import time
from collections import Counter

import dagster as dg
import orjson
import polars as pl
import pyarrow.compute as pc

from assets.metadata import md_counts, md_per_session
from assets.partitions import SESSION_BACKFILL, SESSIONS
from assets.traces.tables import RAW_TRACES, AGENT_STEPS, TRACE_TURNS
from assets.traces.raw import read_raw_lines
from assets.traces.formats import parse_turns
from assets.traces.steps import build_agent_steps
from resources.lake import DeltaLake, partition_keys_of
from resources.sessions import SessionSource

GROUP = "traces"


def _rows_by_key(table, keys):
    rows = table.to_pylist()
    out = {k: [] for k in keys}
    for r in rows:
        out.setdefault(r["session_key"], []).append(r)
    return out


@dg.asset(
    key=RAW_TRACES.asset_key,
    group_name=GROUP,
    partitions_def=SESSIONS,
    backfill_policy=SESSION_BACKFILL,
    kinds={"delta", "bronze"},
    description=RAW_TRACES.description,
)
def raw_traces(context: dg.AssetExecutionContext, lake: DeltaLake, sessions: SessionSource):
    keys = partition_keys_of(context)
    rows, missing = [], []
    quarantined: Counter = Counter()
    secrets: Counter = Counter()
    nbytes = 0
    t0 = time.perf_counter()
    for key in keys:
        path = sessions.path_for(key)
        if path is None:
            missing.append(key)  # the file is gone: its partition becomes empty
            continue
        file_rows, stats = read_raw_lines(path, key)
        rows.extend(file_rows)
        nbytes += stats.get("bytes", 0)
        quarantined.update(stats.get("quarantined", {}))
        secrets.update(stats.get("secrets", {}))
    parse_s = time.perf_counter() - t0
    result = lake.replace_partitions(RAW_TRACES, rows, keys)
    if missing:
        context.log.warning(f"{len(missing)} session files no longer exist: {missing[:5]}")
    return dg.MaterializeResult(
        metadata={
            **result.metadata(),
            "sessions": len(keys) - len(missing),
            "lines": len(rows),
            "bytes_read": nbytes,
            "lines_quarantined": sum(quarantined.values()),
            "quarantined_by_reason": md_counts("reason", dict(quarantined)),
            "secrets_scrubbed": sum(secrets.values()),
            "secrets_by_kind": md_counts("secret kind", dict(secrets)),
            "missing_files": len(missing),
            "per_session": md_per_session(keys, rows, {
                "lines": lambda r: 1, "quarantined": lambda r: r["quarantined"],
                "secrets_scrubbed": lambda r: r["secrets_scrubbed"]}),
            "read_mb_per_s": round(nbytes / 1e6 / parse_s, 2) if parse_s > 0 else 0.0,
        }
    )


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
    keys = partition_keys_of(context)
    raw = _rows_by_key(lake.read(RAW_TRACES, partitions=keys), keys)
    rows = []
    for key in keys:
        rows.extend(parse_turns(raw.get(key, []), key))
    result = lake.replace_partitions(TRACE_TURNS, rows, keys)
    roles = Counter(r["role"] for r in rows)
    return dg.MaterializeResult(
        metadata={
            **result.metadata(),
            "sessions": len({r["session_key"] for r in rows}),
            "turns": len(rows),
            "turns_by_role": md_counts("role", dict(roles)),
            "tool_errors": sum(1 for r in rows if r.get("tool_error")),
            "tool_errors_by_kind": md_counts(
                "error kind", dict(Counter(r["error_kind"] for r in rows if r.get("tool_error")))
            ),
            "sidechain_turns": sum(1 for r in rows if r.get("is_sidechain")),
            "compactions": sum(1 for r in rows if r.get("is_compaction_boundary")),
            "unknown_records_kept": sum(1 for r in rows if r.get("role") == "meta"),
            "formats": md_counts("format", dict(Counter(r["source_format"] for r in rows))),
            "input_tokens": sum(r.get("input_tokens") or 0 for r in rows),
            "output_tokens": sum(r.get("output_tokens") or 0 for r in rows),
            "cache_read_tokens": sum(r.get("cache_read_tokens") or 0 for r in rows),
            "per_session": md_per_session(keys, rows, {
                "turns": lambda r: 1, "tool_errors": lambda r: r.get("tool_error"),
                "input_tokens": lambda r: r.get("input_tokens"),
                "output_tokens": lambda r: r.get("output_tokens")}),
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
    keys = partition_keys_of(context)
    turns = _rows_by_key(lake.read(TRACE_TURNS, partitions=keys), keys)
    rows = []
    for key in keys:
        session_turns = sorted(turns.get(key, []), key=lambda r: r["turn_index"])
        rows.extend(build_agent_steps(session_turns))
    result = lake.replace_partitions(AGENT_STEPS, rows, keys)
    return dg.MaterializeResult(
        metadata={
            **result.metadata(),
            "steps": len(rows),
            "error_sites": sum(1 for r in rows if r["is_error_site"]),
            "steps_that_caused_errors": sum(1 for r in rows if r["caused_error"]),
            "sidechain_steps": sum(1 for r in rows if r.get("is_sidechain")),
            "mean_context_messages": round(
                sum(r.get("n_context_messages") or 0 for r in rows) / len(rows), 1) if rows else 0.0,
            "per_session": md_per_session(keys, rows, {
                "steps": lambda r: 1, "error_sites": lambda r: r["is_error_site"],
                "caused_errors": lambda r: r["caused_error"]}),
        }
    )


# ------------------------------------------------------------------ asset checks
@dg.asset_check(asset=TRACE_TURNS.asset_key, description="Every tool result answers a tool call of its session.")
def tool_results_have_tool_use(lake: DeltaLake) -> dg.AssetCheckResult:
    """Fails on a tool result whose call is missing; results the parser marked as orphans
    (a session resumed from another file answers calls made there) only warn."""
    t = lake.read(TRACE_TURNS, columns=["session_key", "role", "tool_calls", "tool_call_id", "extra"])
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
def every_session_has_turns(lake: DeltaLake) -> dg.AssetCheckResult:
    raw = lake.read(RAW_TRACES, columns=["session_key", "quarantined"])
    good = raw.filter(pc.invert(raw["quarantined"]))
    ingested = set(pc.unique(good["session_key"]).to_pylist())
    with_turns = set(pc.unique(lake.read(TRACE_TURNS, columns=["session_key"])["session_key"]).to_pylist())
    missing = sorted(ingested - with_turns)
    return dg.AssetCheckResult(
        passed=not missing,
        metadata={"sessions": len(ingested), "without_turns": len(missing), "sample": str(missing[:5])},
    )


@dg.asset_check(asset=RAW_TRACES.asset_key, description="No line was lost: line numbers are contiguous per file.")
def no_lost_lines(lake: DeltaLake) -> dg.AssetCheckResult:
    t = lake.read(RAW_TRACES, columns=["session_key", "line_no"])
    g = pl.from_arrow(t).group_by("session_key").agg(
        pl.len().alias("n"), pl.col("line_no").max().alias("last"), pl.col("line_no").n_unique().alias("u")
    )
    bad = g.filter((pl.col("n") != pl.col("last")) | (pl.col("u") != pl.col("n")))
    return dg.AssetCheckResult(
        passed=bad.height == 0,
        metadata={"sessions": g.height, "sessions_with_gaps": bad.height},
    )


ASSETS = [raw_traces, trace_turns, agent_steps]
CHECKS = [tool_results_have_tool_use, every_session_has_turns, no_lost_lines]
