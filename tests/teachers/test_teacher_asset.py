"""teacher_responses materialized through Dagster: one key, a range of keys, secrets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import dagster as dg
import pyarrow as pa

from assets.teachers.assets import defs as teacher_defs
from assets.teachers.assets import teacher_responses
from assets.teachers.tables import TEACHER_CACHE, TEACHER_RESPONSES
from assets.traces.tables import AGENT_STEPS
from resources.lake import DeltaLake
from assets.teachers.pool import TeacherPool
from tests.sessions import put_sessions
from tests.teachers.conftest import agent_step_row, http_teacher, pool_yaml

RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


# each test session on its own day (the daily partition the runs name)
DAYS = {"sA": "2026-01-01", "s1": "2026-01-01", "s2": "2026-01-02", "s3": "2026-01-03", "s4": "2026-01-04",
        "sk": "2026-01-05", "e1": "2026-01-06", "e2": "2026-01-07"}


def _instance(keys):
    return dg.DagsterInstance.ephemeral()


def _md(result):
    mats = result.asset_materializations_for_node(teacher_responses.op.name)
    assert mats  # one per partition of the run, all with the run's metadata
    return mats[0].metadata


def test_defs_export_the_asset_and_a_default_pool(tmp_path):
    defs = dg.Definitions.merge(dg.Definitions(resources={"lake": DeltaLake(root=str(tmp_path))}),
                                teacher_defs)
    assert defs.resolve_assets_def(TEACHER_RESPONSES.asset_key) is not None
    pool = teacher_defs.resources["teachers"]
    assert isinstance(pool, TeacherPool) and len(pool.pool_spec().teachers) == 3


def test_materialize_one_partition_then_rerun_from_cache(server, tmp_path):
    lake = DeltaLake(root=str(tmp_path))
    put_sessions(lake, AGENT_STEPS, [agent_step_row(i, f"q{i}", "sA") for i in range(4)], DAYS["sA"])
    teachers = TeacherPool(config_yaml=pool_yaml(
        [http_teacher(server.url, "t1"), http_teacher(server.url, "t2", temperature=0.7)]))
    resources = {"lake": lake, "teachers": teachers}
    instance = _instance(["sA"])
    run_config = {"ops": {teacher_responses.op.name: {"config": {"max_steps_per_session": 3}}}}

    res = dg.materialize([teacher_responses], partition_key=DAYS["sA"], resources=resources,
                         instance=instance, run_config=run_config)
    assert res.success
    table = lake.read(TEACHER_RESPONSES)
    assert table.num_rows == 6 and set(table.column("status").to_pylist()) == {"ok"}
    assert sorted(set(table.column("step_id").to_pylist())) == ["sA:0", "sA:1", "sA:2"]
    md = _md(res)
    assert md["calls"].value == 6 and md["cache_hits"].value == 0
    assert md["cost_usd_run"].value > 0
    assert "| t1 | openai_compatible |" in md["per_teacher"].value
    assert server.calls == 6
    lat = md["latency_ms"].value  # the 6 calls' latencies as recorded in the table
    recorded = sorted(table.column("latency_ms").to_pylist())
    # the percentiles are rounded to 0.1 ms (rounding keeps the order: compare rounded values)
    assert lat["max"] == recorded[-1] and round(recorded[0], 1) <= lat["p50"] <= lat["p95"] <= round(lat["max"], 1)

    server.reset()
    res = dg.materialize([teacher_responses], partition_key=DAYS["sA"], resources=resources,
                         instance=instance, run_config=run_config)
    assert res.success and server.calls == 0
    md = _md(res)
    assert md["calls"].value == 0 and md["cache_hits"].value == 6 and md["cost_usd_run"].value == 0
    assert lake.read(TEACHER_RESPONSES).num_rows == 6  # replaced, not appended


def test_materialize_a_partition_range_in_one_run(server, tmp_path):
    lake = DeltaLake(root=str(tmp_path))
    keys = ["s1", "s2", "s3", "s4"]
    for k in keys:
        put_sessions(lake, AGENT_STEPS, [agent_step_row(i, f"{k}-{i}", k) for i in range(3)], DAYS[k])
    server.latency = 0.1
    teachers = TeacherPool(config_yaml=pool_yaml([http_teacher(server.url, "t1", max_concurrency=16)]))
    resources = {"lake": lake, "teachers": teachers}
    instance = _instance(keys)
    # s4 first, alone
    assert dg.materialize([teacher_responses], partition_key=DAYS["s4"], resources=resources,
                          instance=instance).success
    server.reset()
    res = dg.materialize([teacher_responses], resources=resources, instance=instance,
                         tags=dict(zip(RANGE_TAGS, [DAYS["s1"], DAYS["s3"]])))
    assert res.success
    table = lake.read(TEACHER_RESPONSES)
    counts = {k: table.column("session_key").to_pylist().count(k) for k in keys}
    assert counts == {"s1": 3, "s2": 3, "s3": 3, "s4": 3}  # s4 untouched by the range run
    assert server.calls == 9
    mats = res.asset_materializations_for_node(teacher_responses.op.name)
    assert sorted(m.partition for m in mats if m.asset_key == TEACHER_RESPONSES.asset_key) == [DAYS["s1"], DAYS["s2"], DAYS["s3"]]
    # the response cache (one table for every session) is materialized once, with its rows
    cache = [m for m in mats if m.asset_key == TEACHER_CACHE.asset_key]
    assert len(cache) == 1 and cache[0].partition is None
    assert cache[0].metadata["table_rows"].value == lake.read(TEACHER_CACHE).num_rows == 12
    md = _md(res)
    assert md["partitions_replaced"].value == 3 and md["rows_written"].value == 9
    # all 9 requests of the 3 sessions ran through one pool: ~1 latency, not 3
    assert md["ask_seconds"].value < 2.0


def test_api_key_never_reaches_tables_logs_or_metadata(server, tmp_path, monkeypatch, caplog, capfd):
    key = "sk-tl-PLANTED-7f3c2a9e41d04b8c"
    monkeypatch.setenv("TL_TEST_TEACHER_KEY", key)
    server.required_key = key
    lake = DeltaLake(root=str(tmp_path / "lake"))
    contents = ["plain", "[[500x9]] failing", "[[echoauth]] echoes the auth header", "[[refuse]]"]
    put_sessions(lake, AGENT_STEPS, [agent_step_row(i, c, "sk") for i, c in enumerate(contents)], DAYS["sk"])
    pool = pool_yaml([http_teacher(server.url, "keyed", api_key_env="TL_TEST_TEACHER_KEY")])
    caplog.set_level(logging.DEBUG)
    instance = _instance(["sk"])
    res = dg.materialize([teacher_responses], partition_key=DAYS["sk"], instance=instance,
                         resources={"lake": lake, "teachers": TeacherPool(config_yaml=pool)})
    assert res.success
    # the key was really used: the server checked every Authorization header
    assert server.auth_ok == server.calls > 0 and server.auth_bad == 0
    rows = lake.read(TEACHER_RESPONSES).to_pylist()
    assert {r["status"] for r in rows} == {"ok", "error"}
    assert lake.read(TEACHER_CACHE).num_rows == 2

    needle = key.encode()
    files = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any("_delta_log" in str(p) for p in files)
    for p in files:
        assert needle not in p.read_bytes(), p
    for spec in (TEACHER_RESPONSES, TEACHER_CACHE):  # decoded cells too (parquet may compress)
        assert key not in json.dumps(lake.read(spec).to_pylist(), default=str)
    assert key not in caplog.text
    out, err = capfd.readouterr()
    assert key not in out and key not in err
    assert key not in str(_md(res))
    for record in instance.all_logs(res.run_id):
        assert key not in str(record)
    # the echoed header came back in an error body: it is stored scrubbed
    echoed = next(r for r in rows if r["step_id"] == "sk:2")
    assert echoed["status"] == "error" and "Bearer ***" in echoed["error"]


def test_empty_partition_replaces_to_nothing(server, tmp_path):
    lake = DeltaLake(root=str(tmp_path))
    put_sessions(lake, AGENT_STEPS, [agent_step_row(0, "x", "e1")], DAYS["e1"])
    resources = {"lake": lake, "teachers": TeacherPool(config_yaml=pool_yaml([http_teacher(server.url)]))}
    instance = _instance(["e1", "e2"])
    assert dg.materialize([teacher_responses], partition_key=DAYS["e2"], resources=resources,
                          instance=instance).success
    assert lake.read(TEACHER_RESPONSES).num_rows == 0 and server.calls == 0
