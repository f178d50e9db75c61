"""When the unpartitioned datasets refresh by themselves.

The automation sensor (declared here, RUNNING by default) evaluates one condition on every
dataset: refresh when something upstream changed since the dataset was last requested or
updated, once ingestion has been *quiet* for ``quiet_seconds`` (no ingest run queued or
running, no ingest materialization in that window). A burst of 1,000 session files thus
causes one refresh of each dataset, after the burst, not one per file. Missing or failed
upstream partitions never block it (a dataset refreshes over what is there).
"""

from __future__ import annotations

import datetime as _dt
from typing import Sequence

import dagster as dg
from dagster._core.storage.dagster_run import IN_PROGRESS_RUN_STATUSES, RunsFilter

AUTOMATION_SENSOR = "datasets_automation"
DEFAULT_QUIET_SECONDS = 60.0
# a run the session sensor just created (NOT_STARTED) counts as well as queued / running ones
_NOT_FINISHED = [dg.DagsterRunStatus.NOT_STARTED, *IN_PROGRESS_RUN_STATUSES]


class IngestQuiet(dg.AutomationCondition):
    """True when no run of the ingest jobs is queued or running and the newest
    materialization of any ingest asset is at least ``quiet_seconds`` old (the debounce)."""

    def __init__(self, ingest_jobs: Sequence[str], ingest_keys: Sequence[dg.AssetKey],
                 quiet_seconds: float = DEFAULT_QUIET_SECONDS):
        self.ingest_jobs = tuple(ingest_jobs)
        self.ingest_keys = tuple(ingest_keys)
        self.quiet_seconds = float(quiet_seconds)

    @property
    def name(self) -> str:
        return f"ingest_quiet_for_{int(self.quiet_seconds)}s"

    @property
    def description(self) -> str:
        return (f"no {'/'.join(self.ingest_jobs)} run queued or running, and no ingest "
                f"materialization in the last {self.quiet_seconds:g} s")

    @property
    def requires_cursor(self) -> bool:
        return False

    def evaluate(self, context):  # -> dg.AutomationResult
        quiet, _ = ingest_quiet(context.asset_graph_view.instance, self.ingest_jobs, self.ingest_keys,
                                self.quiet_seconds, context.evaluation_time)
        subset = context.candidate_subset if quiet else context.get_empty_subset()
        return dg.AutomationResult(context=context, true_subset=subset)


def ingest_quiet(instance: dg.DagsterInstance, jobs: Sequence[str], keys: Sequence[dg.AssetKey],
                 quiet_seconds: float, now: _dt.datetime | None = None) -> tuple[bool, str]:
    """(quiet?, why not) over the instance's runs and asset records."""
    for job in jobs:
        n = instance.get_runs_count(RunsFilter(job_name=job, statuses=_NOT_FINISHED))
        if n:
            return False, f"{n} {job} run(s) queued or running"
    now_ts = (now or _dt.datetime.now(_dt.timezone.utc)).timestamp()
    newest = 0.0
    for rec in instance.get_asset_records(list(keys)):
        ev = rec.asset_entry.last_materialization
        if ev is not None:
            newest = max(newest, ev.timestamp)
    if newest and now_ts - newest < quiet_seconds:
        return False, f"last ingest materialization {now_ts - newest:.0f} s ago (< {quiet_seconds:g} s)"
    return True, ""


def refresh_condition(ingest_jobs: Sequence[str], ingest_keys: Sequence[dg.AssetKey],
                      quiet_seconds: float = DEFAULT_QUIET_SECONDS) -> dg.AutomationCondition:
    """The condition of every dataset (see the module docstring)."""
    AC = dg.AutomationCondition
    pending = AC.any_deps_updated().since_last_handled().with_label("upstream changed since last refresh")
    return (
        pending
        & IngestQuiet(ingest_jobs, ingest_keys, quiet_seconds)
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label(f"refresh when upstream changed and ingest quiet {quiet_seconds:g}s")


def automation_sensor(target: dg.AssetSelection, interval_seconds: int = 30) -> dg.AutomationConditionSensorDefinition:
    """The sensor that evaluates the datasets' conditions. Declared in code so it is
    RUNNING from the start (Dagster's implicit default sensor starts STOPPED); evaluated in
    the code server because IngestQuiet is Python of ours."""
    return dg.AutomationConditionSensorDefinition(
        AUTOMATION_SENSOR,
        target=target,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=interval_seconds,
        use_user_code_server=True,
        description="Refreshes the datasets (normalized pairs, replay corpus, prompt pool, capture "
                    "shards, playbooks, report) once ingestion has been quiet; one refresh per burst.",
    )
