"""The rag run log: ``gold/rag_runs`` records, their JSONL export, and carrying old tables over.

Each run is one ``replay_run.v1`` record (the design's contract; exact field names)::

    {"schema": "replay_run.v1", "input_task": ..., "task_hash": <sha256 hex of the task>,
     "retrieved_artifacts": {"rag_ids": [...]}, "context_bundle": {...} | null,
     "model_response": <cut at 4,000 chars>, "model_used": ..., "escalation_path": [models tried],
     "validation_result": {"passed": bool, "reasons": [...]},
     "recorded_run_id": "replay:<first 16 hex of task_hash>:<epoch ms>",
     "recorded_at": <ISO time>, "duration_ms": ...}

The Delta table stores those fields under the same names (``context_bundle`` as JSON text,
``recorded_at`` as a UTC timestamp) with provenance columns beside them; :func:`export_record`
turns a row back into the exact record.

The log is precious (it is not derived from anything else): a table written in the earlier
layout (``schema_version``, ``run_id``, ``task``, ``response``, ``created_at``...) is carried
over in place the first time the log is touched (:func:`migrate_rag_runs`): every row is
rewritten in the new layout, none dropped; the old id is kept as ``legacy_run_id`` and Delta
keeps the old version for time travel.

A run the lake cannot take is spooled to a local JSONL file and flushed with the next append.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from assets.rag.tables import MAX_RESPONSE_CHARS, RAG_RUNS, RUN_SCHEMA_VERSION
from resources import settings
from resources.spool import Spool, read_lines, spool_dir

RECORD_FIELDS = ("schema", "input_task", "task_hash", "retrieved_artifacts", "context_bundle",
                 "model_response", "model_used", "escalation_path", "validation_result",
                 "recorded_run_id", "recorded_at", "duration_ms")
LEGACY_MARKER = "schema_version"  # a column only the old layout has


def sha256_hex(task: str) -> str:
    return hashlib.sha256((task or "").encode("utf-8")).hexdigest()


def recorded_run_id(task_hash: str, at: datetime) -> str:
    return f"replay:{task_hash[:16]}:{int(at.timestamp() * 1000)}"


def _path_model(entry: str) -> str:
    """An old escalation_path entry ("local:<model>", "escalation:<model>") → the model."""
    return entry.split(":", 1)[1] if entry.split(":", 1)[0] in ("local", "escalation") else entry


# ------------------------------------------------------------------ the old layout
def from_legacy_row(r: Mapping[str, Any]) -> dict:
    """A row of the earlier rag_runs layout in the replay_run.v1 layout (nothing lost)."""
    at = r.get("created_at") or datetime.now(timezone.utc)
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    task = r.get("task") or ""
    th = sha256_hex(task)
    response = r.get("response") or ""
    bundle = r.get("bundle")
    if bundle in (None, "", "null"):
        bundle = None
    return {
        "schema": r.get("schema_version") or RUN_SCHEMA_VERSION,
        "input_task": task,
        "task_hash": th,
        "retrieved_artifacts": {"rag_ids": list(r.get("retrieved_ids") or [])},
        "context_bundle": bundle,
        "model_response": response[:MAX_RESPONSE_CHARS],
        "model_used": r.get("model_used"),
        "escalation_path": [_path_model(e) for e in r.get("escalation_path") or []],
        "validation_result": {"passed": bool(r.get("gate_passed")), "reasons": list(r.get("failed_rules") or [])},
        "recorded_run_id": recorded_run_id(th, at),
        "recorded_at": at,
        "duration_ms": r.get("total_ms"),
        "source": r.get("source"),
        "response_chars": len(response),
        "retrieval_mode": r.get("retrieval_mode"),
        "retrieved_scores": r.get("retrieved_scores"),
        "playbooks_version": r.get("playbooks_version"),
        "prompt": r.get("prompt"),
        "local_model": r.get("local_model"),
        "escalation_model": r.get("escalation_model"),
        "escalated": bool(r.get("escalated")),
        "attempts": r.get("attempts"),
        "validation_details": r.get("validation"),
        "error": r.get("error"),
        "retrieval_ms": r.get("retrieval_ms"),
        "bundle_ms": r.get("bundle_ms"),
        "local_ms": r.get("local_ms"),
        "gate_ms": r.get("gate_ms"),
        "escalation_ms": r.get("escalation_ms"),
        "local_only": bool(r.get("local_only")),
        "allow_escalation": bool(r.get("allow_escalation")),
        "no_retrieval": bool(r.get("no_retrieval")),
        "config": r.get("config"),
        "legacy_run_id": r.get("run_id"),
    }


def migrate_rag_runs(lake) -> int | None:
    """Carry a rag_runs table of the earlier layout over to this one, in place.

    Returns the number of rows carried over (None when there is nothing to do). Every row is
    kept; the previous Delta version stays readable (time travel)."""
    dt = lake.table(RAG_RUNS)
    if dt is None:
        return None
    names = dt.schema().to_arrow().names
    if LEGACY_MARKER not in names:
        return None
    old = lake.read(RAG_RUNS, columns=names).to_pylist()
    rows = [from_legacy_row(r) for r in old]
    lake.overwrite(RAG_RUNS, rows, schema_mode="overwrite")
    got = lake.read(RAG_RUNS, columns=["recorded_run_id"]).num_rows
    if got != len(old):  # never silently lose a run
        raise RuntimeError(f"rag_runs migration wrote {got} rows for {len(old)}; the previous Delta "
                           f"version {dt.version()} still holds them all")
    return len(rows)


# ------------------------------------------------------------------ the record
def export_record(row: Mapping[str, Any]) -> dict:
    """The exact replay_run.v1 record of a rag_runs row (what ``rag export-log`` writes)."""
    at = row["recorded_at"]
    bundle = row.get("context_bundle")
    arts = row.get("retrieved_artifacts") or {}
    vr = row.get("validation_result") or {}
    return {
        "schema": row["schema"],
        "input_task": row["input_task"],
        "task_hash": row["task_hash"],
        "retrieved_artifacts": {"rag_ids": list(arts.get("rag_ids") or [])},
        "context_bundle": json.loads(bundle) if isinstance(bundle, str) else bundle,
        "model_response": (row.get("model_response") or "")[:MAX_RESPONSE_CHARS],
        "model_used": row.get("model_used"),
        "escalation_path": list(row.get("escalation_path") or []),
        "validation_result": {"passed": bool(vr.get("passed")), "reasons": list(vr.get("reasons") or [])},
        "recorded_run_id": row["recorded_run_id"],
        "recorded_at": at.isoformat() if hasattr(at, "isoformat") else str(at),
        "duration_ms": row.get("duration_ms"),
    }


def export_log(lake, out: str | os.PathLike, *, since: datetime | None = None) -> int:
    """Write every run (oldest first) as one replay_run.v1 JSON record a line; returns the count."""
    migrate_rag_runs(lake)
    rows = lake.read(RAG_RUNS, columns=list(RECORD_FIELDS)).to_pylist()
    if since is not None:
        rows = [r for r in rows if r["recorded_at"] >= since]
    rows.sort(key=lambda r: (r["recorded_at"], r["recorded_run_id"]))
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(export_record(r), ensure_ascii=False) + "\n")
    return len(rows)


def report_view(rows: Iterable[Mapping[str, Any]]) -> list[dict]:
    """rag_runs rows as the report and the playbook miner read them."""
    out = []
    for r in rows:
        vr = r.get("validation_result") or {}
        out.append({**r, "gate_passed": bool(vr.get("passed")), "created_at": r.get("recorded_at"),
                    "task": r.get("input_task"), "response": r.get("model_response"),
                    "run_id": r.get("recorded_run_id")})
    return out


# ------------------------------------------------------------------ appending, with a spool
def default_spool_dir(lake) -> Path:
    """The spool of this lake's run log (see resources/spool.py)."""
    return spool_dir(getattr(lake, "root", None), "rag_runs")


def _legacy_spool_dir() -> Path:
    """Where runs were spooled before the one spool layout (read, never written)."""
    return settings.cache_home() / "tracelake" / "rag_spool"


def _decode(r: dict) -> dict:
    if LEGACY_MARKER in r:
        return from_legacy_row({**r, "created_at": datetime.fromisoformat(r["created_at"])})
    if isinstance(r.get("recorded_at"), str):
        r["recorded_at"] = datetime.fromisoformat(r["recorded_at"])
    return r


class RunLog:
    """Appends runs to rag_runs; spools them locally when the lake refuses, and the next
    append folds every spooled run in (resources/spool.py)."""

    def __init__(self, lake, spool_dir: str | os.PathLike | None = None):
        self.lake = lake
        self.spool = Spool(Path(spool_dir) if spool_dir else default_spool_dir(lake))
        self.legacy = None if spool_dir else Spool(_legacy_spool_dir())
        self._migrated = False
        self.last_write = None  # the WriteResult of the last successful append

    def append(self, rows: list[dict]) -> tuple[bool, str | None]:
        with self.spool.orphans() as files, (self.legacy.orphans() if self.legacy else _none()) as old:
            pending = []
            for p in [*files, *old]:
                lines, _bad = read_lines(p)
                pending += [_decode(r) for r in lines if isinstance(r, dict)]
            try:
                if self.lake is None:
                    raise RuntimeError("no lake configured")
                if not self._migrated:
                    migrate_rag_runs(self.lake)
                    self._migrated = True
                self.last_write = self.lake.append(RAG_RUNS, pending + rows)
            except Exception as exc:  # noqa: BLE001 - the run must not be lost: keep it on local disk
                self.spool.open()
                for r in rows:
                    self.spool.write(r)
                self.spool.close(delete=False)
                return False, f"{type(exc).__name__}: {str(exc)[:300]}"
            for p in [*files, *old]:
                p.unlink(missing_ok=True)
        return True, None


@contextmanager
def _none():
    yield []
