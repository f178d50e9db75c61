"""The session sensor through a real Dagster instance, and the chain it triggers."""

import contextvars
import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from assets.partitions import SESSIONS
from assets.traces import ASSETS as TRACE_ASSETS
from assets.traces.tables import RAW_TRACES, AGENT_STEPS, TRACE_TURNS
from resources.lake import DeltaLake
from resources.sessions import SessionSource, session_key_for
from sensors.sessions import build_session_sensor

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "traces" / "samples"


def claude_line(i, role="user", text="hello"):
    rec = {"type": role, "uuid": f"u{i}", "parentUuid": f"u{i-1}" if i else None,
           "sessionId": "s1", "timestamp": "2026-11-01T10:00:00Z",
           "message": {"role": role, "content": text if role == "user" else
                       [{"type": "text", "text": text}], **({"id": f"m{i}", "model": "claude-x"} if role == "assistant" else {})}}
    return json.dumps(rec) + "\n"


def make_defs(root, lake_root, max_files=25):
    job = dg.define_asset_job("ingest_sessions", selection=dg.AssetSelection.assets(*TRACE_ASSETS))
    sensor = build_session_sensor(job)
    defs = dg.Definitions(
        assets=TRACE_ASSETS, jobs=[job], sensors=[sensor],
        resources={"lake": DeltaLake(root=str(lake_root)),
                   "sessions": SessionSource(root=str(root), max_files_per_tick=max_files)},
    )
    return defs, sensor


def tick(sensor, defs, instance, cursor=None):
    def evaluate():
        ctx = dg.build_sensor_context(instance_ref=instance.get_ref(), cursor=cursor, definitions=defs,
                                      resources={"sessions": defs.resources["sessions"]})
        return sensor.evaluate_tick(ctx)

    # the sensor context leaves a partition-loading context variable pointing at its own
    # instance; evaluate in a copied context so it cannot leak into later tests
    data = contextvars.copy_context().run(evaluate)
    # apply the partition requests like the daemon does
    for req in data.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return data


@pytest.fixture
def instance(tmp_path):
    # a persistent instance in tmp (instance_for_test leaves global state behind that breaks
    # later DagsterInstance.ephemeral() users in the same process)
    (tmp_path / "dagster_home").mkdir()
    inst = dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_home"))
    yield inst
    inst.dispose()


def test_new_files_become_partitions_and_runs(tmp_path, instance):
    root = tmp_path / "sessions"
    (root / "proj-a" / "s1" / "subagents").mkdir(parents=True)
    (root / "proj-a" / "one.jsonl").write_text(claude_line(0))
    (root / "proj-a" / "s1" / "subagents" / "agent-x.jsonl").write_text(claude_line(0))
    (root / "notes.txt").write_text("not a session")
    defs, sensor = make_defs(root, tmp_path / "lake")
    data = tick(sensor, defs, instance)
    keys = sorted(r.partition_key for r in data.run_requests)
    assert keys == ["proj-a~one.jsonl", "proj-a~s1~subagents~agent-x.jsonl"]
    assert sorted(instance.get_dynamic_partitions("sessions")) == keys
    # nothing changed: skip, with a reason
    again = tick(sensor, defs, instance, data.cursor)
    assert not again.run_requests and again.skip_message


def test_grown_file_is_ingested_again(tmp_path, instance):
    root = tmp_path / "s"
    root.mkdir()
    f = root / "live.jsonl"
    f.write_text(claude_line(0))
    defs, sensor = make_defs(root, tmp_path / "lake")
    first = tick(sensor, defs, instance)
    assert len(first.run_requests) == 1
    with f.open("a") as fh:
        fh.write(claude_line(1, "assistant", "hi"))
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))
    second = tick(sensor, defs, instance, first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["live.jsonl"]
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
    assert not second.dynamic_partitions_requests  # same partition, not a new one


def test_batch_is_bounded_per_tick(tmp_path, instance):
    root = tmp_path / "s"
    root.mkdir()
    for i in range(5):
        (root / f"f{i}.jsonl").write_text(claude_line(0))
    defs, sensor = make_defs(root, tmp_path / "lake", max_files=2)
    seen, cursor = [], None
    for _ in range(3):
        d = tick(sensor, defs, instance, cursor)
        assert len(d.run_requests) <= 2
        seen += [r.partition_key for r in d.run_requests]
        cursor = d.cursor
    assert sorted(seen) == [f"f{i}.jsonl" for i in range(5)]


def test_symlinks_outside_the_root_are_ignored(tmp_path, instance):
    root = tmp_path / "s"
    root.mkdir()
    outside = tmp_path / "secret.jsonl"
    outside.write_text(claude_line(0))
    (root / "escape.jsonl").symlink_to(outside)
    (root / "dir-escape").symlink_to(tmp_path)
    (root / "ok.jsonl").write_text(claude_line(0))
    defs, sensor = make_defs(root, tmp_path / "lake")
    d = tick(sensor, defs, instance)
    assert [r.partition_key for r in d.run_requests] == ["ok.jsonl"]
    assert SessionSource(root=str(root)).path_for("escape.jsonl") is None


def test_sensor_runs_update_the_chain(tmp_path, instance):
    """A new file, then the same file grown: each tick's runs update raw → turns → steps."""
    if not SAMPLES.is_dir():
        pytest.skip("bundled samples missing")
    root = tmp_path / "s"
    root.mkdir()
    src = sorted(SAMPLES.rglob("*.jsonl"))[0]
    lines = src.read_bytes().splitlines(keepends=True)
    half = max(1, len(lines) // 2)
    target = root / "session.jsonl"
    target.write_bytes(b"".join(lines[:half]))
    lake = DeltaLake(root=str(tmp_path / "lake"))
    defs, sensor = make_defs(root, lake.root)
    job = defs.resolve_job_def("ingest_sessions")

    def run_ticks(cursor):
        d = tick(sensor, defs, instance, cursor)
        for r in d.run_requests:
            assert job.execute_in_process(instance=instance, partition_key=r.partition_key,
                                          run_config=r.run_config or {}).success
        return d.cursor

    cursor = run_ticks(None)
    raw1 = lake.read(RAW_TRACES).num_rows
    steps1 = lake.read(AGENT_STEPS).num_rows
    assert raw1 == half
    target.write_bytes(b"".join(lines))
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1_000_000))
    run_ticks(cursor)
    assert lake.read(RAW_TRACES).num_rows == len(lines)
    assert lake.read(TRACE_TURNS).num_rows > 0
    assert lake.read(AGENT_STEPS).num_rows >= steps1


def test_session_key_is_stable_and_readable():
    assert session_key_for("proj/abc.jsonl") == "proj~abc.jsonl"
