"""Replay corpus I/O through the lake (Dagster-free; the assets and the benchmark share it).

Upsert, eviction and sampling read only the index columns of the corpus; the content
column is read for the sampled rows only (``DeltaLake.read_keys`` on ``id_hash``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from resources.lake import DeltaLake, WriteResult, string_field

from assets.corpus.policy import (
    EvictionPlan,
    Snapshots,
    apply_sightings,
    plan_eviction,
    select_sample,
    to_trl_table,
    utc,
)
from assets.corpus.tables import (
    EVICTION_COLUMNS,
    INDEX_COLUMNS,
    REPLAY_CORPUS,
    REPLAY_EVICTIONS,
    REPLAY_SAMPLE,
)

# What the sample needs of each chosen row.
SAMPLE_COLUMNS = ("section_id", "id_hash", "section_type", "weight", "last_seen_at",
                  "content", "source", "added_at")


# --------------------------------------------------------------------------- upsert
@dataclass
class UpsertOutcome:
    write: WriteResult
    added: list[str]
    refreshed: list[str]


def upsert_snapshots(lake: DeltaLake, snapshots: Snapshots) -> UpsertOutcome:
    """Merge deduped snapshots on section_id; a match only bumps ``last_seen_at``."""
    snaps = snapshots.deduped()
    existing = lake.read(REPLAY_CORPUS, columns=["section_id", "last_seen_at"])
    added, refreshed = apply_sightings(snaps, existing)
    write = lake.merge(REPLAY_CORPUS, snaps.rows, keys=["section_id"], update_columns=["last_seen_at"])
    return UpsertOutcome(write=write, added=added, refreshed=refreshed)


# --------------------------------------------------------------------------- eviction
@dataclass
class EvictionOutcome:
    plan: EvictionPlan
    mode: str = "none"  # none | range | in_chunks
    commits: int = 0
    rows_deleted: int = 0
    index_after: pa.Table | None = None  # eviction columns of what is left
    write: WriteResult | None = None
    evictions_write: WriteResult | None = None  # the rows logged to REPLAY_EVICTIONS
    seconds: float = 0.0


def evict(
    lake: DeltaLake,
    *,
    max_bytes: int | None,
    max_rows: int | None,
    protected: Any,
    now: datetime,
    run_id: str | None = None,
    chunk_size: int = 2000,
    log: bool = True,
) -> EvictionOutcome:
    """Evict oldest snapshots until the budget holds, never a protected id.

    The plan is a prefix of the (last_seen_at, added_at, section_id) order, so it is deleted
    with ONE range predicate (minus the few protected ids inside the range): one Delta
    commit, files entirely in the range are dropped without a rewrite. Only if many
    protected ids fall inside the range does it fall back to chunked ``IN`` deletes
    (delta-rs cannot parse very long IN lists: 50k literals crash it, 10k take ~2 s).
    """
    t0 = time.perf_counter()
    index = lake.read(REPLAY_CORPUS, columns=list(EVICTION_COLUMNS))
    plan = plan_eviction(index, max_bytes=max_bytes, max_rows=max_rows, protected=protected)
    out = EvictionOutcome(plan=plan, index_after=index)
    if not plan.ids:
        out.seconds = time.perf_counter() - t0
        return out
    before = index.num_rows
    if len(plan.protected_in_range) <= chunk_size:
        out.mode, preds = "range", [plan.range_predicate()]
    else:
        out.mode, preds = "in_chunks", plan.in_predicates(chunk_size)
    for pred in preds:
        out.write = lake.delete(REPLAY_CORPUS, pred)
        out.commits += 1
    out.rows_deleted = before - out.write.table_rows
    gone = pa.array(plan.ids, pa.string())
    keep = pc.invert(pc.is_in(index.column("section_id"), value_set=gone))
    out.index_after = index.filter(keep)
    if log:
        evicted = index.filter(pc.invert(keep)).select(
            ["section_id", "section_type", "byte_size", "added_at", "last_seen_at"])
        n = evicted.num_rows
        reason = f"max_bytes={plan.max_bytes},max_rows={plan.max_rows}"
        evicted = (evicted.append_column("evicted_at", pa.array([utc(now)] * n, REPLAY_EVICTIONS.schema.field("evicted_at").type))
                   .append_column("reason", pa.array([reason] * n, pa.string()))
                   .append_column("run_id", pa.array([run_id] * n, pa.string())))
        out.evictions_write = lake.append(REPLAY_EVICTIONS, evicted)
    out.seconds = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- sampling
@dataclass
class SampleOutcome:
    table: pa.Table  # REPLAY_SAMPLE rows in rank order
    corpus_rows: int  # rows the draw chose from (after preference_only)
    reference_time: datetime
    timings: dict[str, float] = field(default_factory=dict)


def draw_sample(
    lake: DeltaLake,
    *,
    k: int,
    seed: int,
    scheme: str = "recency",
    reference_time: datetime | str | None = None,
    preference_only: bool = False,
    include_auto_mined: bool = True,
) -> SampleOutcome:
    """Select k snapshots on the index columns, then read only the chosen rows.

    ``include_auto_mined=False`` leaves out the preference snapshots the pipeline mined
    itself (``auto_mined``: pairs from teacher disagreement), so a preference sample holds
    only pairs that came in as such (imported preference datasets).

    Both reads see one Delta version. The index (id_hash, type, weight, last_seen_at)
    decides the sample; ``lake.read_keys`` then fetches the k rows by id_hash, decoding
    only the data pages that hold them. The draw is recomputed on the fetched rows, so a
    64-bit hash collision (a row that shares a chosen id_hash) cannot enter the sample.
    Rows written before id_hash existed are keyed by section_id instead (same draw).
    """
    ref = utc(reference_time)
    t = {}
    t0 = time.perf_counter()
    version = lake.ensure(REPLAY_CORPUS).version()  # (a table from before id_hash gains the column)
    is_pref = string_field("section_type") == "preference"
    flt = is_pref if preference_only else None
    if not include_auto_mined:
        mined_pref = is_pref & (pc.field("auto_mined") == True)  # noqa: E712 (an Arrow expression)
        flt = ~mined_pref if flt is None else flt & ~mined_pref
    index = lake.read(REPLAY_CORPUS, columns=list(INDEX_COLUMNS), filter=flt, version=version)
    key = "id_hash"
    if index.column("id_hash").null_count:
        key = "section_id"
        index = lake.read(REPLAY_CORPUS, columns=[*INDEX_COLUMNS, key], filter=flt, version=version)
    t["read_index_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    draw = {"k": k, "seed": seed, "scheme": scheme, "reference_time": ref, "preference_only": preference_only}
    chosen = select_sample(index, **draw)
    t["select_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rows = REPLAY_CORPUS.empty().select(list(SAMPLE_COLUMNS))
    if chosen.num_rows:
        rows = lake.read_keys(REPLAY_CORPUS, key, chosen.column(key), columns=SAMPLE_COLUMNS, version=version)
    t["read_rows_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    selection = select_sample(rows, **draw)
    table = to_trl_table(selection, selection, scheme=scheme, seed=seed, reference_time=ref)
    t["to_trl_s"] = time.perf_counter() - t0
    return SampleOutcome(table=table, corpus_rows=index.num_rows, reference_time=ref, timings=t)


def write_sample(lake: DeltaLake, sample: SampleOutcome) -> WriteResult:
    return lake.overwrite(REPLAY_SAMPLE, sample.table)
