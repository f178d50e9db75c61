"""teacher_responses (+ teacher_cache): every agent step answered by every teacher of the pool."""


import asyncio
from typing import Optional

import dagster as dg
import orjson
from pydantic import Field

from assets.checks import table_check
from assets.traces.partitions import SESSION_BACKFILL, SESSIONS, run_sessions
from assets.teachers.cache import DeltaResponseCache
from assets.teachers.ask import AskResult, Budget, ask_teachers
from assets.teachers.pool import TeacherPool
from assets.teachers.select import STEP_COLUMNS, count_classes, select_steps
from assets.traces.failures import load_failure_policy
from assets.teachers.tables import TEACHER_CACHE, TEACHER_RESPONSES
from assets.traces.tables import AGENT_STEPS
from resources.lake import DeltaLake

class TeacherAskConfig(dg.Config):
    max_steps_per_session: Optional[int] = Field(
        default=None,
        description="Ask about at most N steps of each session (0: all; unset: the pool's cap): the "
                    "steps whose tool call was a mistake first (they make error-site pairs), then other "
                    "failed calls, then the turns right after a failure, then the rest, each in session order.",
    )
    ask_steps: Optional[str] = Field(
        default=None, description="all | failed_calls | mistakes (unset: the pool's ask_steps).")
    budget_usd: Optional[float] = Field(
        default=None, description="Per-run budget in USD (overrides the pool's)."
    )


@dg.multi_asset(
    name="silver__teacher_responses",
    specs=[
        TEACHER_RESPONSES.asset_spec(deps=[AGENT_STEPS.asset_key], partitions_def=SESSIONS,
                                     group_name="teachers"),
        # not partitioned: one cache for every session, written as the answers arrive
        TEACHER_CACHE.asset_spec(group_name="teachers"),
    ],
    backfill_policy=SESSION_BACKFILL,
    description="Every agent step asked of every teacher of the pool; every answer goes to the "
                "response cache as it arrives (a re-run pays for nothing twice).",
)
def teacher_responses(
    context: dg.AssetExecutionContext,
    config: TeacherAskConfig,
    lake: DeltaLake,
    teachers: TeacherPool,
):
    rs = run_sessions(context, lake, AGENT_STEPS)
    keys = rs.keys
    pool = teachers.pool_spec()
    cap = config.max_steps_per_session
    cap = pool.max_steps_per_session if cap is None else (cap or None)
    ask = config.ask_steps or pool.ask_steps
    policy = load_failure_policy(pool.failure_policy or None)
    rows = lake.read(AGENT_STEPS, columns=STEP_COLUMNS, scope=rs.scope).to_pylist()
    steps = select_steps(rows, cap, ask, policy)
    budget = config.budget_usd if config.budget_usd is not None else pool.budget_usd
    context.log.info(
        f"teacher asking: {len(steps)} steps x {len(pool.teachers)} teachers "
        f"({', '.join(t.name for t in pool.teachers)}) over {len(keys)} session(s), "
        f"{'every' if cap is None else f'at most {cap}'} step(s) per session of {ask} "
        f"(mistakes first; steps by class {count_classes(steps, policy)}), "
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
                                run_id=context.run.run_id, log=context.log,
                                circuit_breaker=pool.circuit_breaker, prefilter=pool.prefilter)

    out = asyncio.run(run())
    if out.cache_stats.get("unflushed"):
        context.log.warning(f"{out.cache_stats['unflushed']} answers could not be written to the cache")
    if out.errors_by_kind:
        context.log.warning(f"teacher errors by kind: {orjson.dumps(dict(out.errors_by_kind)).decode()}")
    res = lake.replace_sessions(TEACHER_RESPONSES, rs.stamp(out.rows), rs.scope)
    yield dg.MaterializeResult(asset_key=TEACHER_RESPONSES.asset_key, metadata=res.metadata() | out.metadata() | {
        "teacher_pool": teachers.source(), "cache_table": dg.MetadataValue.path(lake.uri(TEACHER_CACHE)),
        "ask_steps": ask, "steps_by_class": dg.MetadataValue.json(count_classes(steps, policy)),
        "steps_in_scope_by_class": dg.MetadataValue.json(count_classes(rows, policy))})
    cached = lake.state(TEACHER_CACHE, rows_written=cache.rows_written, mode="append")
    yield dg.MaterializeResult(asset_key=TEACHER_CACHE.asset_key, metadata=cached.metadata() | cache.metadata())


ASSETS = [teacher_responses]
CHECKS = [table_check(TEACHER_CACHE)]

defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, resources={"teachers": TeacherPool()})
