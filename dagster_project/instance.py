"""The Dagster instance the command line runs in: $DAGSTER_HOME, else ./.dagster."""

from __future__ import annotations

from pathlib import Path

from resources import settings


def local_instance():
    import dagster as dg

    home = Path(settings.set_default("DAGSTER_HOME", str(Path(".dagster").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        # no telemetry (this may run offline); one GPU-bound capture step at a time
        cfg.write_text("telemetry:\n  enabled: false\nconcurrency:\n  pools:\n    default_limit: 1\n")
    return dg.DagsterInstance.get()
