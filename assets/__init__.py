"""tracelake asset families."""

import warnings

# BackfillPolicy is marked beta in dagster 1.13; we rely on it knowingly (see assets/traces/partitions.py).
warnings.filterwarnings("ignore", message=r".*`backfill_policy`.*beta.*")
