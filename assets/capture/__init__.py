"""The capture asset family: prompt_pool → capture_shards (verifier top-k + hidden states).

Pure modules: pool.py (quotas, domains, languages), capture.py (chat template → generate →
one forward pass → Arrow rows), postfilter.py (low confidence / repetition / EOS failure),
shards.py (Delta tables per verifier with checked properties, resume), reader.py
(``load_batch`` → torch tensors). assets.py holds the thin Dagster wrappers.
"""

import dagster as dg

from assets.capture.assets import capture_shards, capture_shards_contract, prompt_pool
from resources.verifier import VerifierResource

defs = dg.Definitions(
    assets=[prompt_pool, capture_shards],
    asset_checks=[capture_shards_contract],
    resources={"verifier": VerifierResource()},
)
