"""The write-ahead spool of the teacher cache: recovery of a killed run's file."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone

import orjson

from assets.teachers.cache import DeltaResponseCache, read_spool
from resources.spool import Spool
from assets.teachers.tables import TEACHER_CACHE
from resources.lake import DeltaLake


def row(i: int) -> dict:
    return {"request_hash": f"h{i}", "provider": "openai_compatible", "base_url": "http://x/v1",
            "model": "m", "teacher": "t", "status": "ok", "message": '{"role":"assistant"}',
            "text": f"answer {i}", "finish_reason": "stop", "flags": [], "input_tokens": 3,
            "output_tokens": 2, "cost_usd": 1e-6, "latency_ms": 5.0, "attempts": 1,
            "run_id": "r1", "created_at": datetime(2024, 1, 1, i, tzinfo=timezone.utc)}


def test_recovery_folds_in_new_rows_tolerates_a_truncated_line_and_deletes_the_file(tmp_path):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    spool_dir = tmp_path / "spool"
    lake.append(TEACHER_CACHE, [row(0)])  # h0 already committed before the kill
    sp = Spool(spool_dir, TEACHER_CACHE.schema.names)
    sp.open()
    for i in range(3):
        sp.write({**row(i), "api_key": "sk-SECRET"})  # a stray field never reaches the spool
    sp._f.write(orjson.dumps(row(3))[:40])  # kill -9 mid-write: a cut last line
    sp._f.close()  # the process is gone (its lock with it)
    path = sp.path
    rows, bad = read_spool(path)
    assert [r["request_hash"] for r in rows] == ["h0", "h1", "h2"] and bad == 1
    assert b"sk-SECRET" not in path.read_bytes()

    cache = DeltaResponseCache(lake, spool_dir=spool_dir)
    held = asyncio.run(cache.lookup(["h0", "h1", "h2", "h3"]))
    assert sorted(held) == ["h0", "h1", "h2"]  # h3 was never fully written: asked again
    assert cache.recovered == 2
    assert held["h1"]["text"] == "answer 1" and held["h1"]["created_at"] == row(1)["created_at"]
    assert lake.read(TEACHER_CACHE).num_rows == 3  # h0 not appended twice
    assert not path.exists()


def test_a_live_runs_spool_is_left_alone_and_a_clean_run_leaves_no_file(tmp_path):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    spool_dir = tmp_path / "spool"

    async def go():
        live = DeltaResponseCache(lake, spool_dir=spool_dir, flush_seconds=60)
        await live.start()
        live.put(row(1))
        other = DeltaResponseCache(lake, spool_dir=spool_dir)
        assert other.recover() == 0  # the live run holds its file's lock
        assert live.spool.path.exists() and not lake.exists(TEACHER_CACHE)
        await live.close()  # final Delta flush, then the file goes
        assert lake.read(TEACHER_CACHE).num_rows == 1
        assert not list(spool_dir.iterdir())

    asyncio.run(go())
