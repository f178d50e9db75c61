"""Ingest every session file through the ``ingest_sessions`` job, configured by the
environment alone (TRACELAKE_LAKE_ROOT, TRACELAKE_SESSIONS_DIR, AWS_* / GOOGLE_* /
AZURE_*, TRACELAKE_TEACHERS_FILE, DAGSTER_HOME), as ONE run over the days of the files
(``dagster_project.cli.ingest_all``). It is ``tracelake materialize`` without the unpartitioned datasets job; the
e2e tests and the fault suite run it as a subprocess (so it can be killed with -9).

    python testsupport/ingest_all.py [--keys k1,k2] [--job ingest_sessions] [--datasets]

Prints one JSON line ``RESULT {...}`` (run id, success, files, keys, days, seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", default="", help="comma-separated session keys (default: every session file)")
    ap.add_argument("--job", default="", help="job name (default: the ingest job of definitions.py)")
    ap.add_argument("--datasets", action="store_true", help="then run the datasets job (= tracelake materialize)")
    args = ap.parse_args(argv)

    import dagster as dg

    from dagster_project.cli import ingest_all

    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()
    instance = dg.DagsterInstance.get()

    keys = [k for k in args.keys.split(",") if k] if args.keys else None
    t0 = time.perf_counter()
    from dagster_project.definitions import INGEST_JOB, defs

    job = defs.resolve_job_def(args.job or INGEST_JOB)
    results = ingest_all(instance, lambda m: print(m, file=sys.stderr), keys=keys, job=args.job or None)
    if not results:
        print("no session files", file=sys.stderr)
        return 2
    changes = [c for r in results for c in r.dagster_run.run_config["ops"]["read_session_files"]["config"]["changes"]]
    ordered = sorted(c["key"] for c in changes)
    success = all(r.success for r in results)
    from dagster_project import definitions as d

    TABLES = d.all_tables()
    job_keys = sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys)
    tables = {s.asset_key.to_user_string(): s.path for s in TABLES}
    out = {"run_id": results[-1].run_id, "run_ids": [r.run_id for r in results], "success": success,
           "files": len(ordered),
           "keys": ordered, "days": sorted({c["day"] for c in changes}), "seconds": round(time.perf_counter() - t0, 2), "assets": job_keys,
           "tables": {k: tables[k] for k in job_keys if k in tables}}
    if success and args.datasets:
        from dagster_project.definitions import DATASETS_JOB

        r2 = defs.resolve_job_def(DATASETS_JOB).execute_in_process(instance=instance, raise_on_error=False)
        out.update(datasets_run_id=r2.run_id, success=r2.success)
    print("RESULT " + json.dumps(out), flush=True)
    return 0 if out["success"] else 1


if __name__ == "__main__":
    sys.exit(main())
