"""Teacher asking throughput against a local OpenAI-compatible server.

Starts testsupport/fake_openai.py in its own process with 200 ms latency, asks
2,000 distinct steps through one teacher with 32 requests in flight, writing every answer
to the Delta response cache as it goes, and prints calls/s against the bound
32 / 0.2 s = 160 calls/s (goal >= 0.9x). Two baselines in the same run: bare httpx posts at
the same concurrency (the floor this machine allows) and asking with an in-memory cache
(no Delta commits), to show the cache writes are not the bottleneck. Then a
fully cached re-run: wall time and calls made (goal 0).

    .venv/bin/python benchmarks/bench_teachers.py [--calls 2000] [--inflight 32] [--repeat 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from assets.teachers.cache import DeltaResponseCache, MemoryResponseCache  # noqa: E402
from assets.teachers.ask import ask_teachers  # noqa: E402
from resources.lake import DeltaLake  # noqa: E402
from assets.teachers.pool import PoolSpec, TeacherSet  # noqa: E402


class Server:
    def __init__(self, latency: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "testsupport" / "fake_openai.py"), "--latency", str(latency)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        line = self.proc.stdout.readline()
        assert line.startswith("PORT "), line
        self.url = f"http://127.0.0.1:{int(line.split()[1])}/v1"

    def calls(self) -> int:
        self.proc.stdin.write("STATS\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline().split()[1])

    def reset(self) -> None:
        self.proc.stdin.write("RESET\n")
        self.proc.stdin.flush()
        self.proc.stdout.readline()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def make_steps(n: int, tag: str) -> list[dict]:
    tools = json.dumps([{"type": "function", "function": {
        "name": "bash", "description": "run a command",
        "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}}}])
    ctx = [{"role": "system", "content": "You are a coding agent."}]
    return [
        {"session_key": f"s{i // 100}", "step_id": f"{tag}-{i}", "tools": tools,
         "messages": json.dumps(ctx + [{"role": "user", "content": f"{tag} step {i}: fix the failing test"}])}
        for i in range(n)
    ]


async def raw_httpx(url: str, n: int, inflight: int) -> float:
    """Floor: bare httpx posts (no asking logic, no cache) with the same concurrency."""
    import httpx

    clients = [httpx.AsyncClient(limits=httpx.Limits(max_connections=1), verify=False, timeout=30)
               for _ in range(inflight)]
    todo = list(range(n))

    async def worker(c) -> None:
        while todo:
            i = todo.pop()
            body = json.dumps({"model": "raw", "messages": [{"role": "user", "content": f"raw {i}"}]})
            (await c.post(url + "/chat/completions", content=body)).json()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    wall = time.perf_counter() - t0
    for c in clients:
        await c.aclose()
    return n / wall


async def run_once(url: str, steps: list[dict], inflight: int, cache) -> tuple[float, object]:
    pool = PoolSpec.model_validate({"teachers": [{
        "name": "bench", "base_url": url, "model": "bench-model", "max_concurrency": inflight,
        "timeout": 30, "max_tokens": 256, "price_input_per_mtok": 0.15, "price_output_per_mtok": 0.6,
    }]})
    t0 = time.perf_counter()
    async with TeacherSet(pool) as ts:
        out = await ask_teachers(steps, ts, cache, None)
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--inflight", type=int, default=32)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    bound = args.inflight / args.latency
    srv = Server(args.latency)
    raw_rates, base_rates, delta_rates, cached_walls, cached_calls, commits = [], [], [], [], [], []
    try:
        for r in range(args.repeat):
            srv.reset()
            raw_rates.append(asyncio.run(raw_httpx(srv.url, args.calls, args.inflight)))
            # baseline: same client, in-memory cache (no Delta commits)
            srv.reset()
            wall, out = asyncio.run(run_once(srv.url, make_steps(args.calls, f"mem{r}"),
                                             args.inflight, MemoryResponseCache()))
            assert srv.calls() == args.calls and out.calls == args.calls
            base_rates.append(args.calls / wall)
            with tempfile.TemporaryDirectory() as tmp:
                lake = DeltaLake(root=tmp)
                steps = make_steps(args.calls, f"delta{r}")
                srv.reset()
                wall, out = asyncio.run(run_once(srv.url, steps, args.inflight,
                                                 DeltaResponseCache(lake)))
                assert srv.calls() == args.calls, srv.calls()
                assert sum(1 for x in out.rows if x["status"] == "ok") == args.calls
                delta_rates.append(args.calls / wall)
                commits.append(out.cache_stats["commits"])
                srv.reset()
                wall, out = asyncio.run(run_once(srv.url, steps, args.inflight, DeltaResponseCache(lake)))
                cached_walls.append(wall)
                cached_calls.append(srv.calls())
                assert out.cached == args.calls
            print(f"run {r + 1}: raw httpx {raw_rates[-1]:.1f} calls/s, memory cache {base_rates[-1]:.1f} calls/s, with Delta cache "
                  f"{delta_rates[-1]:.1f} calls/s ({commits[-1]} commits), cached re-run "
                  f"{cached_walls[-1]:.2f} s / {cached_calls[-1]} calls", flush=True)
    finally:
        srv.close()
    med = statistics.median
    print(f"\n{args.calls} calls, {args.inflight} in flight, {args.latency * 1000:.0f} ms latency; "
          f"bound {bound:.0f} calls/s  (medians of {args.repeat} run(s))")
    print(f"raw httpx floor:         {med(raw_rates):7.1f} calls/s  ratio to bound {med(raw_rates) / bound:.3f}")
    print(f"asking, memory cache:   {med(base_rates):7.1f} calls/s  ratio to bound {med(base_rates) / bound:.3f}")
    print(f"asking, Delta cache:     {med(delta_rates):7.1f} calls/s  ratio to bound {med(delta_rates) / bound:.3f}"
          f" (goal >= 0.9)  ratio to raw httpx {med(delta_rates) / med(raw_rates):.3f}")
    print(f"fully cached re-run:     {med(cached_walls):7.2f} s wall, {int(med(cached_calls))} calls (goal 0)")
    per_run = [d / r for d, r in zip(delta_rates, raw_rates)]  # each against its own same-run floor
    print(f"RESULT delta_calls_per_s={med(delta_rates):.1f} ratio_to_bound={med(delta_rates) / bound:.3f} "
          f"ratio_to_raw_httpx={med(per_run):.3f} cached_rerun_calls={int(med(cached_calls))}")


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
