"""The session source: where session files live and which partition key each one has.

A session file's partition key is its path relative to the watched directory with "/"
written as "~" (stable, readable in the UI). Symlinks that lead outside the watched
directory are ignored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dagster as dg
from pydantic import Field

from resources import settings

SEP = "~"
SESSION_SUFFIXES = (".jsonl", ".json", ".traj")  # which format a file holds is read from its content


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
    max_files_per_tick: int = Field(default=1000, description="Files one sensor tick hands to its run at most.")
    max_bytes_per_tick: int = Field(default=256 * 1024 * 1024,
                                    description="Bytes one sensor tick hands to its run at most (one file more if "
                                                "a single file is bigger).")
    max_span_days: int = Field(default=7, description="Days one tick's run covers at most (a run over a date "
                                                      "range records every day of it); other days wait.")
    hot_seconds: float = Field(default=900.0, description="Files modified this recently are statted every tick.")
    sweep_files_per_tick: int = Field(default=2000,
                                      description="Cold files statted per tick, in turn (finds in-place edits of "
                                                  "old files within a full sweep).")

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
