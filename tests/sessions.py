"""Test helper: write rows of day-partitioned session tables as the ingest job would."""

from __future__ import annotations

from resources.lake import DeltaLake, SessionScope, TableSpec

DAY = "2026-01-01"


def day_of_session(key: str, days: dict[str, str] | None = None) -> str:
    return (days or {}).get(key, DAY)


def put_sessions(lake: DeltaLake, spec: TableSpec, rows: list[dict], day: str = DAY,
                 keys: list[str] | None = None):
    """Replace the rows of these sessions (``keys``, default: the rows' sessions) on ``day``."""
    keys = sorted(set(keys or [r["session_key"] for r in rows]))
    for r in rows:
        r["day"] = day
    return lake.replace_sessions(spec, rows, SessionScope.of(keys, [day]))
