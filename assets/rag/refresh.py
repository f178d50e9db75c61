"""rag_playbooks, refreshed by what changed (see resources/changes.py).

Playbooks derive per session (from its turns, steps, kept pairs and SFT rows) and per
accepted rag run. A refresh reads the change feeds of those inputs: the sessions that
changed are re-derived (their old playbooks leave the table), and the runs appended since
the last refresh are mined (an older mined playbook of the same task gives way: the
latest run per task wins). Embeddings of unchanged text are reused. ``full`` (or no usable
history) re-derives everything, a group of sessions at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pyarrow.compute as pc

from assets.examples.tables import SFT_EXAMPLES
from assets.pairs.tables import NORMALIZED_PAIRS
from assets.rag.playbooks import DeriveStats, derive_from_runs, derive_playbooks, normalize_task, reuse_embeddings
from assets.rag.runlog import report_view
from assets.rag.tables import RAG_PLAYBOOKS, RAG_RUNS
from assets.traces.tables import AGENT_STEPS, TRACE_TURNS
from resources.changes import (
    changes_since,
    consumed_versions,
    delete_keys,
    record_consumed,
    rows_of,
    scan,
    scan_keys,
)
from resources.lake import DeltaLake, in_predicate

DATASET = RAG_PLAYBOOKS.path
SESSIONS_PER_GROUP = 200


@dataclass
class PlaybookRefresh:
    mode: str = "incremental"
    sessions: int = 0
    runs: int = 0
    records: int = 0
    embedded: int = 0
    reused: int = 0
    stats: DeriveStats = field(default_factory=DeriveStats)
    modes: dict = field(default_factory=dict)


def refresh_playbooks(lake: DeltaLake, *, turn_columns: list[str], run_columns: list[str],
                      embed: Callable[[list[dict], list[int]], None], model: str, now,
                      full: bool = False) -> PlaybookRefresh:
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
        embed(records, todo)
    rep.embedded += len(todo)
    rep.reused += len(records) - len(todo)
    rep.records += len(records)
    if before is not None:
        before()
    lake.merge(RAG_PLAYBOOKS, records, keys=["playbook_id"])


__all__ = ["refresh_playbooks", "PlaybookRefresh", "normalize_task"]
