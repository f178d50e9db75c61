"""Ingest throughput: raw_traces → trace_turns, against a bare JSON decode of the same lines.

    .venv/bin/python benchmarks/bench_ingest.py [--mb 40] [--repeats 5]

Builds a corpus by repeating the real transcripts in ../shared/realdata (falling back to
the bundled samples), then times, in the same run and interleaved:
  baseline: split the bytes into lines and orjson-decode each line;
  tracelake: read_raw_lines (split, decode, scrub secrets, classify, quarantine) +
             parse_turns (normalize into trace_turns rows).
Prints medians, MB/s and the ratio (goal ≥ 0.5×).
"""

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assets.traces.formats import parse_turns  # noqa: E402
from assets.traces.raw import read_raw_lines  # noqa: E402


def corpus_sources() -> list[Path]:
    real = ROOT.parent / "shared" / "realdata" / "claude-code"
    files = sorted(real.glob("*.jsonl")) if real.is_dir() else []
    if not files:
        files = sorted((ROOT / "assets" / "traces" / "samples" / "claude-code").rglob("*.jsonl"))
    return files


ID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|(?:msg|toolu|req)_[0-9A-Za-z]+")


def build(dst: Path, mb: float) -> list[Path]:
    """Each source file repeated to ~mb/len(files) MB, every copy with fresh ids
    (so the copies are distinct messages and tool calls, as in a real long session)."""
    out = []
    for src in corpus_sources():
        data = src.read_bytes()
        if not data.endswith(b"\n"):
            data += b"\n"
        reps = max(1, int(mb * 1e6 / len(corpus_sources()) / len(data)))
        copies = [ID.sub(lambda m, k=k: m.group(0)[:-4] + b"%04x" % k, data) for k in range(reps)]
        p = dst / f"{src.stem}.jsonl"
        p.write_bytes(b"".join(copies))
        out.append(p)
    return out


def baseline(files: list[Path], loads=orjson.loads) -> int:
    n = 0
    for p in files:
        for line in p.read_bytes().split(b"\n"):
            if line:
                loads(line)
                n += 1
    return n


def tracelake(files: list[Path]) -> int:
    n = 0
    for p in files:
        rows, _ = read_raw_lines(p, p.stem)
        turns = parse_turns(rows, p.stem)
        n += len(turns)
    return n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        files = build(Path(d), args.mb)
        size = sum(p.stat().st_size for p in files) / 1e6
        base, fast, ours = [], [], []
        for _ in range(args.repeats):
            t = time.perf_counter(); lines = baseline(files, json.loads); base.append(time.perf_counter() - t)
            t = time.perf_counter(); baseline(files); fast.append(time.perf_counter() - t)
            t = time.perf_counter(); turns = tracelake(files); ours.append(time.perf_counter() - t)
        b, f, o = statistics.median(base), statistics.median(fast), statistics.median(ours)
        print(f"corpus: {size:.1f} MB, {lines} lines, {turns} turns, {len(files)} files, {args.repeats} repeats")
        print(f"bare json.loads per line   : {size / b:8.1f} MB/s  (median {b:.3f} s)")
        print(f"bare orjson.loads per line : {size / f:8.1f} MB/s  (median {f:.3f} s)")
        print(f"raw_traces → trace_turns   : {size / o:8.1f} MB/s  (median {o:.3f} s)")
        print(f"ratio vs json.loads : {b / o:.2f}x   goal ≥ 0.5x")
        print(f"ratio vs orjson     : {f / o:.2f}x")
        print(f"RESULT ratio_json={b / o:.3f} ratio_orjson={f / o:.3f} mb_per_s={size / o:.1f} "
              f"median_s={o:.3f} json_median_s={b:.3f}")


if __name__ == "__main__":
    main()
