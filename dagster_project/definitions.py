"""Everything tracelake runs, wired in one place."""

import dagster as dg

from assets.capture import defs as capture_defs
from assets.pairs import defs as pairs_defs
from assets.rag import defs as rag_defs
from assets.replay import defs as replay_defs
from assets.teachers import defs as teachers_defs
from assets.traces import defs as traces_defs
from dagster_project import settings
from resources.lake import DeltaLake

core = dg.Definitions(resources={"lake": DeltaLake(root=settings.LAKE_ROOT)})

defs = dg.Definitions.merge(
    core, traces_defs, teachers_defs, pairs_defs, capture_defs, replay_defs, rag_defs
)
