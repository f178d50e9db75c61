"""The rag family: playbooks from what the lakehouse knows, and a RAG runtime that answers a
task with the local model grounded in retrieved playbooks, gated by code, escalated only when
allowed, and logged to rag_runs as replay_run.v1 records (see assets.py, runtime.py, runlog.py).
Both models are clients of the one model client.

- ``playbooks.py``, ``retrieval.py``, ``bundle.py``, ``gate.py``, ``text.py``: the pure parts
- ``runtime.py``: the runtime; ``runlog.py``: the run log; ``config.py``: its configuration
- ``report.py``, ``samples.py``: the report and the sample tasks
- ``tables.py``: the table specs; ``assets.py``: the thin Dagster wrappers and ``defs``
"""
