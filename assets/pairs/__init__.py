"""The pairs asset family: preference pairs and their data-juicer normalization (with every
drop explained), see assets.py."""

import dagster as dg

from assets.pairs.assets import ASSETS, CHECKS
from assets.pairs.judge import PairJudge
from assets.pairs.normalizer import Normalizer

defs = dg.Definitions(
    assets=ASSETS,
    asset_checks=CHECKS,
    resources={"normalizer": Normalizer(), "pair_judge": PairJudge()},
)
