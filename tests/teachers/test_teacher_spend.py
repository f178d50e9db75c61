"""Spend control while asking teachers: the per-teacher circuit breaker and the pre-filter,
against real loopback OpenAI-compatible servers, through the asset too."""

from __future__ import annotations

import asyncio
import json
import re

import dagster as dg

from assets.teachers.ask import ask_teachers, nothing_to_answer
from assets.teachers.assets import teacher_responses
from assets.teachers.pool import PoolSpec, TeacherPool, TeacherSet
from assets.teachers.tables import TEACHER_RESPONSES
from assets.traces.tables import AGENT_STEPS
from resources.lake import DeltaLake
from tests.rag.loopback import LoopbackLLM
from tests.teachers.conftest import http_teacher, pool_yaml, agent_step_row, step
from tests.sessions import DAY, put_sessions


def run(steps, pool: PoolSpec):
    async def go():
        async with TeacherSet(pool) as ts:
            return await ask_teachers(steps, ts, None, None, circuit_breaker=pool.circuit_breaker,
                                prefilter=pool.prefilter)

    return asyncio.run(go())


def _step_no(body) -> int:
    return int(re.search(r"step (\d+)", body["messages"][-1]["content"]).group(1))


def test_a_garbage_teacher_is_stopped_after_n_calls(server):
    steps = [step(i, f"step {i}: fix the failing test") for i in range(30)]
    with LoopbackLLM(reply="I'm sorry, but I can't help with that request.", model="garbage") as garbage:
        pool = PoolSpec.model_validate({
            "teachers": [http_teacher(garbage.base_url, "garbage", max_concurrency=1),
                         http_teacher(server.url, "good", max_concurrency=4)],
            "circuit_breaker": {"window": 6, "max_flagged_share": 0.5},
        })
        out = run(steps, pool)
        assert garbage.count == 6  # paid for the window, then paused for the rest of the run
    assert server.calls == 30  # the good teacher is not affected
    rows = [r for r in out.rows if r["teacher"] == "garbage"]
    assert [r["status"] for r in rows] == ["ok"] * 6 + ["skipped_breaker"] * 24
    assert all(r["flags"] == ["refusal"] for r in rows[:6])
    assert "6 of the last 6 answers flagged (refusal: 6)" in rows[-1]["error"]
    tot = out.totals["garbage"]
    assert (tot.calls, tot.skipped_breaker, tot.breaker_after_calls) == (6, 24, 6)
    assert all(r["status"] == "ok" for r in out.rows if r["teacher"] == "good")
    sc = out.spend_control()
    assert sc["paused_teachers"]["garbage"]["after_calls"] == 6 and sc["skipped_breaker"] == 24
    assert sc["saved_calls"] == 24 and sc["saved_usd_estimate"] > 0 and sc["saved_tokens_estimate"] > 0
    assert "| skipped_breaker |" in out.markdown()


def test_a_teacher_under_the_threshold_keeps_going():
    # 2 of every 5 answers are empty: 40% flagged never exceeds 50%
    with LoopbackLLM(reply=lambda body: "" if _step_no(body) % 5 < 2 else "Run the tests first.",
                     model="meh") as srv:
        pool = PoolSpec.model_validate({
            "teachers": [http_teacher(srv.base_url, "meh", max_concurrency=1)],
            "circuit_breaker": {"window": 5, "max_flagged_share": 0.5},
        })
        out = run([step(i, f"step {i}") for i in range(20)], pool)
        assert srv.count == 20
    assert not out.totals["meh"].breaker_tripped
    assert sum("empty" in r["flags"] for r in out.rows) == 8
    # the same teacher with the breaker off and a stricter one
    with LoopbackLLM(reply=lambda body: "" if _step_no(body) % 5 < 2 else "Run the tests first.") as srv:
        strict = PoolSpec.model_validate({
            "teachers": [http_teacher(srv.base_url, "meh", max_concurrency=1)],
            "circuit_breaker": {"window": 5, "max_flagged_share": 0.3},
        })
        out = run([step(i, f"step {i}") for i in range(20)], strict)
        assert srv.count == 5 and out.totals["meh"].breaker_tripped
        off = strict.model_copy(update={"circuit_breaker": strict.circuit_breaker.model_copy(
            update={"enabled": False})})
        run([step(i, f"step {i} again") for i in range(20)], off)
        assert srv.count == 25


def test_unpriced_teachers_are_not_paused_unless_asked():
    steps = [step(i, f"step {i}") for i in range(8)]
    with LoopbackLLM(reply="", model="free") as srv:
        free = http_teacher(srv.base_url, "free", max_concurrency=1, price_input_per_mtok=0.0,
                            price_output_per_mtok=0.0)
        pool = PoolSpec.model_validate({"teachers": [free], "circuit_breaker": {"window": 3}})
        out = run(steps, pool)
        assert srv.count == 8 and not out.totals["free"].breaker_tripped
        strict = PoolSpec.model_validate({"teachers": [free],
                                          "circuit_breaker": {"window": 3, "priced_only": False}})
        run([step(i, f"again {i}") for i in range(8)], strict)
        assert srv.count == 8 + 3


def test_prefilter_does_not_pay_for_steps_that_cannot_be_answered(server):
    long_ctx = step(1, "please review this file:\n" + "x = 1\n" * 4000)
    ends_with_assistant = step(2, "continue")
    msgs = json.loads(ends_with_assistant["messages"]) + [{"role": "assistant", "content": "I will look."}]
    ends_with_assistant["messages"] = json.dumps(msgs)
    steps = [step(0, "a normal question"), long_ctx, ends_with_assistant]
    pool = PoolSpec.model_validate({"teachers": [
        http_teacher(server.url, "small", context_window=2048),
        http_teacher(server.url, "big", context_window=200_000, temperature=0.3)]})
    out = run(steps, pool)
    status = {(r["step_id"], r["teacher"]): r for r in out.rows}
    assert status[("s1:0", "small")]["status"] == status[("s1:0", "big")]["status"] == "ok"
    over = status[("s1:1", "small")]
    assert over["status"] == "skipped_prefilter" and "over_window" in over["error"]
    assert status[("s1:1", "big")]["status"] == "ok"  # its window holds the context
    for t in ("small", "big"):
        r = status[("s1:2", t)]
        assert r["status"] == "skipped_prefilter" and "assistant message" in r["error"]
    assert server.calls == 3
    sc = out.spend_control()
    assert sc["skipped_prefilter"] == {"over_window": 1, "nothing_to_answer": 2}
    assert sc["saved_calls"] == 3 and sc["saved_usd_estimate"] > 0
    # with the pre-filter off every request is sent
    server.reset()
    off = PoolSpec.model_validate({**pool.model_dump(),
                                   "prefilter": {"over_window": False, "nothing_to_answer": False}})
    run(steps, off)
    assert server.calls == 6


def test_nothing_to_answer_rules():
    assert nothing_to_answer([]) == "empty context"
    assert nothing_to_answer([{"role": "user", "content": "hi"}]) is None
    assert nothing_to_answer([{"role": "system", "content": "s"}, {"role": "user", "content": " "}])
    assert nothing_to_answer([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}])
    assert nothing_to_answer([{"role": "user", "content": [{"type": "text", "text": "hi"}]}]) is None
    assert nothing_to_answer([{"role": "tool", "content": "exit 1"}]) is None


def test_asset_metadata_says_what_was_saved(tmp_path):
    lake = DeltaLake(root=str(tmp_path))
    put_sessions(lake, AGENT_STEPS, [agent_step_row(i, f"step {i}", "sA") for i in range(8)])
    with LoopbackLLM(reply="", model="garbage") as garbage:
        teachers = TeacherPool(config_yaml=pool_yaml(
            [http_teacher(garbage.base_url, "garbage", max_concurrency=1)],
            circuit_breaker={"window": 3, "max_flagged_share": 0.5}))
        instance = dg.DagsterInstance.ephemeral()
        res = dg.materialize([teacher_responses], partition_key=DAY, instance=instance,
                             resources={"lake": lake, "teachers": teachers})
        assert res.success and garbage.count == 3
    md = res.asset_materializations_for_node(teacher_responses.op.name)[0].metadata
    assert md["skipped_breaker"].value == 5
    sc = md["spend_control"].value
    assert sc["paused_teachers"]["garbage"]["after_calls"] == 3 and sc["saved_calls"] == 5
    statuses = lake.read(TEACHER_RESPONSES).column("status").to_pylist()
    assert sorted(statuses) == ["ok"] * 3 + ["skipped_breaker"] * 5
