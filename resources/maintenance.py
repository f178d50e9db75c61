"""Delta table maintenance: compact small files, checkpoint, vacuum old versions.

Every sensor tick commits a few small files to each table it touches; at a tick every
30 s a table gains thousands of versions and files a day. :func:`maintain_table` bin-packs
the small files of each partition into large ones (``optimize.compact``; or
``optimize.z_order`` on chosen columns, which also clusters rows so filtered reads skip
files), writes a checkpoint (readers then replay one parquet file instead of thousands of
JSON commits), removes expired log entries, and vacuums the data files no version within
``retention_hours`` needs (time travel stays possible for that long; default a week).
Rows are never changed: compaction rewrites the same rows into fewer files.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, DeltaError

from resources.lake import DeltaLake, TableSpec, _backoff, _is_conflict

DEFAULT_RETENTION_HOURS = 168  # one week of time travel


@dataclass
class TableStats:
    files: int
    bytes: int
    rows: int
    version: int

    @classmethod
    def of(cls, dt: DeltaTable) -> "TableStats":
        actions = pa.table(dt.get_add_actions(flatten=True))
        return cls(
            files=actions.num_rows,
            bytes=int(pa.compute.sum(actions.column("size_bytes")).as_py() or 0) if actions.num_rows else 0,
            rows=int(pa.compute.sum(actions.column("num_records")).as_py() or 0) if actions.num_rows else 0,
            version=dt.version(),
        )


@dataclass
class MaintenanceResult:
    table: str
    before: TableStats
    after: TableStats
    compacted_files_removed: int = 0
    compacted_files_added: int = 0
    zorder: list[str] = field(default_factory=list)
    checkpoint_version: int | None = None
    vacuumed_files: int = 0
    retention_hours: int = DEFAULT_RETENTION_HOURS
    seconds: float = 0.0
    skipped: str = ""

    def row(self) -> dict:
        d = asdict(self)
        b, a = d.pop("before"), d.pop("after")
        d.update({f"{k}_before": v for k, v in b.items()})
        d.update({f"{k}_after": v for k, v in a.items()})
        return d


def maintain_table(lake: DeltaLake, spec: TableSpec, *, retention_hours: int = DEFAULT_RETENTION_HOURS,
                   zorder: Sequence[str] = (), min_files: int = 2, target_size: int | None = None,
                   vacuum: bool = True) -> MaintenanceResult:
    """Compact, checkpoint and vacuum one table; the rows stay exactly the same.

    ``min_files``: compact only when the table has at least this many data files.
    ``zorder``: cluster by these columns instead of plain bin-packing (rewrites the table).
    Commits that conflict with a concurrent writer are retried on the new version.
    """
    t0 = time.perf_counter()
    dt = lake.table(spec)
    if dt is None:
        empty = TableStats(0, 0, 0, -1)
        return MaintenanceResult(spec.path, empty, empty, retention_hours=retention_hours,
                                 skipped="table does not exist")
    before = TableStats.of(dt)
    res = MaintenanceResult(spec.path, before, before, zorder=list(zorder), retention_hours=retention_hours)
    if before.files >= min_files:
        metrics = _retry(lake, spec, lambda dt: (
            dt.optimize.z_order(list(zorder), target_size=target_size,
                                writer_properties=spec.writer_properties())
            if zorder else
            dt.optimize.compact(target_size=target_size, writer_properties=spec.writer_properties())))
        res.compacted_files_removed = int(metrics.get("numFilesRemoved", 0))
        res.compacted_files_added = int(metrics.get("numFilesAdded", 0))
    dt = lake.table(spec)
    dt.create_checkpoint()
    res.checkpoint_version = dt.version()
    dt.cleanup_metadata()  # log entries older than the table's log retention (default 30 days)
    if vacuum:
        removed = dt.vacuum(retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False)
        res.vacuumed_files = len(removed)
    res.after = TableStats.of(lake.table(spec))
    if res.after.rows != before.rows and res.after.version == before.version + 1:
        # only our own commit happened in between: the row count must not change
        raise RuntimeError(f"{spec.path}: maintenance changed the row count "
                           f"{before.rows} -> {res.after.rows}")
    res.seconds = round(time.perf_counter() - t0, 3)
    return res


def _retry(lake: DeltaLake, spec: TableSpec, op):
    for attempt in range(lake.max_commit_retries):
        dt = lake.table(spec)
        try:
            return op(dt)
        except (CommitFailedError, DeltaError) as exc:
            if not _is_conflict(exc) or attempt == lake.max_commit_retries - 1:
                raise
            _backoff(attempt)
    raise AssertionError("unreachable")
