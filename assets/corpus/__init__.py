"""The corpus asset family (the replay corpus): a long-lived corpus of past training rows and its sample."""

import dagster as dg

from assets.corpus.assets import replay_corpus, replay_corpus_ids_unique, replay_sample, replay_sample_ids_prefixed

defs = dg.Definitions(
    assets=[replay_corpus, replay_sample],
    asset_checks=[replay_corpus_ids_unique, replay_sample_ids_prefixed],
)
