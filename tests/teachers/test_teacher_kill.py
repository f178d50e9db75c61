"""kill -9 in the middle of asking the teachers, restart: no successful call is paid for twice.

Every answer is written to a local write-ahead spool the moment it arrives, so this holds
even when the kill lands right after the answers, long before the Delta cache's flush.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from assets.teachers.cache import DeltaResponseCache, default_spool_dir
from assets.teachers.ask import ask_teachers
from assets.teachers.tables import TEACHER_CACHE
from resources.lake import DeltaLake
from assets.teachers.pool import TeacherSet, load_pool_spec
from tests.teachers.conftest import http_teacher, pool_yaml, step

ROOT = Path(__file__).resolve().parents[2]


def held_rows(lake: DeltaLake) -> int:
    return lake.read(TEACHER_CACHE, columns=["request_hash"]).num_rows if lake.exists(TEACHER_CACHE) else 0


@pytest.mark.parametrize("flush_seconds,wait_for_delta", [
    (0.1, True),  # killed after the 6 answers reached the Delta cache
    (30.0, False),  # killed right after the 6 answers arrived: only the spool holds them
], ids=["after-delta-flush", "before-delta-flush"])
def test_kill_9_mid_run_then_restart_repeats_no_successful_call(server, tmp_path, monkeypatch,
                                                                flush_seconds, wait_for_delta):
    monkeypatch.delenv("TRACELAKE_SPOOL_DIR", raising=False)
    server.latency = 0.3  # a slow teacher
    server.hang_after = 6  # then every request hangs: the run is stuck mid-way
    contents = [f"kill test step {i}" for i in range(16)]
    steps = [step(i, c) for i, c in enumerate(contents)]
    (tmp_path / "steps.json").write_text(json.dumps(steps))
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(pool_yaml([http_teacher(server.url, "slow", timeout=60, max_concurrency=4)],
                                   cache={"flush_seconds": flush_seconds}))
    lake = DeltaLake(root=str(tmp_path / "lake"))
    spool = default_spool_dir(lake)
    assert spool == tmp_path / "lake" / "_spool" / "teacher_cache"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.teachers.ask_worker", lake.root,
         str(tmp_path / "steps.json"), str(pool_file)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if server.ok >= 6 and (not wait_for_delta or held_rows(lake) >= 6):
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        assert server.ok == 6
        if not wait_for_delta:
            time.sleep(0.2)  # the last answer crosses loopback; far below the 30 s flush
        assert held_rows(lake) == (6 if wait_for_delta else 0)  # nothing committed: spool only
        assert server.calls > 6  # requests are in flight when it dies
        assert proc.poll() is None
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert len(list(spool.glob("*.jsonl"))) == 1  # the dead run's spool is left behind
    spooled = (next(spool.glob("*.jsonl"))).read_bytes()
    assert spooled.count(b"\n") == 6
    assert b"Bearer" not in spooled and b"api_key" not in spooled.lower()
    answered_before = {c for c, n in server.ok_by_content.items() if n}
    assert len(answered_before) == 6

    # restart (same pool, same lake) and run to the end
    server.hang_after = None
    server.latency = 0.0
    pool = load_pool_spec(pool_file)

    async def go():
        async with TeacherSet(pool) as ts:
            return await ask_teachers(steps, ts, DeltaResponseCache(lake, flush_seconds=0.1), None)

    out = asyncio.run(go())
    assert [r["status"] for r in out.rows] == ["ok"] * 16
    assert out.cached == 6 and out.calls == 10
    # ZERO repeated successful calls: every answer was paid for exactly once
    assert all(server.ok_by_content[c] == 1 for c in contents), dict(server.ok_by_content)
    assert server.ok == 16
    assert {r["step_id"] for r in out.rows if r["cached"]} == {
        s["step_id"] for s, c in zip(steps, contents) if c in answered_before}
    cache = lake.read(TEACHER_CACHE)
    assert cache.num_rows == 16 and len(set(cache.column("request_hash").to_pylist())) == 16
    assert not list(spool.glob("*")), list(spool.glob("*"))  # folded in, then deleted
