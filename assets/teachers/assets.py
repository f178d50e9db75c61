"""teacher_responses (+ teacher_cache): every agent step answered by every teacher of the pool."""


import asyncio
import collections
from typing import Optional

import dagster as dg
import orjson
from pydantic import Field

from assets.checks import table_check
from assets.traces.partitions import SESSION_BACKFILL, SESSIONS, run_sessions
from assets.teachers.cache import DeltaResponseCache
from assets.teachers.ask import AskResult, Budget, ask_teachers
from assets.teachers.pool import TeacherPool
from assets.teachers.tables import TEACHER_CACHE, TEACHER_RESPONSES
from assets.traces.tables import AGENT_STEPS
from resources.lake import DeltaLake

STEP_COLUMNS = ["session_key", "step_id", "step_index", "messages", "tools", "caused_error", "is_error_site"]


class TeacherAskConfig(dg.Config):
    max_steps_per_session: Optional[int] = Field(
        default=None,
        description="Ask about at most N steps of each session (0: all; unset: the pool's cap): the "
                    "steps whose tool call failed first (they make error-site pairs), then the turns "
                    "right after a failure, then the rest, each in session order.",
    )
    budget_usd: Optional[float] = Field(
        default=None, description="Per-run budget in USD (overrides the pool's)."
    )


def step_priority(r: dict) -> int:
    """0: the step's own call failed (an error site's rejected answer); 1: the turn right
    after a failed tool result; 2: any other step."""
    return 0 if r.get("caused_error") else 1 if r.get("is_error_site") else 2


def select_steps(rows: list[dict], max_steps_per_session: Optional[int]) -> list[dict]:
    """The steps to ask teachers about, in session order. Under a cap, each session's steps
    are taken by :func:`step_priority` first (error sites are what yields pairs), then order."""
    order = lambda r: (r["session_key"], r["step_index"], r["step_id"])  # noqa: E731
    rows = sorted(rows, key=order)
    if max_steps_per_session is None:
        return rows
    by_session: dict[str, list[dict]] = collections.defaultdict(list)
    for r in rows:
        by_session[r["session_key"]].append(r)
    out = []
    for steps in by_session.values():
        out += sorted(steps, key=lambda r: (step_priority(r), r["step_index"], r["step_id"]))[:max_steps_per_session]
    return sorted(out, key=order)


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
    steps = select_steps(
        lake.read(AGENT_STEPS, columns=STEP_COLUMNS, scope=rs.scope).to_pylist(), cap
    )
    budget = config.budget_usd if config.budget_usd is not None else pool.budget_usd
    context.log.info(
        f"teacher asking: {len(steps)} steps x {len(pool.teachers)} teachers "
        f"({', '.join(t.name for t in pool.teachers)}) over {len(keys)} session(s), "
        f"{'all steps' if cap is None else f'at most {cap} steps (error sites first)'} per session, "
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
        "teacher_pool": teachers.source(), "cache_table": dg.MetadataValue.path(lake.uri(TEACHER_CACHE))})
    cached = lake.state(TEACHER_CACHE, rows_written=cache.rows_written, mode="append")
    yield dg.MaterializeResult(asset_key=TEACHER_CACHE.asset_key, metadata=cached.metadata() | cache.metadata())


ASSETS = [teacher_responses]
CHECKS = [table_check(TEACHER_CACHE)]

defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, resources={"teachers": TeacherPool()})
