"""The whole session graph on object storage, selected by configuration alone.

A subprocess runs every asset of the ``ingest_sessions`` job (raw_traces → trace_turns →
agent_steps → teacher_responses → pairs / SFT / KTO / SDPO ..., whatever definitions.py
wires into that job when this runs) over the bundled sample sessions as one run, with
nothing but environment variables pointing it at S3: ``TRACELAKE_LAKE_ROOT=s3://…`` and
the ``AWS_*`` variables of a real S3 endpoint (moto_server on 127.0.0.1). The teacher pool
is one OpenAI-compatible teacher on a loopback server (``TRACELAKE_TEACHERS_FILE``), so
the teacher family runs for real without a model.
"""

from __future__ import annotations

import pytest

from resources.lake import DeltaLake, TableSpec
from testsupport.e2e import base_env, copy_samples, fake_teacher_pool, physical_lines, run_ingest
from tests.s3 import moto_server
from testsupport.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def table_specs() -> dict[str, TableSpec]:
    """Every table of the definitions by asset key."""
    from dagster_project.definitions import all_tables

    return {spec.asset_key.to_user_string(): spec for spec in all_tables()}


def test_ingest_job_on_s3_by_env_only(tmp_path):
    sessions = tmp_path / "sessions"
    files = copy_samples(sessions)
    expected_lines = sum(physical_lines(f) for f in files)
    work = tmp_path / "cwd"
    work.mkdir()
    with moto_server() as (bucket, opts), FakeOpenAI() as teacher:
        root = f"{bucket}/lake"
        env = base_env(
            TRACELAKE_LAKE_ROOT=root,
            TRACELAKE_SESSIONS_DIR=str(sessions),
            TRACELAKE_TEACHERS_FILE=str(fake_teacher_pool(tmp_path / "teachers.yaml", teacher.url)),
            FAKE_TEACHER_KEY="sk-e2e-not-a-real-key-0000000000000000",
            DAGSTER_HOME=str(tmp_path / "dagster_home"),
            **opts,
        )
        rc, result, out = run_ingest(env, work, timeout=240, log=tmp_path / "ingest.log")
        assert rc == 0 and result.get("success"), out[-4000:]
        assert result["files"] == len(files) and result["days"]
        assert "bronze/raw_traces" in result["assets"]

        lake = DeltaLake(root=root, storage_options=opts)
        specs = table_specs()
        rows = {}
        for key, path in result["tables"].items():
            spec = specs[key]
            dt = lake.table(spec)
            assert dt is not None, f"{key}: no Delta table at {lake.uri(spec)}"
            assert lake.uri(spec).startswith("s3://")
            rows[key] = dt.to_pyarrow_dataset().count_rows()

        # lossless bronze on S3: one row per physical line of every file, one session per file
        raw = lake.read(specs["bronze/raw_traces"], columns=["session_key"])
        assert rows["bronze/raw_traces"] == expected_lines
        assert len(set(raw["session_key"].to_pylist())) == len(files)
        for key in ("silver/trace_turns", "silver/agent_steps"):
            assert rows[key] > 0, key
        if "silver/teacher_responses" in rows:
            assert rows["silver/teacher_responses"] == rows["silver/agent_steps"]  # one teacher
            assert teacher.ok > 0

    # nothing was written to a local lake by mistake
    assert not (work / "lakehouse").exists()
    assert not any(work.rglob("_delta_log"))
    # every asset of the job recorded a materialization whose table_uri is on S3
    import dagster as dg

    with dg.DagsterInstance.from_config(str(tmp_path / "dagster_home")) as inst:
        for key, path in result["tables"].items():
            ev = inst.get_latest_materialization_event(dg.AssetKey.from_user_string(key))
            assert ev is not None, key
            md = ev.asset_materialization.metadata
            if "table_uri" in md:
                assert str(md["table_uri"].value).startswith("s3://"), (key, md["table_uri"])
