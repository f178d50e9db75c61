"""The scheduled table maintenance job (compact, checkpoint, vacuum every table of the lake).

The job ``table_maintenance`` (schedule ``table_maintenance_schedule``, running by default;
cron from TRACELAKE_MAINTENANCE_CRON, every 6 hours) calls
:func:`resources.maintenance.maintain_table` on each table. Its run metadata shows files,
bytes and versions before and after per table, and each table's asset gets an
observation with its file count and size (Asset → Events in the UI).
"""


from typing import Callable

import dagster as dg
from pydantic import Field

from resources import settings
from resources.lake import DeltaLake, TableSpec
from resources.maintenance import DEFAULT_RETENTION_HOURS, maintain_table

MAINTENANCE_JOB = "table_maintenance"


class MaintenanceConfig(dg.Config):
    retention_hours: int = Field(
        default=DEFAULT_RETENTION_HOURS,
        description="Vacuum data files no version of the last N hours needs (time travel window; default a week).")
    tables: list[str] = Field(default_factory=list,
                              description="Table paths (layer/name) to maintain; empty = every table.")
    zorder: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per table path, columns to z-order by instead of plain compaction "
                    "(pays for tables read with filters on those columns).")
    min_files: int = Field(default=2, description="Compact a table only from this many data files.")
    vacuum: bool = True


def _md_table(rows: list[dict]) -> dg.MetadataValue:
    head = "| table | files | bytes | rows | version | vacuumed | seconds |\n|---|---|---|---|---|---|---|\n"
    body = "".join(
        f"| {r['table']} | {r['files_before']} → {r['files_after']} | {r['bytes_before']} → {r['bytes_after']} "
        f"| {r['rows_after']} | {r['version_before']} → {r['version_after']} | {r['vacuumed_files']} "
        f"| {r['seconds']} |\n" for r in rows)
    return dg.MetadataValue.md(head + body)


def build_maintenance(tables: Callable[[], list[TableSpec]]):
    """(job, schedule) over the TableSpecs ``tables()`` returns."""

    @dg.op(name="maintain_tables", description="Compact small files, checkpoint and vacuum every Delta table.")
    def maintain_tables(context: dg.OpExecutionContext, config: MaintenanceConfig, lake: DeltaLake) -> dict:
        specs = list({s.path: s for s in tables()}.values())
        wanted = set(config.tables)
        unknown = wanted - {s.path for s in specs}
        if unknown:
            raise dg.Failure(f"unknown tables: {sorted(unknown)}")
        results = []
        for spec in specs:
            if wanted and spec.path not in wanted:
                continue
            r = maintain_table(lake, spec, retention_hours=config.retention_hours,
                               zorder=config.zorder.get(spec.path, ()), min_files=config.min_files,
                               vacuum=config.vacuum)
            if r.skipped:
                continue
            row = r.row()
            results.append(row)
            context.log.info(f"{spec.path}: files {row['files_before']} -> {row['files_after']}, "
                             f"v{row['version_before']} -> v{row['version_after']}, "
                             f"vacuumed {row['vacuumed_files']}")
            context.log_event(dg.AssetObservation(asset_key=spec.asset_key, metadata={
                "data_files": row["files_after"], "table_bytes": row["bytes_after"],
                "delta_version": row["version_after"], "maintenance/files_before": row["files_before"],
                "maintenance/vacuumed_files": row["vacuumed_files"]}))
        tot = lambda k: sum(r[k] for r in results)  # noqa: E731
        context.add_output_metadata({
            "tables": len(results),
            "files_before": tot("files_before"), "files_after": tot("files_after"),
            "bytes_before": tot("bytes_before"), "bytes_after": tot("bytes_after"),
            "vacuumed_files": tot("vacuumed_files"),
            "retention_hours": config.retention_hours,
            "per_table": _md_table(results),
        })
        return {"tables": results}

    @dg.job(name=MAINTENANCE_JOB, description="Compact, checkpoint and vacuum the lake's Delta tables.")
    def table_maintenance():
        maintain_tables()

    schedule = dg.ScheduleDefinition(
        name=f"{MAINTENANCE_JOB}_schedule", job=table_maintenance, cron_schedule=settings.maintenance_cron(),
        default_status=dg.DefaultScheduleStatus.RUNNING, execution_timezone="UTC",
        description="Table maintenance (compaction, checkpoint, vacuum beyond the retention).")
    return table_maintenance, schedule
