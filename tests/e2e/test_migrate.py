"""A lake written before the rename of silver/replay_steps and before the day partitions is
carried over by `tracelake migrate`: tables renamed, session tables rewritten partitioned by
day with every row kept, the teacher cache and the replay corpus untouched."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from assets.teachers.tables import TEACHER_CACHE
from assets.traces.tables import AGENT_STEPS, RAW_TRACES, SESSION_FILES, TRACE_TURNS
from dagster_project.migrate import RENAMED_TABLES, migrate_lake
from resources.lake import DeltaLake, OldLayoutError, TableSpec
from tests.sessions import put_sessions
from tests.teachers.conftest import agent_step_row


def _old_layout(spec: TableSpec, name: str | None = None) -> TableSpec:
    """The spec as tracelake wrote it before days: no day column, one partition per session file."""
    return TableSpec(layer=spec.layer, name=name or spec.name,
                     schema=pa.schema([f for f in spec.schema if f.name != "day"]),
                     partition_by=("session_key",))

ROOT = Path(__file__).resolve().parents[2]
OLD = _old_layout(AGENT_STEPS, "replay_steps")


def _old_lake(root: Path, sessions=("s1", "s2")) -> DeltaLake:
    lake = DeltaLake(root=str(root))
    for k in sessions:  # two commits, as two ingest runs of an older version wrote them
        lake.replace_partitions(OLD, [agent_step_row(i, f"{k}-{i}", k) for i in range(3)], [k])
    return lake


def _rows(lake: DeltaLake, spec: TableSpec) -> list[dict]:
    return sorted(lake.read(spec, columns=["session_key", "step_id", "messages"]).to_pylist(),
                  key=lambda r: r["step_id"])


def test_old_table_is_renamed_with_its_rows_and_history(tmp_path):
    lake = _old_lake(tmp_path / "lake")
    before, version = _rows(lake, OLD), lake.version(OLD)
    assert RENAMED_TABLES["silver/replay_steps"] is AGENT_STEPS
    assert not lake.exists(AGENT_STEPS)

    done = migrate_lake(lake)

    assert [(m.old, m.new, m.action) for m in done][0] == ("silver/replay_steps", "silver/agent_steps", "renamed")
    assert done[1].action.startswith("partitioned by day (6 rows")
    assert not (tmp_path / "lake" / "silver" / "replay_steps").exists()
    assert _rows(lake, AGENT_STEPS) == before and len(before) == 6
    assert lake.version(AGENT_STEPS) == version + 1  # the history is kept: one commit more
    # the renamed table keeps working: a session replaced, the other untouched
    day = lake.read(AGENT_STEPS, columns=["day"])["day"][0].as_py()
    put_sessions(lake, AGENT_STEPS, [agent_step_row(0, "new", "s1")], day, keys=["s1"])
    assert [r["step_id"] for r in _rows(lake, AGENT_STEPS)] == ["s1:0", "s2:0", "s2:1", "s2:2"]
    assert migrate_lake(lake) == []  # idempotent


def test_stale_old_table_is_removed_when_the_new_one_exists(tmp_path):
    lake = _old_lake(tmp_path / "lake", sessions=("old",))
    put_sessions(lake, AGENT_STEPS, [agent_step_row(0, "fresh", "s9")])
    done = migrate_lake(lake)
    assert [m.action for m in done] == ["removed_stale"]
    assert not (tmp_path / "lake" / "silver" / "replay_steps").exists()
    assert [r["step_id"] for r in _rows(lake, AGENT_STEPS)] == ["s9:0"]


def test_nothing_to_do_on_a_new_or_missing_lake(tmp_path):
    assert migrate_lake(DeltaLake(root=str(tmp_path / "absent"))) == []


def test_tracelake_migrate_command(tmp_path):
    _old_lake(tmp_path / "lake")
    env = {**os.environ, "TRACELAKE_LAKE_ROOT": str(tmp_path / "lake"), "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "dagster_project.cli", "migrate"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert "migrated silver/replay_steps -> silver/agent_steps: renamed" in first.stdout
    assert "silver/agent_steps -> silver/agent_steps: partitioned by day" in first.stdout
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert "nothing to migrate" in second.stdout
    assert DeltaLake(root=str(tmp_path / "lake")).read(AGENT_STEPS).num_rows == 6


def test_session_partitioned_lake_moves_to_days(tmp_path):
    """Per-file partitions -> days: every row kept, each session on the day its file says,
    files still present entered in the registry (not read again), the cache untouched."""
    sessions = tmp_path / "sessions"
    sessions.mkdir()
    line = '{"type":"user","uuid":"u1","sessionId":"s","timestamp":"2026-03-04T05:06:07Z","message":{"role":"user","content":"hi"}}\n'
    (sessions / "a.jsonl").write_text(line)
    lake = DeltaLake(root=str(tmp_path / "lake"))
    old_raw = _old_layout(RAW_TRACES)
    raw_row = {"source_file": "x", "line_no": 1, "byte_offset": 0, "byte_len": len(line), "raw": line.strip(),
               "quarantined": False, "secrets_scrubbed": 0, "ingested_at": pa.scalar(0, pa.timestamp("us", tz="UTC"))}
    lake.replace_partitions(old_raw, [{**raw_row, "session_key": "a.jsonl"}], ["a.jsonl"])
    gone = line.replace("2026-03-04", "2025-12-31")
    lake.replace_partitions(old_raw, [{**raw_row, "session_key": "gone.jsonl", "raw": gone.strip()}], ["gone.jsonl"])
    lake.replace_partitions(_old_layout(TRACE_TURNS), [{"session_key": k, "source_format": "claude_code",
                                                         "turn_id": k, "turn_index": 0, "role": "user",
                                                         "kind": "message"} for k in ("a.jsonl", "gone.jsonl")],
                            ["a.jsonl", "gone.jsonl"])
    lake.append(TEACHER_CACHE, [{"request_hash": "h1", "status": "ok", "created_at": raw_row["ingested_at"]}])
    cache_version = lake.version(TEACHER_CACHE)
    try:
        put_sessions(lake, RAW_TRACES, [{**raw_row, "session_key": "a.jsonl"}])
        raise AssertionError("a write to an old-layout table must be refused")
    except OldLayoutError as exc:
        assert "tracelake migrate" in str(exc)

    done = migrate_lake(lake, sessions)

    assert {m.new for m in done} >= {"bronze/raw_traces", "silver/trace_turns", "bronze/session_files"}
    for spec in (RAW_TRACES, TRACE_TURNS):
        assert lake.table(spec).metadata().partition_columns == ["day"]
        got = {r["session_key"]: r["day"] for r in lake.read(spec, columns=["session_key", "day"]).to_pylist()}
        assert got == {"a.jsonl": "2026-03-04", "gone.jsonl": "2025-12-31"}
    reg = lake.read(SESSION_FILES).to_pylist()
    assert [(r["session_key"], r["day"], r["status"]) for r in reg] == [("a.jsonl", "2026-03-04", "ingested")]
    assert lake.version(TEACHER_CACHE) == cache_version
    assert migrate_lake(lake, sessions) == []  # idempotent
