"""What scrubbing costs ingestion: today's privacy scrubber (secrets + personal data)
against the secret-only scrubber it replaced, on the same ingest code, in the same run.

    .venv/bin/python benchmarks/bench_privacy.py [--mb 40] [--repeats 3] [--rev b6f32a2]

The previous scrubber is read from git (``<rev>:assets/traces/secrets.py``); both run
through ``read_raw_lines(..., privacy=...)`` + ``parse_turns``, interleaved, over
bench_ingest's corpus (the real Claude Code transcripts, repeated with fresh ids), and
over a second corpus whose lines carry personal data (the real incremental Claude Code
and Codex sessions: a home-directory path on most lines). Prints medians, the ratio
now/before (goal >= 0.9) and one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_ingest  # noqa: E402
from assets.traces.formats import parse_turns  # noqa: E402
from assets.traces.raw import read_raw_lines  # noqa: E402
from resources.privacy import Privacy, load_policy  # noqa: E402


class Previous:
    """The secret-only scrubber of ``rev`` behind the Privacy interface."""

    def __init__(self, rev: str):
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:assets/traces/secrets.py"],
                             check=True, capture_output=True, text=True).stdout
        mod = types.ModuleType("previous_secrets")
        sys.modules["previous_secrets"] = mod  # dataclasses look their module up
        exec(compile(src, f"{rev}:assets/traces/secrets.py", "exec"), mod.__dict__)
        self.m = mod

    def scrub_texts(self, texts, raw=None):
        return self.m._scrub_sparse(texts)

    def scrub_text(self, text, counts=None):
        return self.m.scrub(text, counts)

    def scrub_bytes(self, data, counts=None):
        return self.m.scrub_bytes(data, counts)

    def scrub_json(self, obj, counts=None):
        return self.m.scrub_obj(obj, counts)


def ingest(files: list[Path], privacy) -> int:
    n = 0
    for p in files:
        rows, _ = read_raw_lines(p, p.stem, privacy=privacy)
        n += len(parse_turns(rows, p.stem))
    return n


def pii_corpus(dst: Path, mb: float) -> list[Path]:
    real = ROOT.parent / "shared" / "realdata"
    srcs = sorted((real / "claude-code" / "incremental" / "turn-2").rglob("*.jsonl")) + \
        sorted((real / "codex").glob("*.jsonl"))
    out = []
    for src in srcs:
        data = src.read_bytes()
        if not data.endswith(b"\n"):
            data += b"\n"
        reps = max(1, int(mb * 1e6 / len(srcs) / len(data)))
        copies = [bench_ingest.ID.sub(lambda m, k=k: m.group(0)[:-4] + b"%04x" % k, data) for k in range(reps)]
        p = dst / f"{src.parent.name}-{src.stem}.jsonl"
        p.write_bytes(b"".join(copies))
        out.append(p)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rev", default="b6f32a2", help="the commit whose secret-only scrubber is the baseline")
    args = ap.parse_args()
    before = Previous(args.rev)
    now = Privacy(load_policy(), b"bench-salt")
    ratios = {}
    with tempfile.TemporaryDirectory() as d:
        corpora = {"claude_code": bench_ingest.build(Path(d), args.mb)}
        (Path(d) / "pii").mkdir()
        if (ROOT.parent / "shared" / "realdata" / "codex").is_dir():
            corpora["with_personal_data"] = pii_corpus(Path(d) / "pii", args.mb / 2)
        for name, files in corpora.items():
            size = sum(p.stat().st_size for p in files) / 1e6
            tb, tn = [], []
            for _ in range(args.repeats):
                t = time.perf_counter(); ingest(files, before); tb.append(time.perf_counter() - t)
                t = time.perf_counter(); turns = ingest(files, now); tn.append(time.perf_counter() - t)
            b, n = statistics.median(tb), statistics.median(tn)
            ratios[name] = b / n
            print(f"{name}: {size:.1f} MB, {turns} turns, {args.repeats} repeats")
            print(f"  ingest, secret-only scrubber ({args.rev}) : {size / b:7.1f} MB/s  (median {b:.3f} s)")
            print(f"  ingest, secrets + personal data (now)   : {size / n:7.1f} MB/s  (median {n:.3f} s)")
            print(f"  throughput now / before : {b / n:.2f}x   goal >= 0.9x")
    print("RESULT " + " ".join(f"{k}_ratio={v:.3f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
