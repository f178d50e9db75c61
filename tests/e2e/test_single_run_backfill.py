"""A backfill of a date range in ONE run re-reads exactly the files of those days and leaves
every other day intact.

Runs the real ``ingest_sessions`` job of definitions.py (every day-partitioned asset the
lead wired into it) with ``execute_in_process`` and the
``dagster/asset_partition_range_start/end`` tags over the daily partitions, without a file
list — what a backfill from the UI launches. The naive Delta IO manager would overwrite the
whole table on such a run (dagster-deltalake); here each table keeps the rows of the other days byte
for byte, and the run re-reads the files the registry (bronze/session_files) holds for its days.
"""

from __future__ import annotations

import dagster as dg
import pyarrow.compute as pc
import pytest

from assets.traces.tables import SESSION_FILES
from dagster_project.cli import ingest_all
from resources.lake import DeltaLake
from resources.sessions import SessionSource
from testsupport.e2e import copy_samples, fake_teacher_pool
from testsupport.fake_openai import FakeOpenAI

pytestmark = pytest.mark.slow

RANGE_TAGS = ("dagster/asset_partition_range_start", "dagster/asset_partition_range_end")


def _session_tables(job_keys):
    from dagster_project import definitions as d

    TABLES = d.all_tables()
    return [s for s in TABLES if s.asset_key in job_keys and s.partition_by == ("day",)]


def _snapshot(lake: DeltaLake, spec) -> dict[tuple, list]:
    """Rows per (day, session), sorted, every column (ingested_at included)."""
    out: dict[tuple, list] = {}
    for r in lake.read(spec).to_pylist():
        out.setdefault((r["day"], r["session_key"]), []).append(r)
    return {k: sorted(v, key=repr) for k, v in out.items()}


def test_backfill_of_a_date_range_replaces_only_its_days(tmp_path, monkeypatch):
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
        first = ingest_all(instance, defs=test_defs, lake=lake, sessions=source)
        assert first and all(r.success for r in first)
        reg = {r["session_key"]: r for r in lake.read(SESSION_FILES).to_pylist()}
        assert len(reg) == len(files) >= 5
        days = sorted({r["day"] for r in reg.values()})
        assert len(days) >= 3
        before = {s.path: _snapshot(lake, s) for s in specs}

        # Sessions of two consecutive days change (live sessions grew); backfill just those days.
        inside_days = days[1:3] if len(days) > 3 else days[:2]
        inside = sorted(k for k, r in reg.items() if r["day"] in inside_days)
        names = source.names(lake.root)  # the registry stores paths with user names pseudonymized
        for k in inside:
            with open(sessions_dir / names.real(reg[k]["path"]), "ab") as fh:
                fh.write(b'{"type": "tracelake-e2e-appended", "note": "grown"}\n')
        runs_before = len(instance.get_run_records())
        second = job.execute_in_process(instance=instance, tags=dict(zip(RANGE_TAGS, inside_days)))
        assert second.success
        assert len(instance.get_run_records()) == runs_before + 1  # one run for the whole range

        for spec in specs:
            after = _snapshot(lake, spec)
            for (day, k), rows in before[spec.path].items():
                if day not in inside_days:  # untouched, byte for byte
                    assert after[(day, k)] == rows, f"{spec.path}: {day}/{k} changed"
        raw_after = _snapshot(lake, specs[[s.path for s in specs].index("bronze/raw_traces")])
        raw_before = before["bronze/raw_traces"]
        for k in inside:  # rewritten from the grown file
            dk = (reg[k]["day"], k)
            assert len(raw_after[dk]) == len(raw_before[dk]) + 1
            assert raw_after[dk][0]["ingested_at"] != raw_before[dk][0]["ingested_at"]
        reread = {r["session_key"] for r in lake.read(SESSION_FILES).to_pylist() if r["run_id"] == second.run_id}
        assert reread == set(inside)

        # the run materialized exactly the range's days of raw_traces
        mats = [e for e in second.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey(["bronze", "raw_traces"])]
        assert sorted(e.partition for e in mats) == sorted(inside_days)

        # each session's own figures stand in the per-session table of the run's metadata
        turns = lake.read(specs[[s.path for s in specs].index("silver/trace_turns")],
                          filter=pc.field("day").isin(inside_days))
        md = next(e.materialization.metadata for e in second.get_asset_materialization_events()
                  if e.asset_key == dg.AssetKey(["silver", "trace_turns"]))
        lines = {cells[0]: cells[1:] for cells in (
            [c.strip() for c in line.strip("|").split("|")] for line in md["per_session"].value.splitlines()[2:])}
        with_turns = sorted(set(turns["session_key"].to_pylist()))
        assert sorted(lines) == with_turns and set(with_turns) <= set(inside)
        for k in with_turns:
            mine = turns.filter(pc.equal(turns["session_key"], k))
            n_turns, _, tokens_in, _ = (int(x) for x in lines[k])
            assert n_turns == mine.num_rows > 0
            assert tokens_in == (pc.sum(mine["input_tokens"]).as_py() or 0)
        assert md["input_tokens"].value == (pc.sum(turns["input_tokens"]).as_py() or 0)
