"""`tracelake audit`: the independent privacy audit of a lake (dagster_project/audit.py).

    tracelake audit [--lake ROOT] [--table layer/name ...]    exit 1 when anything is found
"""

from __future__ import annotations

import argparse
import sys

from dagster_project.audit import audit_lake, text_columns
from dagster_project.definitions import TABLES
from resources import settings
from resources.lake import DeltaLake
from resources import privacy
from resources.privacy.audit import auditor
from resources.privacy.pii_audit import pii_auditor


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tracelake audit", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", default=None, help="lake root (default: TRACELAKE_LAKE_ROOT)")
    ap.add_argument("--table", action="append", default=[], help="only these tables (layer/name)")
    args = ap.parse_args(argv)
    lake = DeltaLake(root=args.lake or settings.lake_root())
    specs = [s for s in TABLES if not args.table or s.path in args.table]
    present = [s for s in specs if text_columns(s) and lake.exists(s)]
    found = audit_lake(lake, present)
    pa = pii_auditor(privacy.for_lake(lake.root))
    print(f"audited {len(present)} tables holding text under {lake.root} with gitleaks {auditor().version} "
          f"(default rules) and datafog-core {pa.version} + home paths "
          f"(personal data: {', '.join(pa.kinds) or 'none asked'})")
    if not found:
        print("no secret and no personal data found")
        return 0
    print(f"{'table':40s} {'rule / personal_data:kind':40s} {'n':>6s}")
    for path, c in sorted(found.items()):
        for rule, n in sorted(c.items()):
            print(f"{path:40s} {rule:40s} {n:6d}")
    print(f"{sum(sum(c.values()) for c in found.values())} findings in {len(found)} tables")
    return 1


if __name__ == "__main__":
    sys.exit(main())
