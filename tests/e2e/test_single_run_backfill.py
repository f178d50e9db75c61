"""A backfill of many session partitions in ONE run leaves every other partition intact.

Runs the real ``ingest_sessions`` job of definitions.py (every session-partitioned asset
the lead wired into it) with ``execute_in_process`` and the
``dagster/asset_partition_range_start/end`` tags over the dynamic ``sessions`` partitions
— what a single-run backfill from the UI or ``tracelake materialize`` launches. The naive
Delta IO manager would overwrite the whole table on such a run (DESIGN.md); here each
table keeps the rows of the partitions outside the range byte for byte.
"""

from __future__ import annotations

import dagster as dg
import pyarrow.compute as pc
import pytest

from assets.partitions import SESSIONS
from resources.lake import DeltaLake
from resources.sessions import SessionSource
from tests.e2e.support import copy_samples, fake_teacher_pool
from tests.teachers.fake_openai import FakeOpenAI

pytestmark = pytest.mark.slow

RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def _session_tables(job_keys):
    from dagster_project import definitions as d

    TABLES = d.all_tables()
    return [s for s in TABLES if s.asset_key in job_keys and s.partition_by == ("session_key",)]


def _snapshot(lake: DeltaLake, spec, keys) -> dict[str, list]:
    """Rows per partition, sorted, every column (ingested_at included)."""
    t = lake.read(spec)
    out = {}
    for k in keys:
        part = t.filter(pc.equal(t["session_key"], k)).to_pylist()
        out[k] = sorted(part, key=repr)
    return out


def test_single_run_backfill_replaces_only_its_range(tmp_path, monkeypatch):
    from dagster_project.definitions import INGEST_JOB, build_definitions

    sessions_dir = tmp_path / "sessions"
    files = copy_samples(sessions_dir)
    lake = DeltaLake(root=str(tmp_path / "lake"))
    source = SessionSource(root=str(sessions_dir))
    test_defs = build_definitions(lake=lake, sessions=source)  # definitions.py's graph, tmp storage
    job = test_defs.resolve_job_def(INGEST_JOB)
    job_keys = set(job.asset_layer.executable_asset_keys)
    specs = _session_tables(job_keys)
    assert {s.asset_key.to_user_string() for s in specs} >= {
        "bronze/raw_traces", "silver/trace_turns", "silver/agent_steps"}

    with FakeOpenAI() as teacher, dg.instance_for_test() as instance:
        monkeypatch.setenv("TRACELAKE_TEACHERS_FILE", str(fake_teacher_pool(tmp_path / "t.yaml", teacher.url)))
        monkeypatch.setenv("FAKE_TEACHER_KEY", "sk-e2e-not-a-real-key-0000000000000000")
        keys = [f.key for f in source.scan()]
        assert len(keys) == len(files) >= 5
        instance.add_dynamic_partitions(SESSIONS.name, keys)
        ordered = instance.get_dynamic_partitions(SESSIONS.name)

        first = job.execute_in_process(instance=instance, tags=dict(zip(RANGE_TAGS, (ordered[0], ordered[-1]))))
        assert first.success
        before = {s.path: _snapshot(lake, s, ordered) for s in specs}
        assert all(before["bronze/raw_traces"][k] for k in ordered)

        # Three sessions in the middle change (a live session grew); backfill just them, one run.
        inside = ordered[1:4]
        outside = [k for k in ordered if k not in inside]
        for k in inside:
            p = source.path_for(k)
            with open(p, "ab") as fh:
                fh.write(b'{"type": "tracelake-e2e-appended", "note": "grown"}\n')
        runs_before = len(instance.get_run_records())
        second = job.execute_in_process(instance=instance, tags=dict(zip(RANGE_TAGS, (inside[0], inside[-1]))))
        assert second.success
        assert len(instance.get_run_records()) == runs_before + 1  # one run for the whole range

        for spec in specs:
            after = _snapshot(lake, spec, ordered)
            for k in outside:  # untouched, byte for byte
                assert after[k] == before[spec.path][k], f"{spec.path}: partition {k} changed"
        raw_after = _snapshot(lake, specs[[s.path for s in specs].index("bronze/raw_traces")], ordered)
        for k in inside:  # rewritten from the grown file
            assert len(raw_after[k]) == len(before["bronze/raw_traces"][k]) + 1
            assert raw_after[k][0]["ingested_at"] != before["bronze/raw_traces"][k][0]["ingested_at"]

        # the run materialized exactly the range's partitions of raw_traces
        mats = [e for e in second.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey(["bronze", "raw_traces"])]
        assert sorted(e.partition for e in mats) == sorted(inside)

        # each partition's own figures stand in the per-session table of the run's metadata
        turns = lake.read(specs[[s.path for s in specs].index("silver/trace_turns")], partitions=inside)
        md = next(e.materialization.metadata for e in second.get_asset_materialization_events()
                  if e.asset_key == dg.AssetKey(["silver", "trace_turns"]))
        lines = {cells[0]: cells[1:] for cells in (
            [c.strip() for c in line.strip("|").split("|")] for line in md["per_session"].value.splitlines()[2:])}
        assert sorted(lines) == sorted(inside)
        for k in inside:
            mine = turns.filter(pc.equal(turns["session_key"], k))
            n_turns, _, tokens_in, _ = (int(x) for x in lines[k])
            assert n_turns == mine.num_rows > 0
            assert tokens_in == (pc.sum(mine["input_tokens"]).as_py() or 0)
        assert md["input_tokens"].value == (pc.sum(turns["input_tokens"]).as_py() or 0) > 0
