"""Replay sampling benchmark: draw 10k rows from a 1M-snapshot corpus vs reading it all.

    .venv/bin/python benchmarks/bench_corpus.py [--rows 1000000] [--k 10000] [--runs 5] [--no-evict]

Builds the corpus through the lake layer in large batches (realistic TRL content of
~300-1000 bytes; the last batch goes through ``lake.merge`` like a real materialization),
then prints the median time of ``draw_sample`` (index columns -> A-Res -> the chosen
rows only -> TRL rows) next to the median time of reading the whole corpus, and the
ratio, with the bytes each one read from disk (/proc/self/io). The temp dir is removed
at the end.

A weighted 1% sample touches every row group of any practical size (share
1-(1-k/N)^G), so skipping row groups cannot help; what does is the corpus' layout of
small data pages with an offset index (REPLAY_CORPUS.writer) read by
``DeltaLake.read_keys``, which fetches only the pages holding a chosen row. The line
"via a filtered scan instead" shows the same rows read the way that decodes every page.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from assets.corpus.policy import id_hash64  # noqa: E402
from assets.corpus.store import draw_sample, evict  # noqa: E402
from assets.corpus.tables import INDEX_COLUMNS, REPLAY_CORPUS  # noqa: E402
from resources.lake import DeltaLake, process_bytes_read, string_field  # noqa: E402

REF = datetime(2026, 11, 1, tzinfo=timezone.utc)
WORDS = np.array(
    ("the a of to in and is for on with that this file error test function return value import "
     "class def run build fix path data table row column index merge delta lake sample config "
     "assert raise except yield async await lambda dict list tuple string bytes parse write read "
     "open close commit branch rebase diff patch lint format type check module package").split())


def fragments(rng: np.random.Generator, n: int, lo: int, hi: int) -> pa.Array:
    """n distinct-ish word strings of lo..hi chars (JSON-safe)."""
    pool = " ".join(rng.choice(WORDS, size=200_000))
    offs = rng.integers(0, len(pool) - hi, n)
    lens = rng.integers(lo, hi, n)
    return pa.array([pool[o:o + L] for o, L in zip(offs.tolist(), lens.tolist())], pa.string())


def section_ids(kinds: np.ndarray, content: pa.Array) -> list[str]:
    """corpus.section_id_for over an Arrow column without making a Python str per row."""
    content = content.cast(pa.string())
    off = np.frombuffer(content.buffers()[1], np.int32)[content.offset: content.offset + len(content) + 1]
    mv = memoryview(content.buffers()[2])
    out = []
    for kind, a, b in zip(kinds.tolist(), off[:-1].tolist(), off[1:].tolist()):
        h = hashlib.sha256(kind.encode() + b"\x1f")
        h.update(mv[a:b])
        out.append(h.hexdigest()[:32])
    return out


def build_batch(rng: np.random.Generator, start: int, n: int, frags: pa.Array,
                age_days: tuple[float, float]) -> pa.Table:
    """n snapshots with canonical TRL JSON content (~300-1000 bytes), vectorized.

    Ages are uniform within ``age_days`` (a batch is one period of the corpus' history),
    rows ordered by last_seen_at as successive materializations would leave them.
    """
    join = pc.binary_join_element_wise
    kinds = rng.choice(np.array(["instruction", "preference", "prose"]), n, p=[0.6, 0.3, 0.1])
    nums = pa.array([f"#{i} " for i in range(start, start + n)], pa.string())
    a, b, c = (frags.take(pa.array(rng.integers(0, len(frags), n))) for _ in range(3))
    instruction = join('{"messages":[{"content":"', nums, a, '","role":"user"},{"content":"', b,
                       '","role":"assistant"}]}', "")
    preference = join('{"chosen":[{"content":"', b, '","role":"assistant"}],"prompt":[{"content":"', nums, a,
                      '","role":"user"}],"rejected":[{"content":"', c, '","role":"assistant"}]}', "")
    prose = join('{"messages":[{"content":"', nums, a, " ", b, '","role":"assistant"}]}', "")
    kind_arr = pa.array(kinds.tolist(), pa.string())
    content = pc.if_else(pc.equal(kind_arr, "preference"), preference,
                         pc.if_else(pc.equal(kind_arr, "prose"), prose, instruction))
    ids = section_ids(kinds, content)
    ref_us = int(REF.timestamp() * 1_000_000)
    age_us = ((age_days[0] + rng.random(n) * (age_days[1] - age_days[0])) * 86_400e6).astype(np.int64)
    ts = pa.timestamp("us", tz="UTC")
    return pa.table({
        "section_id": pa.array(ids, pa.string()),
        "section_type": kind_arr,
        "content": content,
        "source": pc.if_else(pc.equal(kind_arr, "preference"), "gold/normalized_pairs", "gold/sft_examples"),
        "source_id": nums,
        "added_at": pa.array(ref_us - age_us - (rng.random(n) * 30 * 86_400e6).astype(np.int64), ts),
        "last_seen_at": pa.array(ref_us - age_us, ts),
        "weight": pa.array(np.ones(n)),
        "auto_mined": pc.equal(kind_arr, "preference"),
        "byte_size": pc.binary_length(content).cast(pa.int64()),
        "id_hash": pa.array(id_hash64(pa.array(ids, pa.string())).view(np.int64)),
    }).sort_by([("last_seen_at", "ascending")])


def mb_read(since: int | None, runs: int) -> str:
    now = process_bytes_read()
    return "?" if since is None or now is None else f"{(now - since) / runs / 1e6:,.0f}"


def du(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def median_time(fn, runs: int) -> tuple[float, list[float], object]:
    times, out = [], None
    for r in range(runs):
        t0 = time.perf_counter()
        out = fn(r)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--batch", type=int, default=250_000)
    ap.add_argument("--no-evict", action="store_true", help="skip timing the eviction of the oldest 1%%")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="bench_corpus_")
    try:
        lake = DeltaLake(root=tmp)
        rng = np.random.default_rng(0)
        frags = fragments(rng, 50_000, 80, 300)
        n_batches = -(-args.rows // args.batch)
        t0 = time.perf_counter()
        gen_s = merge_s = 0.0
        for start in range(0, args.rows, args.batch):
            n = min(args.batch, args.rows - start)
            g0 = time.perf_counter()
            b = start // args.batch  # oldest period first, like a corpus growing over a year
            span = 365.0 / n_batches
            batch = build_batch(rng, start, n, frags, (365.0 - (b + 1) * span, 365.0 - b * span))
            gen_s += time.perf_counter() - g0
            if start + n >= args.rows and start > 0:  # last batch: a real upsert
                m0 = time.perf_counter()
                lake.merge(REPLAY_CORPUS, batch, keys=["section_id"], update_columns=["last_seen_at"])
                merge_s = time.perf_counter() - m0
            else:
                lake.append(REPLAY_CORPUS, batch)
        build_s = time.perf_counter() - t0
        dt = lake.table(REPLAY_CORPUS)
        n_rows = dt.to_pyarrow_dataset().count_rows()
        disk = du(lake.uri(REPLAY_CORPUS))
        print(f"corpus: {n_rows:,} rows, {len(dt.file_uris())} files, {disk / 1e6:,.0f} MB on disk; "
              f"built in {build_s:.1f} s (generate {gen_s:.1f} s, last-batch merge {merge_s:.1f} s)")

        io0 = process_bytes_read()
        full_s, full_runs, full = median_time(lambda r: lake.read(REPLAY_CORPUS), min(args.runs, 3))
        full_io = mb_read(io0, len(full_runs))
        print(f"baseline  read whole corpus (lake.read):           median {full_s:6.3f} s  "
              f"runs {[round(x, 2) for x in full_runs]}  ({full.num_rows:,} rows, {full.nbytes / 1e6:,.0f} MB in memory, "
              f"{full_io} MB read per run)")
        del full

        idx_s, _, idx = median_time(lambda r: lake.read(REPLAY_CORPUS, columns=list(INDEX_COLUMNS)), args.runs)
        print(f"          read index columns only:                 median {idx_s:6.3f} s  ({idx.nbytes / 1e6:,.0f} MB)")
        del idx

        samples = []

        def one(r):
            s = draw_sample(lake, k=args.k, seed=r, scheme="recency", reference_time=REF)
            samples.append(s)
            return s

        io0 = process_bytes_read()
        samp_s, samp_runs, s = median_time(one, args.runs)
        samp_io = mb_read(io0, len(samp_runs))
        parts = {k: statistics.median(x.timings[k] for x in samples) for k in samples[0].timings}
        print(f"sample    draw_sample k={args.k:,} (recency):        median {samp_s:6.3f} s  "
              f"runs {[round(x, 2) for x in samp_runs]}  ({samp_io} MB read per run)")
        print("          parts (median s): " + ", ".join(f"{k}={v:.3f}" for k, v in parts.items()))
        seen = s.table.column("last_seen_at").cast(pa.int64()).to_numpy()
        ages = (REF.timestamp() * 1e6 - seen) / 86_400e6
        print(f"          rows={s.table.num_rows:,}  median age {np.median(ages):.1f} d (corpus median ~182 d); "
              f"ids like {s.table.column('id')[0]}")
        # the same k rows through a filtered scan (what read_keys replaces)
        chosen = pa.array(s.table.column("section_id").to_pylist(), pa.string())
        scan_s, _, scanned = median_time(lambda r: lake.read(
            REPLAY_CORPUS, columns=["section_id", "content"], filter=string_field("section_id").isin(chosen)),
            min(args.runs, 3))
        print(f"          the chosen rows' content via a filtered scan instead: median {scan_s:.3f} s "
              f"({scanned.num_rows:,} rows) vs read_rows_s {parts['read_rows_s']:.3f} s")
        sel_s = parts["read_index_s"] + parts["select_s"]
        print(f"RESULT sample {samp_s:.3f} s vs full read {full_s:.3f} s -> ratio full/sample {full_s / samp_s:.2f}x "
              f"(goal < 1 s: {'met' if samp_s < 1 else 'NOT met'}); choosing the k ids alone (index read + A-Res) "
              f"{sel_s:.3f} s -> ratio {full_s / sel_s:.1f}x")

        if not args.no_evict:
            e0 = time.perf_counter()
            out = evict(lake, max_bytes=None, max_rows=n_rows - n_rows // 100, protected=[], now=REF, log=False)
            print(f"evict     oldest 1% ({out.rows_deleted:,} rows) via {out.mode} in {out.commits} commit(s): "
                  f"{time.perf_counter() - e0:.2f} s")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("POLARS_MAX_THREADS", "2")
    main()
