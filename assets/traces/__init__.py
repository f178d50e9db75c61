"""The trace family: session files → raw_traces (bronze) → trace_turns → agent_steps (silver)."""

import dagster as dg

from assets.traces.assets import ASSETS, CHECKS

__all__ = ["ASSETS", "CHECKS", "defs"]

defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS)
