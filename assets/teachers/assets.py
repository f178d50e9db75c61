"""teacher_responses: every agent step answered by every teacher of the pool."""


import asyncio
import collections
from typing import Optional

import dagster as dg
import orjson
from pydantic import Field

from assets.partitions import SESSION_BACKFILL, SESSIONS, run_sessions
from assets.teachers.cache import DeltaResponseCache
from assets.teachers.ask import AskResult, Budget, ask_teachers
from assets.teachers.tables import TEACHER_CACHE, TEACHER_RESPONSES
from assets.traces.tables import AGENT_STEPS
from resources.lake import DeltaLake
from resources.teachers import TeacherPool

STEP_COLUMNS = ["session_key", "step_id", "step_index", "messages", "tools"]


class TeacherAskConfig(dg.Config):
    max_steps_per_session: Optional[int] = Field(
        default=None,
        description="Replay only the first N steps of each session (0: all; unset: the pool's cap).",
    )
    budget_usd: Optional[float] = Field(
        default=None, description="Per-run budget in USD (overrides the pool's)."
    )


def select_steps(rows: list[dict], max_steps_per_session: Optional[int]) -> list[dict]:
    rows = sorted(rows, key=lambda r: (r["session_key"], r["step_index"], r["step_id"]))
    if max_steps_per_session is None:
        return rows
    seen: collections.Counter = collections.Counter()
    out = []
    for r in rows:
        if seen[r["session_key"]] < max_steps_per_session:
            seen[r["session_key"]] += 1
            out.append(r)
    return out


def ask_metadata(out: AskResult, n_steps: int, n_teachers: int) -> dict:
    return {
        "steps": dg.MetadataValue.int(n_steps),
        "teachers": dg.MetadataValue.int(n_teachers),
        "calls": dg.MetadataValue.int(out.calls),
        "cache_hits": dg.MetadataValue.int(out.cached),
        "cost_usd_run": dg.MetadataValue.float(round(out.spent_usd, 6)),
        "budget_usd": dg.MetadataValue.float(out.budget_usd) if out.budget_usd is not None else "unlimited",
        "skipped_budget": dg.MetadataValue.int(sum(t.skipped_budget for t in out.totals.values())),
        "errors_by_kind": dg.MetadataValue.json(dict(out.errors_by_kind)),
        "flags_by_kind": dg.MetadataValue.json(dict(out.flags_by_kind)),
        "per_teacher": dg.MetadataValue.md(out.markdown()),
        "cache_writes": dg.MetadataValue.json(out.cache_stats),
        "ask_seconds": dg.MetadataValue.float(round(out.wall_seconds, 3)),
        "latency_ms": dg.MetadataValue.json(out.latency_ms()),
    }


@dg.asset(
    key=TEACHER_RESPONSES.asset_key,
    deps=[AGENT_STEPS.asset_key],
    partitions_def=SESSIONS,
    backfill_policy=SESSION_BACKFILL,
    group_name="teachers",
    kinds={"delta", "python"},
    description=TEACHER_RESPONSES.description,
)
def teacher_responses(
    context: dg.AssetExecutionContext,
    config: TeacherAskConfig,
    lake: DeltaLake,
    teachers: TeacherPool,
) -> dg.MaterializeResult:
    rs = run_sessions(context, lake, AGENT_STEPS)
    keys = rs.keys
    pool = teachers.pool_spec()
    cap = config.max_steps_per_session
    cap = pool.max_steps_per_session if cap is None else (cap or None)
    steps = select_steps(
        lake.read(AGENT_STEPS, columns=STEP_COLUMNS, scope=rs.scope).to_pylist(), cap
    )
    budget = config.budget_usd if config.budget_usd is not None else pool.budget_usd
    context.log.info(
        f"teacher asking: {len(steps)} steps x {len(pool.teachers)} teachers "
        f"({', '.join(t.name for t in pool.teachers)}) over {len(keys)} session(s), "
        f"{'all steps' if cap is None else f'first {cap} steps'} per session, "
        f"budget {'unlimited' if budget is None else f'${budget:.2f}'}"
    )
    cache = DeltaResponseCache(
        lake, flush_seconds=pool.cache.flush_seconds, flush_rows=pool.cache.flush_rows,
        compact_min_files=pool.cache.compact_min_files, spool_fsync=pool.cache.spool_fsync,
    )

    async def run() -> AskResult:
        async with teachers.open(pool) as tset:
            return await ask_teachers(steps, tset, cache, Budget(budget),
                                reserve_bytes_per_token=pool.reserve_bytes_per_token,
                                run_id=context.run.run_id, log=context.log)

    out = asyncio.run(run())
    if out.cache_stats.get("unflushed"):
        context.log.warning(f"{out.cache_stats['unflushed']} answers could not be written to the cache")
    if out.errors_by_kind:
        context.log.warning(f"teacher errors by kind: {orjson.dumps(dict(out.errors_by_kind)).decode()}")
    res = lake.replace_sessions(TEACHER_RESPONSES, rs.stamp(out.rows), rs.scope)
    md = res.metadata()
    md.update(ask_metadata(out, len(steps), len(pool.teachers)))
    md["teacher_pool"] = teachers.source()
    md["cache_table"] = dg.MetadataValue.path(lake.uri(TEACHER_CACHE))
    return dg.MaterializeResult(metadata=md)
