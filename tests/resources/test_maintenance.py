"""Table maintenance on real Delta tables: 200 small commits, then compact/checkpoint/vacuum."""

from __future__ import annotations

import dagster as dg
import pyarrow as pa
import pytest

from resources.lake import DeltaLake, TableSpec
from resources.maintenance import maintain_table

SPEC = TableSpec("silver", "ticks", pa.schema([
    pa.field("day", pa.string(), nullable=False),
    pa.field("session_key", pa.string(), nullable=False),
    pa.field("i", pa.int64(), nullable=False),
    pa.field("text", pa.string()),
]), partition_by=("day",))


def _ticks(lake: DeltaLake, n: int) -> None:
    for i in range(n):  # one small commit per "sensor tick", alternating over 3 days
        lake.append(SPEC, [{"day": f"2026-11-0{1 + i % 3}", "session_key": f"s{i % 7}", "i": i,
                            "text": f"turn {i} " * (i % 5)}])


def _rows(lake: DeltaLake, version=None) -> list[tuple]:
    t = lake.read(SPEC, version=version)
    return sorted(zip(*(t.column(c).to_pylist() for c in SPEC.schema.names)))


@pytest.fixture(scope="module")
def ticked(tmp_path_factory):
    lake = DeltaLake(root=str(tmp_path_factory.mktemp("lake")))
    _ticks(lake, 200)
    return lake


def test_200_ticks_compacted_every_row_kept(ticked):
    lake = ticked
    before_rows = _rows(lake)
    assert len(before_rows) == 200
    v_before = lake.version(SPEC)
    r = maintain_table(lake, SPEC)  # default retention: a week of time travel stays
    assert r.before.files == 200 and r.before.rows == 200
    assert r.after.files <= 3  # one file per day partition
    assert r.after.rows == 200 and _rows(lake) == before_rows
    assert r.after.version == v_before + 1 and r.checkpoint_version == r.after.version
    assert r.vacuumed_files == 0  # everything is younger than a week
    assert _rows(lake, version=v_before) == before_rows  # time travel to before compaction works
    row = r.row()
    assert row["files_before"] == 200 and row["files_after"] == r.after.files and row["bytes_after"] > 0

    # more ticks, then maintenance with no time travel kept: old files are deleted from disk
    _ticks(lake, 20)
    r2 = maintain_table(lake, SPEC, retention_hours=0)
    assert r2.after.files <= 3 and r2.after.rows == 220
    assert r2.vacuumed_files >= 200  # the 200 original small files and the 20 new ones
    assert len(_rows(lake)) == 220
    # nothing to compact: a no-op keeps the version
    r3 = maintain_table(lake, SPEC, retention_hours=0, min_files=10)
    assert r3.compacted_files_removed == 0 and r3.after.rows == 220


def test_zorder_and_missing_table(tmp_path):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    missing = maintain_table(lake, SPEC)
    assert missing.skipped == "table does not exist"
    _ticks(lake, 30)
    rows = _rows(lake)
    r = maintain_table(lake, SPEC, zorder=["session_key"])
    assert r.zorder == ["session_key"] and r.compacted_files_removed == 30
    assert _rows(lake) == rows


def test_maintenance_job_reports_before_after(tmp_path):
    from dagster_project.definitions import build_definitions
    from dagster_project.maintenance import MAINTENANCE_JOB

    from assets.traces.tables import TRACE_TURNS

    lake = DeltaLake(root=str(tmp_path / "lake"))
    one = {c: None for c in TRACE_TURNS.schema.names}
    rows = []
    for f in TRACE_TURNS.schema:
        one[f.name] = {pa.string(): "x", pa.int64(): 1, pa.int32(): 1, pa.bool_(): False}.get(f.type, None)
    for i in range(12):
        r = dict(one)
        for f in TRACE_TURNS.schema:
            if pa.types.is_timestamp(f.type):
                import datetime as dt
                r[f.name] = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
        r.update({k: f"{k}-{i}" for k in ("turn_id",) if k in r})
        for part in TRACE_TURNS.partition_by:
            r[part] = "k0" if pa.types.is_string(TRACE_TURNS.schema.field(part).type) else r[part]
        rows.append(r)
        lake.append(TRACE_TURNS, [r])
    defs = build_definitions(lake=lake)
    sched = defs.get_schedule_def(f"{MAINTENANCE_JOB}_schedule")
    assert sched.default_status == dg.DefaultScheduleStatus.RUNNING
    job = defs.resolve_job_def(MAINTENANCE_JOB)
    with dg.instance_for_test() as instance:
        res = job.execute_in_process(instance=instance, run_config={
            "ops": {"maintain_tables": {"config": {"tables": [TRACE_TURNS.path]}}}})
        assert res.success
        out = res.output_for_node("maintain_tables")["tables"]
        assert [t["table"] for t in out] == [TRACE_TURNS.path]
        assert out[0]["files_before"] == 12 and out[0]["files_after"] == 1 and out[0]["rows_after"] == 12
        obs = [e for e in res.all_events if e.event_type_value == "ASSET_OBSERVATION"]
        assert [e.asset_key for e in obs] == [TRACE_TURNS.asset_key]
        assert obs[0].event_specific_data.asset_observation.metadata["data_files"].value == 1
    assert lake.read(TRACE_TURNS).num_rows == 12
