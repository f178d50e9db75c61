"""kill -9 in the middle of a replay, restart: no successful call is paid for twice."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from assets.teachers.cache import DeltaResponseCache
from assets.teachers.replay import replay
from assets.teachers.tables import TEACHER_CACHE
from resources.lake import DeltaLake
from resources.teachers import TeacherSet, load_pool_spec
from tests.teachers.conftest import http_teacher, pool_yaml, step

ROOT = Path(__file__).resolve().parents[2]


def test_kill_9_mid_run_then_restart_repeats_no_successful_call(server, tmp_path):
    server.latency = 0.3  # a slow teacher
    server.hang_after = 6  # then every request hangs: the run is stuck mid-way
    contents = [f"kill test step {i}" for i in range(16)]
    steps = [step(i, c) for i, c in enumerate(contents)]
    (tmp_path / "steps.json").write_text(json.dumps(steps))
    pool_file = tmp_path / "pool.yaml"
    pool_file.write_text(pool_yaml([http_teacher(server.url, "slow", timeout=60, max_concurrency=4)],
                                   cache={"flush_seconds": 0.1}))
    lake = DeltaLake(root=str(tmp_path / "lake"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.teachers.replay_worker", lake.root,
         str(tmp_path / "steps.json"), str(pool_file)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        held = 0
        while time.monotonic() < deadline:
            held = lake.read(TEACHER_CACHE, columns=["request_hash"]).num_rows if lake.exists(TEACHER_CACHE) else 0
            if server.ok >= 6 and held >= 6:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert held == 6, held
        assert server.calls > 6  # requests are in flight when it dies
        assert proc.poll() is None
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    answered_before = {c for c, n in server.ok_by_content.items() if n}
    assert len(answered_before) == 6

    # restart (same pool, same lake) and run to the end
    server.hang_after = None
    server.latency = 0.0
    pool = load_pool_spec(pool_file)

    async def go():
        async with TeacherSet(pool) as ts:
            return await replay(steps, ts, DeltaResponseCache(lake, flush_seconds=0.1), None)

    out = asyncio.run(go())
    assert [r["status"] for r in out.rows] == ["ok"] * 16
    assert out.cached == 6 and out.calls == 10
    assert all(server.ok_by_content[c] == 1 for c in contents), dict(server.ok_by_content)
    assert {r["step_id"] for r in out.rows if r["cached"]} == {
        s["step_id"] for s, c in zip(steps, contents) if c in answered_before}
    assert lake.read(TEACHER_CACHE).num_rows == 16
