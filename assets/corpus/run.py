"""The corpus stages of one run, Dagster-free: refresh the replay corpus (upsert what changed
upstream, evict to the budget, log evictions) and draw its sample.

:func:`refresh_corpus` and :func:`sample_corpus` write through the lake (the corpus is
upserted a chunk at a time, so memory stays flat) and return a report that renders the
asset's metadata.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Optional

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from assets.corpus.policy import (
    Snapshots,
    composition,
    iso,
    plan_eviction,
    snapshots_from_kto,
    snapshots_from_pairs,
    snapshots_from_sft,
)
from assets.corpus.store import EvictionOutcome, SampleOutcome, UpsertOutcome, draw_sample, evict, upsert_snapshots
from assets.corpus.tables import EVICTION_COLUMNS, REPLAY_CORPUS, REPLAY_EVICTIONS
from assets.examples.tables import KTO_EXAMPLES, SFT_EXAMPLES
from assets.metadata import json_preview, md_preview
from assets.pairs.tables import NORMALIZED_PAIRS
from resources.changes import changes_since, consumed_versions, record_consumed, scan, scan_keys
from resources.lake import DeltaLake, WriteResult

_SAMPLE_IDS = 20


def _json(obj) -> dg.MetadataValue:
    return dg.MetadataValue.json(obj)


def _type_mix(col) -> dict[str, int]:
    counts = {d["values"]: d["counts"] for d in pc.value_counts(col).to_pylist()} if len(col) else {}
    return composition([]) | {t: counts[t] for t in ("prose", "instruction", "preference") if t in counts} | {
        t: n for t, n in sorted(counts.items()) if t not in ("prose", "instruction", "preference")}


# ------------------------------------------------------------------ refresh

_SOURCES = {"gold/normalized_pairs": (NORMALIZED_PAIRS, "pair_id"),
            "gold/sft_examples": (SFT_EXAMPLES, "example_id"),
            "gold/kto_examples": (KTO_EXAMPLES, "example_id")}


def still_upstream(lake: DeltaLake, index: pa.Table, section_ids) -> set[str]:
    """Those of ``section_ids`` whose source row (table, id of the first sighting) still exists."""
    rows = index.filter(pc.is_in(index.column("section_id"), value_set=pa.array(list(section_ids), pa.string())))
    by_source: dict[str, dict[str, list[str]]] = {}
    for sid, src, src_id in zip(*(rows.column(c).to_pylist() for c in ("section_id", "source", "source_id"))):
        if src in _SOURCES and src_id is not None:
            by_source.setdefault(src, {}).setdefault(src_id, []).append(sid)
    out: set[str] = set()
    for src, ids in by_source.items():
        spec, col = _SOURCES[src]
        for b in scan_keys(lake, spec, col, ids, columns=[col]):
            for v in b.column(col).to_pylist():
                out.update(ids.get(v, ()))
    return out


def protect_upstream(lake: DeltaLake, seen_ids: list[str], max_bytes, max_rows, rounds: int = 20) -> set[str]:
    """The ids eviction should keep when it can: this refresh's sightings and every row
    still upstream (the refresh drops this preference when the budget cannot hold with it).

    A refresh reads only what changed, so rows still upstream but unchanged are not among
    the sightings; the eviction plan's candidates are checked against their source tables
    (a few keyed reads), round after round, until the plan holds only rows gone upstream."""
    protected = set(seen_ids)
    if max_bytes is None and max_rows is None:
        return protected
    index = lake.read(REPLAY_CORPUS, columns=[*EVICTION_COLUMNS, "source", "source_id"])
    for _ in range(rounds):
        plan = plan_eviction(index, max_bytes=max_bytes, max_rows=max_rows, protected=pa.array(list(protected), pa.string()))
        if not plan.ids:
            return protected
        keep = still_upstream(lake, index, plan.ids)
        if not keep:
            return protected
        protected |= keep
    # many rounds: check every corpus row at once
    return protected | still_upstream(lake, index, index.column("section_id").to_pylist())


class CorpusOptions(BaseModel):
    """What one refresh does (the fields of the asset's config, which extends this)."""

    max_bytes: Optional[int] = None  # byte budget of all content (None = unbounded)
    max_rows: Optional[int] = None  # row budget (None = unbounded)
    include_kto: bool = True  # desirable KTO rows become instruction snapshots
    instruction_weight: float = 1.0
    preference_weight: float = 1.0
    prose_weight: float = 1.0
    delete_chunk_size: int = 2000  # ids per IN-predicate delete (fallback path only)
    log_evictions: bool = True  # append evicted snapshots to gold/replay_evictions
    full_refresh: bool = False  # read every input row, not only what changed since the last refresh
    upsert_rows: int = 20000  # snapshots per merge (memory bound of a refresh)


@dataclass
class CorpusReport:
    """What a refresh did; :meth:`metadata` (replay_corpus) and :meth:`evictions_metadata`
    (replay_evictions) are what the asset reports."""

    opts: CorpusOptions
    now: datetime
    upsert: UpsertOutcome | None = None  # the last merge
    eviction: EvictionOutcome | None = None
    seen_ids: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    refreshed: list[str] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    duplicates: int = 0
    rows_in: int = 0
    new_types: Counter = field(default_factory=Counter)
    versions: dict = field(default_factory=dict)
    modes: dict = field(default_factory=dict)
    preview: list[dict] = field(default_factory=list)  # a few snapshots of this refresh, for the UI
    build_seconds: float = 0.0
    merge_seconds: float = 0.0

    @property
    def final_write(self) -> WriteResult:
        return self.eviction.write or self.upsert.write

    def metadata(self) -> dict[str, Any]:
        """replay_corpus: the last merge's write metadata, the table after eviction, the figures."""
        ev, opts = self.eviction, self.opts
        plan, final = ev.plan, self.final_write
        md = self.upsert.write.metadata() | {
            "delta_version": dg.MetadataValue.int(final.version),
            "table_rows": dg.MetadataValue.int(final.table_rows),
            "dagster/row_count": dg.MetadataValue.int(final.table_rows),
            "corpus_bytes": dg.MetadataValue.int(int(pc.sum(ev.index_after.column("byte_size")).as_py() or 0)),
            "as_of": iso(self.now),
            "refresh_mode": _json(self.modes),
            "input_versions": _json(self.versions),
            "input_rows_read": dg.MetadataValue.int(self.rows_in),
            "snapshots_seen": dg.MetadataValue.int(len(self.seen_ids)),
            "preview": md_preview(self.preview, {"type": lambda r: r["section_type"], "source": lambda r: r["source"],
                                                 "content": lambda r: r["content"]}),
            "added": dg.MetadataValue.int(len(self.added)),
            "refreshed": dg.MetadataValue.int(len(self.refreshed)),
            "duplicates_in_inputs": dg.MetadataValue.int(self.duplicates),
            "dropped_by_reason": _json(dict(self.dropped)),
            "evicted": dg.MetadataValue.int(len(plan.ids)),
            "evicted_bytes": dg.MetadataValue.int(plan.evicted_bytes),
            "evicted_by_type": _json(plan.types),
            "evicted_ids_sample": _json(plan.ids[:_SAMPLE_IDS]),
            "eviction_mode": ev.mode,
            "eviction_commits": dg.MetadataValue.int(ev.commits),
            "budget": _json({"max_bytes": opts.max_bytes, "max_rows": opts.max_rows}),
            "within_budget": dg.MetadataValue.bool(plan.within_budget),
            "protected_rows": dg.MetadataValue.int(plan.protected_rows),
            "section_types": _json(_type_mix(ev.index_after.column("section_type"))),
            "new_by_type": _json(composition(self.new_types.elements())),
            "timings_s": _json({"build": round(self.build_seconds, 3), "merge": round(self.merge_seconds, 3),
                                "evict": round(ev.seconds, 3)}),
        }
        if plan.ids and opts.log_evictions:
            md["evictions_table"] = REPLAY_EVICTIONS.path
        return md

    def evictions_metadata(self) -> dict[str, Any]:
        """replay_evictions' own figures (beside its write's, or its state when nothing was logged)."""
        return {"evicted_by_type": _json(self.eviction.plan.types),
                "logging": "on" if self.opts.log_evictions else "off (config log_evictions)"}


def refresh_corpus(lake: DeltaLake, opts: CorpusOptions, *, now: datetime, run_id: str | None = None,
                   info: Callable[[str], None] = lambda m: None,
                   warn: Callable[[str], None] = lambda m: None) -> CorpusReport:
    """Upsert what changed in each input since the last refresh (its change feed; everything
    on a full refresh), read in batches and merged ``opts.upsert_rows`` snapshots at a time,
    then evict to the budget and record the input versions consumed."""
    t0 = time.perf_counter()
    rep = CorpusReport(opts=opts, now=now)
    state = consumed_versions(lake, REPLAY_CORPUS.path)
    builders = [
        (NORMALIZED_PAIRS, ["pair_id", "prompt", "chosen", "rejected", "tools"],
         lambda b: snapshots_from_pairs(b, now=now, weight=opts.preference_weight)),
        (SFT_EXAMPLES, ["example_id", "messages", "tools", "source"],
         lambda b: snapshots_from_sft(b, now=now, weight=opts.instruction_weight, prose_weight=opts.prose_weight)),
    ]
    if opts.include_kto:
        builders.append((KTO_EXAMPLES, ["example_id", "prompt", "completion", "label", "tools", "source"],
                         lambda b: snapshots_from_kto(b, now=now, weight=opts.instruction_weight,
                                                      prose_weight=opts.prose_weight)))

    def flush(chunk: Snapshots):
        d = chunk.deduped()
        rep.duplicates += d.duplicates
        if not d.rows:
            return
        t = time.perf_counter()
        up = rep.upsert = upsert_snapshots(lake, d)
        rep.merge_seconds += time.perf_counter() - t
        rep.seen_ids.extend(d.ids)
        rep.added.extend(up.added)
        rep.refreshed.extend(up.refreshed)
        fresh = set(up.added)
        rep.new_types.update(r["section_type"] for r in d.rows if r["section_id"] in fresh)
        rep.preview.extend(r for r in d.rows[: max(0, 3 - len(rep.preview))])

    chunk = Snapshots()
    for spec, columns, build in builders:
        ch = changes_since(lake, spec, state.get(spec.path), columns, full=opts.full_refresh)
        rep.versions[spec.path], rep.modes[spec.path] = ch.version, ("full" if ch.full else "incremental")
        if ch.version is None or ch.empty:
            continue
        batches = scan(lake, spec, columns, version=ch.version) if ch.full else ch.inserted()
        for b in batches:
            rep.rows_in += b.num_rows
            got = build(b)
            rep.dropped.update(got.dropped)
            chunk.extend(got)
            if len(chunk.rows) >= opts.upsert_rows:
                flush(chunk)
                chunk = Snapshots()
    flush(chunk)
    if rep.upsert is None:  # nothing new: the table still exists, with its current rows
        rep.upsert = upsert_snapshots(lake, Snapshots())
    rep.build_seconds = time.perf_counter() - t0 - rep.merge_seconds

    # Eviction meets the budget: rows gone upstream go first (oldest first), then, only if
    # that is not enough, rows still upstream (oldest sighting first); only the rows this
    # refresh added are never evicted.
    protected = protect_upstream(lake, rep.seen_ids, opts.max_bytes, opts.max_rows)
    if protected - set(rep.added) and not plan_eviction(
            lake.read(REPLAY_CORPUS, columns=list(EVICTION_COLUMNS)), max_bytes=opts.max_bytes,
            max_rows=opts.max_rows, protected=pa.array(list(protected), pa.string())).within_budget:
        protected = set(rep.added)
    ev = rep.eviction = evict(lake, max_bytes=opts.max_bytes, max_rows=opts.max_rows, protected=protected,
                              now=now, run_id=run_id, chunk_size=opts.delete_chunk_size, log=opts.log_evictions)
    plan = ev.plan
    if plan.ids:
        info(f"evicted {len(plan.ids)} snapshots ({plan.evicted_bytes} bytes) via {ev.mode}")
    if not plan.within_budget:
        warn(f"replay corpus still over budget after eviction: {plan.rows_after} rows / "
             f"{plan.bytes_after} bytes; the {plan.protected_rows} snapshots added by this run alone exceed it")
    record_consumed(lake, REPLAY_CORPUS.path, rep.versions,
                    "full" if "full" in rep.modes.values() else "incremental")
    return rep


# ------------------------------------------------------------------ sample

@dataclass
class SampleReport:
    """What a draw did; :meth:`metadata` is what replay_sample reports beside its write."""

    sample: SampleOutcome
    k: int
    seed: int
    scheme: str
    preference_only: bool
    include_auto_mined: bool

    def metadata(self) -> dict[str, Any]:
        sample, t = self.sample, self.sample.table
        n = t.num_rows
        ages = (pc.divide(pc.cast(pc.subtract(pa.scalar(sample.reference_time, t.schema.field("last_seen_at").type),
                                              t.column("last_seen_at")), pa.int64()), 86_400e6)
                if n else None)
        return {
            "k": dg.MetadataValue.int(self.k),
            "seed": dg.MetadataValue.int(self.seed),
            "scheme": self.scheme,
            "reference_time": iso(sample.reference_time),
            "preference_only": dg.MetadataValue.bool(self.preference_only),
            "include_auto_mined": dg.MetadataValue.bool(self.include_auto_mined),
            "candidates": dg.MetadataValue.int(sample.corpus_rows),
            "composition": _json(composition(t.column("section_type").to_pylist())),
            "sources": _json(dict(Counter(t.column("source").to_pylist()))),
            "age_days": _json({
                "min": round(pc.min(ages).as_py(), 3),
                "median": round(pc.approximate_median(ages).as_py(), 3),
                "max": round(pc.max(ages).as_py(), 3),
            } if n else {}),
            "timings_s": _json({k: round(v, 4) for k, v in sample.timings.items()}),
            "preview": md_preview(t.slice(0, 3).to_pylist(), {
                "id": lambda r: r["id"], "type": lambda r: r["section_type"],
                "conversation": lambda r: json_preview(r["messages"] or r["prompt"]),
                "chosen": lambda r: json_preview(r["chosen"]) if r["chosen"] else "",
                "rejected": lambda r: json_preview(r["rejected"]) if r["rejected"] else ""}),
        }


def draw_corpus_sample(lake: DeltaLake, *, k: int, seed: int, scheme: str, reference_time=None,
                       preference_only: bool = False, include_auto_mined: bool = True) -> SampleReport:
    """Draw the sample (``report.sample.table`` is what replay_sample gets)."""
    sample = draw_sample(lake, k=k, seed=seed, scheme=scheme, reference_time=reference_time,
                         preference_only=preference_only, include_auto_mined=include_auto_mined)
    return SampleReport(sample, k, seed, scheme, preference_only, include_auto_mined)
