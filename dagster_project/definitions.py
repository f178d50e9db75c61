"""Everything tracelake runs, wired in one place.

Each asset family (assets/<family>/__init__.py) brings its assets, checks, jobs and own
resources as a `defs`; the shared resources (the lake, the session source) and the jobs
and sensor that span families are defined here. Only `defs` is a Definitions object at
module scope (what `dagster dev` / `dg` load).
"""

import importlib

import dagster as dg

from assets.partitions import SESSIONS
from resources import settings
from resources.lake import DeltaLake, TableSpec
from resources.sessions import SessionSource
from sensors.sessions import build_session_sensor

FAMILIES = ("traces", "teachers", "pairs", "examples", "corpus", "capture", "rag")
INGEST_JOB = "ingest_sessions"
DATASETS_JOB = "build_datasets"


def _family(name: str) -> dg.Definitions:
    return importlib.import_module(f"assets.{name}").defs


def _asset_keys(assets, pred) -> list[dg.AssetKey]:
    return [k for a in assets if isinstance(a, dg.AssetsDefinition) and pred(a) for k in a.keys]


def build_definitions(lake: DeltaLake | None = None, sessions: SessionSource | None = None) -> dg.Definitions:
    families = dg.Definitions.merge(*(_family(f) for f in FAMILIES))
    assets = list(families.assets or [])
    # Everything partitioned by day runs together: the changed files of a sensor tick, or
    # every file of a date range (a backfill). The unpartitioned datasets derive from all
    # of it and follow on their own (eager: once an upstream partition updated and nothing
    # upstream is still running). Assets tagged tracelake/manual (e.g. rag runs) are not
    # part of either.
    session_keys = _asset_keys(assets, lambda a: a.partitions_def == SESSIONS)
    dataset_keys = _asset_keys(
        assets,
        lambda a: a.partitions_def is None
        and not any((a.tags_by_key.get(k) or {}).get("tracelake/manual") for k in a.keys),
    )
    eager = dg.AutomationCondition.eager()
    assets = [
        a.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=eager))
        if isinstance(a, dg.AssetsDefinition) and set(a.keys) & set(dataset_keys)
        else a
        for a in assets
    ]
    ingest_job = dg.define_asset_job(
        INGEST_JOB,
        selection=dg.AssetSelection.assets(*session_keys),
        description="The changed session files of a tick (or every file of a date range): session_files + "
                    "raw_traces → trace_turns → agent_steps → teacher_responses → pairs and training sets, "
                    "all steps in one process.",
        # the CPU chain in one process: a step costs its work, not a process start and an import
        executor_def=dg.in_process_executor,
    )
    datasets_job = dg.define_asset_job(
        DATASETS_JOB,
        selection=dg.AssetSelection.assets(*dataset_keys),
        description="Over all sessions: normalized pairs, replay corpus, prompt pool, capture shards, playbooks.",
    )
    return dg.Definitions(
        assets=assets,
        asset_checks=families.asset_checks,
        jobs=[*(families.jobs or []), ingest_job, datasets_job],
        sensors=[*(families.sensors or []), build_session_sensor(ingest_job)],
        schedules=families.schedules,
        resources={
            **(families.resources or {}),
            "lake": lake or DeltaLake(root=settings.LAKE_ROOT),
            "sessions": sessions or SessionSource(root=settings.SESSIONS_DIR),
        },
    )


def all_tables() -> list[TableSpec]:
    """Every fixed TableSpec of the project (per-verifier capture tables are created on demand)."""
    specs = []
    for fam in FAMILIES:
        try:
            mod = importlib.import_module(f"assets.{fam}.tables")
        except ImportError:
            continue
        specs += [v for v in vars(mod).values() if isinstance(v, TableSpec)]
    return specs


defs = build_definitions()
