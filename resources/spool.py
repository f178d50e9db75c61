"""Local JSONL spools: rows not yet in their Delta table, kept on local disk until folded in.

One place for spools to live (:func:`spool_dir`), one file format (a JSON line per row), one
ownership rule: the process writing a spool file holds an exclusive lock on it until it
closes it (or dies); an unlocked file belongs to a writer that ended without folding its
rows into the table, and the next writer of that table recovers it (:meth:`Spool.orphans`).

Users: the teacher response cache (a write-ahead spool: every answer is spooled the moment
it arrives, a run killed before its Delta commit loses nothing) and the rag run log (runs
the lake refused are spooled and appended by the next run).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from resources import settings

try:
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX: no liveness lock, recovery at start only
    fcntl = None  # type: ignore[assignment]


def spool_dir(lake_root: str | None, name: str) -> Path:
    """Where the spool ``name`` of a lake lives: $TRACELAKE_SPOOL_DIR/<lake hash>/<name> when
    set; else inside a local lake (``<lake>/_spool/<name>``); else, for an object-store lake
    (or none), ``~/.cache/tracelake/spool/<lake hash>/<name>``."""
    root = (lake_root or "").rstrip("/")
    local = bool(root) and ("://" not in root or root.startswith("file://"))
    if local:
        root = os.path.abspath(root.removeprefix("file://"))
    sha = hashlib.sha256(root.encode()).hexdigest()[:16]
    env = settings.spool_root()
    if env:
        return env / sha / name
    if local:
        return Path(root) / "_spool" / name
    return settings.cache_home() / "tracelake" / "spool" / sha / name


def _lock(f) -> bool:
    if fcntl is None:
        return True
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def read_lines(path: Path) -> tuple[list[Any], int]:
    """The decoded lines of a spool file and the number of unreadable ones (a line cut by a kill)."""
    rows, bad = [], 0
    with open(path, "rb") as f:
        data = f.read()
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            rows.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            bad += 1
    return rows, bad


class Spool:
    """A directory of JSONL spool files; this process writes (at most) one of them at a time."""

    def __init__(self, directory: str | os.PathLike, names: Iterable[str] | None = None,
                 fsync: bool = False) -> None:
        self.dir = Path(directory)
        self.names = tuple(names) if names is not None else None  # keep only these fields
        self.fsync = fsync
        self.path: Path | None = None
        self._f = None
        self.lines = 0

    @property
    def is_open(self) -> bool:
        return self._f is not None

    def open(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"{os.getpid()}-{uuid.uuid4().hex}"
        tmp = self.dir / f"{name}.open"
        self._f = open(tmp, "ab", buffering=0)
        _lock(self._f)  # held until close (or the process dies): "this writer is alive"
        self.path = self.dir / f"{name}.jsonl"
        os.rename(tmp, self.path)  # visible to recovery only once locked

    def write(self, record: dict[str, Any]) -> None:
        if self.names is not None:
            record = {k: record.get(k) for k in self.names}
        line = orjson.dumps(record, option=orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS) + b"\n"
        self._f.write(line)  # unbuffered: one write(2), in the OS page cache at once
        if self.fsync:
            os.fsync(self._f.fileno())
        self.lines += 1

    def close(self, delete: bool) -> None:
        """Release the file: ``delete`` when its rows are in the table, else leave it to recovery."""
        if self._f is None:
            return
        if delete and self.path is not None:
            self.path.unlink(missing_ok=True)  # unlink while still locked
        self._f.close()
        self._f = None

    @contextmanager
    def orphans(self) -> Iterator[list[Path]]:
        """The files of writers that ended without folding them in, locked while in use; the
        caller folds their rows into the table and deletes them (``Path.unlink``)."""
        held = []
        try:
            for p in sorted(self.dir.glob("*.jsonl")) if self.dir.is_dir() else ():
                if p == self.path:
                    continue
                try:
                    f = open(p, "rb")
                except FileNotFoundError:
                    continue
                if not _lock(f):  # a live writer owns it
                    f.close()
                    continue
                held.append((p, f))
            yield [p for p, _ in held]
        finally:
            for _, f in held:
                f.close()
