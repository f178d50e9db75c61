"""Thin Dagster wrappers: the replay corpus (upsert + eviction) and its sample."""


import time
from collections import Counter
from typing import Optional

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from assets.pairs.tables import NORMALIZED_PAIRS

from assets.examples.tables import KTO_EXAMPLES, SFT_EXAMPLES
from resources.lake import DeltaLake

from assets.corpus.policy import (
    SCHEMES,
    Snapshots,
    composition,
    iso,
    snapshots_from_kto,
    snapshots_from_pairs,
    snapshots_from_sft,
    utc,
)
from assets.corpus.store import draw_sample, evict, upsert_snapshots, write_sample
from assets.corpus.tables import REPLAY_CORPUS, REPLAY_EVICTIONS, REPLAY_SAMPLE

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


class ReplaySampleConfig(dg.Config):
    k: int = 1000
    seed: int = 0
    scheme: str = "recency"  # recency | uniform
    reference_time: Optional[str] = None  # ISO; default now (fix it to reproduce a sample)
    preference_only: bool = False


def _type_mix(col) -> dict[str, int]:
    counts = {d["values"]: d["counts"] for d in pc.value_counts(col).to_pylist()} if len(col) else {}
    return composition([]) | {t: counts[t] for t in ("prose", "instruction", "preference") if t in counts} | {
        t: n for t, n in sorted(counts.items()) if t not in ("prose", "instruction", "preference")}


def _json(obj) -> dg.MetadataValue:
    return dg.MetadataValue.json(obj)


@dg.asset(
    key=REPLAY_CORPUS.asset_key,
    deps=[NORMALIZED_PAIRS.asset_key, SFT_EXAMPLES.asset_key, KTO_EXAMPLES.asset_key],
    group_name="corpus",
    kinds={"delta"},
    description=REPLAY_CORPUS.description,
)
def replay_corpus(context: dg.AssetExecutionContext, config: ReplayCorpusConfig,
                  lake: DeltaLake) -> dg.MaterializeResult:
    now = utc(config.as_of)
    t0 = time.perf_counter()
    snaps = Snapshots()
    snaps.extend(snapshots_from_pairs(
        lake.read(NORMALIZED_PAIRS, columns=["pair_id", "prompt", "chosen", "rejected", "tools"]),
        now=now, weight=config.preference_weight))
    snaps.extend(snapshots_from_sft(
        lake.read(SFT_EXAMPLES, columns=["example_id", "messages", "tools", "source"]),
        now=now, weight=config.instruction_weight, prose_weight=config.prose_weight))
    if config.include_kto:
        snaps.extend(snapshots_from_kto(
            lake.read(KTO_EXAMPLES, columns=["example_id", "prompt", "completion", "label", "tools", "source"]),
            now=now, weight=config.instruction_weight, prose_weight=config.prose_weight))
    snaps = snaps.deduped()
    build_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    up = upsert_snapshots(lake, snaps)
    merge_s = time.perf_counter() - t0

    ev = evict(lake, max_bytes=config.max_bytes, max_rows=config.max_rows, protected=snaps.ids,
               now=now, run_id=context.run.run_id, chunk_size=config.delete_chunk_size,
               log=config.log_evictions)
    index = ev.index_after
    plan = ev.plan
    if plan.ids:
        context.log.info(f"evicted {len(plan.ids)} snapshots ({plan.evicted_bytes} bytes) via {ev.mode}")
    if not plan.within_budget:
        context.log.warning(
            f"replay corpus still over budget after eviction: {plan.rows_after} rows / "
            f"{plan.bytes_after} bytes; the {plan.protected_rows} protected snapshots alone exceed it")

    added = set(up.added)
    final = ev.write or up.write
    md = up.write.metadata()
    md.update({
        "delta_version": dg.MetadataValue.int(final.version),
        "table_rows": dg.MetadataValue.int(final.table_rows),
        "dagster/row_count": dg.MetadataValue.int(final.table_rows),
        "corpus_bytes": dg.MetadataValue.int(int(pc.sum(index.column("byte_size")).as_py() or 0)),
        "as_of": iso(now),
        "snapshots_seen": dg.MetadataValue.int(len(snaps.rows)),
        "added": dg.MetadataValue.int(len(up.added)),
        "refreshed": dg.MetadataValue.int(len(up.refreshed)),
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
        "new_by_type": _json(composition(r["section_type"] for r in snaps.rows if r["section_id"] in added)),
        "timings_s": _json({"build": round(build_s, 3), "merge": round(merge_s, 3),
                            "evict": round(ev.seconds, 3)}),
    })
    if plan.ids and config.log_evictions:
        md["evictions_table"] = REPLAY_EVICTIONS.path
    return dg.MaterializeResult(metadata=md)


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
                         reference_time=config.reference_time, preference_only=config.preference_only)
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
        "candidates": dg.MetadataValue.int(sample.corpus_rows),
        "composition": _json(composition(t.column("section_type").to_pylist())),
        "sources": _json(dict(Counter(t.column("source").to_pylist()))),
        "age_days": _json({
            "min": round(pc.min(ages).as_py(), 3),
            "median": round(pc.approximate_median(ages).as_py(), 3),
            "max": round(pc.max(ages).as_py(), 3),
        } if n else {}),
        "timings_s": _json({k: round(v, 4) for k, v in sample.timings.items()}),
    })
    if n < config.k:
        context.log.info(f"corpus holds {sample.corpus_rows} candidates; sampled {n} < k={config.k}")
    return dg.MaterializeResult(metadata=md)


@dg.asset_check(asset=replay_corpus, description="section_id is unique and every section type is known.")
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
