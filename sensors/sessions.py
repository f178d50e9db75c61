"""The session-file sensor: new and grown session files become partitions and runs.

A session file's partition key is its path relative to the watched directory with "/"
written as "~" (stable, readable in the UI). The cursor remembers (size, mtime_ns) per
key; a file that grew (Claude Code appends to live sessions) is ingested again. Each tick
requests at most ``max_files_per_tick`` files, oldest change first; the rest wait for the
next tick. Symlinks that lead outside the watched directory are ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dagster as dg
from pydantic import Field

from assets.partitions import SESSIONS
from dagster_project import settings

SEP = "~"
SESSION_SUFFIXES = (".jsonl", ".json", ".traj")  # .traj.json ends with .json


def session_key_for(relpath: str) -> str:
    return relpath.replace(os.sep, "/").strip("/").replace("/", SEP)


@dataclass(frozen=True)
class SessionFile:
    key: str
    path: Path
    size: int
    mtime_ns: int


class SessionSource(dg.ConfigurableResource):
    """Where session files live. Point ``root`` at ``~/.claude/projects`` to ingest Claude Code."""

    root: str = Field(default=settings.SESSIONS_DIR, description="Directory watched recursively.")
    max_files_per_tick: int = 25

    def root_path(self) -> Path:
        return Path(os.path.expanduser(self.root)).resolve()

    def scan(self) -> Iterator[SessionFile]:
        root = self.root_path()
        if not root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(filenames):
                if not name.endswith(SESSION_SUFFIXES):
                    continue
                p = Path(dirpath) / name
                f = self._inside(p, root)
                if f is not None:
                    yield f

    def _inside(self, p: Path, root: Path) -> SessionFile | None:
        try:
            real = p.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not real.is_relative_to(root) or not real.is_file():
            return None  # a symlink that leads outside the watched directory
        st = real.stat()
        rel = p.relative_to(root).as_posix()
        return SessionFile(session_key_for(rel), p, st.st_size, st.st_mtime_ns)

    def path_for(self, key: str) -> Path | None:
        """The file of a partition key, or None if it is gone (or not under the root)."""
        root = self.root_path()
        guess = root / key.replace(SEP, "/")
        f = self._inside(guess, root) if guess.exists() else None
        if f is not None and f.key == key:
            return f.path
        for f in self.scan():  # keys of names that contain "~" themselves
            if f.key == key:
                return f.path
        return None


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
