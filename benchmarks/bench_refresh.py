"""Dataset refresh: what changed vs the whole lake.

    .venv/bin/python benchmarks/bench_refresh.py [--sessions 400] [--pairs 6] [--grow 0.1]

Builds a lake of N sessions (preference pairs, SFT and KTO examples per session, written
like the ingest job writes them) and refreshes the datasets (normalized_pairs,
replay_corpus, prompt_pool: the real assets, the real data-juicer recipe) once. Then 10%
more sessions arrive and the datasets refresh again (incremental: only the new sessions
are read). Baseline in the same run: the same new sessions refreshed into an EMPTY lake
(fresh). A refresh that costs what changed has incr ~ fresh; one that re-reads the lake has
incr ~ (1 + 1/grow) x fresh. Memory: the peak RSS of the incremental refresh over a lake
of N and of 4N sessions (flat when it does not grow with the lake). Each refresh runs in
its own process (benchmarks/_refresh.py). Ends with

    RESULT sessions=N incr_refresh_s=F fresh_refresh_s=G ratio=F/G full_refresh_s=R peak_rss_mb=H peak_rss_4x_mb=H4
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _refresh import measure_refresh  # noqa: E402

from assets.examples.tables import KTO_EXAMPLES, SFT_EXAMPLES  # noqa: E402
from assets.pairs.tables import PREFERENCE_PAIRS  # noqa: E402
from resources.lake import DeltaLake  # noqa: E402

ASSETS = ("gold/normalized_pairs", "gold/replay_corpus", "gold/prompt_pool")
NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)
TOPICS = ["parser", "cache", "scheduler", "exporter", "sensor", "tokenizer", "merger", "sampler"]


def _msg(role, content):
    return {"role": role, "content": content}


def session_rows(n: int, pairs: int) -> dict:
    key = f"bench-{n:06d}"
    out = {"pairs": [], "sft": [], "kto": []}
    for i in range(pairs):
        topic = TOPICS[(n + i) % len(TOPICS)]
        prompt = [_msg("user", f"The {topic} test #{n}.{i} fails with KeyError 'id' after the refactor. "
                               f"Find the cause in src/{topic}.py and fix it without changing the public API.")]
        chosen = _msg("assistant", f"The {topic} reads row['id'] before the rows are normalized (case {n}.{i}). "
                                   f"I moved the lookup after normalize() and added a test; the suite passes.")
        rejected = _msg("assistant", f"I could not find src/{topic}.py.")
        extra = {"day": NOW.date().isoformat()}
        out["pairs"].append({"pair_id": f"{key}-p{i}", "session_key": key, "step_id": f"{key}:{i}",
                             "prompt": json.dumps(prompt), "chosen": json.dumps([chosen]),
                             "rejected": json.dumps([rejected]), "tools": None, "chosen_source": "teacher",
                             "rejected_source": "original", "strategy": "error_site", "created_at": NOW, **extra})
        out["sft"].append({"example_id": f"{key}-s{i}", "session_key": key, "step_id": f"{key}:{i}",
                           "messages": json.dumps(prompt + [chosen]), "source": "original",
                           "created_at": NOW, **extra})
        out["kto"].append({"example_id": f"{key}-k{i}", "session_key": key, "step_id": f"{key}:{i}",
                           "prompt": json.dumps(prompt), "completion": json.dumps([rejected]), "label": False,
                           "source": "original", "created_at": NOW, **extra})
    return out


def write_sessions(lake: DeltaLake, first: int, count: int, pairs: int, chunk: int = 200) -> None:
    """Sessions [first, first+count) appended like ingest runs write them (a commit per chunk)."""
    for start in range(first, first + count, chunk):
        rows = {"pairs": [], "sft": [], "kto": []}
        for n in range(start, min(first + count, start + chunk)):
            for k, v in session_rows(n, pairs).items():
                rows[k] += v
        for spec, key in ((PREFERENCE_PAIRS, "pairs"), (SFT_EXAMPLES, "sft"), (KTO_EXAMPLES, "kto")):
            names = set(spec.schema.names)
            lake.append(spec, [{c: v for c, v in r.items() if c in names} for r in rows[key]])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=400)
    ap.add_argument("--pairs", type=int, default=6, help="pairs (and sft/kto examples) per session")
    ap.add_argument("--grow", type=float, default=0.1)
    a = ap.parse_args(argv)
    n, pairs = a.sessions, a.pairs
    new = max(1, int(n * a.grow))
    tmp = Path(tempfile.mkdtemp(prefix="bench-refresh-"))
    try:
        big = DeltaLake(root=str(tmp / "big"))
        write_sessions(big, 0, n, pairs)
        first = measure_refresh(big.root, assets=ASSETS)
        print(f"first refresh of {n} sessions: {first['seconds']} s, modes {first['modes']}")
        write_sessions(big, n, new, pairs)
        incr = measure_refresh(big.root, assets=ASSETS)
        print(f"incremental refresh (+{new} sessions): {incr['seconds']} s, {incr['peak_rss_mb']} MB, "
              f"modes {incr['modes']}, rows in {incr['rows_in']}")
        small = DeltaLake(root=str(tmp / "small"))
        write_sessions(small, n, new, pairs)
        fresh = measure_refresh(small.root, assets=ASSETS)
        print(f"fresh refresh of the {new} new sessions alone: {fresh['seconds']} s, {fresh['peak_rss_mb']} MB")
        full = measure_refresh(big.root, assets=ASSETS, full=True)
        print(f"full rebuild of all {n + new} sessions, on request: {full['seconds']} s, {full['peak_rss_mb']} MB")
        write_sessions(big, n + new, 3 * n, pairs)
        measure_refresh(big.root, assets=ASSETS)  # absorb the 3N
        write_sessions(big, 4 * n + new, new, pairs)
        incr4 = measure_refresh(big.root, assets=ASSETS)
        print(f"incremental refresh (+{new}) over {4 * n + 2 * new} sessions: {incr4['seconds']} s, "
              f"{incr4['peak_rss_mb']} MB")
        ok = all(r["success"] for r in (first, incr, fresh, full, incr4))
        ratio = incr["seconds"] / fresh["seconds"] if fresh["seconds"] else float("inf")
        print(f"RESULT sessions={n} new={new} incr_refresh_s={incr['seconds']} fresh_refresh_s={fresh['seconds']} "
              f"ratio={ratio:.2f} full_refresh_s={full['seconds']} peak_rss_mb={incr['peak_rss_mb']} "
              f"peak_rss_4x_mb={incr4['peak_rss_mb']} incr_4x_s={incr4['seconds']} ok={ok}")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
