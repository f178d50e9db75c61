"""Measure one refresh of the datasets over a lake: seconds and peak memory (for bench_live).

    from _refresh import measure_refresh          # benchmarks/ is on sys.path for its scripts
    m = measure_refresh("/path/to/lake")           # what changed since the last refresh
    m = measure_refresh("/path/to/lake", full=True)  # a full rebuild, on purpose

Each measurement runs the real assets (definitions.py's graph over that lake, the
instance ephemeral) in a fresh subprocess, so ``peak_rss_mb`` is the peak resident memory
of that refresh alone (imports included). Returns
``{"seconds", "peak_rss_mb", "modes": {asset: refresh_mode}, "rows_in": {asset: n}, "success"}``.

Run directly it is that subprocess: ``python benchmarks/_refresh.py --lake ROOT [--full] [--assets a,b]``
prints one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the datasets whose refresh reads only what changed (capture_shards resumes by prompt id;
# rag_playbooks needs the embedding model: add them with ``assets=``)
DEFAULT_ASSETS = ("gold/normalized_pairs", "gold/replay_corpus", "gold/prompt_pool", "gold/rag_report")
FULL_REFRESH_CONFIG = {"gold/normalized_pairs", "gold/replay_corpus", "gold/prompt_pool", "gold/rag_report"}


def measure_refresh(lake_root: str | os.PathLike, *, full: bool = False, assets=DEFAULT_ASSETS,
                    env: dict | None = None, timeout: float = 3600) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--lake", str(lake_root), "--assets", ",".join(assets)]
    if full:
        cmd.append("--full")
    e = dict(os.environ if env is None else env)
    e["PYTHONPATH"] = str(ROOT) + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    proc = subprocess.run(cmd, cwd=ROOT, env=e, capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"refresh failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def _run(lake_root: str, full: bool, assets: list[str]) -> dict:
    import dagster as dg

    from dagster_project.definitions import build_definitions
    from resources.lake import DeltaLake

    defs = build_definitions(lake=DeltaLake(root=lake_root))
    sel = dg.AssetSelection.assets(*[dg.AssetKey.from_user_string(a) for a in assets])
    keys = sorted(sel.required_multi_asset_neighbors().resolve(defs.resolve_asset_graph()))
    run_config = {"ops": {a.replace("/", "__"): {"config": {"full_refresh": True}}
                          for a in assets if full and a in FULL_REFRESH_CONFIG}}
    job = defs.resolve_implicit_global_asset_job_def()
    t0 = time.perf_counter()
    with dg.instance_for_test() as instance:
        res = job.execute_in_process(asset_selection=keys, instance=instance, run_config=run_config,
                                     raise_on_error=False)
        seconds = time.perf_counter() - t0
        modes, rows_in = {}, {}
        for ev in res.get_asset_materialization_events():
            m = ev.event_specific_data.materialization
            md = {k: v.value for k, v in m.metadata.items()}
            name = m.asset_key.to_user_string()
            modes[name] = md.get("refresh_mode")
            rows_in[name] = md.get("rows_in", md.get("input_rows_read", md.get("candidates")))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"success": res.success, "seconds": round(seconds, 3), "peak_rss_mb": round(peak_kb / 1024, 1),
            "modes": modes, "rows_in": rows_in}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--lake", required=True)
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--assets", default=",".join(DEFAULT_ASSETS))
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    out = _run(a.lake, a.full, [x for x in a.assets.split(",") if x])
    print("RESULT " + json.dumps(out, default=str))
    sys.exit(0 if out["success"] else 1)
