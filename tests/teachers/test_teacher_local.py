"""The local teacher: a real transformers model generating in batches off the event loop."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from assets.teachers.ask import ask_teachers
from assets.teachers.pool import PoolSpec, TeacherPool, TeacherSet
from tests.teachers.conftest import http_teacher, step


def local(model: str, name: str = "tiny", **kw) -> dict:
    d = {"name": name, "provider": "local", "model": model, "max_tokens": 8,
         "max_context_tokens": 256, "batch_size": 4, "torch_threads": 1}
    d.update(kw)
    return d


def run(steps, pool, **kw):
    async def go():
        async with TeacherSet(pool) as ts:
            return await ask_teachers(steps, ts, None, None, **kw)

    return asyncio.run(go())


def test_batched_left_padded_generation_matches_one_by_one(tiny_llama):
    steps = [step(0, "hi"), step(1, "print hello world " * 6), step(2, "pytest failed: AssertionError")]
    batched = run(steps, PoolSpec.model_validate({"teachers": [local(tiny_llama)]}))
    single = run(steps, PoolSpec.model_validate({"teachers": [local(tiny_llama, batch_size=1)]}))
    assert [r["status"] for r in batched.rows] == ["ok"] * 3
    assert [r["text"] for r in batched.rows] == [r["text"] for r in single.rows]
    for r in batched.rows:
        assert r["cost_usd"] == 0.0 and r["input_tokens"] > 10
        assert 1 <= r["output_tokens"] <= 8 and r["finish_reason"] in ("stop", "length")
        assert ("truncated" in r["flags"]) == (r["finish_reason"] == "length")
        assert json.loads(r["message"])["role"] == "assistant"


def test_long_context_is_cut_from_the_left_keeping_the_system_prompt(tiny_llama):
    pool = PoolSpec.model_validate({"teachers": [local(tiny_llama, max_context_tokens=64,
                                                       system_prompt="SYS rules")]})
    teacher = TeacherSet(pool).teachers[0]
    tok, _ = teacher._model()
    s = step(0, "the last user message " + "word " * 200)
    req = teacher.build_request(s["messages"], s["tools"])
    ids, truncated = teacher._encode(tok, req.body["messages"], req.body["max_tokens"])
    assert truncated and len(ids) == 64 - 8
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\nSYS rules") and text.endswith("<|im_start|>assistant\n")
    out = run([s], pool)
    assert "context_truncated" in out.rows[0]["flags"] and out.rows[0]["input_tokens"] == 56


def test_local_generation_does_not_block_http_teachers(tiny_llama, server):
    server.latency = 0.02
    steps = [step(i, f"concurrent {i} " + "text " * 40) for i in range(12)]
    pool = PoolSpec.model_validate({"teachers": [
        local(tiny_llama, max_tokens=24, batch_size=2), http_teacher(server.url, "remote", max_concurrency=4)]})
    gaps: list[float] = []

    async def go():
        async with TeacherSet(pool) as ts:
            task = asyncio.create_task(ask_teachers(steps, ts, None, None))
            last = time.perf_counter()
            while not task.done():
                await asyncio.sleep(0.005)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now
            return task.result()

    out = asyncio.run(go())
    assert all(r["status"] == "ok" for r in out.rows) and server.calls == 12
    assert out.totals["tiny"].ok == 12
    assert max(gaps) < 0.25  # the loop kept running while the model generated


@pytest.mark.slow
def test_embedded_smollm2_answers_through_the_default_pool():
    """The one test on the real SmolLM2-135M GGUF (first load converts the GGUF: slow on CPU)."""
    pool = TeacherPool(only=["smol-greedy"]).pool_spec()
    pool.teachers[0] = pool.teachers[0].model_copy(update={"max_tokens": 8, "torch_threads": 1})
    msg = json.dumps([{"role": "user", "content": "What is the capital of France?"}])
    out = run([{"session_key": "s", "step_id": "s:0", "messages": msg, "tools": None}], pool)
    row = out.rows[0]
    assert row["status"] == "ok" and row["provider"] == "local" and row["cost_usd"] == 0.0
    assert "Paris" in row["text"]
