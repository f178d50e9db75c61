"""The teacher response cache: a Delta table addressed by request hash.

``silver/teacher_cache`` holds one row per *paid-for successful* answer (request_hash ->
message, usage, cost). It is written through the lake resource (``lake.append``) by one
writer task while the replay is running:

* every answer is queued the moment it arrives;
* the writer commits what is queued as soon as the oldest queued answer is
  ``flush_seconds`` old, or ``flush_rows`` are waiting, whichever comes first (the commit
  runs on a thread, so calls keep flowing and the next batch builds up meanwhile);
* a ``kill -9`` therefore loses at most the answers of the last ``flush_seconds`` (plus the
  commit in flight) — those few are asked again on the next run; every answer committed
  before is never requested again.

Errors are not cached (the next run retries them). Concurrent runs (an overlapping
backfill) only append, which Delta commits without conflict; a hash held twice is read
once (the newest row wins).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterable, Protocol

import pyarrow.compute as pc

from assets.teachers.tables import TEACHER_CACHE
from resources.lake import DeltaLake

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


class DeltaResponseCache:
    """The Delta-backed response cache (one writer task, batched commits)."""

    def __init__(self, lake: DeltaLake, *, flush_seconds: float = 0.5, flush_rows: int = 256,
                 compact_min_files: int | None = 64, spec=TEACHER_CACHE) -> None:
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
        return await asyncio.to_thread(self._lookup_sync, sorted(set(hashes)))

    # ----------------------------------------------------------------- writes
    async def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._writer(), name="teacher-cache-writer")

    def put(self, record: dict[str, Any]) -> None:
        assert self._queue is not None, "start() the cache first"
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
