"""The one Delta storage path of tracelake.

Every asset writes through :class:`DeltaLake`. Partitioned tables are written with an
explicit predicate over *all* of the run's partition keys, never through
dagster-deltalake's IO manager (it overwrites the whole table on a run over several
partition keys). Each table has exactly one schema definition: a :class:`TableSpec`
declared next to the asset that owns it.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from deltalake import CommitProperties, DeltaTable, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from pydantic import Field

from resources import settings


@dataclass(frozen=True)
class TableSpec:
    """The single definition of a Delta table: where it lives and what it holds."""

    layer: str
    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...] = ()
    merge_keys: tuple[str, ...] = ()
    description: str = ""
    # Parquet layout of the files this table's writes produce: keyword arguments of
    # deltalake.WriterProperties (e.g. small data pages so readers can skip to single rows).
    writer: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)

    def writer_properties(self) -> WriterProperties | None:
        return WriterProperties(**self.writer) if self.writer else None

    @property
    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey([self.layer, self.name])

    @property
    def path(self) -> str:
        return f"{self.layer}/{self.name}"

    def asset_spec(self, **kw: Any) -> dg.AssetSpec:
        """This table as a Dagster asset spec (a spec of a multi-asset that writes several
        tables): key, kinds and description from the table; ``kw`` adds deps, group, ..."""
        return dg.AssetSpec(key=self.asset_key, kinds={"delta", self.layer},
                            description=kw.pop("description", self.description), **kw)

    def empty(self) -> pa.Table:
        return self.schema.empty_table()

    def conform(self, data: Any) -> pa.Table:
        """Coerce rows / a polars frame / an arrow table to exactly this schema.

        Missing nullable columns are filled with nulls; unknown columns are an error (a
        column must be added to the spec first, which is how the schema evolves).
        """
        table = to_arrow(data, self.schema)
        extra = [c for c in table.column_names if c not in self.schema.names]
        if extra:
            raise ValueError(f"{self.path}: columns not in the table spec: {extra}")
        cols = []
        for f in self.schema:
            if f.name in table.column_names:
                col = table.column(f.name)
                if not col.type.equals(f.type):
                    col = col.cast(f.type)
                cols.append(col)
            else:
                if not f.nullable:
                    raise ValueError(f"{self.path}: missing required column {f.name!r}")
                cols.append(pa.nulls(table.num_rows, f.type))
        out = pa.Table.from_arrays(cols, schema=self.schema)
        for f in self.schema:
            if not f.nullable and out.column(f.name).null_count:
                raise ValueError(f"{self.path}: nulls in required column {f.name!r}")
        return out


def to_arrow(data: Any, schema: pa.Schema | None = None) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, list):
        if not data:
            return (schema or pa.schema([])).empty_table()
        if schema is not None:
            names = set(schema.names)
            present = {k for row in data for k in row}
            sub = pa.schema([f for f in schema if f.name in present])
            unknown = present - names
            if unknown:
                raise ValueError(f"columns not in the table spec: {sorted(unknown)}")
            return pa.Table.from_pylist(data, schema=sub)
        return pa.Table.from_pylist(data)
    if hasattr(data, "to_arrow"):  # polars
        return data.to_arrow()
    raise TypeError(f"cannot convert {type(data)!r} to an Arrow table")


def sql_literal(value: Any) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    raise TypeError(f"unsupported predicate value {value!r}")


def in_predicate(column: str, values: Iterable[Any]) -> str:
    vals = sorted(set(values))
    if not vals:
        raise ValueError("an IN predicate needs at least one value")
    return f"{column} IN ({', '.join(sql_literal(v) for v in vals)})"


@dataclass
class WriteResult:
    """What a write did, in the form a materialization reports it."""

    uri: str
    version: int
    mode: str
    rows_written: int
    table_rows: int
    partitions: list[str] = field(default_factory=list)
    rows_deleted: int | None = None
    sessions: int | None = None

    def metadata(self) -> dict[str, Any]:
        md: dict[str, Any] = {
            "table_uri": dg.MetadataValue.path(self.uri),
            "delta_version": dg.MetadataValue.int(self.version),
            "write_mode": self.mode,
            "rows_written": dg.MetadataValue.int(self.rows_written),
            "table_rows": dg.MetadataValue.int(self.table_rows),
            "dagster/row_count": dg.MetadataValue.int(self.rows_written),
        }
        if self.partitions:
            md["partitions_replaced"] = dg.MetadataValue.int(len(self.partitions))
        if self.rows_deleted is not None:
            md["rows_deleted"] = dg.MetadataValue.int(self.rows_deleted)
        if self.sessions is not None:
            md["sessions_replaced"] = dg.MetadataValue.int(self.sessions)
        return md


SESSION_COLUMN = "session_key"


class OldLayoutError(RuntimeError):
    """A table written by an older tracelake with another partition layout."""


@dataclass(frozen=True)
class SessionScope:
    """The rows one run owns in the day-partitioned tables: these sessions on these days.

    ``days`` holds every day a session of ``keys`` has rows on or will have rows on (a
    session whose start day changed - its file was replaced by another session - is
    cleared from its old day too).
    """

    keys: tuple[str, ...]
    days: tuple[str, ...]

    @classmethod
    def of(cls, keys: Iterable[str], days: Iterable[str]) -> "SessionScope":
        return cls(tuple(sorted(set(keys))), tuple(sorted(set(days))))

    def predicate(self, day_column: str = "day") -> str:
        return f"{in_predicate(day_column, self.days)} AND {in_predicate(SESSION_COLUMN, self.keys)}"

    def expression(self, day_column: str = "day") -> pc.Expression:
        return (string_field(day_column).isin(list(self.days))
                & string_field(SESSION_COLUMN).isin(list(self.keys)))

    def __bool__(self) -> bool:
        return bool(self.keys)


def _day_column(spec: TableSpec) -> str:
    if len(spec.partition_by) != 1 or SESSION_COLUMN not in spec.schema.names:
        raise ValueError(f"{spec.path} is not a day-partitioned session table")
    return spec.partition_by[0]



class DeltaLake(dg.ConfigurableResource):
    """Delta Lake storage for every tracelake table.

    ``root`` is a local directory (default ``./lakehouse``) or an object-store URI
    (``s3://bucket/prefix``, ``gs://…``, ``az://…``). Object-store credentials come from
    the environment (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``) or ``storage_options``; they are
    handed to delta-rs only and never reported.
    """

    root: str = Field(default="./lakehouse", description="Lake root: a path or an s3:// URI.")
    storage_options: dict[str, str] = Field(default_factory=dict)
    max_commit_retries: int = 10

    # ---------------------------------------------------------------- locations
    def uri(self, spec: TableSpec) -> str:
        root = self.root.rstrip("/")
        if "://" not in root:
            root = os.path.abspath(root)
        return f"{root}/{spec.path}"

    def options(self) -> dict[str, str] | None:
        opts = settings.storage_env()
        opts.update(self.storage_options)
        if "://" not in self.root or self.root.startswith("file://"):
            return None
        if self.root.startswith("s3://"):
            opts.setdefault("AWS_S3_ALLOW_UNSAFE_RENAME", "true")
            if opts.get("AWS_ENDPOINT_URL", "").startswith("http://"):
                opts.setdefault("AWS_ALLOW_HTTP", "true")
        return opts or None

    # ------------------------------------------------------------------- tables
    def table(self, spec: TableSpec, version: int | None = None) -> DeltaTable | None:
        try:
            return DeltaTable(self.uri(spec), version=version, storage_options=self.options())
        except TableNotFoundError:
            return None

    def state(self, spec: TableSpec, rows_written: int = 0, mode: str = "none") -> WriteResult:
        """The table as it stands (created empty if missing), in the form a write reports it:
        for an asset whose rows were written elsewhere (a cache filled as answers arrive) or
        not at all this run."""
        dt = self.ensure(spec)
        return WriteResult(uri=self.uri(spec), version=dt.version(), mode=mode,
                           rows_written=rows_written, table_rows=count_rows(dt))

    def table_paths(self) -> list[str]:
        """``<layer>/<table>`` of every Delta table under a local root (object stores: [])."""
        root = self.root.rstrip("/")
        if "://" in root and not root.startswith("file://"):
            return []
        base = Path(os.path.abspath(root.removeprefix("file://")))
        return sorted(p.parent.relative_to(base).as_posix() for p in base.glob("*/*/_delta_log"))

    def table_at(self, path: str) -> DeltaTable | None:
        """The Delta table at ``<layer>/<table>`` (a table created on demand, without a spec)."""
        layer, name = path.split("/", 1)
        return self.table(TableSpec(layer=layer, name=name, schema=pa.schema([])))

    def exists(self, spec: TableSpec) -> bool:
        return self.table(spec) is not None

    def ensure(self, spec: TableSpec) -> DeltaTable:
        """Create the table if needed; add columns the spec gained since (additive evolution)."""
        for attempt in range(self.max_commit_retries):
            dt = self.table(spec)
            if dt is None:
                try:
                    write_deltalake(
                        self.uri(spec),
                        spec.empty(),
                        mode="append",
                        partition_by=list(spec.partition_by) or None,
                        storage_options=self.options(),
                        description=spec.description or None,
                        writer_properties=spec.writer_properties(),
                    )
                except (CommitFailedError, DeltaError) as exc:  # another process created it
                    if not _is_conflict(exc):
                        raise
                    _backoff(attempt)
                continue
            layout = list(dt.metadata().partition_columns)
            if layout != list(spec.partition_by) and dt.version() >= 0:
                raise OldLayoutError(
                    f"{self.uri(spec)} is partitioned by {layout or 'nothing'}, this tracelake writes it "
                    f"partitioned by {list(spec.partition_by) or 'nothing'}: run `tracelake migrate` once "
                    f"(it rewrites the table in place; the teacher cache and the replay corpus are untouched)")
            current = set(dt.schema().to_arrow().names)
            missing = [f for f in spec.schema if f.name not in current]
            if not missing:
                return dt
            try:
                from deltalake.schema import Field as DField

                dt.alter.add_columns(
                    [DField(f.name, _delta_type(f.type), nullable=True) for f in missing]
                )
            except (CommitFailedError, DeltaError) as exc:
                if not _is_conflict(exc):
                    raise
                _backoff(attempt)
        raise RuntimeError(f"could not create or evolve {self.uri(spec)}")

    def _retrying(self, spec: TableSpec, op) -> DeltaTable:
        for attempt in range(self.max_commit_retries):
            dt = self.ensure(spec)
            try:
                op(dt)
                dt.update_incremental() if hasattr(dt, "update_incremental") else None
                return DeltaTable(self.uri(spec), storage_options=self.options())
            except (CommitFailedError, DeltaError) as exc:
                if not _is_conflict(exc) or attempt == self.max_commit_retries - 1:
                    raise
                _backoff(attempt)
        raise AssertionError("unreachable")

    def _result(self, spec: TableSpec, dt: DeltaTable, mode: str, rows: int, **kw) -> WriteResult:
        return WriteResult(
            uri=self.uri(spec),
            version=dt.version(),
            mode=mode,
            rows_written=rows,
            table_rows=count_rows(dt),
            **kw,
        )

    # ------------------------------------------------------------------- writes
    def replace_partitions(
        self, spec: TableSpec, data: Any, partition_keys: Sequence[str]
    ) -> WriteResult:
        """Replace exactly these partitions (all keys of the run) and nothing else.

        Rows of ``data`` whose partition value is not in ``partition_keys`` are refused.
        A key with no rows in ``data`` ends up empty (its old rows are deleted).
        """
        if len(spec.partition_by) != 1:
            raise ValueError(f"{spec.path} is not partitioned by a single column")
        col = spec.partition_by[0]
        table = spec.conform(data)
        keys = sorted(set(partition_keys))
        if not keys:
            raise ValueError("replace_partitions needs at least one partition key")
        if table.num_rows:
            outside = set(pc.unique(table.column(col)).to_pylist()) - set(keys)
            if outside:
                raise ValueError(f"{spec.path}: rows for partitions outside this run: {sorted(outside)[:5]}")
        predicate = in_predicate(col, keys)
        dt = self._replace_where(spec, table, predicate)
        return self._result(spec, dt, "replace_partitions", table.num_rows, partitions=keys)

    def _replace_where(self, spec: TableSpec, table: pa.Table, predicate: str) -> DeltaTable:
        """Overwrite the rows matching ``predicate`` with ``table`` (delete them when it is empty)."""

        def op(dt: DeltaTable) -> None:
            if table.num_rows:
                write_deltalake(
                    dt,
                    table,
                    mode="overwrite",
                    predicate=predicate,
                    partition_by=list(spec.partition_by),
                    storage_options=self.options(),
                    writer_properties=spec.writer_properties(),
                )
            else:
                dt.delete(predicate, writer_properties=spec.writer_properties())

        return self._retrying(spec, op)

    def replace_sessions(self, spec: TableSpec, data: Any, scope: "SessionScope") -> WriteResult:
        """Replace exactly the rows of ``scope``'s sessions on ``scope``'s days, nothing else.

        For day-partitioned tables (``partition_by == ("day",)``, a ``session_key`` column):
        the write's predicate is ``day IN (days) AND session_key IN (keys)``, so other
        sessions of the same day and every other day keep their rows (and their files:
        Delta rewrites only the day directories named). Rows of ``data`` outside the scope
        are refused; a session of the scope with no rows in ``data`` ends up with none
        (a deleted file, or a session that moved to another day).
        """
        col = _day_column(spec)
        table = spec.conform(data)
        if not scope.keys:
            dt = self.ensure(spec)
            return self._result(spec, dt, "replace_sessions", 0, partitions=[])
        if table.num_rows:
            days = set(pc.unique(table.column(col)).to_pylist())
            keys = set(pc.unique(table.column(SESSION_COLUMN)).to_pylist())
            if days - set(scope.days) or keys - set(scope.keys):
                raise ValueError(
                    f"{spec.path}: rows outside this run's sessions: days {sorted(days - set(scope.days))[:5]}, "
                    f"sessions {sorted(keys - set(scope.keys))[:5]}")
        predicate = scope.predicate(col)
        dt = self._replace_where(spec, table, predicate)
        return self._result(spec, dt, "replace_sessions", table.num_rows, partitions=list(scope.days),
                            sessions=len(scope.keys))

    def merge(self, spec: TableSpec, data: Any, keys: Sequence[str] | None = None,
              update_columns: Sequence[str] | None = None) -> WriteResult:
        """Upsert on key columns: matched rows are updated, new rows inserted.

        ``update_columns`` limits what a match updates (e.g. only ``last_seen_at``).
        """
        keys = list(keys or spec.merge_keys)
        if not keys:
            raise ValueError(f"{spec.path}: merge needs key columns")
        table = spec.conform(data)
        if table.num_rows == 0:
            dt = self.ensure(spec)
            return self._result(spec, dt, "merge", 0)
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in keys)

        def op(dt: DeltaTable) -> None:
            m = dt.merge(table, predicate=predicate, source_alias="s", target_alias="t",
                         writer_properties=spec.writer_properties())
            if update_columns is None:
                m = m.when_matched_update_all()
            else:
                m = m.when_matched_update({c: f"s.{c}" for c in update_columns})
            m.when_not_matched_insert_all().execute()

        dt = self._retrying(spec, op)
        return self._result(spec, dt, "merge", table.num_rows)

    def append(self, spec: TableSpec, data: Any, commit_metadata: Mapping[str, Any] | None = None) -> WriteResult:
        """Append rows; ``commit_metadata`` lands in the commit's info (``DeltaTable.history()``)."""
        table = spec.conform(data)
        commit = (CommitProperties(custom_metadata={k: str(v) for k, v in commit_metadata.items()})
                  if commit_metadata else None)

        def op(dt: DeltaTable) -> None:
            if table.num_rows:
                write_deltalake(dt, table, mode="append", storage_options=self.options(),
                                writer_properties=spec.writer_properties(), commit_properties=commit)

        dt = self._retrying(spec, op)
        return self._result(spec, dt, "append", table.num_rows)

    def overwrite(self, spec: TableSpec, data: Any, schema_mode: str | None = None) -> WriteResult:
        """Replace the whole table (for unpartitioned, fully recomputed assets).

        ``schema_mode="overwrite"`` also replaces the table's schema by the spec's (a layout
        migration: columns the spec no longer has are dropped from the new version)."""
        table = spec.conform(data)

        def op(dt: DeltaTable) -> None:
            write_deltalake(
                dt, table, mode="overwrite",
                partition_by=list(spec.partition_by) or None,
                storage_options=self.options(),
                writer_properties=spec.writer_properties(),
                schema_mode=schema_mode,
            )

        dt = self._retrying(spec, op)
        return self._result(spec, dt, "overwrite", table.num_rows)

    def delete(self, spec: TableSpec, predicate: str) -> WriteResult:
        dt = self._retrying(spec, lambda dt: dt.delete(predicate, writer_properties=spec.writer_properties()))
        return self._result(spec, dt, "delete", 0)

    # -------------------------------------------------------------------- reads
    def read(
        self,
        spec: TableSpec,
        columns: Sequence[str] | None = None,
        partitions: Sequence[str] | None = None,
        filter: Any = None,
        version: int | None = None,
        scope: "SessionScope | None" = None,
    ) -> pa.Table:
        """Read a table (or some of its partitions / columns) as Arrow.

        ``scope`` (day-partitioned tables) reads only the rows of those sessions on those
        days; the day filter prunes every other day's files.

        A table that was never written reads as empty with the spec's schema. ``version``
        pins a Delta version (several reads of one consistent snapshot).
        """
        dt = self.table(spec, version)
        if dt is None:
            empty = spec.empty()
            return empty.select(list(columns)) if columns else empty
        ds = self._dataset(spec, dt)
        expr = filter
        if partitions is not None:
            col = spec.partition_by[0]
            if not partitions:
                empty = spec.empty()
                return empty.select(list(columns)) if columns else empty
            pexpr = pc.field(col).isin(sorted(set(partitions)))
            expr = pexpr if expr is None else (expr & pexpr)
        if scope is not None:
            if not scope.keys:
                empty = spec.empty()
                return empty.select(list(columns)) if columns else empty
            sexpr = scope.expression(_day_column(spec))
            expr = sexpr if expr is None else (expr & sexpr)
        cols = list(columns) if columns else None
        try:
            out = ds.to_table(columns=cols, filter=expr)
        except pa.ArrowNotImplementedError:
            # delta-rs merges write strings as string_view, and pyarrow's statistics
            # pruning cannot compare them to string literals: filter batch by batch.
            out = _filter_by_batches(ds, cols, expr)
        if columns is None:
            # table may hold columns of an older spec order; present the spec's order
            names = [n for n in spec.schema.names if n in out.column_names]
            out = out.select(names)
        return out

    def read_keys(
        self,
        spec: TableSpec,
        key: str,
        values: pa.Array,
        columns: Sequence[str] | None = None,
        version: int | None = None,
    ) -> pa.Table:
        """The rows whose ``key`` is one of ``values`` (any order), reading only their pages.

        Filtering a scan for a few rows scattered over a big table decodes every page of
        every column. On a local, unpartitioned table this instead joins the Delta
        version's active files with the keys in DataFusion with filter pushdown: the key
        column is decoded whole, the other columns only in the data pages that hold a
        matching row (the files' page index); tables written with small pages
        (``TableSpec.writer``) then read a few percent of their bytes for a 1% sample.
        Object stores, partitioned tables and tables using deletion vectors or column
        mapping take the filtered scan (same rows, slower).
        """
        cols = list(columns or spec.schema.names)
        values = pa.array(values) if not isinstance(values, (pa.Array, pa.ChunkedArray)) else values
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        dt = self.table(spec, version)
        if dt is None or len(values) == 0:
            return spec.empty().select(cols)
        if self._plain_local_files(spec, dt):
            out = _datafusion_semi_join([u.removeprefix("file://") for u in dt.file_uris()],
                                        pa.schema(dt.schema().to_arrow()), key, values, cols)
        else:
            field = string_field(key) if pa.types.is_string(spec.schema.field(key).type) else pc.field(key)
            out = self.read(spec, columns=cols, filter=field.isin(values), version=dt.version())
        return out.cast(pa.schema([pa.field(c, spec.schema.field(c).type) for c in cols]))

    def _plain_local_files(self, spec: TableSpec, dt: DeltaTable) -> bool:
        """True when the active files alone are the table (no partition values in paths,
        no deletion vectors, no column mapping) and they are on the local disk."""
        if ("://" in self.root and not self.root.startswith("file://")) or spec.partition_by:
            return False
        features = dt.protocol().reader_features or []
        mapping = (dt.metadata().configuration or {}).get("delta.columnMapping.mode", "none")
        return "deletionVectors" not in features and mapping in ("none", None)

    def _dataset(self, spec: TableSpec, dt: DeltaTable):
        if "://" in self.root and not self.root.startswith("file://"):
            return dt.to_pyarrow_dataset()
        # pyarrow's native local filesystem reads ~1.5-2x faster than the object-store adapter
        fs = pafs.SubTreeFileSystem(self.uri(spec), pafs.LocalFileSystem())
        return dt.to_pyarrow_dataset(filesystem=fs)

    def version(self, spec: TableSpec) -> int | None:
        dt = self.table(spec)
        return None if dt is None else dt.version()


def string_field(name: str) -> pc.Expression:
    """A string column in a read filter.

    Files written by ``lake.merge`` (delta-rs / DataFusion) store strings as ``string_view``
    and their Delta stats become string_view literals: a plain ``pc.field(c) == "x"`` or
    ``.isin(...)`` then fails in pyarrow ("no kernel matching input types (string,
    string_view)"). Casting the field to the table type works on every file.
    """
    return pc.field(name).cast(pa.string())


def count_rows(dt: DeltaTable) -> int:
    return dt.to_pyarrow_dataset().count_rows()


def _filter_by_batches(ds, columns, expr) -> pa.Table:
    if expr is None:
        return ds.to_table(columns=columns)
    batches = []
    for batch in ds.to_batches():
        t = pa.Table.from_batches([batch])
        t = t.cast(pa.schema([f.with_type(_unview(f.type)) for f in t.schema])).filter(expr)
        batches.append(t.select(columns) if columns else t)
    if not batches:
        return ds.schema.empty_table() if not columns else ds.schema.empty_table().select(columns)
    return pa.concat_tables(batches)


def process_bytes_read() -> int | None:
    """Bytes this process has read through read()/pread() so far, all threads (Linux
    /proc/self/io ``rchar``; None elsewhere). Shows what a read really fetched."""
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))
    except (OSError, StopIteration):
        return None


_PUSHDOWN = {
    # evaluate the join's key filter while decoding (late materialization) ...
    "datafusion.execution.parquet.pushdown_filters": "true",
    "datafusion.execution.parquet.reorder_filters": "true",
    # ... and fetch only the data pages that hold selected rows
    "datafusion.execution.parquet.enable_page_index": "true",
    # the footer read guesses 512 KiB for object stores; locally, read what it says
    "datafusion.execution.parquet.metadata_size_hint": "16384",
}


def _datafusion_semi_join(files: Sequence[str], schema: pa.Schema, key: str,
                          values: pa.Array, columns: Sequence[str]) -> pa.Table:
    """Rows of the parquet ``files`` whose ``key`` is in ``values`` (a semi join in DataFusion).

    The keys are the join's small build side; DataFusion pushes them into each file scan
    as a dynamic filter, which pushdown_filters evaluates on the key column first.
    """
    from datafusion import SessionConfig, SessionContext

    ctx = SessionContext(SessionConfig(_PUSHDOWN))
    keys = ctx.from_arrow(pa.table({"__key": pc.unique(values)}))
    table_schema = pa.schema([f.with_type(_unview(f.type)) for f in schema])
    out = None
    for path in files:
        df = ctx.read_parquet(path, schema=table_schema)
        df = df.join(keys, how="semi", left_on=key, right_on="__key").select(*columns)
        out = df if out is None else out.union(df)
    if out is None:
        return table_schema.empty_table().select(list(columns))
    return out.to_arrow_table()


def _unview(t: pa.DataType) -> pa.DataType:
    if t == pa.string_view():
        return pa.string()
    if t == pa.binary_view():
        return pa.binary()
    return t


def _is_conflict(exc: Exception) -> bool:
    if isinstance(exc, CommitFailedError):
        return True
    msg = str(exc).lower()
    return any(s in msg for s in ("conflict", "commit failed", "already exists", "version already"))


def _backoff(attempt: int) -> None:
    time.sleep(min(2.0, 0.05 * (2**attempt)) * (0.5 + random.random()))


def _delta_type(t: pa.DataType):
    """Map an Arrow type to a delta-rs schema type (for additive evolution)."""
    from deltalake.schema import Schema as DSchema

    return DSchema.from_arrow(pa.schema([pa.field("x", t)])).fields[0].type


def partition_keys_of(context: dg.AssetExecutionContext) -> list[str]:
    """All partition keys of this run (one key, a range, or a single-run backfill)."""
    if not context.has_partition_key and not context.has_partition_key_range:
        return []
    return list(context.partition_keys)
