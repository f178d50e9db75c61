"""The production instance (deploy/production/dagster.yaml) on a real PostgreSQL server.

A throwaway server (the Debian package's initdb/pg_ctl, 127.0.0.1, a free port) holds the
run, event-log and schedule storage; a real ``dagster-daemon`` with that instance and the
project's definitions does everything by itself, nobody clicks anything: the session
sensor sees a session file and its ingest run goes through the queued run coordinator,
then the datasets' automation sensor (RUNNING by default) refreshes the datasets once
ingestion is quiet — exactly one refresh run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.e2e.postgres import postgres_bin, start_postgres
from testsupport.e2e import PYTHON, ROOT, base_env, copy_samples, fake_teacher_pool, wait_for
from testsupport.fake_openai import FakeOpenAI

pytestmark = pytest.mark.slow

DEPLOY = ROOT / "deploy" / "production" / "dagster.yaml"


@pytest.fixture(scope="module")
def pg():
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install -y postgresql; .ci/run does it)")
    srv = start_postgres()
    yield srv
    srv.stop()


def _instance(home: Path, pg, monkeypatch) -> dg.DagsterInstance:
    for k, v in pg.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return dg.DagsterInstance.get()


def test_production_instance_storage_is_postgres(tmp_path, pg, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(DEPLOY, home / "dagster.yaml")
    with _instance(home, pg, monkeypatch) as instance:
        from dagster._core.run_coordinator import QueuedRunCoordinator
        from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        cfg = instance.get_concurrency_config()
        assert cfg.run_queue_config.max_concurrent_runs == 4
        assert pg.password not in (home / "dagster.yaml").read_text()


def _runs(instance, **filters):
    return instance.get_runs(dg.RunsFilter(**filters))


def test_daemon_on_postgres_sensor_ingest_then_one_refresh(tmp_path, pg, monkeypatch):
    home, sessions, lake = tmp_path / "home", tmp_path / "sessions", tmp_path / "lake"
    home.mkdir()
    shutil.copyfile(DEPLOY, home / "dagster.yaml")
    copy_samples(sessions, limit=1)
    log = tmp_path / "daemon.log"
    # the recipes as shipped, except that the prompt pool draws from no source: the GPU step
    # (capture_shards, tested in tests/capture) then has nothing to capture on this CPU
    recipes = tmp_path / "recipes"
    shutil.copytree(ROOT / "recipes", recipes)
    quotas = (recipes / "capture_quotas.yaml").read_text()
    quotas = quotas.replace("normalized_pairs: true", "normalized_pairs: false").replace(
        "sft_examples: true", "sft_examples: false")
    (recipes / "capture_quotas.yaml").write_text(quotas)
    with FakeOpenAI() as teacher:
        env = base_env(
            DAGSTER_HOME=str(home), PYTHONPATH=str(ROOT), TRACELAKE_LAKE_ROOT=str(lake),
            TRACELAKE_SESSIONS_DIR=str(sessions), TRACELAKE_RECIPES_DIR=str(recipes),
            TRACELAKE_TEACHERS_FILE=str(fake_teacher_pool(tmp_path / "teachers.yaml", teacher.url)),
            FAKE_TEACHER_KEY="sk-e2e-not-a-real-key-0000000000000000",
            TRACELAKE_REFRESH_QUIET_SECONDS="5", TRACELAKE_AUTOMATION_INTERVAL_SECONDS="5",
            OMP_NUM_THREADS="1", **pg.env())
        exe = str(Path(PYTHON).with_name("dagster-daemon"))
        proc = subprocess.Popen([exe, "run", "-m", "dagster_project.definitions"], cwd=tmp_path, env=env,
                                stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        try:
            with _instance(home, pg, monkeypatch) as instance:
                from dagster_project.automation import AUTOMATION_SENSOR
                from dagster_project.definitions import INGEST_JOB

                ok = dg.DagsterRunStatus.SUCCESS
                done = wait_for(lambda: _runs(instance, job_name=INGEST_JOB, statuses=[ok]), 900, 3,
                                f"an ingest run launched by the session sensor ({log})")
                assert done[0].tags.get("dagster/sensor_name") == "session_files"

                def refreshed():
                    runs = _runs(instance, tags={"dagster/sensor_name": AUTOMATION_SENSOR})
                    finished = [r for r in runs if r.is_finished]
                    return finished if finished and len(finished) == len(runs) else None

                runs = wait_for(refreshed, 900, 3, f"the datasets refresh by the automation sensor ({log})")
                assert [r.status for r in runs] == [ok], [(r.run_id, r.status) for r in runs]
                ev = instance.get_latest_materialization_event(dg.AssetKey(["gold", "normalized_pairs"]))
                assert ev is not None and ev.run_id == runs[0].run_id
                # nothing changed since: no second refresh over the next ticks
                time.sleep(20)
                assert len(_runs(instance, tags={"dagster/sensor_name": AUTOMATION_SENSOR})) == 1
                assert len(_runs(instance, job_name=INGEST_JOB)) == 1
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            try:  # whatever of the daemon's group outlived it (its code server, run workers)
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(30)
    assert (lake / "gold" / "normalized_pairs").is_dir()
