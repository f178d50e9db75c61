"""The teacher response cache: a Delta table addressed by request hash.

``silver/teacher_cache`` holds one row per *paid-for successful* answer (request_hash ->
message, usage, cost). It is written through the lake resource (``lake.append``) by one
writer task while the teachers are being asked:

* every answer is queued the moment it arrives;
* the writer commits what is queued as soon as the oldest queued answer is
  ``flush_seconds`` old, or ``flush_rows`` are waiting, whichever comes first (the commit
  runs on a thread, so calls keep flowing and the next batch builds up meanwhile);
* before it is queued, every answer is also appended as one JSON line to this run's local
  write-ahead spool file and flushed to the OS (``fsync`` optional), so a ``kill -9`` of the
  process loses nothing that has arrived: the next run's cache load (and every run's end)
  folds the spool files of dead runs into the Delta table and deletes them. Only an answer
  still on the wire at the kill is asked again.

The spool is :class:`resources.spool.Spool` in ``spool_dir(lake root, "teacher_cache")``
(``<lake root>/_spool/teacher_cache/`` for a local lake). A live run holds an ``flock`` on
its own file, so recovery never folds in (and deletes) the spool of a run still in flight.
A spool line holds exactly the teacher_cache row (no API key, no header).

Errors are not cached (the next run retries them). Concurrent runs (an overlapping
backfill) only append, which Delta commits without conflict; a hash held twice is read
once (the newest row wins).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Protocol

import pyarrow.compute as pc

from assets.teachers.tables import TEACHER_CACHE
from resources.lake import DeltaLake
from resources.spool import Spool, read_lines, spool_dir

log = logging.getLogger(__name__)


class ResponseCache(Protocol):
    async def lookup(self, hashes: Iterable[str]) -> dict[str, dict[str, Any]]: ...
    def put(self, record: dict[str, Any]) -> None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


class MemoryResponseCache:
    """A process-local cache (for callers that do not want persistence)."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}
        self.commits = 0
        self.rows_written = 0
        self.write_errors = 0
        self.unflushed = 0

    async def lookup(self, hashes: Iterable[str]) -> dict[str, dict[str, Any]]:
        return {h: self.rows[h] for h in hashes if h in self.rows}

    def put(self, record: dict[str, Any]) -> None:
        self.rows[record["request_hash"]] = record
        self.rows_written += 1

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


_STOP = object()


def default_spool_dir(lake: DeltaLake) -> Path:
    """The write-ahead spool of this lake's teacher cache (see resources/spool.py)."""
    return spool_dir(lake.root, "teacher_cache")


def read_spool(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The answers of one spool file and the number of unusable lines (a line cut by a kill)."""
    lines, bad = read_lines(path)
    rows = []
    for row in lines:
        if not isinstance(row, dict) or not row.get("request_hash") or row.get("status") != "ok" \
                or not row.get("created_at"):
            bad += 1
            continue
        if isinstance(row.get("created_at"), str):
            row["created_at"] = datetime.fromisoformat(row["created_at"])
        rows.append(row)
    return rows, bad


class DeltaResponseCache:
    """The Delta-backed response cache (one writer task, batched commits)."""

    def __init__(self, lake: DeltaLake, *, flush_seconds: float = 0.5, flush_rows: int = 256,
                 compact_min_files: int | None = 64, spec=TEACHER_CACHE,
                 spool_dir: str | os.PathLike | None = None, spool_fsync: bool = False,
                 spool: bool = True) -> None:
        self.lake = lake
        self.spec = spec
        self.flush_seconds = flush_seconds
        self.flush_rows = flush_rows
        self.compact_min_files = compact_min_files
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        self._pending: list[dict[str, Any]] = []  # rows whose commit failed, retried next flush
        self.commits = 0
        self.rows_written = 0
        self.write_errors = 0
        self.commit_seconds = 0.0
        self.unflushed = 0  # rows still not persisted after close() (a storage failure)
        self.spool: Spool | None = None
        if spool:
            self.spool = Spool(Path(spool_dir) if spool_dir else default_spool_dir(lake),
                               spec.schema.names, fsync=spool_fsync)
        self.recovered = 0  # spooled answers of killed runs folded into the table
        self._recovered_once = False

    # --------------------------------------------------------------- recovery
    def recover(self) -> int:
        """Fold every dead run's spool file into the table; delete the files folded in."""
        if self.spool is None:
            return 0
        with self.spool.orphans() as files:
            rows = {}
            for p in files:
                got, bad = read_spool(p)
                if bad:
                    log.warning("teacher cache spool %s: %s unreadable line(s) skipped", p.name, bad)
                for r in got:
                    rows[r["request_hash"]] = r
            try:
                if rows:
                    held = self._lookup_sync(sorted(rows))
                    new = [r for h, r in rows.items() if h not in held]
                    if new:
                        self.lake.append(self.spec, new)
                        self.recovered += len(new)
                        log.info("teacher cache: %s spooled answers of a killed run recovered", len(new))
                for p in files:
                    p.unlink(missing_ok=True)
            except Exception as exc:  # keep the files, the next run tries again
                log.warning("teacher cache spool recovery failed: %s", type(exc).__name__)
        return self.recovered

    def metadata(self) -> dict[str, Any]:
        """This run's cache figures (the asset merges them with the table's state)."""
        return {"commits": self.commits, "recovered_from_spool": self.recovered}

    # ------------------------------------------------------------------ reads
    def _lookup_sync(self, hashes: list[str]) -> dict[str, dict[str, Any]]:
        if not hashes or not self.lake.exists(self.spec):
            return {}
        expr = pc.field("request_hash").isin(hashes) & (pc.field("status") == "ok")
        table = self.lake.read(self.spec, filter=expr)
        held: dict[str, dict[str, Any]] = {}
        for row in table.to_pylist():
            old = held.get(row["request_hash"])
            if old is None or (row["created_at"] or 0) >= (old["created_at"] or 0):
                held[row["request_hash"]] = row
        return held

    async def lookup(self, hashes: Iterable[str]) -> dict[str, dict[str, Any]]:
        if not self._recovered_once:
            self._recovered_once = True
            await asyncio.to_thread(self.recover)
        return await asyncio.to_thread(self._lookup_sync, sorted(set(hashes)))

    # ----------------------------------------------------------------- writes
    async def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue()
            if self.spool is not None and not self.spool.is_open:
                self.spool.open()
            self._task = asyncio.create_task(self._writer(), name="teacher-cache-writer")

    def put(self, record: dict[str, Any]) -> None:
        assert self._queue is not None, "start() the cache first"
        if self.spool is not None:
            try:
                self.spool.write(record)  # durable (to the OS) before anything else
            except OSError as exc:
                log.warning("teacher cache spool write failed: %s", type(exc).__name__)
        self._queue.put_nowait(record)

    async def _writer(self) -> None:
        assert self._queue is not None
        q = self._queue
        stop = False
        while not stop:
            item = await q.get()
            if item is _STOP:
                break
            batch = [item]
            deadline = time.monotonic() + self.flush_seconds
            while len(batch) < self.flush_rows:
                # take whatever is already queued, then wait for more until the deadline
                while len(batch) < self.flush_rows and not q.empty():
                    nxt = q.get_nowait()
                    if nxt is _STOP:
                        stop = True
                        break
                    batch.append(nxt)
                left = deadline - time.monotonic()
                if stop or len(batch) >= self.flush_rows or left <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(q.get(), timeout=left)
                except asyncio.TimeoutError:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            await self._flush(batch)
        if self._pending:
            await self._flush([])

    async def _flush(self, batch: list[dict[str, Any]]) -> None:
        rows = self._pending + batch
        if not rows:
            return
        t0 = time.perf_counter()
        try:
            await asyncio.to_thread(self.lake.append, self.spec, rows)
        except Exception as exc:  # keep the rows; the next flush tries again
            self.write_errors += 1
            self._pending = rows
            log.warning("teacher cache commit failed (%s rows kept for retry): %s",
                        len(rows), type(exc).__name__)
            return
        self._pending = []
        self.commits += 1
        self.rows_written += len(rows)
        self.commit_seconds += time.perf_counter() - t0

    async def close(self) -> None:
        if self._task is None:
            return
        assert self._queue is not None
        self._queue.put_nowait(_STOP)
        await self._task
        self._task = None
        self.unflushed = len(self._pending)
        if self.spool is not None:
            # every spooled row is in the table unless a commit failed: then keep the file
            self.spool.close(delete=not self.unflushed)
            if not self.unflushed:
                await asyncio.to_thread(self.recover)
        if self.compact_min_files and self.commits:
            await asyncio.to_thread(self._maybe_compact)

    def _maybe_compact(self) -> None:
        """Merge the many small files the batched appends leave behind (best effort)."""
        try:
            dt = self.lake.table(self.spec)
            if dt is not None and len(dt.file_uris()) >= (self.compact_min_files or 0):
                dt.optimize.compact()
        except Exception as exc:  # a concurrent writer won the race: compact next time
            log.info("teacher cache compaction skipped: %s", type(exc).__name__)
