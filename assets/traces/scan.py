"""One sensor tick's look at the watched directory, at a cost that follows the changes.

Dagster-free. The state a tick keeps between ticks is small (the sensor cursor):

* ``dirs``: the mtime of every watched directory at its last full listing. A directory
  whose mtime is unchanged has had no file created, removed or renamed in it, so it is
  not listed again (a tick over an unchanged archive stats the directories only).
* ``pending``: the files handed to a run that the registry has not recorded yet.
* ``sweep``: where the slow pass over cold files stands.

What each file looked like when it was last ingested is in the registry table
(``bronze/session_files``), not in the cursor. Besides the files of the directories that
changed, a tick stats the *hot* files (modified in the last ``hot_seconds``: live
sessions being appended to), and ``sweep_files`` of the cold ones in turn, so a file
edited in place long after it went quiet is still found (within a full sweep).
"""

from __future__ import annotations

import os
import stat as statmod
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Mapping

from assets.traces.registry import classify, day_of, probe_file

from resources.sessions import SESSION_SUFFIXES, SessionNames
from resources.sessions import session_key_for as key_for


@dataclass
class ScanState:
    dirs: dict[str, int] = field(default_factory=dict)
    pending: dict[str, list] = field(default_factory=dict)  # key -> [size, mtime_ns, day, requested_at_s, path]
    sweep: int = 0
    recheck: list[str] = field(default_factory=list)  # changed files that waited: statted next tick

    def to_json(self) -> dict:
        return {"v": 3, "dirs": self.dirs, "pending": self.pending, "sweep": self.sweep, "recheck": self.recheck}

    @classmethod
    def from_json(cls, obj: Any) -> "ScanState":
        # v3: paths are stored names (user names pseudonymized). A cursor of an older sensor
        # (real paths, or the per-file sensor's) or none: start over; the registry knows the files
        if not isinstance(obj, dict) or obj.get("v") != 3:
            return cls()
        return cls(dict(obj.get("dirs") or {}), dict(obj.get("pending") or {}), int(obj.get("sweep") or 0),
                   list(obj.get("recheck") or []))


@dataclass(frozen=True)
class Change:
    key: str
    path: str  # relative to the root, "/"-separated, as stored (user names pseudonymized)
    change: str  # new | appended | rewritten | deleted
    size: int
    mtime_ns: int
    day: str
    prev_day: str | None = None
    real: str | None = field(default=None, compare=False, repr=False)  # the real path: never stored

    def as_config(self) -> dict:
        return {"key": self.key, "path": self.path, "change": self.change, "size": self.size,
                "mtime_ns": self.mtime_ns, "day": self.day, "prev_day": self.prev_day}


@dataclass
class ScanResult:
    batch: list[Change]
    waiting: int
    waiting_bytes: int
    problems: list[tuple[str, str]]  # (relative path, what is wrong)
    state: ScanState
    stats: dict[str, int]

    @property
    def days(self) -> list[str]:
        out = set()
        for c in self.batch:
            out.add(c.day)
            if c.prev_day:
                out.add(c.prev_day)
        return sorted(out)


ACTIVE = ("ingested", "empty", "not_session", "unreadable", "partial")


def scan(root: Path, state: ScanState, registry: Mapping[str, Mapping[str, Any]], *,
         max_files: int = 1000, max_bytes: int = 512 * 1024 * 1024, hot_seconds: float = 900.0,
         sweep_files: int = 2000, pending_ttl_s: float = 900.0, suffixes=SESSION_SUFFIXES,
         max_span_days: int = 7,
         now: float | None = None, registry_keys: list[str] | None = None,
         names: SessionNames | None = None) -> ScanResult:
    """Compare the directory with the registry (+ pending requests); return one tick's batch.

    ``registry``: key -> row with path, size, mtime_ns, head_len, head_fp, day, status.
    ``names``: how paths are stored (user names pseudonymized); every path in the state,
    the registry, the batch and the problems is a stored one, the real ones stay here.
    """
    now = time.time() if now is None else now
    names = names if names is not None else SessionNames(root)
    real_of: dict[str, str] = {"": ""}  # stored rel -> real rel (dirs and files seen this tick)

    def real_rel(rel: str) -> str | None:
        r = real_of.get(rel)
        if r is None:
            r = names.real(rel)
            if r is not None:
                real_of[rel] = r
        return r

    state = ScanState(state.dirs, _unrecorded(state.pending, registry), state.sweep, state.recheck)
    recheck_set = set(state.recheck)
    stats = {"dirs": 0, "dirs_listed": 0, "files_listed": 0, "files_statted": 0}
    problems: list[tuple[str, str]] = []
    observed: dict[str, tuple[str, int, int]] = {}  # key -> (relpath, size, mtime_ns)
    listed_dirs: dict[str, int] = {}
    new_dirs: dict[str, int] = {}
    children: dict[str, list[str]] = {}
    for d in state.dirs:
        if d:
            children.setdefault(d.rpartition("/")[0], []).append(d)

    stack = [""]
    while stack:
        rel = stack.pop()
        rrel = real_rel(rel)
        if rrel is None:
            continue  # gone: its files fail their stat below and count as deleted
        full = root / rrel if rrel else root
        try:
            st = os.lstat(full) if rel else os.stat(full)
        except OSError:
            continue  # removed: its files fail their stat below and count as deleted
        if rel and not statmod.S_ISDIR(st.st_mode):
            continue  # a symlinked directory is not followed (loops, escapes)
        stats["dirs"] += 1
        if state.dirs.get(rel) == st.st_mtime_ns:
            new_dirs[rel] = st.st_mtime_ns
            stack.extend(children.get(rel, ()))
            continue
        stats["dirs_listed"] += 1
        listed_dirs[rel] = st.st_mtime_ns
        try:
            with os.scandir(full) as it:
                entries = list(it)
        except OSError as exc:
            problems.append((rel or ".", f"cannot list: {exc.strerror or exc}"))
            continue
        for e in entries:
            erreal = f"{rrel}/{e.name}" if rrel else e.name
            erel = names.child(rel, rrel, e.name)
            real_of[erel] = erreal
            try:
                if e.is_dir(follow_symlinks=False):
                    stack.append(erel)
                    continue
            except OSError:
                continue
            if not e.name.endswith(suffixes):
                continue
            stats["files_listed"] += 1
            try:
                if e.is_symlink():
                    real = Path(os.path.realpath(e.path, strict=True))
                    if not real.is_relative_to(root):
                        continue  # leads outside the watched directory: ignored
                fst = e.stat(follow_symlinks=True)
            except (OSError, RuntimeError) as exc:
                problems.append((erel, f"cannot stat: {getattr(exc, 'strerror', None) or type(exc).__name__}"))
                continue
            if not statmod.S_ISREG(fst.st_mode):
                continue
            observed[key_for(erel)] = (erel, fst.st_size, fst.st_mtime_ns)

    # registered files outside the listed directories: hot ones, pending ones, a sweep slice
    keys = registry_keys if registry_keys is not None else sorted(registry)
    cold_budget = sweep_files
    to_stat: list[str] = []
    sweep_pos = state.sweep % len(keys) if keys else 0
    sweep_set: set[str] = set()
    if keys and cold_budget:
        sl = keys[sweep_pos: sweep_pos + cold_budget]
        if len(sl) < cold_budget:
            sl += keys[: cold_budget - len(sl)]
        sweep_set = set(sl)
    hot_ns = (now - hot_seconds) * 1e9
    for k, row in registry.items():
        if k in observed or row.get("status") == "deleted":
            continue
        parent = row["path"].rpartition("/")[0]
        if parent in listed_dirs:
            # its directory was listed and the file was not there: deleted (or renamed)
            continue
        if row["mtime_ns"] >= hot_ns or k in state.pending or k in sweep_set or k in recheck_set:
            to_stat.append(k)
    for k in state.pending:
        if k not in registry and k not in observed:
            to_stat.append(k)
    troubled: set[str] = {key_for(p) for p, _ in problems}
    for k in to_stat:
        row = registry.get(k)
        relpath = row["path"] if row else state.pending[k][4] if len(state.pending[k]) > 4 else None
        if relpath is None:
            continue
        stats["files_statted"] += 1
        rreal = real_rel(relpath)
        try:
            if rreal is None:
                raise FileNotFoundError(relpath)
            fst = os.stat(root / rreal)
        except FileNotFoundError:
            continue
        except OSError as exc:
            problems.append((relpath, f"cannot stat: {exc.strerror or exc}"))
            troubled.add(k)
            continue
        observed[k] = (relpath, fst.st_size, fst.st_mtime_ns)

    # deleted: registered, active, not observed, and either in a listed dir or statted above
    checked = set(to_stat)
    changes: list[Change] = []
    for k, row in registry.items():
        if row.get("status") == "deleted" or k in observed or k in troubled:
            continue
        parent = row["path"].rpartition("/")[0]
        if parent in listed_dirs or k in checked or (parent not in new_dirs and parent not in listed_dirs):
            p = state.pending.get(k)
            if p and p[0] == -1:
                continue  # deletion already requested
            changes.append(Change(k, row["path"], "deleted", -1, -1, row["day"]))

    # new or changed
    new_files_by_dir: dict[str, int] = {}
    for k, (relpath, size, mtime_ns) in observed.items():
        p = state.pending.get(k)
        if p is not None and p[0] == size and p[1] == mtime_ns:
            continue  # requested already, its run has not recorded it yet
        row = registry.get(k)
        if row is not None and row.get("status") != "deleted" and row["size"] == size and row["mtime_ns"] == mtime_ns:
            continue
        kind = classify(row, size, mtime_ns, None)  # head comparison deferred to the batch
        changes.append(Change(k, relpath, kind, size, mtime_ns, row["day"] if row else "",
                              row["day"] if row else None, real=real_rel(relpath)))

    # Newest change first (live sessions before a backlog; deletions before all), within
    # the bounds: count, bytes, and the span of days one run covers (a run over a date range
    # records every day of the range, so a tick takes one window of days; the rest wait).
    changes.sort(key=lambda c: (c.change != "deleted", -c.mtime_ns, c.key))
    final: list[Change] = []
    nbytes = 0
    waiting, waiting_bytes = 0, 0
    recheck: list[str] = []
    lo = hi = None
    probes = 0

    def wait(c: Change) -> None:
        nonlocal waiting, waiting_bytes
        waiting += 1
        waiting_bytes += max(c.size, 0)
        if c.change == "new":
            d = c.path.rpartition("/")[0]
            new_files_by_dir[d] = new_files_by_dir.get(d, 0) + 1
        else:
            recheck.append(c.key)

    for c in changes:
        size = max(c.size, 0)
        if final and (len(final) >= max_files or nbytes + size > max_bytes or probes >= 4 * max_files):
            wait(c)
            continue
        if c.change != "deleted":
            probes += 1
            r = _resolve(root, c, registry.get(c.key), problems)
            if r is None:
                continue
            c = r
        days = [date.fromisoformat(d) for d in (c.day, c.prev_day) if d]
        nlo, nhi = min(days + ([lo] if lo else [])), max(days + ([hi] if hi else []))
        if final and (nhi - nlo).days >= max_span_days:
            wait(c)
            continue
        lo, hi = nlo, nhi
        final.append(c)
        nbytes += size

    # the next state
    dirs = dict(new_dirs)
    for d, m in listed_dirs.items():
        # fully handed over: not listed again until it changes; else -1 (listed next tick)
        dirs[d] = -1 if new_files_by_dir.get(d) else m
    pending = {}
    for k, p in state.pending.items():
        row = registry.get(k)
        if now - p[3] < pending_ttl_s:
            pending[k] = p
        elif row is None and len(p) > 4 and p[4].rpartition("/")[0] in dirs:
            # its run never recorded it (failed?): list its directory again next tick
            dirs[p[4].rpartition("/")[0]] = -1
    for c in final:
        pending[c.key] = [c.size, c.mtime_ns, c.day, now, c.path]
    new_state = ScanState(dirs, pending, (sweep_pos + cold_budget) if keys else 0, recheck)
    return ScanResult(final, waiting, waiting_bytes, problems, new_state, stats)


def _resolve(root: Path, c: Change, row: Mapping[str, Any] | None, problems: list) -> Change | None:
    """Read a changed file's head: appended vs rewritten, and the day of a new / rewritten one."""
    full = root / (c.real if c.real is not None else c.path)
    kind = c.change
    if kind in ("rewritten", "appended") and row is not None:
        kind = classify(row, c.size, c.mtime_ns, full)
    if kind == "appended" and row is not None:
        return Change(c.key, c.path, kind, c.size, c.mtime_ns, row["day"], None, real=c.real)
    pr = probe_file(full)
    if pr.error:
        problems.append((c.path, pr.error))
        if "FileNotFound" in pr.error:
            return None
    day = day_of(pr.started_at, c.mtime_ns)
    live = row is not None and row.get("status") != "deleted"
    prev_day = row["day"] if live and row["day"] != day else None
    return Change(c.key, c.path, kind if live or row is None else "new", c.size, c.mtime_ns, day, prev_day,
                  real=c.real)


def split_by_span(batch: list[Change], max_span_days: int = 7) -> list[list[Change]]:
    """Group changes whose days lie within ``max_span_days`` of each other (one run each)."""
    groups: list[list[Change]] = []
    lo = None
    for c in sorted(batch, key=lambda c: (min(d for d in (c.day, c.prev_day) if d), c.key)):
        days = [date.fromisoformat(d) for d in (c.day, c.prev_day) if d]
        if groups and lo is not None and (max(days) - lo).days < max_span_days:
            groups[-1].append(c)
        else:
            groups.append([c])
            lo = min(days)
    return groups


def _unrecorded(pending: dict[str, list], registry: Mapping[str, Mapping[str, Any]]) -> dict[str, list]:
    """The pending requests whose run has not recorded them in the registry yet."""
    out = {}
    for k, p in pending.items():
        row = registry.get(k)
        if row is not None and ((p[0] == -1 and row.get("status") == "deleted")
                                or (row["size"] == p[0] and row["mtime_ns"] == p[1])):
            continue
        out[k] = p
    return out


def reconcile(root: Path, registry: Mapping[str, Mapping[str, Any]], names: SessionNames | None = None
              ) -> tuple[list[Change], list[tuple[str, str]]]:
    """Every difference between the directory and the registry, unbounded (a full listing
    and a head read of every new or changed file): for backfills and ``tracelake materialize``."""
    res = scan(root, ScanState(), registry, registry_keys=sorted(registry), max_files=10**9, max_bytes=1 << 62,
               sweep_files=len(registry) + 1, hot_seconds=float("inf"), max_span_days=10**6, names=names)
    return res.batch, res.problems
