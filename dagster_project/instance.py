"""The Dagster instance the command line runs in: $DAGSTER_HOME, else ./.dagster.

``python -m dagster_project.instance`` (what ``make dev`` runs first) writes
``$DAGSTER_HOME/dagster.yaml`` when there is none, with run-queue limits that fit the machine.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from resources import settings


def instance_yaml(cpus: int | None = None) -> str:
    """The dagster.yaml of one machine: runs queued and launched a second after they are asked
    for; ingest runs one at a time (they write the same days in order; each is one process);
    as many runs in all as cores (an ingest run, a dataset refresh, the GPU step's run ...);
    one GPU step at a time (the ``gpu`` pool)."""
    cpus = cpus or os.cpu_count() or 2
    return f"""# written by `python -m dagster_project.instance` for a {cpus}-core machine (edit freely)
telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1   # a sensor's run starts within a second
concurrency:
  pools:
    default_limit: 1        # pools without their own limit (gpu): one step at a time
    granularity: op
  runs:
    max_concurrent_runs: {max(2, cpus)}
    tag_concurrency_limits:
      - key: tracelake/queue   # the session sensor's runs: one at a time, in order
        value: ingest
        limit: 1
"""


def write_instance_config(home: str | os.PathLike) -> Path:
    """``home``/dagster.yaml from :func:`instance_yaml`, unless one is there already."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(instance_yaml())
    return cfg


def local_instance():
    import dagster as dg

    home = Path(settings.set_default("DAGSTER_HOME", str(Path(".dagster").resolve())))
    write_instance_config(home)
    return dg.DagsterInstance.get()


if __name__ == "__main__":
    home = Path(settings.set_default("DAGSTER_HOME", str(Path(".dagster").resolve())))
    print(write_instance_config(home))
    sys.exit(0)
