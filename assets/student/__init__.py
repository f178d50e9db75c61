"""The student family (issue 17): prove the data trains something.

- ``split.py``: the held-out split by session (deterministic hash, configurable share)
- ``data.py``: SFT / DPO / KTO rows rendered for TRL from the lake's training tables, and
  context-mismatch pairs mined when real pairs are few
- ``train.py``: TRL SFT → DPO (→ KTO) with a peft LoRA adapter, on the verifier resource's
  device and dtype
- ``evaluate.py``: base vs trained on held-out sessions (log-likelihood, pair accuracy,
  implicit-reward accuracy, tool-call validity, rag gate pass rate)
- ``draft.py``: an EAGLE-style draft head trained on capture shards, vs a bigram baseline
- ``artifacts.py``: adapters and heads under ``<lake root>/artifacts/student/``
- ``pipeline.py``: lake → rows; ``report.py``: tables and plots over runs
- ``tables.py``: the table specs; ``assets.py``: the thin Dagster wrappers and ``defs``
"""
