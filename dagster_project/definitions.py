"""Everything tracelake runs, wired in one place.

Each asset family's ``assets.py`` ends with its ``defs`` (assets, checks, jobs, the
resources only it uses); this module imports each of them, upstream first, and adds what
spans families: the shared resources (the lake, the session source), the ingest and
datasets jobs, the session sensor, the refresh automation and the table maintenance.
Only ``defs`` is a Definitions object at module scope (what ``dagster dev`` / ``dg`` load).
"""

import dagster as dg

from assets.capture import tables as capture_tables
from assets.capture import assets as capture_assets
from assets.corpus import tables as corpus_tables
from assets.corpus import assets as corpus_assets
from assets.examples import tables as examples_tables
from assets.examples import assets as examples_assets
from assets.pairs import tables as pairs_tables
from assets.pairs import assets as pairs_assets
from assets.traces.partitions import SESSIONS
from assets.rag import tables as rag_tables
from assets.rag import assets as rag_assets
from assets.student import assets as student_assets
from assets.student import tables as student_tables
from assets.teachers import tables as teachers_tables
from assets.teachers import assets as teachers_assets
from assets.traces import tables as traces_tables
from assets.traces import assets as traces_assets
from dagster_project.automation import automation_sensor, refresh_condition
from dagster_project.maintenance import build_maintenance
from resources import settings
from resources.changes import REFRESH_STATE
from resources.lake import DeltaLake, TableSpec
from resources.sessions import SessionSource
from sensors.sessions import build_session_sensor

# upstream first: traces -> teachers -> pairs -> examples -> corpus -> capture, rag -> student
# (modules, not their defs: ONE Definitions object at module scope, or `dagster dev -m` refuses to load)
FAMILIES = tuple(m.defs for m in (traces_assets, teachers_assets, pairs_assets, examples_assets, corpus_assets,
                                  capture_assets, rag_assets, student_assets))
TABLES: tuple[TableSpec, ...] = (
    *traces_tables.TABLES, *teachers_tables.TABLES, *pairs_tables.TABLES, *examples_tables.TABLES,
    *corpus_tables.TABLES, *capture_tables.TABLES, *rag_tables.TABLES, *student_tables.TABLES,
    REFRESH_STATE,
)
# What the incrementally refreshed datasets consumed: written by several steps (each reports
# a materialization of it), so an asset without a step of its own.
refresh_state = REFRESH_STATE.asset_spec(group_name="meta")
INGEST_JOB = "ingest_sessions"
DATASETS_JOB = "build_datasets"


def _per_session(a: dg.AssetsDefinition) -> bool:
    """Does the step write session partitions (possibly beside an unpartitioned side table)?"""
    return any(spec.partitions_def == SESSIONS for spec in a.specs)


def _manual(a: dg.AssetsDefinition) -> bool:
    """Steps run only when asked (student training and evaluation: minutes of compute)."""
    return any((spec.tags or {}).get("tracelake/manual") for spec in a.specs)


def build_definitions(lake: DeltaLake | None = None, sessions: SessionSource | None = None) -> dg.Definitions:
    families = dg.Definitions.merge(*FAMILIES, dg.Definitions(assets=[refresh_state]))
    assets = list(families.assets or [])
    steps = [a for a in assets if isinstance(a, dg.AssetsDefinition)]
    # Everything partitioned by session runs together, per new or grown file (the sensor)
    # or over many files at once (a backfill). The unpartitioned datasets derive from all
    # of it and follow on their own: the automation sensor refreshes each dataset once
    # upstream changed and ingestion has been quiet (dagster_project/automation.py), one
    # refresh per burst of files. Tables written outside runs (rag_runs, by `tracelake rag
    # run`) are asset specs without a step and part of neither.
    session_keys = [k for a in steps if _per_session(a) for k in a.keys]
    dataset_keys = [k for a in steps if not _per_session(a) and not _manual(a) for k in a.keys]
    refresh = refresh_condition([INGEST_JOB], session_keys, settings.refresh_quiet_seconds())
    assets = [
        a.map_asset_specs(lambda spec: spec.replace_attributes(automation_condition=refresh))
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
    maintenance_job, maintenance_schedule = build_maintenance(lambda: all_tables())
    from dagster_project.audit import build_audit_checks

    keys = {k for a in assets if isinstance(a, dg.AssetsDefinition) for k in a.keys}
    return dg.Definitions(
        assets=assets,
        asset_checks=[*(families.asset_checks or []), *build_audit_checks(list(TABLES), keys)],
        jobs=[*(families.jobs or []), ingest_job, datasets_job, maintenance_job],
        sensors=[*(families.sensors or []), build_session_sensor(ingest_job),
                 automation_sensor(dg.AssetSelection.assets(*dataset_keys),
                                   settings.automation_interval_seconds())],
        schedules=[*(families.schedules or []), maintenance_schedule],
        resources={
            **(families.resources or {}),
            "lake": lake or DeltaLake(root=settings.LAKE_ROOT),
            "sessions": sessions or SessionSource(root=settings.SESSIONS_DIR),
        },
    )


def all_tables(definitions: dg.Definitions | None = None) -> list[TableSpec]:
    """The TableSpec of every Delta table that is an asset of the definitions' asset graph,
    family by family, upstream first. Per-verifier capture tables are created on demand and
    belong to the gold/capture_shards asset (see :func:`asset_key_of_table`)."""
    keys = (definitions or defs).resolve_asset_graph().get_all_asset_keys()
    return [spec for spec in TABLES if spec.asset_key in keys]


def asset_key_of_table(path: str) -> dg.AssetKey:
    """The asset a ``<layer>/<table>`` directory of the lake belongs to: the table's own
    key, or for a per-verifier capture table ``gold/capture_shards__<verifier>__...`` the
    capture_shards asset."""
    layer, name = path.split("/", 1)
    return dg.AssetKey([layer, name.split("__", 1)[0]])


defs = build_definitions()
