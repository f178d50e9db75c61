"""The session-file sensor: ONE run per tick for every session file that changed.

Each tick compares the watched directory with the registry (``bronze/session_files``)
through :mod:`assets.traces.scan` (directories whose mtime is unchanged are not listed again;
live files are statted; a slice of the cold ones in turn), then requests one run of the
``ingest_sessions`` job over the days the changed files belong to, carrying the files in
the run config: the run re-reads those files only (new, appended, rewritten) and removes
the rows of deleted ones. A tick takes at most ``max_files_per_tick`` files and
``max_bytes_per_tick`` bytes, oldest change first; the rest wait for the next tick.
Files it cannot stat (permissions, symlink loops) are reported in its log.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter

import dagster as dg

from assets.traces.tables import SESSION_FILES
from resources.lake import DeltaLake
from resources.sessions import SessionSource
from assets.traces.scan import ScanState, scan, split_by_span

SENSOR_NAME = "session_files"
READ_OP = "read_session_files"  # the step of the ingest job that takes the file list
INGEST_QUEUE_TAG = "tracelake/queue"  # ingest runs go one at a time (deploy/dagster.yaml)
REGISTRY_COLUMNS = ["session_key", "path", "size", "mtime_ns", "head_len", "head_fp", "day", "status"]

# The registry as the sensor last read it, per table URI: (Delta version, rows by key, sorted keys).
# The daemon keeps this process between ticks; a tick only re-reads it after a run wrote it.
_REGISTRY_CACHE: dict[str, tuple[int, dict, list]] = {}


def registry_snapshot(lake: DeltaLake) -> tuple[dict[str, dict], list[str]]:
    dt = lake.table(SESSION_FILES)
    if dt is None:
        return {}, []
    uri, version = lake.uri(SESSION_FILES), dt.version()
    hit = _REGISTRY_CACHE.get(uri)
    if hit is not None and hit[0] == version:
        return hit[1], hit[2]
    t = lake.read(SESSION_FILES, columns=REGISTRY_COLUMNS, version=version)
    cols = [t.column(c).to_pylist() for c in REGISTRY_COLUMNS]
    rows = {vals[0]: dict(zip(REGISTRY_COLUMNS, vals)) for vals in zip(*cols)}
    keys = sorted(rows)
    _REGISTRY_CACHE[uri] = (version, rows, keys)
    return rows, keys


def run_request_for(batch, *, waiting: int = 0, tick_s: float | None = None) -> dg.RunRequest:
    """One run over the days of ``batch`` (a list of assets.traces.scan.Change), carrying the files."""
    days = sorted({c.day for c in batch} | {c.prev_day for c in batch if c.prev_day})
    changes = [c.as_config() for c in batch]
    digest = hashlib.blake2b(json.dumps(changes, sort_keys=True).encode(), digest_size=10).hexdigest()
    kinds = Counter(c.change for c in batch)
    tags = {
        INGEST_QUEUE_TAG: "ingest",
        "tracelake/files": str(len(batch)),
        "tracelake/bytes": str(sum(max(c.size, 0) for c in batch)),
        "tracelake/changes": " ".join(f"{k}={v}" for k, v in sorted(kinds.items())),
        "tracelake/waiting": str(waiting),
    }
    if tick_s is not None:
        tags["tracelake/tick_s"] = f"{tick_s:.3f}"
    kw = {}
    if len(days) == 1:
        kw["partition_key"] = days[0]
    else:
        tags["dagster/asset_partition_range_start"] = days[0]
        tags["dagster/asset_partition_range_end"] = days[-1]
    return dg.RunRequest(
        run_key=f"files-{digest}",
        run_config={"ops": {READ_OP: {"config": {"changes": changes}}}},
        tags=tags,
        **kw,
    )


def shown_root(sessions: SessionSource, lake: DeltaLake) -> str:
    """The watched directory as logs show it (its user name pseudonymized)."""
    from resources import privacy

    return privacy.for_lake(lake.root).scrub_text(str(sessions.root))[0]


def build_session_sensor(job: dg.UnresolvedAssetJobDefinition | dg.JobDefinition, interval_s: int = 15):
    @dg.sensor(
        name=SENSOR_NAME,
        target=job,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One run per tick for all new, grown, rewritten and deleted session files, over the days "
                    "they belong to.",
    )
    def session_files(context: dg.SensorEvaluationContext, sessions: SessionSource, lake: DeltaLake):
        t0 = time.perf_counter()
        try:
            state = ScanState.from_json(json.loads(context.cursor) if context.cursor else None)
        except ValueError:
            state = ScanState()
        root = sessions.root_path()
        shown = shown_root(sessions, lake)
        if not root.is_dir():
            return dg.SkipReason(f"{shown} is not a directory: create it, or point TRACELAKE_SESSIONS_DIR "
                                 "at the folder your agent writes its sessions to")
        registry, keys = registry_snapshot(lake)
        res = scan(root, state, registry, registry_keys=keys, max_files=sessions.max_files_per_tick,
                   max_bytes=sessions.max_bytes_per_tick, hot_seconds=sessions.hot_seconds,
                   sweep_files=sessions.sweep_files_per_tick, max_span_days=sessions.max_span_days,
                   names=sessions.names(lake.root))
        for path, what in res.problems[:50]:
            context.log.warning(f"{path}: {what}")
        if len(res.problems) > 50:
            context.log.warning(f"... and {len(res.problems) - 50} more files with problems")
        cursor = json.dumps(res.state.to_json(), separators=(",", ":"))
        tick_s = time.perf_counter() - t0
        figures = (f"{res.stats['dirs']} dirs ({res.stats['dirs_listed']} listed), "
                   f"{res.stats['files_listed']} files listed, {res.stats['files_statted']} statted, "
                   f"{len(registry)} registered, {tick_s:.2f}s")
        if not res.batch:
            return dg.SensorResult(skip_reason=f"no changed session files under {shown} ({figures})",
                                   cursor=cursor)
        kinds = Counter(c.change for c in res.batch)
        context.log.info(
            f"{len(res.batch)} changed session files ({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}) "
            f"over {len(res.days)} day(s) in one run; {res.waiting} waiting ({res.waiting_bytes} bytes); {figures}")
        return dg.SensorResult(run_requests=[run_request_for(res.batch, waiting=res.waiting, tick_s=tick_s)],
                               cursor=cursor)

    return session_files


def plan_all(sessions: SessionSource, lake: DeltaLake, *, reread_unchanged: bool = True):
    """Every session file under the root (``tracelake materialize``, tests): new, changed and
    deleted files as a tick would see them, without the per-tick bounds, plus
    (``reread_unchanged``) every unchanged registered file, read again. Returns
    ``(batches, problems)``: one batch per window of ``max_span_days`` days (one run each)."""
    from assets.traces.scan import Change, reconcile

    registry, keys = registry_snapshot(lake)
    names = sessions.names(lake.root)
    found, problems = reconcile(sessions.root_path(), registry, names)
    batch = list(found)
    if reread_unchanged:
        seen = {c.key for c in batch}
        for k in keys:
            r = registry[k]
            if k not in seen and r["status"] != "deleted" and names.real(r["path"]) is not None:
                batch.append(Change(k, r["path"], "backfill", r["size"], r["mtime_ns"], r["day"]))
    return split_by_span(batch, sessions.max_span_days), problems
