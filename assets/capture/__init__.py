"""The capture family: prompt_pool → capture_shards (verifier top-k + hidden states).

- ``pool.py``: the prompt pool (quotas, domains, languages)
- ``capture.py``: chat template → generate → one forward pass → Arrow rows
- ``postfilter.py``: low confidence / repetition / EOS failure
- ``run.py``: the capture run (commit by commit, resumable) and its report
- ``shards.py``: shard tables per verifier with checked properties; ``reader.py``: ``load_batch``
- ``tables.py``: the table specs; ``assets.py``: the thin Dagster wrappers and ``defs``
"""
