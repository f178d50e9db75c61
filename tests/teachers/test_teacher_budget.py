"""The per-run budget: worst-case reservations keep concurrent calls within it."""

from __future__ import annotations

import asyncio

from assets.teachers.ask import Budget, ask_teachers
from assets.teachers.pool import PoolSpec, TeacherSet
from tests.teachers.conftest import http_teacher, step


def test_tiny_budget_stops_calls_and_is_never_exceeded(server):
    server.latency = 0.02
    steps = [step(i, f"budget {i}") for i in range(20)]
    # $1000 per M tokens both ways = $0.001 a token; ~0.19 $ a call, ~0.40 $ reserved a call
    pool = PoolSpec.model_validate({"teachers": [http_teacher(
        server.url, price_input_per_mtok=1000.0, price_output_per_mtok=1000.0, max_tokens=10,
        max_concurrency=8)]})

    async def go():
        async with TeacherSet(pool) as ts:
            return await ask_teachers(steps, ts, None, Budget(1.0))

    out = asyncio.run(go())
    statuses = [r["status"] for r in out.rows]
    ok = [r for r in out.rows if r["status"] == "ok"]
    assert 2 <= len(ok) < 20
    assert statuses.count("skipped_budget") == 20 - len(ok)
    assert statuses[: len(ok)] == ["ok"] * len(ok)  # the steps are served in order
    assert server.calls == len(ok)  # nothing was sent for a skipped step
    spent = sum(r["cost_usd"] for r in ok)
    assert abs(out.spent_usd - spent) < 1e-9 and spent <= 1.0
    assert out.totals["remote"].skipped_budget == 20 - len(ok)


def test_budget_reservations_wait_for_in_flight_calls():
    async def go():
        b = Budget(1.0)
        assert await b.reserve(0.6)
        waiter = asyncio.create_task(b.reserve(0.6))  # does not fit until the first settles
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await b.settle(0.6, 0.3)  # real cost was lower: room for the second
        assert await waiter
        await b.settle(0.6, 0.5)
        assert not await b.reserve(0.3)  # 0.8 spent, nothing in flight: exhausted
        assert b.exhausted and b.spent == 0.8
        assert await b.reserve(0.0)  # free (local) teachers are never stopped

    asyncio.run(go())
