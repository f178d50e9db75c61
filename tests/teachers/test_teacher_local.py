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


# ---------------------------------------------------------------- shared batches (one decode loop)
def _forward_rows(model):
    """Instrument a real model: the (rows, tokens) of every forward call (a pre-hook; the
    model runs as it is)."""
    calls: list[tuple[int, int]] = []
    handle = model.register_forward_pre_hook(
        lambda mod, args, kw: calls.append(tuple((kw.get("input_ids") if kw.get("input_ids") is not None
                                                  else args[0]).shape)), with_kwargs=True)
    return calls, handle


def test_decode_loop_matches_generate_greedily_row_by_row(tiny_llama):
    """The shared decode loop gives what ``model.generate`` gives for each prompt alone
    (greedy, with and without a repetition penalty)."""
    import torch

    from resources.model_client import DecodeParams, decode_batch
    from resources.models import load_causal_lm

    tok, model = load_causal_lm(tiny_llama, device="cpu", dtype="float32")
    prompts = [tok(t)["input_ids"] for t in ("hi there", "print hello world " * 6, "pytest failed: AssertionError")]
    for rp in (None, 1.3):
        got = decode_batch(model, tok, prompts, [DecodeParams(12, repetition_penalty=rp)] * 3)
        for p, (new, finish) in zip(prompts, got):
            kw = {"repetition_penalty": rp} if rp else {}
            ref = model.generate(input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                 max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id, **kw)[0, len(p):].tolist()
            ref = ref[: ref.index(tok.eos_token_id) + 1] if tok.eos_token_id in ref else ref
            assert new == ref
            assert finish == ("stop" if new[-1] == tok.eos_token_id else "length")


def test_teachers_of_one_model_share_batches_and_a_shared_prompt_is_prefilled_once(tiny_llama):
    """Three local teachers of one model: ONE worker, batches of sum(batch_size) rows; the two
    teachers without a system prompt of their own send the same context: one prefill."""
    steps = [step(i, f"question {i} " + "word " * (i * 3)) for i in range(4)]
    pool = PoolSpec.model_validate({"teachers": [
        local(tiny_llama, "greedy", batch_size=4),
        local(tiny_llama, "concise", system_prompt="Be brief.", batch_size=4),
        local(tiny_llama, "sampled", temperature=0.9, top_p=0.9, seed=7, batch_size=4)]})
    teacher = TeacherSet(pool).teachers[0]
    _, model = teacher._model()
    calls, handle = _forward_rows(model)
    try:
        out = run(steps, pool)
    finally:
        handle.remove()
    assert [r["status"] for r in out.rows] == ["ok"] * 12
    prefills = [c for c in calls if c[1] > 1]
    decodes = [c for c in calls if c[1] == 1]
    # 4 contexts x (greedy = sampled, concise): 8 distinct prompts, each prefilled once, alone
    assert len(prefills) == 8 and all(rows == 1 for rows, _ in prefills)
    assert decodes[0][0] == 12  # then ONE batch: 12 requests of 4 + 4 + 4 rows decode together


def test_sampled_answers_do_not_depend_on_what_else_is_in_the_batch(tiny_llama):
    """A sampled teacher with a seed draws per request (its seed mixed with the request
    hash): the same answer alone, in a batch, and in another order."""
    steps = [step(i, f"tell me about {i} " + "thing " * i) for i in range(5)]
    pool = PoolSpec.model_validate({"teachers": [
        local(tiny_llama, "sampled", temperature=1.0, top_p=0.95, seed=7, max_tokens=16, batch_size=8)]})
    together = {r["step_id"]: r["text"] for r in run(steps, pool).rows}
    alone = {r["step_id"]: r["text"] for s in steps for r in run([s], pool).rows}
    backwards = {r["step_id"]: r["text"] for r in run(list(reversed(steps)), pool).rows}
    assert together == alone == backwards
    assert len(set(together.values())) > 1
    reseeded = PoolSpec.model_validate({"teachers": [
        local(tiny_llama, "sampled", temperature=1.0, top_p=0.95, seed=8, max_tokens=16, batch_size=8)]})
    assert {r["step_id"]: r["text"] for r in run(steps, reseeded).rows} != together


def test_a_stopped_row_leaves_the_batch(tiny_llama):
    """Rows whose answer is done stop costing: the decode steps after it run without them."""
    steps = [step(0, "short"), step(1, "long")]
    pool = PoolSpec.model_validate({"teachers": [
        local(tiny_llama, "short", max_tokens=2, batch_size=1), local(tiny_llama, "long", max_tokens=9, batch_size=1)]})
    _, model = TeacherSet(pool).teachers[0]._model()
    calls, handle = _forward_rows(model)
    try:
        out = run(steps, pool)
    finally:
        handle.remove()
    assert [r["status"] for r in out.rows] == ["ok"] * 4
    assert max(r["output_tokens"] for r in out.rows if r["teacher"] == "short") <= 2
    # one batch per step (both teachers ask the same context: one prefill row); the short
    # answer's row is in at most one decode step of its batch, the long one's in up to 8
    prefills = [c for c in calls if c[1] > 1]
    decode_rows = [c[0] for c in calls if c[1] == 1]
    assert [c[0] for c in prefills] == [1, 1]
    assert decode_rows.count(2) <= 2 and decode_rows.count(1) >= 1
    assert sum(decode_rows) < 2 * len(decode_rows)


def test_int8_teachers_generate_with_quantized_linear_layers_and_hash_apart(tiny_llama):
    """dtype int8: the float32 weights with every Linear layer dynamically quantized (a copy:
    the float32 model is untouched); its answers are other answers, so its requests hash apart,
    while a float32 request keeps its address (no dtype in its body)."""
    import torch

    pool8 = PoolSpec.model_validate({"teachers": [local(tiny_llama, "q", dtype="int8", max_tokens=6)]})
    pool32 = PoolSpec.model_validate({"teachers": [local(tiny_llama, "q", max_tokens=6)]})
    t8, t32 = TeacherSet(pool8).teachers[0], TeacherSet(pool32).teachers[0]
    s = step(0, "hello")
    r8, r32 = t8.build_request(s["messages"], s["tools"]), t32.build_request(s["messages"], s["tools"])
    assert r8.request_hash != r32.request_hash and "dtype" not in r32.body and r8.body["dtype"] == "int8"
    _, m8 = t8._model()
    _, m32 = t32._model()
    linear = [type(m) for m in m8.modules() if "Linear" in type(m).__name__]
    assert linear and all(t.__module__.startswith("torch.ao.nn.quantized") for t in linear)
    assert all(type(m) is torch.nn.Linear for m in m32.modules() if "Linear" in type(m).__name__)
    out = run([s], pool8)
    assert out.rows[0]["status"] == "ok" and 1 <= out.rows[0]["output_tokens"] <= 6
