"""Partitions shared across asset families: one partition per UTC day.

A session belongs to the day its session started (``bronze/session_files`` records it;
see assets/traces/registry.py); the session key is a column. The ``session_files``
sensor requests ONE run per tick for the files that changed, over the days they belong
to, and carries the changed files in the run config: every session asset of that run
then rewrites exactly those sessions (:func:`run_sessions`), never the other sessions of
the same days. A run without a file list (a backfill over a date range, a launch from the
UI) re-reads every file the registry holds for its days.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import dagster as dg

from assets.traces.tables import SESSION_FILES
from resources.lake import DeltaLake, SessionScope, string_field

# First daily partition. Sessions that started earlier are filed under this day (their
# true start stays in the registry's started_at).
FIRST_DAY = "2023-01-01"

SESSION_DAYS = dg.DailyPartitionsDefinition(
    start_date=FIRST_DAY, timezone="UTC", end_offset=1,  # today's partition exists (live sessions)
)
# The partitions definition of every session asset (the name the families import).
SESSIONS = SESSION_DAYS

# A backfill over a date range runs as one run: the registry names the files of those
# days, and every write is scoped to those sessions (see resources/lake.py).
SESSION_BACKFILL = dg.BackfillPolicy.single_run()


def session_asset(spec, deps, group: str, layer: str = "gold", description: str | None = None) -> dict:
    """The ``@dg.asset`` arguments of a day-partitioned session table (one run per date range)."""
    return dict(key=spec.asset_key, group_name=group, partitions_def=SESSIONS, backfill_policy=SESSION_BACKFILL,
                deps=[d.asset_key if hasattr(d, "asset_key") else d for d in deps], kinds={"delta", layer},
                description=description or spec.description)

REGISTRY_COLUMNS = ["session_key", "path", "day", "prev_day", "status", "size", "run_id"]
LIVE = ("ingested", "empty", "not_session")  # statuses whose rows are in the session tables


def run_id_of(context) -> str:
    """The id the registry step stamped: the root run's (a re-execution shares it)."""
    run = context.run
    return run.root_run_id or run.run_id


@dataclass
class RunSessions:
    """The sessions one run (re)writes and the days they touch.

    ``day_of``: sessions that have rows after the run -> their day; ``cleared``: sessions
    whose rows on a day must go (a deleted file; the old day of a replaced file).
    """

    day_of: dict[str, str] = field(default_factory=dict)
    cleared: dict[str, set[str]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return sorted(set(self.day_of) | set(self.cleared))

    @property
    def scope(self) -> SessionScope:
        days = set(self.day_of.values())
        for ds in self.cleared.values():
            days |= ds
        return SessionScope.of(self.keys, days)

    def __len__(self) -> int:
        return len(self.keys)

    def stamp(self, rows: Iterable[dict]) -> list[dict]:
        """Set each row's ``day`` from its session (rows of sessions without a day are dropped)."""
        out = []
        for r in rows:
            d = self.day_of.get(r["session_key"])
            if d is not None:
                r["day"] = d
                out.append(r)
        return out

    def chunks(self, max_bytes: int = 64 * 1024 * 1024, max_sessions: int = 500) -> Iterator["RunSessions"]:
        """This run's sessions in groups of bounded input size (memory stays flat on big runs)."""
        cur = RunSessions()
        nbytes = 0
        for k in self.keys:
            size = self.sizes.get(k, 0)
            if cur.keys and (nbytes + size > max_bytes or len(cur.keys) >= max_sessions):
                yield cur
                cur, nbytes = RunSessions(), 0
            if k in self.day_of:
                cur.day_of[k] = self.day_of[k]
            if k in self.cleared:
                cur.cleared[k] = set(self.cleared[k])
            cur.sizes[k] = size
            nbytes += size
        if cur.keys:
            yield cur

    def days(self) -> list[str]:
        return sorted(set(self.day_of.values()))


def sessions_from_registry(rows: Iterable[dict]) -> RunSessions:
    rs = RunSessions()
    for r in rows:
        k = r["session_key"]
        if r["status"] in LIVE:
            rs.day_of[k] = r["day"]
            rs.sizes[k] = max(int(r.get("size") or 0), 0)
        elif r["status"] == "deleted":
            rs.cleared.setdefault(k, set()).add(r["day"])
        else:
            continue  # unreadable / vanished: its rows stay as they are
        if r.get("prev_day") and r["prev_day"] != r["day"]:
            rs.cleared.setdefault(k, set()).add(r["prev_day"])
    return rs


def run_sessions(context, lake: DeltaLake, upstream=None) -> RunSessions:
    """The sessions this run rewrites.

    In a run whose registry step ran (the sensor's runs, backfills of the ingest job): the
    files that step recorded. An asset materialized on its own for some days (from the UI,
    a test, a lake migrated without a registry) takes every session of those days: the
    registry's files of those days and the sessions ``upstream`` (a TableSpec) holds there.
    """
    reg = lake.read(SESSION_FILES, columns=REGISTRY_COLUMNS,
                    filter=string_field("run_id") == run_id_of(context))
    if reg.num_rows:
        return sessions_from_registry(reg.to_pylist())
    days = partition_days(context)
    rs = RunSessions()
    if not days:
        return rs
    reg = lake.read(SESSION_FILES, columns=REGISTRY_COLUMNS, filter=string_field("day").isin(days))
    for r in reg.to_pylist():
        if r["status"] in LIVE:
            rs.day_of[r["session_key"]] = r["day"]
            rs.sizes[r["session_key"]] = max(int(r.get("size") or 0), 0)
    if upstream is not None:
        t = lake.read(upstream, columns=["session_key", "day"], filter=string_field("day").isin(days))
        for k, d in zip(t.column("session_key").to_pylist(), t.column("day").to_pylist()):
            rs.day_of.setdefault(k, d)
    return rs


def partition_days(context) -> list[str]:
    """The days (partition keys) of this run; empty when the run is not partitioned."""
    if not context.has_partition_key and not context.has_partition_key_range:
        return []
    return list(context.partition_keys)


def check_scope(context, lake: DeltaLake) -> SessionScope | None:
    """The sessions of the run an asset check runs in (None: check the whole table).

    Checks in the ingest job look at what the run wrote, so a tick's run costs what changed."""
    try:
        rs = run_sessions(context, lake)
    except Exception:  # noqa: BLE001 - no run (a check evaluated on its own)
        return None
    return rs.scope if rs.keys else None
