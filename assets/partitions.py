"""Partitions shared across asset families."""

import dagster as dg

# One dynamic partition per session file (key: see resources.sessions.session_key_for).
SESSIONS = dg.DynamicPartitionsDefinition(name="sessions")

# Partitioned assets run a backfill of many sessions as few runs (they write all of a
# run's keys with one predicate, so this is safe; see resources/lake.py).
SESSION_BACKFILL = dg.BackfillPolicy.multi_run(max_partitions_per_run=50)
