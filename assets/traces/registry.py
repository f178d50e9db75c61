"""The session-file registry: which file is which session, of which day, in which state.

Pure functions shared by the ``session_files`` sensor (which decides what changed) and
the ``bronze/session_files`` asset (which records what a run read). A file is identified
by its key (its path under the watched directory, "/" written as "~"); its **day** is the
UTC date its session started (the first timestamp in its head; the file's mtime when it
holds none), which is the Dagster partition it belongs to.

A file that changed is either

* ``appended``: it is longer and its first ``head_len`` bytes are unchanged (Claude Code
  and Codex append to live sessions), or
* ``rewritten``: anything else (Gemini CLI rewrites its JSON document; a file replaced by
  another session under the same name). Its day is read again.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping

__all__ = [
    "FIRST_DAY", "HEAD_BYTES", "Probe", "probe_file", "probe_bytes", "session_start", "day_of",
    "classify", "head_fingerprint",
]

from assets.traces.partitions import FIRST_DAY  # noqa: E402  (the first daily partition)
HEAD_BYTES = 4096  # bytes hashed to tell an appended file from a rewritten one
START_SCAN_BYTES = 256 * 1024  # bytes searched for the session's first timestamp

# "timestamp": "2026-01-15T10:12:03.123Z" and friends (Claude Code, Codex, Gemini CLI
# startTime, OpenAI exports' created_at), or epoch seconds/milliseconds ("created": 1700000000).
_ISO = re.compile(
    rb'"(?:timestamp|startTime|start_time|created_at|createdAt|started_at|startedAt|time)"\s*:\s*'
    rb'"(\d{4}-\d{2}-\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(Z|[+-]\d{2}:?\d{2})?"')
_EPOCH = re.compile(rb'"(?:created|timestamp|created_at|start_time)"\s*:\s*(\d{10}(?:\d{3})?)(?:\.\d+)?\s*[,}]')


@dataclass(frozen=True)
class Probe:
    """What one look at a file tells: its stat, its head and when its session started."""

    size: int
    mtime_ns: int
    head_len: int
    head_fp: str
    started_at: datetime | None
    error: str | None = None  # unreadable / vanished / a symlink loop ... (then nothing else is set)


def head_fingerprint(head: bytes) -> str:
    return hashlib.blake2b(head, digest_size=12).hexdigest()


def _decode_head(head: bytes) -> bytes:
    """UTF-16 heads (Windows shells) are searched as UTF-8."""
    from assets.traces.raw import utf16_encoding

    enc = utf16_encoding(head[: len(head) - len(head) % 2])
    if enc is None:
        return head
    bom = 2 if head[:2] in (b"\xff\xfe", b"\xfe\xff") else 0
    return head[bom: len(head) - (len(head) - bom) % 2].decode(enc, errors="ignore").encode("utf-8")


def session_start(head: bytes, limit: int = 32) -> datetime | None:
    """The earliest of the first ``limit`` timestamps in a file's head (UTC), or None."""
    text = _decode_head(head)
    found: list[datetime] = []
    for m in _ISO.finditer(text):
        d, hh, mm, ss, tz = m.groups()
        try:
            t = datetime.fromisoformat(f"{d.decode()}T{hh.decode()}:{mm.decode()}:{ss.decode()}")
        except ValueError:
            continue
        if tz and tz != b"Z":
            sign = 1 if tz[:1] == b"+" else -1
            digits = tz[1:].replace(b":", b"")
            t -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or b"0"))
        found.append(t.replace(tzinfo=timezone.utc))
        if len(found) >= limit:
            break
    if not found:
        for m in _EPOCH.finditer(text):
            v = int(m.group(1))
            if v > 10**11:
                v //= 1000
            try:
                found.append(datetime.fromtimestamp(v, tz=timezone.utc))
            except (OverflowError, OSError, ValueError):
                continue
            if len(found) >= limit:
                break
    return min(found) if found else None


def day_of(started_at: datetime | None, mtime_ns: int, today: date | None = None) -> str:
    """The daily partition of a session: its start date (UTC), else its file's mtime date,
    clamped to [FIRST_DAY, today]."""
    if started_at is None:
        started_at = datetime.fromtimestamp(mtime_ns / 1e9, tz=timezone.utc)
    day = started_at.astimezone(timezone.utc).date()
    today = today or datetime.now(timezone.utc).date()
    first = date.fromisoformat(FIRST_DAY)
    return min(max(day, first), today).isoformat()


def probe_bytes(head: bytes, size: int, mtime_ns: int) -> Probe:
    hl = min(len(head), HEAD_BYTES)
    return Probe(size=size, mtime_ns=mtime_ns, head_len=hl, head_fp=head_fingerprint(head[:hl]),
                 started_at=session_start(head[:START_SCAN_BYTES]))


def probe_file(path: str | os.PathLike) -> Probe:
    """Stat a file and read its head. Never raises: an unreadable file comes back with ``error``."""
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            head = fh.read(START_SCAN_BYTES)
    except OSError as exc:  # permissions, vanished, ELOOP, EISDIR ...
        return Probe(0, 0, 0, "", None, error=f"{type(exc).__name__}: {exc.strerror or exc}")
    return probe_bytes(head, st.st_size, st.st_mtime_ns)


def same_head(path: str | os.PathLike, head_len: int, head_fp: str) -> bool | None:
    """Whether the file's first ``head_len`` bytes still hash to ``head_fp`` (None: unreadable)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(head_len)
    except OSError:
        return None
    return len(head) == head_len and head_fingerprint(head) == head_fp


def classify(prev: Mapping[str, Any] | None, size: int, mtime_ns: int, path: str | os.PathLike | None = None
             ) -> str:
    """``new`` | ``unchanged`` | ``appended`` | ``rewritten`` against the registry's row.

    ``prev`` needs size, mtime_ns, head_len, head_fp and status. A file recorded as deleted
    that is back is ``new``. ``path`` is read (its head only) to tell appended from rewritten.
    """
    if prev is None or prev.get("status") == "deleted":
        return "new"
    if prev["size"] == size and prev["mtime_ns"] == mtime_ns:
        return "unchanged"
    if size >= prev["size"] and prev.get("head_len") and path is not None:
        same = same_head(path, int(prev["head_len"]), prev["head_fp"])
        if same:
            return "appended"
    return "rewritten"


def relpath_of(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


# ----------------------------------------------------------------- one file, one run

from assets.traces.raw import DOCUMENT_SUFFIXES  # noqa: E402  one JSON document per file (re-written whole)


@dataclass
class FileRead:
    """What a run made of one changed file: its registry row and its bronze rows."""

    registry: dict
    raw: list[dict]
    stats: dict


def read_change(root: Path, key: str, relpath: str, change: str, prev: Mapping[str, Any] | None, *,
                run_id: str, now: datetime, today: date | None = None, privacy=None,
                real_relpath: str | None = "") -> FileRead:
    """Read one file of a run to a consistent point and make its registry row and raw rows.

    The file is read up to the size it had when opened (a file still being appended to
    is taken up to there; an unfinished last line is quarantined as ``truncated`` and
    read whole once the file changes again, which the next tick sees). A file that
    vanished or cannot be read keeps its rows in the lake; its registry row says why.

    ``relpath`` is the stored path (user names pseudonymized, see resources/sessions.py);
    ``real_relpath`` the file's real one ("" : the same; None: no such file now).
    """
    from assets.traces.raw import rows_of_file_bytes

    shown = root / relpath  # what the rows say (source_file): never the real path
    # no file of that stored name (None): it reads as vanished / deleted (a key of an older lake
    # that named the user is gone, even though a file sits at that real path)
    missing = real_relpath is None
    path = root / (real_relpath or relpath)
    first_seen = prev["first_seen_at"] if prev is not None and prev.get("first_seen_at") else now
    base = {"session_key": key, "path": relpath, "run_id": run_id, "first_seen_at": first_seen,
            "last_seen_at": now, "change": change, "prev_day": None}
    keep = {f: prev.get(f) for f in ("format", "day", "started_at", "size", "mtime_ns", "head_len", "head_fp",
                                     "lines")} if prev is not None else {}
    if change == "deleted":
        if prev is None:
            return FileRead({}, [], {"skipped": "unknown file"})
        if not missing and os.path.lexists(path):
            change = base["change"] = "rewritten"  # deleted, then back before its run
        else:
            return FileRead({**keep, **base, "status": "deleted", "reason": None}, [], {})
    try:
        if missing:
            raise FileNotFoundError(relpath)
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            data = fh.read(st.st_size)
    except FileNotFoundError:
        if prev is None:
            return FileRead({}, [], {"skipped": "vanished before it was read"})
        return FileRead({**keep, **base, "status": "vanished",
                         "reason": "the file vanished before this run read it; its rows are kept until "
                                   "the sensor sees it gone"}, [], {})
    except OSError as exc:
        reason = f"unreadable: {type(exc).__name__}: {exc.strerror or exc}"
        if prev is None:
            row = {**base, "format": None, "day": day_of(None, time_ns_now(), today), "started_at": None,
                   "size": -1, "mtime_ns": -1, "head_len": 0, "head_fp": "", "lines": None}
        else:
            row = {**keep, **base}
        try:
            lst = os.stat(path)
            row["size"], row["mtime_ns"] = lst.st_size, lst.st_mtime_ns  # retried once it changes
        except OSError:
            pass
        return FileRead({**row, "status": "unreadable", "reason": reason}, [], {})
    pr = probe_bytes(data[:START_SCAN_BYTES], len(data), st.st_mtime_ns)
    if (prev is not None and prev.get("status") != "deleted" and prev.get("head_len")
            and len(data) >= prev["size"] and len(data) >= prev["head_len"]
            and head_fingerprint(data[: prev["head_len"]]) == prev["head_fp"] and prev.get("day")):
        day, started = prev["day"], prev.get("started_at")  # same session, grown: same day
        if change == "rewritten":
            change = base["change"] = "appended"
    else:
        day, started = day_of(pr.started_at, st.st_mtime_ns, today), pr.started_at
        if prev is not None and change == "appended":
            change = base["change"] = "rewritten"
    if prev is not None and prev.get("day") and prev["day"] != day and prev.get("status") != "deleted":
        base["prev_day"] = prev["day"]
    raw, stats = rows_of_file_bytes(data, key, source_file=str(shown), now=now,
                                    json_document=path.suffix.lower() in DOCUMENT_SUFFIXES, privacy=privacy)
    fmt = stats.get("source_format") or "unknown"
    if not data:
        status, reason = "empty", None
    elif fmt == "unknown":
        status, reason = "not_session", "no known transcript format in its records (lines kept in bronze)"
    else:
        status, reason = "ingested", None
    for r in raw:
        r["day"] = day
    row = {**base, "format": fmt, "day": day, "started_at": started, "size": len(data),
           "mtime_ns": st.st_mtime_ns, "head_len": pr.head_len, "head_fp": pr.head_fp,
           "lines": len(raw), "status": status, "reason": reason}
    return FileRead(row, raw, stats)


def time_ns_now() -> int:
    import time

    return time.time_ns()
