"""The traces family: session files → raw_traces (bronze) → trace_turns → agent_steps (silver).

- ``raw.py``: lines of a session file → RAW_TRACES rows (secrets scrubbed, bad lines quarantined)
- ``detect.py``, ``formats/``: which format a file is in, one parser per format → TRACE_TURNS rows
- ``steps.py``: TRACE_TURNS → AGENT_STEPS (each assistant step with the context it saw)
- ``secrets.py``, ``errors.py``: secret scrubbing, error classification
- ``ingest.py``: the same chain on plain files, without Dagster
- ``tables.py``: the table specs; ``assets.py``: the thin Dagster wrappers and ``defs``
"""
