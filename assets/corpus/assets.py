"""Thin Dagster wrappers: the replay corpus (upsert + eviction) and its sample."""


import time
from collections import Counter
from typing import Optional

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from assets.checks import table_check
from assets.corpus.policy import (
    SCHEMES,
    Snapshots,
    composition,
    plan_eviction,
    iso,
    snapshots_from_kto,
    snapshots_from_pairs,
    snapshots_from_sft,
    utc,
)
from assets.corpus.store import draw_sample, evict, upsert_snapshots, write_sample
from assets.corpus.tables import EVICTION_COLUMNS, REPLAY_CORPUS, REPLAY_EVICTIONS, REPLAY_SAMPLE
from assets.examples.tables import KTO_EXAMPLES, SFT_EXAMPLES
from assets.pairs.tables import NORMALIZED_PAIRS
from resources.changes import changes_since, consumed_versions, record_consumed, refresh_state_event, scan, scan_keys
from resources.lake import DeltaLake

from assets.metadata import json_preview, md_preview

_SAMPLE_IDS = 20


class ReplayCorpusConfig(dg.Config):
    max_bytes: Optional[int] = None  # byte budget of all content (None = unbounded)
    max_rows: Optional[int] = None  # row budget (None = unbounded)
    as_of: Optional[str] = None  # ISO time of this sighting (default: now)
    include_kto: bool = True  # desirable KTO rows become instruction snapshots
    instruction_weight: float = 1.0
    preference_weight: float = 1.0
    prose_weight: float = 1.0
    delete_chunk_size: int = 2000  # ids per IN-predicate delete (fallback path only)
    log_evictions: bool = True  # append evicted snapshots to gold/replay_evictions
    full_refresh: bool = False  # read every input row, not only what changed since the last refresh
    upsert_rows: int = 20000  # snapshots per merge (memory bound of a refresh)


class ReplaySampleConfig(dg.Config):
    k: int = 1000
    seed: int = 0
    scheme: str = "recency"  # recency | uniform
    reference_time: Optional[str] = None  # ISO; default now (fix it to reproduce a sample)
    preference_only: bool = False
    # False: preference snapshots the pipeline mined itself (pairs from teacher disagreement)
    # are left out; only pairs that came in as preference data (imported datasets) are drawn
    include_auto_mined: bool = True


def _type_mix(col) -> dict[str, int]:
    counts = {d["values"]: d["counts"] for d in pc.value_counts(col).to_pylist()} if len(col) else {}
    return composition([]) | {t: counts[t] for t in ("prose", "instruction", "preference") if t in counts} | {
        t: n for t, n in sorted(counts.items()) if t not in ("prose", "instruction", "preference")}


def _json(obj) -> dg.MetadataValue:
    return dg.MetadataValue.json(obj)


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
    still upstream (the asset drops this preference when the budget cannot hold with it).

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


@dg.multi_asset(
    name="gold__replay_corpus",
    specs=[REPLAY_CORPUS.asset_spec(
               deps=[NORMALIZED_PAIRS.asset_key, SFT_EXAMPLES.asset_key, KTO_EXAMPLES.asset_key],
               group_name="corpus"),
           REPLAY_EVICTIONS.asset_spec(group_name="corpus")],
    description="Upsert this run's training rows into the replay corpus, then evict the oldest "
                "snapshots until the budget holds, logging each evicted one.",
)
def replay_corpus(context: dg.AssetExecutionContext, config: ReplayCorpusConfig, lake: DeltaLake):
    now = utc(config.as_of)
    t0 = time.perf_counter()
    # What changed in each input since the last refresh (its change feed), or everything on
    # a full refresh; read in batches and upserted a chunk at a time, so memory stays flat.
    state = consumed_versions(lake, REPLAY_CORPUS.path)
    builders = [
        (NORMALIZED_PAIRS, ["pair_id", "prompt", "chosen", "rejected", "tools"],
         lambda b: snapshots_from_pairs(b, now=now, weight=config.preference_weight)),
        (SFT_EXAMPLES, ["example_id", "messages", "tools", "source"],
         lambda b: snapshots_from_sft(b, now=now, weight=config.instruction_weight,
                                      prose_weight=config.prose_weight)),
    ]
    if config.include_kto:
        builders.append((KTO_EXAMPLES, ["example_id", "prompt", "completion", "label", "tools", "source"],
                         lambda b: snapshots_from_kto(b, now=now, weight=config.instruction_weight,
                                                      prose_weight=config.prose_weight)))
    seen_ids: list[str] = []
    added: list[str] = []
    refreshed: list[str] = []
    dropped: Counter = Counter()
    duplicates = rows_in = 0
    new_types: Counter = Counter()
    versions, modes = {}, {}
    up = None
    merge_s = 0.0
    chunk = Snapshots()
    preview: list[dict] = []  # a few snapshots of this refresh, for the UI

    def flush(chunk: Snapshots):
        nonlocal up, merge_s, duplicates
        d = chunk.deduped()
        duplicates += d.duplicates
        if not d.rows:
            return
        t = time.perf_counter()
        up = upsert_snapshots(lake, d)
        merge_s += time.perf_counter() - t
        seen_ids.extend(d.ids)
        added.extend(up.added)
        refreshed.extend(up.refreshed)
        fresh = set(up.added)
        new_types.update(r["section_type"] for r in d.rows if r["section_id"] in fresh)
        preview.extend(r for r in d.rows[: max(0, 3 - len(preview))])

    for spec, columns, build in builders:
        ch = changes_since(lake, spec, state.get(spec.path), columns, full=config.full_refresh)
        versions[spec.path], modes[spec.path] = ch.version, ("full" if ch.full else "incremental")
        if ch.version is None or ch.empty:
            continue
        batches = scan(lake, spec, columns, version=ch.version) if ch.full else ch.inserted()
        for b in batches:
            rows_in += b.num_rows
            got = build(b)
            dropped.update(got.dropped)
            chunk.extend(got)
            if len(chunk.rows) >= config.upsert_rows:
                flush(chunk)
                chunk = Snapshots()
    flush(chunk)
    if up is None:  # nothing new: the table still exists, with its current rows
        up = upsert_snapshots(lake, Snapshots())
    build_s = time.perf_counter() - t0 - merge_s
    snaps = Snapshots(rows=[], dropped=dropped, duplicates=duplicates)

    # Eviction meets the budget: rows gone upstream go first (oldest first), then, only if
    # that is not enough, rows still upstream (oldest sighting first); only the rows this
    # materialization added are never evicted.
    protected = protect_upstream(lake, seen_ids, config.max_bytes, config.max_rows)
    if protected - set(added) and not plan_eviction(
            lake.read(REPLAY_CORPUS, columns=list(EVICTION_COLUMNS)), max_bytes=config.max_bytes,
            max_rows=config.max_rows, protected=pa.array(list(protected), pa.string())).within_budget:
        protected = set(added)
    ev = evict(lake, max_bytes=config.max_bytes, max_rows=config.max_rows, protected=protected,
               now=now, run_id=context.run.run_id, chunk_size=config.delete_chunk_size,
               log=config.log_evictions)
    index = ev.index_after
    plan = ev.plan
    if plan.ids:
        context.log.info(f"evicted {len(plan.ids)} snapshots ({plan.evicted_bytes} bytes) via {ev.mode}")
    if not plan.within_budget:
        context.log.warning(
            f"replay corpus still over budget after eviction: {plan.rows_after} rows / "
            f"{plan.bytes_after} bytes; the {plan.protected_rows} snapshots added by this run alone exceed it")

    record_consumed(lake, REPLAY_CORPUS.path, versions, "full" if "full" in modes.values() else "incremental")
    final = ev.write or up.write
    md = up.write.metadata()
    md.update({
        "delta_version": dg.MetadataValue.int(final.version),
        "table_rows": dg.MetadataValue.int(final.table_rows),
        "dagster/row_count": dg.MetadataValue.int(final.table_rows),
        "corpus_bytes": dg.MetadataValue.int(int(pc.sum(index.column("byte_size")).as_py() or 0)),
        "as_of": iso(now),
        "refresh_mode": _json(modes),
        "input_versions": _json(versions),
        "input_rows_read": dg.MetadataValue.int(rows_in),
        "snapshots_seen": dg.MetadataValue.int(len(seen_ids)),
        "preview": md_preview(preview, {"type": lambda r: r["section_type"], "source": lambda r: r["source"],
                                        "content": lambda r: r["content"]}),
        "added": dg.MetadataValue.int(len(added)),
        "refreshed": dg.MetadataValue.int(len(refreshed)),
        "duplicates_in_inputs": dg.MetadataValue.int(snaps.duplicates),
        "dropped_by_reason": _json(dict(snaps.dropped)),
        "evicted": dg.MetadataValue.int(len(plan.ids)),
        "evicted_bytes": dg.MetadataValue.int(plan.evicted_bytes),
        "evicted_by_type": _json(plan.types),
        "evicted_ids_sample": _json(plan.ids[:_SAMPLE_IDS]),
        "eviction_mode": ev.mode,
        "eviction_commits": dg.MetadataValue.int(ev.commits),
        "budget": _json({"max_bytes": config.max_bytes, "max_rows": config.max_rows}),
        "within_budget": dg.MetadataValue.bool(plan.within_budget),
        "protected_rows": dg.MetadataValue.int(plan.protected_rows),
        "section_types": _json(_type_mix(index.column("section_type"))),
        "new_by_type": _json(composition(new_types.elements())),
        "timings_s": _json({"build": round(build_s, 3), "merge": round(merge_s, 3),
                            "evict": round(ev.seconds, 3)}),
    })
    if plan.ids and config.log_evictions:
        md["evictions_table"] = REPLAY_EVICTIONS.path
    yield dg.MaterializeResult(asset_key=REPLAY_CORPUS.asset_key, metadata=md)
    logged = ev.evictions_write or lake.state(REPLAY_EVICTIONS, mode="append")
    yield dg.MaterializeResult(asset_key=REPLAY_EVICTIONS.asset_key, metadata=logged.metadata() | {
        "evicted_by_type": _json(plan.types),
        "logging": "on" if config.log_evictions else "off (config log_evictions)",
    })
    context.log_event(refresh_state_event(lake, REPLAY_CORPUS.path))


@dg.asset(
    key=REPLAY_SAMPLE.asset_key,
    deps=[REPLAY_CORPUS.asset_key],
    group_name="corpus",
    kinds={"delta"},
    description=REPLAY_SAMPLE.description,
)
def replay_sample(context: dg.AssetExecutionContext, config: ReplaySampleConfig,
                  lake: DeltaLake) -> dg.MaterializeResult:
    if config.scheme not in SCHEMES:
        raise dg.Failure(f"scheme must be one of {SCHEMES}, got {config.scheme!r}")
    if config.k < 0:
        raise dg.Failure("k must be >= 0")
    sample = draw_sample(lake, k=config.k, seed=config.seed, scheme=config.scheme,
                         reference_time=config.reference_time, preference_only=config.preference_only,
                         include_auto_mined=config.include_auto_mined)
    result = write_sample(lake, sample)
    t = sample.table
    n = t.num_rows
    ages = (pc.divide(pc.cast(pc.subtract(pa.scalar(sample.reference_time, t.schema.field("last_seen_at").type),
                                          t.column("last_seen_at")), pa.int64()), 86_400e6)
            if n else None)
    md = result.metadata()
    md.update({
        "k": dg.MetadataValue.int(config.k),
        "seed": dg.MetadataValue.int(config.seed),
        "scheme": config.scheme,
        "reference_time": iso(sample.reference_time),
        "preference_only": dg.MetadataValue.bool(config.preference_only),
        "include_auto_mined": dg.MetadataValue.bool(config.include_auto_mined),
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
    })
    if n < config.k:
        context.log.info(f"corpus holds {sample.corpus_rows} candidates; sampled {n} < k={config.k}")
    return dg.MaterializeResult(metadata=md)


@dg.asset_check(asset=REPLAY_CORPUS.asset_key, description="section_id is unique and every section type is known.")
def replay_corpus_ids_unique(lake: DeltaLake) -> dg.AssetCheckResult:
    idx = lake.read(REPLAY_CORPUS, columns=["section_id", "section_type"])
    n = idx.num_rows
    distinct = len(pc.unique(idx.column("section_id"))) if n else 0
    types = composition(idx.column("section_type").to_pylist())
    unknown = sorted(set(types) - {"prose", "instruction", "preference"})
    return dg.AssetCheckResult(
        passed=distinct == n and not unknown,
        metadata={"rows": n, "distinct_ids": distinct, "unknown_types": _json(unknown)},
    )


@dg.asset_check(asset=replay_sample, description="Sample ids are unique and prefixed 'replay:'.")
def replay_sample_ids_prefixed(lake: DeltaLake) -> dg.AssetCheckResult:
    ids = lake.read(REPLAY_SAMPLE, columns=["id"]).column("id")
    n = len(ids)
    bad = int(pc.sum(pc.invert(pc.starts_with(ids, "replay:"))).as_py() or 0) if n else 0
    distinct = len(pc.unique(ids)) if n else 0
    return dg.AssetCheckResult(passed=bad == 0 and distinct == n,
                               metadata={"rows": n, "unprefixed": bad, "distinct": distinct})


ASSETS = [replay_corpus, replay_sample]
CHECKS = [replay_corpus_ids_unique, replay_sample_ids_prefixed, table_check(REPLAY_EVICTIONS)]

defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS)
