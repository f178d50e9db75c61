"""rag_playbooks, refreshed by what changed (see resources/changes.py).

Playbooks derive per session (from its turns, steps, kept pairs and SFT rows) and per
accepted rag run. A refresh reads the change feeds of those inputs: the sessions that
changed are re-derived (their old playbooks leave the table), and the runs appended since
the last refresh are mined (an older mined playbook of the same task gives way: the
latest run per task wins). Embeddings of unchanged text are reused. ``full`` (or no usable
history) re-derives everything, a group of sessions at a time.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from dataclasses import dataclass, field
from typing import Any, Callable

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from assets.examples.tables import SFT_EXAMPLES
from assets.metadata import md_counts, md_preview
from assets.pairs.tables import NORMALIZED_PAIRS
from assets.rag.playbooks import DeriveStats, derive_from_runs, derive_playbooks, normalize_task, reuse_embeddings
from assets.rag.report import _day, markdown, report_rows, with_totals
from assets.rag.runlog import report_view
from assets.rag.tables import LABELS, RAG_PLAYBOOKS, RAG_REPORT, RAG_RUNS
from assets.traces.tables import AGENT_STEPS, TRACE_TURNS
from resources.changes import changes_since, consumed_versions, delete_keys, record_consumed, rows_of, scan, scan_keys
from resources.lake import DeltaLake, in_predicate

DATASET = RAG_PLAYBOOKS.path
SESSIONS_PER_GROUP = 200


@dataclass
class PlaybookRefresh:
    """What a refresh did and the table after it; :meth:`metadata` is what the asset reports
    beside the table's state."""

    mode: str = "incremental"
    sessions: int = 0
    runs: int = 0
    records: int = 0
    embedded: int = 0
    reused: int = 0
    stats: DeriveStats = field(default_factory=DeriveStats)
    modes: dict = field(default_factory=dict)
    table_rows: int = 0  # the table after the refresh
    mined: int = 0
    labels: dict = field(default_factory=dict)  # label -> playbooks in the table
    preview: list = field(default_factory=list)  # its first rows, for the UI
    embed_seconds: float = 0.0
    seconds: float = 0.0

    def metadata(self) -> dict[str, Any]:
        return {
            "dagster/row_count": dg.MetadataValue.int(self.table_rows),
            "refresh_mode": self.mode,
            "input_modes": dg.MetadataValue.json(self.modes),
            "sessions": self.sessions,
            "sessions_refreshed": self.sessions,
            "runs_mined_from": self.runs,
            "playbooks_written": self.records,
            "playbooks": self.table_rows,
            "mined": self.mined,
            "accepted": self.labels.get("accepted", 0),
            "partially_accepted": self.labels.get("partially_accepted", 0),
            "rejected": self.labels.get("rejected", 0),
            "by_source_and_label": md_counts("source/label", dict(self.stats.playbooks)),
            "dropped_by_reason": md_counts("reason", dict(self.stats.dropped)),
            "embedded_new": self.embedded,
            "embeddings_reused": self.reused,
            "seconds": round(self.seconds, 2),
            "preview": md_preview(self.preview, {"title": lambda r: r["title"], "source": lambda r: r["source_kind"],
                                                 "label": lambda r: r["label"], "content": lambda r: r["content"]}),
            "embed_s": round(self.embed_seconds, 2),
        }


def refresh_playbooks(lake: DeltaLake, *, turn_columns: list[str], run_columns: list[str],
                      embed: Callable[[list[dict], list[int]], None], model: str, now,
                      full: bool = False) -> PlaybookRefresh:
    t0 = time.perf_counter()
    rep = PlaybookRefresh()
    state = consumed_versions(lake, DATASET)
    full = full or not lake.exists(RAG_PLAYBOOKS)
    versions: dict[str, int | None] = {}
    sessions: set = set()
    session_inputs = [(TRACE_TURNS, turn_columns), (AGENT_STEPS, ["session_key", "step_id", "step_index"]),
                      (NORMALIZED_PAIRS, None), (SFT_EXAMPLES, ["session_key", "step_id", "messages"])]
    for spec, _ in session_inputs:
        ch = changes_since(lake, spec, state.get(spec.path), ["session_key"], full=full)
        versions[spec.path] = ch.version
        rep.modes[spec.name] = "full" if ch.full else "incremental"
        if ch.version is None:
            continue
        if ch.full:
            full = True
            for b in scan(lake, spec, ["session_key"], version=ch.version):
                sessions.update(pc.unique(b.column("session_key")).to_pylist())
        else:
            sessions |= ch.keys("session_key")
    run_ch = changes_since(lake, RAG_RUNS, state.get(RAG_RUNS.path), run_columns, full=full)
    versions[RAG_RUNS.path] = run_ch.version
    rep.modes[RAG_RUNS.name] = "full" if run_ch.full else "incremental"
    rep.mode = "full" if full else "incremental"
    sessions.discard(None)
    rep.sessions = len(sessions)

    keys = sorted(sessions)
    for i in range(0, len(keys), SESSIONS_PER_GROUP):
        group = keys[i:i + SESSIONS_PER_GROUP]

        def read(spec, cols):
            return rows_of(scan_keys(lake, spec, "session_key", group, columns=cols, version=versions[spec.path]))

        records = derive_playbooks(turns=read(*session_inputs[0]), steps=read(*session_inputs[1]),
                                   pairs=read(*session_inputs[2]), sft=read(*session_inputs[3]), runs=(),
                                   now=now, stats=rep.stats)
        _write(lake, records, embed, model, rep,
               before=lambda: delete_keys(lake, RAG_PLAYBOOKS, "session_key", group))
    if full and lake.exists(RAG_PLAYBOOKS):  # sessions gone upstream: their playbooks go too
        stale: set = set()
        for b in scan(lake, RAG_PLAYBOOKS, ["session_key"]):
            stale.update(v for v in pc.unique(b.column("session_key")).to_pylist() if v is not None)
        delete_keys(lake, RAG_PLAYBOOKS, "session_key", stale - sessions)

    if run_ch.version is not None and not run_ch.empty:
        batches = scan(lake, RAG_RUNS, run_columns, version=run_ch.version) if run_ch.full else run_ch.inserted()
        runs = report_view(rows_of(batches))
        rep.runs = len(runs)
        mined = derive_from_runs(runs, rep.stats, now)
        tasks = sorted({r["task"] for r in mined})

        def drop_older():  # the latest run per task wins: older mined playbooks give way
            for j in range(0, len(tasks), 500):
                lake.delete(RAG_PLAYBOOKS, f"source_kind = 'mined' AND {in_predicate('task', tasks[j:j + 500])}")

        for rec in mined:
            rep.stats.playbooks[f"{rec['source_kind']}/{rec['label']}"] += 1
        _write(lake, mined, embed, model, rep, before=drop_older)
    else:
        lake.ensure(RAG_PLAYBOOKS)
    record_consumed(lake, DATASET, versions, rep.mode)
    t = lake.read(RAG_PLAYBOOKS, columns=["label", "mined"])
    rep.table_rows = t.num_rows
    rep.labels = {lab: int(pc.sum(pc.equal(t.column("label"), lab)).as_py() or 0) for lab in LABELS}
    rep.mined = int(pc.sum(t.column("mined")).as_py() or 0) if t.num_rows else 0
    rep.preview = lake.read(RAG_PLAYBOOKS, columns=["title", "source_kind", "label", "content"]).slice(0, 3).to_pylist()
    rep.seconds = time.perf_counter() - t0
    return rep


def _write(lake: DeltaLake, records: list[dict], embed, model: str, rep: PlaybookRefresh, before=None) -> None:
    """Embed (reusing the table's embeddings of the same text), then ``before()`` (the
    deletes this write replaces), then upsert."""
    if not records:
        if before is not None:
            before()
        return
    hashes = {r["content_hash"] for r in records}
    previous = rows_of(scan_keys(lake, RAG_PLAYBOOKS, "content_hash", hashes,
                                 columns=["content_hash", "embedding", "embedding_model"]))
    todo = reuse_embeddings(records, previous, model)
    if todo:
        t = time.perf_counter()
        embed(records, todo)
        rep.embed_seconds += time.perf_counter() - t
    rep.embedded += len(todo)
    rep.reused += len(records) - len(todo)
    rep.records += len(records)
    if before is not None:
        before()
    lake.merge(RAG_PLAYBOOKS, records, keys=["playbook_id"])


# ------------------------------------------------------------------ rag_report

REPORT_RUN_COLUMNS = ["validation_result", "escalated", "recorded_at", "no_retrieval"]


def _report_runs(lake: DeltaLake, filter=None):
    """rag_runs rows (the report's columns), a batch at a time."""
    for b in scan(lake, RAG_RUNS, REPORT_RUN_COLUMNS, filter=filter):
        yield from report_view(b.to_pylist())


def _days_filter(days: set[str]):
    """recorded_at on one of these UTC days ("unknown": no timestamp)."""
    expr = None
    field_ = pc.field("recorded_at")
    for d in sorted(days):
        if d == "unknown":
            e = field_.is_null()
        else:
            start = datetime.fromisoformat(d).replace(tzinfo=timezone.utc)
            e = (field_ >= pa.scalar(start, pa.timestamp("us", tz="UTC"))) & (
                field_ < pa.scalar(start + timedelta(days=1), pa.timestamp("us", tz="UTC")))
        expr = e if expr is None else (expr | e)
    return expr


@dataclass
class ReportRecount:
    """rag_report's rows after a recount; :meth:`metadata` is what the asset reports beside
    the write's."""

    rows: list[dict]
    mode: str  # full | incremental
    reason: str
    version: int | None  # the rag_runs version counted
    days: set = field(default_factory=set)  # the days recounted (incremental)

    def metadata(self) -> dict[str, Any]:
        overall = {r["retrieval"]: r for r in self.rows if r["day"] == "all"}
        md: dict[str, Any] = {
            "runs": sum(r["runs"] for r in overall.values()),
            "refresh_mode": self.mode,
            "refresh_reason": self.reason,
            "days_recounted": ", ".join(sorted(self.days)) if self.mode == "incremental" else "all",
            "rag_runs_version": -1 if self.version is None else self.version,
            "overall": dg.MetadataValue.md(markdown(self.rows)),
            "per_day": dg.MetadataValue.md(markdown(self.rows, per_day=True)),
        }
        for scope, r in overall.items():
            md[f"pass_rate/{scope}"] = dg.MetadataValue.float(r["pass_rate"])
            md[f"escalation_rate/{scope}"] = dg.MetadataValue.float(r["escalation_rate"])
        return md


def recount_report(lake: DeltaLake, *, full: bool, now) -> ReportRecount:
    """rag_report's rows: every run counted (``full``, or no usable history), or only the
    days that got runs since the last refresh recounted and the other days kept."""
    state = consumed_versions(lake, RAG_REPORT.path)
    ch = changes_since(lake, RAG_RUNS, state.get(RAG_RUNS.path), ["recorded_at"],
                       full=full or not lake.exists(RAG_REPORT))
    if ch.version is None or ch.full:  # every run, counted a batch at a time
        return ReportRecount(report_rows(_report_runs(lake), now=now), "full", ch.reason, ch.version)
    days: set[str] = set()
    for b in ch.batches():
        days.update(_day(ts) for ts in b.column("recorded_at").to_pylist())
    kept = [r for r in lake.read(RAG_REPORT).to_pylist() if r["day"] not in days]
    fresh = report_rows(_report_runs(lake, _days_filter(days)), now=now) if days else []
    rows = with_totals(kept + [r for r in fresh if r["day"] != "all"], now=now)
    return ReportRecount(rows, "incremental", ch.reason, ch.version, days)


__all__ = ["refresh_playbooks", "PlaybookRefresh", "normalize_task", "recount_report", "ReportRecount"]
