"""Every Delta table the graph writes is an asset of the definitions, with its row count.

A small materialization of the whole graph (the bundled sample sessions, a loopback
teacher, a tiny verifier): the ingest job over every session, then the datasets job.
Then the lake is walked: each ``<layer>/<table>`` directory must be an asset key of the
definitions (per-verifier capture tables belong to gold/capture_shards), its last
materialization must report ``dagster/row_count``, and all_tables() must list it.
"""

import dagster as dg
import pytest

from assets.traces.partitions import SESSIONS
from assets.teachers.pool import TeacherPool
from dagster_project.definitions import DATASETS_JOB, INGEST_JOB, all_tables, asset_key_of_table, build_definitions
from resources.lake import DeltaLake
from resources.sessions import SessionSource
from resources.verifier import VerifierResource
from testsupport.e2e import copy_samples, fake_teacher_pool
from testsupport.fake_openai import FakeOpenAI
from testsupport.models import build_tiny_llama
from dagster_project.cli import ingest_all

pytestmark = pytest.mark.slow


def test_every_table_directory_is_an_asset_with_a_row_count(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_TEACHER_KEY", "sk-test-not-a-real-key-0000000000000000")
    copy_samples(tmp_path / "sessions")
    lake = DeltaLake(root=str(tmp_path / "lake"))
    sessions = SessionSource(root=str(tmp_path / "sessions"))
    tiny = build_tiny_llama(tmp_path / "tiny-llama")
    with FakeOpenAI() as teacher:
        built = build_definitions(lake=lake, sessions=sessions)
        defs = dg.Definitions(  # the same graph, with a loopback teacher and a tiny verifier
            assets=built.assets, asset_checks=built.asset_checks, jobs=built.jobs,
            resources={**built.resources,
                       "teachers": TeacherPool(config_file=str(fake_teacher_pool(tmp_path / "pool.yaml", teacher.url))),
                       "verifier": VerifierResource(verifier=str(tiny), top_k=4, batch_tokens=512, max_length=256)},
        )
        instance = dg.DagsterInstance.ephemeral()
        # every sample file, one run per window of days (the sensor's run shape)
        ingest = ingest_all(instance, defs=defs, lake=lake, sessions=sessions)
        assert ingest and all(r.success for r in ingest)
        run_config = {"ops": {"gold__capture_shards": {"config": {"max_prompts": 2}}}}
        assert defs.resolve_job_def(DATASETS_JOB).execute_in_process(instance=instance, run_config=run_config).success

    graph_keys = defs.resolve_asset_graph().get_all_asset_keys()
    listed = {spec.path for spec in all_tables(defs)}
    paths = lake.table_paths()
    assert {"bronze/raw_traces", "silver/agent_steps", "silver/teacher_cache", "gold/pair_rejections",
            "gold/replay_evictions", "gold/capture_rejections", "gold/rag_playbooks"} <= set(paths)
    assert any(p.startswith("gold/capture_shards__") for p in paths)
    for path in paths:
        key = asset_key_of_table(path)
        assert key in graph_keys, f"{path} is not an asset of the definitions"
        assert path in listed or key == dg.AssetKey(["gold", "capture_shards"]), path
        event = instance.get_latest_materialization_event(key)
        assert event is not None, f"{path}: never materialized"
        md = event.asset_materialization.metadata
        assert "dagster/row_count" in md, f"{key.to_user_string()} reports no row count"
