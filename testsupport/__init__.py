"""Helpers that the tests and the benchmarks both use (never imported by the runtime packages).

- ``models.py``: ``build_tiny_llama`` (a tiny real transformers model, built on the fly)
- ``fake_openai.py``: a loopback OpenAI-compatible server (in process or as a script)
- ``e2e.py``, ``ingest_all.py``: run the real ingest job in a subprocess, kill it, read the lake
- ``faults.py``: the fault suite (bad files, secrets, failing teachers, kill -9, concurrent runs)
"""
