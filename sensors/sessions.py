"""The session-file sensor: new and grown session files become partitions and runs.

A session file's partition key is its path relative to the watched directory with "/"
written as "~" (stable, readable in the UI). The cursor remembers (size, mtime_ns) per
key; a file that grew (Claude Code appends to live sessions) is ingested again. Each tick
requests at most ``max_files_per_tick`` files, oldest change first; the rest wait for the
next tick. Symlinks that lead outside the watched directory are ignored.
"""

from __future__ import annotations

import json

import dagster as dg

from assets.partitions import SESSIONS
from resources.sessions import SessionFile, SessionSource


def changed_files(files: list[SessionFile], cursor: dict[str, list[int]], limit: int
                  ) -> tuple[list[SessionFile], int]:
    """Files new or changed since the cursor, oldest change first, at most ``limit``."""
    changed = [f for f in files if cursor.get(f.key) != [f.size, f.mtime_ns]]
    changed.sort(key=lambda f: (f.mtime_ns, f.key))
    return changed[:limit], max(0, len(changed) - limit)


def build_session_sensor(job: dg.UnresolvedAssetJobDefinition | dg.JobDefinition):
    @dg.sensor(
        name="session_files",
        target=job,
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Adds a partition per new session file and runs the ingest chain on new or grown files.",
    )
    def session_files(context: dg.SensorEvaluationContext, sessions: SessionSource):
        cursor: dict[str, list[int]] = json.loads(context.cursor) if context.cursor else {}
        files = list(sessions.scan())
        batch, waiting = changed_files(files, cursor, sessions.max_files_per_tick)
        if not batch:
            return dg.SkipReason(f"no new or grown session files among {len(files)} under {sessions.root}")
        known = set(context.instance.get_dynamic_partitions(SESSIONS.name))
        new_keys = sorted({f.key for f in batch} - known)
        runs = []
        for f in batch:
            cursor[f.key] = [f.size, f.mtime_ns]
            runs.append(
                dg.RunRequest(
                    run_key=f"{f.key}@{f.size}:{f.mtime_ns}",
                    partition_key=f.key,
                    tags={"tracelake/session_bytes": str(f.size)},
                )
            )
        context.log.info(f"{len(batch)} session files to ingest ({len(new_keys)} new), {waiting} waiting")
        return dg.SensorResult(
            run_requests=runs,
            dynamic_partitions_requests=[SESSIONS.build_add_request(new_keys)] if new_keys else [],
            cursor=json.dumps(cursor, separators=(",", ":")),
        )

    return session_files
