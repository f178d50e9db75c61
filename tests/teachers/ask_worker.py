"""Run a teacher asking in its own process (the kill -9 test kills it mid-way).

    python -m tests.teachers.ask_worker <lake root> <steps.json> <pool.yaml>
"""

from __future__ import annotations

import asyncio
import json
import sys

from assets.teachers.cache import DeltaResponseCache
from assets.teachers.ask import ask_teachers
from resources.lake import DeltaLake
from assets.teachers.pool import TeacherSet, load_pool_spec


async def main(root: str, steps_file: str, pool_file: str) -> None:
    pool = load_pool_spec(pool_file)
    with open(steps_file, encoding="utf-8") as f:
        steps = json.load(f)
    cache = DeltaResponseCache(DeltaLake(root=root), flush_seconds=pool.cache.flush_seconds,
                               flush_rows=pool.cache.flush_rows, spool_fsync=pool.cache.spool_fsync)
    async with TeacherSet(pool) as teachers:
        out = await ask_teachers(steps, teachers, cache, pool.budget_usd)
    print(json.dumps({"calls": out.calls, "cached": out.cached}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
