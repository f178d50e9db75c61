"""The examples family: the TRL training sets (SFT, KTO, SDPO) built from the agent steps
(and, for KTO, the preference pairs).

- ``training.py``: the Dagster-free builders (``sft_rows``, ``kto_rows``, ``sdpo_rows``)
- ``tables.py``: the table specs; ``assets.py``: the thin Dagster wrappers and ``defs``
"""
