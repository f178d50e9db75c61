"""The corpus family: the replay corpus, a long-lived store of past training rows, and its sample.

- ``policy.py``: the Dagster-free core (snapshots, eviction plan, recency-weighted sampling)
- ``store.py``: corpus I/O through the lake (upsert, evict, draw, write the sample)
- ``tables.py``: the table specs; ``assets.py``: the thin Dagster wrappers and ``defs``
"""
