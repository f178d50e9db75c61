"""normalize_pairs against data-juicer's own DefaultExecutor, same recipe, same rows, same run.

Ours: ``assets.pairs.normalize.normalize_pairs`` — render the pair samples, load the
recipe's ops, run them op by op recording every drop (op, stats, reason), assemble the
kept / rejected rows. Baseline: render the same samples, then
``DefaultExecutor(init_configs(["--config", recipe, ...])).run(dataset=..., skip_export=True)``
(op errors not skipped, as in our recipes). Models (lingua, the verifier tokenizer, MiniLM)
are warmed up once for both before timing; the two alternate ``--repeats`` times and
medians are compared (goal: ours ≤ 1.15× the executor's wall time). Both must keep the
same rows.

    .venv/bin/python benchmarks/bench_normalize.py                       # default recipe, 2000 pairs
    .venv/bin/python benchmarks/bench_normalize.py --recipe with_disagreement_filter --rows 1000
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks._corpus import transcript_texts  # noqa: E402

SHORT = [  # answers like the tiny local teacher gives: short, often alike
    "I'll run the tests first.", "Let me look at the file.", "I will check the error message.",
    "Sure, I can help with that.", "Let me read utils.py.", "Done.", "The tests pass now.",
    "I'll fix the import and run the tests again.", "Let me search for the function definition.",
]
LOOPS = ["Sure! " * 30, "I will fix it. I will fix it. I will fix it. I will fix it. I will fix it. " * 3]
FOREIGN = ["Je vais d'abord lancer les tests pour voir ce qui échoue dans le fichier.",
           "Ich werde zuerst die Tests ausführen, um den Fehler zu sehen."]
CODE = ["```python\ndef slugify(s):\n    return re.sub(r'\\W+', '-', s.lower()).strip('-')\n```",
        "```bash\npytest tests/test_utils.py -q\n```"]


def corpus_texts() -> list[str]:
    """Prose, code and tool output of the real agent transcripts (when present)."""
    texts = transcript_texts(min_len=20, max_len=4000)
    return texts or ["FAILED tests/test_utils.py::test_slugify - AssertionError"] * 10


def make_pairs(n: int, seed: int = 0) -> list[dict]:
    from assets.pairs.messages import dumps

    rng = random.Random(seed)
    corpus = corpus_texts()
    rows = []
    for i in range(n):
        if i and rng.random() < 0.08:  # a replayed step: exact duplicate content
            dup = dict(rows[rng.randrange(len(rows))])
            rows.append(dup | {"pair_id": f"p{i}", "step_id": f"s{i % 50}:{i}"})
            continue
        ctx = [{"role": "system", "content": "You are a coding agent."},
               {"role": "user", "content": rng.choice(corpus)}]
        for k in range(rng.randrange(0, 4)):
            cid = f"c{i}_{k}"
            ctx.append({"role": "assistant", "content": rng.choice(SHORT), "tool_calls": [
                {"id": cid, "type": "function", "function": {"name": "Bash", "arguments": dumps({"command": "ls"})}}]})
            ctx.append({"role": "tool", "tool_call_id": cid, "name": "Bash", "content": rng.choice(corpus)})
        r = rng.random()
        chosen = (rng.choice(LOOPS) if r < 0.04 else rng.choice(FOREIGN) if r < 0.08 else
                  rng.choice(CODE) if r < 0.15 else rng.choice(SHORT) + " " + rng.choice(corpus)[:300]
                  if r < 0.6 else rng.choice(SHORT))
        rejected = rng.choice(SHORT + LOOPS + FOREIGN)
        if rejected == chosen:
            rejected = "I cannot help with that."
        rows.append({
            "pair_id": f"p{i}", "session_key": f"s{i % 50}", "step_id": f"s{i % 50}:{i}",
            "prompt": dumps(ctx), "chosen": dumps([{"role": "assistant", "content": chosen}]),
            "rejected": dumps([{"role": "assistant", "content": rejected}]), "tools": None,
            "chosen_source": "smol-a", "rejected_source": "original", "strategy": "consensus",
        })
    return rows


def run_ours(rows, recipe):
    from assets.pairs.normalize import normalize_pairs

    t0 = time.perf_counter()
    res = normalize_pairs(rows, recipe)
    return time.perf_counter() - t0, res


def _quiet_loguru():
    from loguru import logger

    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # init_configs redirects them to loguru
    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def run_executor(rows, recipe, work_dir: str):
    from data_juicer.config import init_configs
    from data_juicer.core.data import NestedDataset
    from data_juicer.core.executor import DefaultExecutor

    from assets.pairs.normalize import pair_sample

    t0 = time.perf_counter()
    ds = NestedDataset.from_list([pair_sample(r, i) for i, r in enumerate(rows)])
    cfg = init_configs(["--config", str(recipe.path), "--work_dir", work_dir,
                        "--export_path", os.path.join(work_dir, "out.jsonl")])
    _quiet_loguru()  # init_configs re-adds data-juicer's INFO sinks
    out = DefaultExecutor(cfg).run(dataset=ds, skip_export=True)
    kept = out["__tl_row__"]
    return time.perf_counter() - t0, kept


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    _quiet_loguru()  # data-juicer's per-op INFO lines would dominate the output
    import datasets

    datasets.disable_progress_bars()
    from assets.pairs.normalize import ensure_data_juicer
    from assets.pairs.normalize import load_recipe

    ensure_data_juicer()
    recipe = load_recipe(args.recipe)
    rows = make_pairs(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: first-use model loads (lingua, tokenizer, MiniLM, torch import) for both
        warm = make_pairs(40, seed=1)
        run_ours(warm, recipe)
        run_executor(warm, recipe, tmp)
        ours, base = [], []
        for i in range(args.repeats):
            order = (("ours", "exec"), ("exec", "ours"))[i % 2]
            for who in order:
                if who == "ours":
                    t, res = run_ours(rows, recipe)
                    ours.append(t)
                    kept_ours = sorted(r["pair_id"] for r in res.kept)
                else:
                    t, kept = run_executor(rows, recipe, tmp)
                    base.append(t)
                    kept_exec = sorted(rows[i]["pair_id"] for i in kept)
    mo, mb = statistics.median(ours), statistics.median(base)
    print(f"recipe {recipe.name}@{recipe.version}: {len(recipe.process)} ops, {args.rows} pairs, "
          f"{args.repeats} repeats (alternating), cpus={os.cpu_count()}")
    print(f"  normalize_pairs (ours, drops recorded): median {mo:7.2f} s  {args.rows / mo:8.0f} rows/s  "
          f"runs {[round(x, 2) for x in ours]}")
    print(f"  data-juicer DefaultExecutor:            median {mb:7.2f} s  {args.rows / mb:8.0f} rows/s  "
          f"runs {[round(x, 2) for x in base]}")
    print(f"  ratio ours/executor: {mo / mb:.2f}x (goal <= 1.15x)")
    print(f"  kept: ours {len(kept_ours)}, executor {len(kept_exec)}, same rows: {kept_ours == kept_exec}; "
          f"dropped by op (ours): {res.drops_by_op}")
    return 0 if kept_ours == kept_exec else 1


if __name__ == "__main__":
    sys.exit(main())
