"""Thin Dagster assets of the trace family: session files → session_files + raw_traces
(bronze, one step) → trace_turns → agent_steps (silver).

All of them are partitioned by day (assets/traces/partitions.py). A run rewrites the sessions its
registry step recorded (the changed files the sensor handed it, or every file of its days
on a backfill), in groups of bounded size, and never the other sessions of its days.
"""


from datetime import datetime, timezone
from typing import Optional

import dagster as dg
import orjson
import polars as pl
import pyarrow.compute as pc
from pydantic import Field

from assets.traces.formats import parse_turns
from assets.traces.partitions import (
    SESSION_BACKFILL, SESSIONS, check_scope, partition_days, run_id_of, run_sessions, session_asset,
)
from assets.traces.run import StepsReport, TurnsReport, read_files, rewrite
from assets.traces.steps import build_agent_steps
from assets.traces.tables import AGENT_STEPS, RAW_TRACES, SESSION_FILES, TRACE_TURNS
from resources import privacy
from resources.lake import DeltaLake
from resources.sessions import SessionSource

GROUP = "traces"


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
    changes = [(c.key, c.path, c.change) for c in config.changes] if config.changes else None
    report = read_files(lake, sessions.root_path(), partition_days(context), changes, run_id=run_id_of(context),
                        now=datetime.now(timezone.utc), privacy=privacy.for_lake(lake.root),
                        warn=context.log.warning, names=sessions.names(lake.root))  # user names pseudonymized
    reg_write = lake.merge(SESSION_FILES, report.registry) if report.registry else None
    for p in report.problems:
        context.log.warning(f"session file {p[0]}: {p[1]}")
    if report.quarantined:  # kept in raw_traces (quarantined, quarantine_reason), never dropped
        context.log.warning(f"{sum(report.quarantined.values())} line(s) quarantined in bronze/raw_traces: "
                            + ", ".join(f"{k} {v}" for k, v in sorted(report.quarantined.items())))
    reg_md = (reg_write.metadata() if reg_write else {}) | report.registry_metadata()
    yield dg.MaterializeResult(asset_key=SESSION_FILES.asset_key, metadata=reg_md)
    yield dg.MaterializeResult(asset_key=RAW_TRACES.asset_key, metadata=report.raw_metadata())


# ------------------------------------------------------------------ trace_turns, agent_steps

@dg.asset(**session_asset(TRACE_TURNS, [RAW_TRACES], GROUP, "silver"))
def trace_turns(context: dg.AssetExecutionContext, lake: DeltaLake):
    rs = run_sessions(context, lake, RAW_TRACES)
    report = rewrite(lake, rs, RAW_TRACES, TRACE_TURNS, lambda raw, key: parse_turns(raw, key), TurnsReport())
    return dg.MaterializeResult(metadata=report.metadata())


@dg.asset(**session_asset(AGENT_STEPS, [TRACE_TURNS], GROUP, "silver"))
def agent_steps(context: dg.AssetExecutionContext, lake: DeltaLake):
    rs = run_sessions(context, lake, TRACE_TURNS)
    report = rewrite(lake, rs, TRACE_TURNS, AGENT_STEPS,
                     lambda turns, key: build_agent_steps(sorted(turns, key=lambda r: r["turn_index"])), StepsReport())
    return dg.MaterializeResult(metadata=report.metadata())


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
