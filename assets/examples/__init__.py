"""The examples asset family: the TRL training sets (SFT, KTO, SDPO) built from the agent
steps (and, for KTO, the preference pairs).

- ``training.py``: the Dagster-free builders (``sft_rows``, ``kto_rows``, ``sdpo_rows``)
- ``tables.py``: ``gold/sft_examples``, ``gold/kto_examples``, ``gold/sdpo_examples``
- ``assets.py``: the thin Dagster wrappers
"""

import dagster as dg

from assets.examples.assets import ASSETS, CHECKS

defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS)
