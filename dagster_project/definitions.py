"""Everything tracelake runs, wired in one place.

Each asset family (assets/<family>/__init__.py) brings its assets, checks, jobs and
own resources; the shared resources (the lake, the session source) and the jobs and
sensors that span families are defined here.
"""

import importlib

import dagster as dg

from assets.capture import defs as capture_defs
from assets.pairs import defs as pairs_defs
from assets.partitions import SESSIONS
from assets.rag import defs as rag_defs
from assets.replay import defs as replay_defs
from assets.teachers import defs as teachers_defs
from assets.traces import defs as traces_defs
from dagster_project import settings
from resources.lake import DeltaLake, TableSpec
from sensors.sessions import SessionSource, build_session_sensor

FAMILIES = ("traces", "teachers", "pairs", "capture", "replay", "rag")
INGEST_JOB = "ingest_sessions"
DATASETS_JOB = "build_datasets"

family_defs = dg.Definitions.merge(
    traces_defs, teachers_defs, pairs_defs, capture_defs, replay_defs, rag_defs
)


def _assets_where(pred) -> list[dg.AssetKey]:
    keys = []
    for a in family_defs.assets or []:
        if isinstance(a, dg.AssetsDefinition) and pred(a):
            keys.extend(a.keys)
    return keys


# Everything partitioned by session runs together, per new or grown file (the sensor)
# or over many files at once (a backfill). Unpartitioned datasets derive from all of it.
SESSION_ASSETS = _assets_where(lambda a: a.partitions_def == SESSIONS)
DATASET_ASSETS = _assets_where(
    lambda a: a.partitions_def is None and not (a.tags_by_key.get(a.key) or {}).get("tracelake/manual")
)

ingest_job = dg.define_asset_job(
    INGEST_JOB,
    selection=dg.AssetSelection.assets(*SESSION_ASSETS),
    description="Session files → raw_traces → trace_turns → replay_steps → teachers → pairs (per session).",
)
datasets_job = dg.define_asset_job(
    DATASETS_JOB,
    selection=dg.AssetSelection.assets(*DATASET_ASSETS),
    description="Datasets over all sessions: normalized pairs, replay corpus, prompt pool, capture, playbooks.",
)

core = dg.Definitions(
    resources={
        "lake": DeltaLake(root=settings.LAKE_ROOT),
        "sessions": SessionSource(root=settings.SESSIONS_DIR),
    },
    jobs=[ingest_job, datasets_job],
    sensors=[build_session_sensor(ingest_job)],
)


def _eager(a):
    """The datasets follow new sessions on their own: once any upstream partition updates
    (a sensor run or a backfill) and nothing upstream is still running."""
    if isinstance(a, dg.AssetsDefinition) and set(a.keys) & set(DATASET_ASSETS):
        return a.map_asset_specs(
            lambda spec: spec.replace_attributes(automation_condition=dg.AutomationCondition.eager())
        )
    return a


_merged = dg.Definitions.merge(core, family_defs)
defs = dg.Definitions(
    assets=[_eager(a) for a in _merged.assets or []],
    asset_checks=_merged.asset_checks,
    jobs=_merged.jobs,
    sensors=_merged.sensors,
    schedules=_merged.schedules,
    resources=_merged.resources,
)


def _all_tables() -> list[TableSpec]:
    specs = []
    for fam in FAMILIES:
        try:
            mod = importlib.import_module(f"assets.{fam}.tables")
        except ImportError:
            continue
        specs += [v for v in vars(mod).values() if isinstance(v, TableSpec)]
    return specs


TABLES = _all_tables()
