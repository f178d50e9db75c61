"""Thin Dagster wrappers: the replay corpus (upsert + eviction) and its sample."""


from typing import Optional

import dagster as dg
import pyarrow.compute as pc

from assets.checks import table_check
from assets.corpus.policy import SCHEMES, composition, utc
from assets.corpus.run import CorpusOptions, draw_corpus_sample, refresh_corpus
from assets.corpus.store import write_sample
from assets.corpus.tables import REPLAY_CORPUS, REPLAY_EVICTIONS, REPLAY_SAMPLE
from assets.examples.tables import KTO_EXAMPLES, SFT_EXAMPLES
from assets.pairs.tables import NORMALIZED_PAIRS
from resources.changes import refresh_state_event
from resources.lake import DeltaLake


class ReplayCorpusConfig(dg.Config, CorpusOptions):
    """The refresh's options (budget, weights, chunking: assets/corpus/run.py) and when it runs."""

    as_of: Optional[str] = None  # ISO time of this sighting (default: now)


class ReplaySampleConfig(dg.Config):
    k: int = 1000
    seed: int = 0
    scheme: str = "recency"  # recency | uniform
    reference_time: Optional[str] = None  # ISO; default now (fix it to reproduce a sample)
    preference_only: bool = False
    # False: preference snapshots the pipeline mined itself (pairs from teacher disagreement)
    # are left out; only pairs that came in as preference data (imported datasets) are drawn
    include_auto_mined: bool = True


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
    report = refresh_corpus(lake, config, now=utc(config.as_of), run_id=context.run.run_id,
                            info=context.log.info, warn=context.log.warning)
    yield dg.MaterializeResult(asset_key=REPLAY_CORPUS.asset_key, metadata=report.metadata())
    logged = report.eviction.evictions_write or lake.state(REPLAY_EVICTIONS, mode="append")
    yield dg.MaterializeResult(asset_key=REPLAY_EVICTIONS.asset_key,
                               metadata=logged.metadata() | report.evictions_metadata())
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
    report = draw_corpus_sample(lake, k=config.k, seed=config.seed, scheme=config.scheme,
                                reference_time=config.reference_time, preference_only=config.preference_only,
                                include_auto_mined=config.include_auto_mined)
    result = write_sample(lake, report.sample)
    n = report.sample.table.num_rows
    if n < config.k:
        context.log.info(f"corpus holds {report.sample.corpus_rows} candidates; sampled {n} < k={config.k}")
    return dg.MaterializeResult(metadata=result.metadata() | report.metadata())


@dg.asset_check(asset=REPLAY_CORPUS.asset_key, description="section_id is unique and every section type is known.")
def replay_corpus_ids_unique(lake: DeltaLake) -> dg.AssetCheckResult:
    idx = lake.read(REPLAY_CORPUS, columns=["section_id", "section_type"])
    n = idx.num_rows
    distinct = len(pc.unique(idx.column("section_id"))) if n else 0
    types = composition(idx.column("section_type").to_pylist())
    unknown = sorted(set(types) - {"prose", "instruction", "preference"})
    return dg.AssetCheckResult(
        passed=distinct == n and not unknown,
        metadata={"rows": n, "distinct_ids": distinct, "unknown_types": dg.MetadataValue.json(unknown)},
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
