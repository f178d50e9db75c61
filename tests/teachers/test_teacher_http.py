"""The HTTP teacher against a real loopback server: faults, cache, rate limits, tools."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from assets.teachers.cache import DeltaResponseCache
from assets.teachers.ask import ask_teachers
from assets.teachers.tables import TEACHER_CACHE
from resources.lake import DeltaLake
from assets.teachers.pool import PoolSpec, TeacherSet, load_pool_spec
from resources.model_client import TokenBucket
from tests.teachers.conftest import http_teacher, step

# content -> (final status, requests the server sees when nothing else goes wrong);
# the teacher makes up to 4 attempts.
FAULTS = {
    "plain": ("ok", 1),
    "[[429x1]] rate limited once": ("ok", 2),
    "[[500x2]] two 500s": ("ok", 3),
    "[[500x9]] always 500": ("error", 4),
    "[[slowx1]] slow once": ("ok", 2),
    "[[slowx4]] slow 4 times": ("error", 4),
    "[[malformed]] not json": ("error", 1),
    "[[dropx1]] dropped once": ("ok", 2),
    "[[dropx9]] always dropped": ("error", 4),
    "[[empty]] no choices": ("error", 1),
    "[[refuse]] refuses": ("ok", 1),
    "[[length]] truncated": ("ok", 1),
    "[[tool]] calls a tool": ("ok", 1),
    "[[badtool]] bad tool json": ("ok", 1),
    "[[nousage]] no usage": ("ok", 1),
}


def run(steps, pool: PoolSpec, cache=None, budget=None):
    async def go():
        async with TeacherSet(pool) as ts:
            return await ask_teachers(steps, ts, cache, budget)

    return asyncio.run(go())


def test_faults_end_as_answers_or_errors_and_rerun_makes_no_calls(server, tmp_path):
    lake = DeltaLake(root=str(tmp_path))
    steps = [step(i, c) for i, c in enumerate(FAULTS)]
    pool = PoolSpec.model_validate({"teachers": [http_teacher(server.url, max_attempts=4)]})
    out = run(steps, pool, DeltaResponseCache(lake, flush_seconds=0.1))

    by_content = {json.loads(s["messages"])[-1]["content"]: r for s, r in zip(steps, out.rows)}
    for content, (status, requests) in FAULTS.items():
        row = by_content[content]
        assert row["status"] == status, (content, row["error"])
        # exact on a quiet machine; an attempt that times out client-side under heavy load
        # before or after reaching the server shifts the count by one
        assert abs(server.by_content[content] - requests) <= 1, content
    kinds = {c: by_content[c]["error"].split(":")[0] for c, (s, _) in FAULTS.items() if s == "error"}
    assert kinds == {"[[500x9]] always 500": "http_500", "[[slowx4]] slow 4 times": "timeout",
                     "[[malformed]] not json": "malformed_json",
                     "[[dropx9]] always dropped": "connection", "[[empty]] no choices": "empty_choices"}
    # Retry-After: 1 was honoured between the 429 and the retry
    t = server.times_by_content["[[429x1]] rate limited once"]
    assert t[1] - t[0] >= 0.9
    # flags, tool calls passed through and kept
    assert by_content["[[refuse]] refuses"]["flags"] == ["refusal"]
    assert by_content["[[length]] truncated"]["flags"] == ["truncated"]
    assert by_content["[[badtool]] bad tool json"]["flags"] == ["invalid_tool_json"]
    assert by_content["[[nousage]] no usage"]["flags"] == ["usage_estimated"]
    tool_row = by_content["[[tool]] calls a tool"]
    assert tool_row["flags"] == [] and tool_row["finish_reason"] == "tool_calls"
    call = json.loads(tool_row["message"])["tool_calls"][0]
    assert call["function"] == {"name": "read_file", "arguments": '{"path": "README.md"}'}
    ok = [r for r in out.rows if r["status"] == "ok"]
    assert all(r["cost_usd"] > 0 and r["input_tokens"] > 0 for r in ok)
    assert out.spent_usd == pytest.approx(sum(r["cost_usd"] for r in ok))
    assert lake.read(TEACHER_CACHE).num_rows == len(ok)  # every success persisted

    # second materialization: 0 calls for the successes, errors are retried
    server.reset()
    out2 = run(steps, pool, DeltaResponseCache(lake, flush_seconds=0.1))
    ok_contents = {c for c, (s, _) in FAULTS.items() if s == "ok"}
    assert not set(server.by_content) & ok_contents
    assert set(server.by_content) == set(FAULTS) - ok_contents
    assert out2.cached == len(ok_contents)
    cached = [r for r in out2.rows if r["cached"]]
    assert {r["request_hash"] for r in cached} == {r["request_hash"] for r in ok}
    assert all(r["status"] == "ok" for r in cached)


def test_request_hash_is_content_addressed(server, monkeypatch):
    base = http_teacher(server.url, api_key_env="TEACHER_KEY_X")
    s = step(0, "hello")
    t1 = TeacherSet(PoolSpec.model_validate({"teachers": [base]})).teachers[0]
    monkeypatch.setenv("TEACHER_KEY_X", "key-one")
    h1 = t1.build_request(s["messages"], s["tools"]).request_hash
    monkeypatch.setenv("TEACHER_KEY_X", "key-two")  # the key is not part of the address
    assert t1.build_request(s["messages"], s["tools"]).request_hash == h1
    # timeouts / concurrency / the teacher's name do not change the answer: same address
    same = dict(base, name="other", timeout=9, max_concurrency=2)
    t_same = TeacherSet(PoolSpec.model_validate({"teachers": [same]})).teachers[0]
    assert t_same.build_request(s["messages"], s["tools"]).request_hash == h1
    for change in ({"temperature": 0.5}, {"seed": 3}, {"model": "x"}, {"system_prompt": "be brief"},
                   {"max_tokens": 7}, {"base_url": server.url + "/x"}):
        t = TeacherSet(PoolSpec.model_validate({"teachers": [dict(base, **change)]})).teachers[0]
        assert t.build_request(s["messages"], s["tools"]).request_hash != h1, change
    assert t1.build_request(s["messages"], None).request_hash != h1


def test_identical_requests_are_sent_once_and_system_prompt_applied(server):
    server.keep_bodies = True
    steps = [step(0, "same"), step(1, "same"), step(2, "other")]
    pool = PoolSpec.model_validate({"teachers": [
        http_teacher(server.url, system_prompt="Be terse.", system_prompt_mode="replace")]})
    out = run(steps, pool)
    assert server.calls == 2
    assert [r["status"] for r in out.rows] == ["ok"] * 3
    assert out.totals["remote"].shared == 1
    body = server.bodies[0]
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert body["tools"][0]["function"]["name"] == "read_file" and body["tool_choice"] == "auto"
    assert body["messages"][2]["tool_calls"][0]["function"]["name"] == "read_file"


def test_rate_limit_and_concurrency_bounds(server):
    server.latency = 0.05
    steps = [step(i, f"rpm {i}") for i in range(30)]
    # 600 rpm = 10/s with a 2 s burst (20): 30 calls need >= ~1 s
    pool = PoolSpec.model_validate({"teachers": [http_teacher(server.url, requests_per_minute=600,
                                                              max_concurrency=4)]})
    t0 = time.perf_counter()
    out = run(steps, pool)
    assert time.perf_counter() - t0 >= 0.9
    assert all(r["status"] == "ok" for r in out.rows) and server.calls == 30


def test_token_bucket_paces_tokens():
    async def go():
        b = TokenBucket(rate_per_minute=60000, capacity=100)  # 1000 tokens/s, bursts of 100
        t0 = time.perf_counter()
        for _ in range(4):
            await b.acquire(100)  # a full bucket, then 3 refills of 0.1 s
        await b.acquire(250)  # larger than the bucket: waits for a full one and owes the rest
        await b.acquire(1)  # pays the debt first
        return time.perf_counter() - t0

    assert 0.5 <= asyncio.run(go()) < 2.0  # 0.3 + 0.1 + 0.151 s


def test_shipped_pool_files_load():
    default = load_pool_spec()
    assert [t.provider for t in default.teachers] == ["local"] * 3
    assert len({(t.system_prompt, t.temperature) for t in default.teachers}) == 3
    remote = load_pool_spec("recipes/teachers.example-openrouter.yaml")
    assert {t.api_key_env for t in remote.teachers if t.base_url.startswith("https")} == {"OPENROUTER_API_KEY"}
    with pytest.raises(ValueError):
        PoolSpec.model_validate({"teachers": [{"name": "x", "model": "m", "base_url": "http://h",
                                               "api_key_env": "sk-abc/def"}]})


def test_request_hashes_of_existing_caches_do_not_change():
    """The address scheme of silver/teacher_cache: a change would make every cached answer be paid again.
    The expected values were computed by the client before the one-model-client refactor (main 29e5ae4)."""
    pool = PoolSpec.model_validate({"teachers": [
        {"name": "r", "base_url": "http://h/v1", "model": "m", "system_prompt": "be brief", "temperature": 0.3,
         "seed": 1},
        {"name": "l", "provider": "local", "model": "smollm2-135m", "max_tokens": 48, "max_context_tokens": 512}]})
    msgs = json.dumps([{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"},
                       {"role": "assistant", "content": None, "tool_calls": [
                           {"id": "a", "type": "function", "function": {"name": "Read", "arguments": {"p": 1}}}]},
                       {"role": "tool", "tool_call_id": "a", "content": "x"}])
    tools = json.dumps([{"type": "function", "function": {"name": "Read", "parameters": {}}}])
    assert [t.build_request(msgs, tools).request_hash for t in TeacherSet(pool).teachers] == [
        "0598879c89acd044b53e90cb1ce9c3b5cb04d8a3b91fc58f68b27b261f05c75d",
        "6f67660019ffb1c423bd86ac18c62d67c7e90bee7ecf5678ac9896231b5124bb"]
