"""Carry a lake written by an older tracelake over to today's table names.

    tracelake migrate            (also run by `tracelake demo` / `tracelake materialize`)

Renamed tables: ``silver/replay_steps`` is now ``silver/agent_steps``. It is derived data
(the next ingest rewrites it from ``silver/trace_turns``), so nothing is lost either way;
on a local lake the table directory is renamed in place (a Delta log holds relative paths,
so the renamed directory is the same table at the same version), which spares a re-ingest.
When both exist the old one is stale and is removed. On an object store nothing is
renamed (no atomic rename there): the old table is reported, the next run writes the new
one. The tables that are not derived (``silver/teacher_cache``, ``gold/replay_corpus``,
``gold/rag_runs``) keep their names.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from assets.traces.tables import AGENT_STEPS
from resources.lake import DeltaLake, TableSpec

# old "<layer>/<name>" -> the spec of the table that replaced it
RENAMED_TABLES: dict[str, TableSpec] = {
    "silver/replay_steps": AGENT_STEPS,
}


@dataclass(frozen=True)
class Migration:
    old: str
    new: str
    action: str  # renamed | removed_stale | left (object store) | none

    def __str__(self) -> str:
        return f"{self.old} -> {self.new}: {self.action}"


def _local_root(lake: DeltaLake) -> Path | None:
    root = lake.root.rstrip("/")
    if "://" in root and not root.startswith("file://"):
        return None
    return Path(os.path.abspath(root.removeprefix("file://")))


def _is_table(path: Path) -> bool:
    return (path / "_delta_log").is_dir()


def migrate_lake(lake: DeltaLake) -> list[Migration]:
    """Apply every table rename to ``lake``; returns what was done (empty when nothing to do)."""
    out = []
    root = _local_root(lake)
    for old, spec in RENAMED_TABLES.items():
        if root is None:
            old_spec = TableSpec(layer=old.split("/")[0], name=old.split("/")[1], schema=spec.schema)
            if lake.exists(old_spec):
                out.append(Migration(old, spec.path, "left (object store: delete it by hand; "
                                                    "the next run writes the new table)"))
            continue
        src, dst = root / old, root / spec.path
        if not _is_table(src):
            continue
        if _is_table(dst):
            shutil.rmtree(src)
            out.append(Migration(old, spec.path, "removed_stale"))
        else:
            if dst.exists():  # a directory without a Delta log: nothing of value
                shutil.rmtree(dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            out.append(Migration(old, spec.path, "renamed"))
    return out
