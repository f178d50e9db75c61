"""A lake written before the rename of silver/replay_steps is carried over by `tracelake migrate`."""

import os
import subprocess
import sys
from pathlib import Path

from assets.traces.tables import AGENT_STEPS
from dagster_project.migrate import RENAMED_TABLES, migrate_lake
from resources.lake import DeltaLake, TableSpec
from tests.teachers.conftest import agent_step_row

ROOT = Path(__file__).resolve().parents[2]
OLD = TableSpec(layer="silver", name="replay_steps", schema=AGENT_STEPS.schema,
                partition_by=AGENT_STEPS.partition_by)


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

    assert [(m.old, m.new, m.action) for m in done] == [("silver/replay_steps", "silver/agent_steps", "renamed")]
    assert not (tmp_path / "lake" / "silver" / "replay_steps").exists()
    assert _rows(lake, AGENT_STEPS) == before and len(before) == 6
    assert lake.version(AGENT_STEPS) == version
    # the renamed table keeps working: a partition replaced, the other untouched
    lake.replace_partitions(AGENT_STEPS, [agent_step_row(0, "new", "s1")], ["s1"])
    assert [r["step_id"] for r in _rows(lake, AGENT_STEPS)] == ["s1:0", "s2:0", "s2:1", "s2:2"]
    assert migrate_lake(lake) == []  # idempotent


def test_stale_old_table_is_removed_when_the_new_one_exists(tmp_path):
    lake = _old_lake(tmp_path / "lake", sessions=("old",))
    lake.replace_partitions(AGENT_STEPS, [agent_step_row(0, "fresh", "s9")], ["s9"])
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
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True)
    assert "nothing to migrate" in second.stdout
    assert DeltaLake(root=str(tmp_path / "lake")).read(AGENT_STEPS).num_rows == 6
