"""The datasets' automation condition over a real instance: one refresh per burst.

A burst of 1,000 ingested session partitions (materializations recorded in a real
instance) requests each dataset once, only after ingestion has been quiet; the next
evaluation requests nothing; a later change requests one refresh again. A failed or
never-materialized upstream partition does not block it.
"""

from __future__ import annotations

import datetime as dt
import time

import dagster as dg

from assets.traces.partitions import SESSIONS
from dagster_project.automation import AUTOMATION_SENSOR, IngestQuiet, ingest_quiet
from dagster_project.definitions import INGEST_JOB, build_definitions
from resources.lake import DeltaLake
from sensors.sessions import SessionSource

DATASETS = {"gold/normalized_pairs", "gold/replay_corpus", "gold/prompt_pool", "gold/capture_shards",
            "gold/replay_sample", "gold/rag_playbooks"}


def _requested(result) -> set[str]:
    return {e.key.to_user_string() for e in result.results if e.true_subset.size}


def _ingest_burst(instance, keys, n):
    # n session files ingested over the days of a month (materializations of day partitions)
    parts = [f"2026-11-{1 + i % 28:02d}" for i in range(n)]
    for key in keys:
        for p in parts:
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=p))



def test_burst_of_1000_files_is_one_refresh(tmp_path, instance):
    defs = build_definitions(lake=DeltaLake(root=str(tmp_path / "lake")),
                             sessions=SessionSource(root=str(tmp_path / "s")))
    sensor = defs.get_sensor_def(AUTOMATION_SENSOR)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    graph = defs.resolve_asset_graph()
    conds = {k.to_user_string(): graph.get(k).automation_condition for k in graph.get_all_asset_keys()}
    assert DATASETS <= {k for k, c in conds.items() if c is not None}
    ingest = [dg.AssetKey(["gold", "preference_pairs"]), dg.AssetKey(["gold", "sft_examples"]),
              dg.AssetKey(["gold", "kto_examples"]), dg.AssetKey(["silver", "trace_turns"]),
              dg.AssetKey(["silver", "agent_steps"])]
    ingest = [k for k in ingest if graph.has(k)]
    now = dt.datetime.now(dt.timezone.utc)

    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=now)
    assert first.total_requested == 0  # nothing upstream yet, nothing to refresh

    t0 = time.perf_counter()
    _ingest_burst(instance, ingest[:1], 1000)  # one ingest asset is enough: the datasets read them all
    print(f"burst recorded in {time.perf_counter() - t0:.1f}s")
    # the burst just happened: ingest is not quiet yet, nothing is requested
    during = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor,
                                               evaluation_time=dt.datetime.now(dt.timezone.utc))
    assert during.total_requested == 0
    quiet, why = ingest_quiet(instance, [INGEST_JOB], ingest, 60)
    assert not quiet and "ago" in why, (quiet, why, time.time())

    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=61)
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=during.cursor,
                                              evaluation_time=later)
    requested = _requested(after)
    assert DATASETS <= requested, requested
    # each dataset exactly once (one unpartitioned asset = one request)
    assert all(after.get_num_requested(dg.AssetKey.from_user_string(k)) == 1 for k in DATASETS)

    # requested but nothing changed since: no second refresh
    again = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after.cursor,
                                              evaluation_time=later + dt.timedelta(seconds=30))
    assert again.total_requested == 0

    # one more grown file later: one more refresh after the quiet period
    _ingest_burst(instance, ingest[:1], 1)
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=120)
    more = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=again.cursor, evaluation_time=t)
    assert "gold/normalized_pairs" in _requested(more)


def test_a_queued_ingest_run_holds_the_refresh(tmp_path, instance):
    defs = build_definitions(lake=DeltaLake(root=str(tmp_path / "lake")),
                             sessions=SessionSource(root=str(tmp_path / "s")))
    key = dg.AssetKey(["gold", "preference_pairs"])
    cond = IngestQuiet([INGEST_JOB], [key], 0)
    assert "ingest_sessions" in cond.description
    job = defs.resolve_job_def(INGEST_JOB)
    run = instance.create_run_for_job(job, run_config={})  # NOT_STARTED: launched, not finished
    quiet, why = ingest_quiet(instance, [INGEST_JOB], [key], 0)
    assert not quiet and "queued or running" in why
    instance.report_run_failed(run)
    assert ingest_quiet(instance, [INGEST_JOB], [key], 0)[0]


def test_code_location_loads_as_dagster_dev_loads_it(tmp_path):
    """`dagster dev -m dagster_project.definitions` / the daemon load the module: exactly one
    Definitions object may sit at its module scope."""
    import subprocess
    import sys
    from pathlib import Path

    from testsupport.e2e import ROOT, base_env

    exe = str(Path(sys.executable).with_name("dagster"))
    proc = subprocess.run([exe, "definitions", "validate", "-m", "dagster_project.definitions"], cwd=ROOT,
                          env=base_env(PYTHONPATH=str(ROOT), DAGSTER_HOME=str(tmp_path)),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
