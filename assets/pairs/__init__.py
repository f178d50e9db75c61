"""The pairs asset family: preference pairs, their data-juicer normalization (with every
drop explained) and the TRL training sets (see assets.py)."""

import dagster as dg

from assets.pairs.assets import ASSETS, CHECKS
from assets.pairs.judge import PairJudge
from resources.normalizer import Normalizer

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    resources={"normalizer": Normalizer(), "pair_judge": PairJudge()},
)
