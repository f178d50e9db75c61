"""Carry a lake written by an older tracelake over to today's table names and layout.

    tracelake migrate            (also run by `tracelake demo` / `tracelake materialize`)

Renamed tables: ``silver/replay_steps`` is now ``silver/agent_steps``. It is derived data
(the next ingest rewrites it from ``silver/trace_turns``), so nothing is lost either way;
on a local lake the table directory is renamed in place (a Delta log holds relative paths,
so the renamed directory is the same table at the same version), which spares a re-ingest.

Session tables partitioned per session file (one Dagster partition per file) are rewritten
in place partitioned by day (:func:`migrate_to_days`); their rows are all kept.
When both exist the old one is stale and is removed. On an object store nothing is
renamed (no atomic rename there): the old table is reported, the next run writes the new
one. The tables that are not derived (``silver/teacher_cache``, ``gold/replay_corpus``,
``gold/rag_runs``) keep their names; a ``gold/rag_runs`` of the earlier column layout is
rewritten in the replay_run.v1 layout, every row kept (``assets/rag/runlog.py``).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from assets.rag.runlog import migrate_rag_runs
from assets.rag.tables import RAG_RUNS
from assets.traces.tables import AGENT_STEPS
from resources.lake import DeltaLake, TableSpec

# old "<layer>/<name>" -> the spec of the table that replaced it
RENAMED_TABLES: dict[str, TableSpec] = {
    "silver/replay_steps": AGENT_STEPS,
}


@dataclass(frozen=True)
class Migration:
    old: str
    new: str
    action: str  # renamed | removed_stale | left (object store) | none

    def __str__(self) -> str:
        return f"{self.old} -> {self.new}: {self.action}"


def _local_root(lake: DeltaLake) -> Path | None:
    root = lake.root.rstrip("/")
    if "://" in root and not root.startswith("file://"):
        return None
    return Path(os.path.abspath(root.removeprefix("file://")))


def _is_table(path: Path) -> bool:
    return (path / "_delta_log").is_dir()


def migrate_lake(lake: DeltaLake, sessions_root: str | os.PathLike | None = None) -> list[Migration]:
    """Apply every table rename to ``lake``, then the day partitioning (:func:`migrate_to_days`),
    then drop the sessions keyed with a user's name (:func:`pseudonymize_session_keys`);
    returns what was done (empty when nothing to do)."""
    out = _renames(lake)
    out += migrate_to_days(lake, sessions_root)
    return out + pseudonymize_session_keys(lake, sessions_root)


# ------------------------------------------------------------ session keys with user names

def pseudonymize_session_keys(lake: DeltaLake, sessions_root: str | os.PathLike | None = None) -> list[Migration]:
    """Remove every session whose key still names its user (a lake written before session
    keys were pseudonymized: ``-Users-jane-proj~<id>.jsonl``) from every table that has a
    ``session_key`` column, the registry included. Its file is then new to the sensor and
    is read again under its pseudonymized key by the next run (teacher answers come from the
    response cache: nothing is paid twice); the unpartitioned datasets follow on their next
    refresh. Old Delta files are vacuumed and, on a local lake, the Delta log is
    checkpointed and cleaned, so the names leave the disk too. Not touched: Dagster's own
    run storage (the run config, tags and event log of past runs name those files: delete
    the old runs, e.g. ``dagster run wipe``, to remove them)."""
    from resources import privacy
    from resources.sessions import SEP, SessionNames, session_key_for
    from assets.traces.tables import SESSION_FILES

    pii = privacy.for_lake(lake.root).pii
    if pii is None or "home_user" not in pii.policy.enabled:
        return []
    root = Path(os.path.expanduser(str(sessions_root))).resolve() if sessions_root else Path("/nonexistent")
    names = SessionNames(root, pii)
    from dagster_project.definitions import all_tables

    specs = [s for s in all_tables() if "session_key" in s.schema.names and lake.exists(s)]
    old: set[str] = set()
    if lake.exists(SESSION_FILES):
        reg = lake.read(SESSION_FILES, columns=["session_key", "path"])
        for k, path in zip(reg["session_key"].to_pylist(), reg["path"].to_pylist()):
            if path and names.stored(path) != path:
                old.add(k)
    for spec in specs:
        import pyarrow.compute as pc

        for k in pc.unique(lake.read(spec, columns=["session_key"])["session_key"]).to_pylist():
            if k and k not in old and session_key_for(names.stored(k.replace(SEP, "/"))) != k:
                old.add(k)
    if not old:
        return []
    # a lake from before: its other tables were scrubbed before dashed folder names were
    out = _rescrub_user_names(lake, [s for s in all_tables() if lake.exists(s) and s not in specs])
    from resources.lake import in_predicate

    keys = sorted(old)
    for spec in specs:
        before = lake.read(spec, columns=["session_key"]).num_rows
        for i in range(0, len(keys), 500):
            lake.delete(spec, in_predicate("session_key", keys[i: i + 500]))
        removed = before - lake.read(spec, columns=["session_key"]).num_rows
        if removed:
            _forget_history(lake, spec)
            out.append(Migration(spec.path, spec.path, f"{removed} rows of {len(keys)} sessions keyed with a "
                                                       "user name removed (read again under pseudonymized keys)"))
    return out


def _rescrub_user_names(lake: DeltaLake, specs: list[TableSpec]) -> list[Migration]:
    """The tables that are not per session (teacher cache, replay corpus, rag runs, ...):
    cells where the audit still finds a user's name (scrubbed before dashed folder names
    were) are scrubbed again with today's rules; the table is rewritten, its history dropped."""
    import pyarrow as pa

    from resources import privacy
    from resources.privacy.pii_audit import pii_auditor

    p = privacy.for_lake(lake.root)
    audit = pii_auditor(p)
    out = []
    for spec in specs:
        cols = [f.name for f in spec.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        if not cols:
            continue
        t = lake.read(spec)
        changed = 0
        for name in cols:
            values = t[name].to_pylist()
            idx = [i for i, v in enumerate(values) if v and ("Users" in v or "home" in v)
                   and audit.scan([v]).get("home_user")]
            if not idx:
                continue
            new, _ = p.scrub_texts([values[i] for i in idx])
            for i, v in zip(idx, new):
                values[i] = v
            changed += len(idx)
            t = t.set_column(t.schema.get_field_index(name), t.schema.field(name), pa.array(values, t[name].type))
        if changed:
            lake.overwrite(spec, t)
            _forget_history(lake, spec)
            out.append(Migration(spec.path, spec.path, f"{changed} cells naming a user scrubbed again"))
    return out


def _forget_history(lake: DeltaLake, spec: TableSpec) -> None:
    """Vacuum the files no version needs now; on a local lake also checkpoint and clean the
    log, so removed rows leave the disk (statistics in old commits name their values)."""
    dt = lake.table(spec)
    dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    if _local_root(lake) is None:
        return
    dt = lake.table(spec)
    dt.create_checkpoint()
    dt.cleanup_metadata()  # the log files older than the table's log retention
    log = Path(lake.uri(spec).removeprefix("file://")) / "_delta_log"
    last = dt.version()
    for f in log.glob("*.json"):  # commits before the checkpoint: the checkpoint holds the state
        try:
            v = int(f.name.split(".")[0])
        except ValueError:
            continue
        if v < last:
            f.unlink()
    for f in log.glob("*.checkpoint.parquet"):
        try:
            if int(f.name.split(".")[0]) < last:
                f.unlink()
        except ValueError:
            continue


def _renames(lake: DeltaLake) -> list[Migration]:
    out = []
    root = _local_root(lake)
    for old, spec in RENAMED_TABLES.items():
        if root is None:
            old_spec = TableSpec(layer=old.split("/")[0], name=old.split("/")[1], schema=spec.schema)
            if lake.exists(old_spec):
                out.append(Migration(old, spec.path, "left (object store: delete it by hand; "
                                                    "the next run writes the new table)"))
            continue
        src, dst = root / old, root / spec.path
        if not _is_table(src):
            continue
        if _is_table(dst):
            shutil.rmtree(src)
            out.append(Migration(old, spec.path, "removed_stale"))
        else:
            if dst.exists():  # a directory without a Delta log: nothing of value
                shutil.rmtree(dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            out.append(Migration(old, spec.path, "renamed"))
    # the rag run log keeps its name; a table of the earlier layout is carried over to the
    # replay_run.v1 layout in place (every row kept)
    n = migrate_rag_runs(lake)
    if n is not None:
        out.append(Migration(RAG_RUNS.path, RAG_RUNS.path, f"layout replay_run.v1 ({n} rows carried over)"))
    return out


# ------------------------------------------------------------ session partitions -> days

def _day_tables() -> list[TableSpec]:
    from dagster_project.definitions import all_tables

    return [s for s in all_tables() if s.partition_by == ("day",)]


def migrate_to_days(lake: DeltaLake, sessions_root: str | os.PathLike | None = None) -> list[Migration]:
    """Rewrite the session tables of a lake partitioned per session file (one Dagster
    partition and one Delta partition per file) as day-partitioned tables, in place.

    Each session's day is computed as the ingest job computes it (the first timestamp in
    its file's head, else the file's mtime) from its file when it is still under
    ``sessions_root`` - those files are also entered in the registry (bronze/session_files)
    so the sensor does not read them again - else from the head of its bronze lines, else
    from the date its rows were written. Every row is kept; the tables that are not
    per-session (the teacher cache, the replay corpus, rag runs) are not touched.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    from deltalake import write_deltalake

    from assets.traces.partitions import FIRST_DAY
    from assets.traces.registry import day_of, probe_file, session_start
    from assets.traces.tables import RAW_TRACES, SESSION_FILES
    from resources.sessions import SEP

    old = []
    for spec in _day_tables():
        dt = lake.table(spec)
        if dt is not None and list(dt.metadata().partition_columns) != ["day"]:
            old.append(spec)
    if not old:
        return []
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    root = Path(os.path.expanduser(str(sessions_root))).resolve() if sessions_root else None
    keys: set[str] = set()
    tables = {}
    for spec in old:
        t = lake.table(spec).to_pyarrow_table()
        tables[spec.path] = t
        if "session_key" in t.column_names:
            keys |= set(pc.unique(t["session_key"]).to_pylist())
    heads: dict[str, list[tuple[int, str]]] = {}
    raw = tables.get(RAW_TRACES.path)
    if raw is not None:
        small = raw.filter(pc.less_equal(raw["line_no"], 64)).select(["session_key", "line_no", "raw"])
        for k, n, text in zip(*(small[c].to_pylist() for c in ("session_key", "line_no", "raw"))):
            heads.setdefault(k, []).append((n, text or ""))
    days: dict[str, str] = {}
    registry = []
    for k in sorted(keys):
        path = root / k.replace(SEP, "/") if root is not None else None
        if path is not None and path.is_file():
            pr = probe_file(path)
            if not pr.error:
                days[k] = day_of(pr.started_at, pr.mtime_ns)
                registry.append({
                    "session_key": k, "path": k.replace(SEP, "/"), "format": None, "day": days[k],
                    "started_at": pr.started_at, "size": pr.size, "mtime_ns": pr.mtime_ns, "head_len": pr.head_len,
                    "head_fp": pr.head_fp, "lines": None, "status": "ingested", "change": "migrated",
                    "reason": "entered by `tracelake migrate`", "run_id": "migration", "first_seen_at": now,
                    "last_seen_at": now})
                continue
        if k in heads:
            text = "\n".join(t for _, t in sorted(heads[k])).encode()
            started = session_start(text)
            if started is not None:
                days[k] = day_of(started, 0)
    out = []
    for spec in old:
        t = tables[spec.path]
        fallback_col = next((c for c in ("ingested_at", "created_at", "timestamp") if c in t.column_names), None)
        fallback = t[fallback_col].to_pylist() if fallback_col else [None] * t.num_rows
        col = []
        for k, f in zip(t["session_key"].to_pylist(), fallback):
            d = days.get(k)
            if d is None:
                d = days[k] = f.astimezone(timezone.utc).date().isoformat() if f is not None else FIRST_DAY
            col.append(d)
        if "day" in t.column_names:
            t = t.drop_columns(["day"])
        t = t.append_column(pa.field("day", pa.string()), pa.array(col, pa.string()))
        t = spec.conform(t.select([n for n in spec.schema.names if n in t.column_names]))
        write_deltalake(lake.uri(spec), t, mode="overwrite", schema_mode="overwrite", partition_by=["day"],
                        storage_options=lake.options(), writer_properties=spec.writer_properties())
        out.append(Migration(spec.path, spec.path, f"partitioned by day ({t.num_rows} rows, "
                                                   f"{len(set(col))} days)"))
    if registry:
        lake.merge(SESSION_FILES, registry)
        out.append(Migration("session files", SESSION_FILES.path, f"{len(registry)} files registered"))
    return out
