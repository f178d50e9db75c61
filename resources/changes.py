"""What changed in a table since a dataset last consumed it (incremental refresh).

A dataset (an unpartitioned asset derived from the session tables) remembers, per input
table, the Delta version it consumed last (:data:`REFRESH_STATE`, one small table). On
the next refresh it asks :func:`changes_since` what happened in between: the Delta
change data feed (CDF) of the input between that version and now, read in bounded
batches and only the columns asked for. delta-rs writes exact change rows for every
write tracelake does (appends, predicate overwrites of a day's sessions, merges,
deletes); compaction (``optimize``) changes nothing there. So a refresh reads what
changed, not the whole lake.

A full rebuild happens when there is no usable history: the dataset never ran, the input
has no change feed yet (it is switched on here, on first use), the versions needed were
vacuumed, or the caller asks for one (config ``full_refresh``).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Sequence

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from resources.lake import DeltaLake, TableSpec, in_predicate, string_field

CDF_PROPERTY = "delta.enableChangeDataFeed"
BATCH_ROWS = 8192  # rows per batch read: memory stays flat however big the lake is
KEYS_PER_READ = 1000  # values per IN filter when reading the rows of changed keys

REFRESH_STATE = TableSpec(
    layer="meta",
    name="refresh_state",
    schema=pa.schema([
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("input", pa.string(), nullable=False),
        pa.field("version", pa.int64(), nullable=False),
        pa.field("mode", pa.string()),
        pa.field("updated_at", pa.timestamp("us", tz="UTC")),
    ]),
    merge_keys=("dataset", "input"),
    description="Per dataset and input table: the Delta version the dataset's last refresh consumed.",
)


# ------------------------------------------------------------------------ state
def consumed_versions(lake: DeltaLake, dataset: str) -> dict[str, int]:
    t = lake.read(REFRESH_STATE, filter=string_field("dataset") == dataset)
    return dict(zip(t.column("input").to_pylist(), t.column("version").to_pylist()))


def record_consumed(lake: DeltaLake, dataset: str, versions: Mapping[str, int | None], mode: str) -> None:
    now = _dt.datetime.now(_dt.timezone.utc)
    rows = [{"dataset": dataset, "input": k, "version": v, "mode": mode, "updated_at": now}
            for k, v in versions.items() if v is not None]
    if rows:
        lake.merge(REFRESH_STATE, rows)


def refresh_state_event(lake: DeltaLake, dataset: str) -> dg.AssetMaterialization:
    """The materialization a dataset's step reports for REFRESH_STATE after recording what
    it consumed (several steps write the table, so it is an asset without a step of its own)."""
    return dg.AssetMaterialization(asset_key=REFRESH_STATE.asset_key, description=f"consumed by {dataset}",
                                   metadata=lake.state(REFRESH_STATE, mode="merge").metadata() | {"dataset": dataset})


def enable_change_feed(lake: DeltaLake, spec: TableSpec) -> int | None:
    """Switch the change data feed on (idempotent); the table's version after it, None if absent."""
    dt = lake.table(spec)
    if dt is None:
        return None
    if (dt.metadata().configuration or {}).get(CDF_PROPERTY) != "true":
        dt.alter.set_table_properties({CDF_PROPERTY: "true"}, raise_if_not_exists=False)
        dt = lake.table(spec)
    return dt.version()


# ----------------------------------------------------------------------- changes
@dataclass
class Changes:
    """The changes of one input between ``since`` (exclusive) and ``version`` (inclusive)."""

    table: str
    since: int | None
    version: int | None
    full: bool
    reason: str = ""
    # the batches of change rows (asked-for columns + _change_type), lazily read
    _batches: Iterator[pa.RecordBatch] | None = field(default=None, repr=False)

    @property
    def empty(self) -> bool:
        return not self.full and self.since == self.version

    def batches(self) -> Iterator[pa.RecordBatch]:
        if self._batches is None:
            return iter(())
        out, self._batches = self._batches, None
        return out

    def keys(self, column: str = "session_key") -> set:
        """Distinct values of ``column`` over every change row (inserted, updated or deleted)."""
        seen: set = set()
        for b in self.batches():
            seen.update(v for v in pc.unique(b.column(column)).to_pylist() if v is not None)
        return seen

    def inserted(self) -> Iterator[pa.RecordBatch]:
        """Change rows that are in the table now (inserts and update post-images), in batches."""
        for b in self.batches():
            ct = b.column("_change_type")
            mask = pc.is_in(ct, pa.array(["insert", "update_postimage"]))
            b = b.filter(mask)
            if b.num_rows:
                yield b.drop_columns([c for c in b.schema.names if c.startswith("_")])


def changes_since(lake: DeltaLake, spec: TableSpec, since: int | None, columns: Sequence[str],
                  *, full: bool = False) -> Changes:
    """The changes of ``spec`` after version ``since`` (see the module docstring)."""
    version = enable_change_feed(lake, spec)
    if version is None:
        return Changes(spec.path, since, None, full=False, reason="table does not exist yet")
    if full:
        return Changes(spec.path, since, version, full=True, reason="full refresh requested")
    if since is None:
        return Changes(spec.path, since, version, full=True, reason="first refresh")
    if since == version:
        return Changes(spec.path, since, version, full=False, reason="no change")
    if since > version:
        return Changes(spec.path, since, version, full=True, reason=f"table is at v{version} < consumed v{since} (recreated)")
    dt = lake.table(spec, version)
    try:
        reader = dt.load_cdf(starting_version=since + 1, ending_version=version,
                             columns=[*columns, "_change_type", "_commit_version"])
        it = _batches_of(reader)
        first = next(it, None)
    except Exception as exc:  # noqa: BLE001 - CDF missing for these versions (enabled later, vacuumed)
        return Changes(spec.path, since, version, full=True, reason=f"no change feed v{since + 1}..v{version}: "
                       f"{type(exc).__name__}: {str(exc)[:160]}")

    def chain():
        if first is not None:
            yield first
        yield from it

    return Changes(spec.path, since, version, full=False, reason=f"change feed v{since + 1}..v{version}",
                   _batches=chain())


def _batches_of(reader) -> Iterator[pa.RecordBatch]:
    rbr = pa.RecordBatchReader.from_stream(reader) if not isinstance(reader, pa.RecordBatchReader) else reader
    for b in rbr:
        if b.num_rows:
            yield _unview_batch(b)


def _unview_batch(b: pa.RecordBatch) -> pa.RecordBatch:
    fields = []
    for f in b.schema:
        t = f.type
        if t == pa.string_view() or t == pa.large_string():
            t = pa.string()
        elif t == pa.binary_view():
            t = pa.binary()
        fields.append(f.with_type(t))
    schema = pa.schema(fields)
    return b if schema.equals(b.schema) else b.cast(schema)


# -------------------------------------------------------------------- bounded reads
def scan(lake: DeltaLake, spec: TableSpec, columns: Sequence[str] | None = None, filter=None,
         version: int | None = None, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """A table's rows as record batches of at most ``batch_rows`` (never the whole table at once)."""
    dt = lake.table(spec, version)
    if dt is None:
        return
    ds = lake._dataset(spec, dt)
    cols = list(columns) if columns else [n for n in spec.schema.names if n in ds.schema.names]
    try:
        scanner = ds.scanner(columns=cols, filter=filter, batch_size=batch_rows)
        for b in scanner.to_batches():
            if b.num_rows:
                yield _unview_batch(b)
    except pa.ArrowNotImplementedError:  # string_view stats vs string literals: filter per batch
        for b in ds.scanner(columns=None, batch_size=batch_rows).to_batches():
            t = pa.Table.from_batches([_unview_batch(b)])
            if filter is not None:
                t = t.filter(filter)
            for out in t.select(cols).to_batches():
                if out.num_rows:
                    yield out


def scan_keys(lake: DeltaLake, spec: TableSpec, column: str, values, columns: Sequence[str] | None = None,
              extra_filter=None, version: int | None = None,
              keys_per_read: int = KEYS_PER_READ) -> Iterator[pa.RecordBatch]:
    """The rows whose ``column`` is in ``values``, in batches (the keys in groups of ``keys_per_read``)."""
    vals = sorted(v for v in set(values) if v is not None)
    field_ = string_field(column) if pa.types.is_string(spec.schema.field(column).type) else pads.field(column)
    for i in range(0, len(vals), keys_per_read):
        expr = field_.isin(vals[i:i + keys_per_read])
        if extra_filter is not None:
            expr = expr & extra_filter
        yield from scan(lake, spec, columns=columns, filter=expr, version=version)


def delete_keys(lake: DeltaLake, spec: TableSpec, column: str, values, keys_per_commit: int = KEYS_PER_READ) -> int:
    """Delete the rows whose ``column`` is in ``values`` (one IN-predicate commit per group of keys)."""
    vals = sorted(v for v in set(values) if v is not None)
    if not vals or not lake.exists(spec):
        return 0
    for i in range(0, len(vals), keys_per_commit):
        lake.delete(spec, in_predicate(column, vals[i:i + keys_per_commit]))
    return len(vals)


def rows_of(batches) -> list[dict]:
    out: list[dict] = []
    for b in batches:
        out.extend(b.to_pylist())
    return out
