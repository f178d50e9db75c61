"""RAG benchmark: retrieval latency over 100,000 playbooks, and the local model's pass rate
with vs without retrieval on the bundled sample tasks.

1. Retrieval (synthetic playbooks: Zipf-distributed words, 20–80 tokens each; random unit
   384-d embeddings). Median ms/query of
   - lexical: the inverted index (int32 postings, bincount, argpartition) vs the seed's
     brute force, measured in the same run: pure-Python Jaccard over every playbook's token set;
   - embedding: one normalized (n, 384) matrix @ query + argpartition vs a per-playbook
     Python loop of np.dot + a full sort;
   - hybrid (weighted sum), and MiniLM's own cost to embed one query.
   Top-K of the fast paths is checked against the brute force.
2. A/B: every task of assets/rag/sample_tasks.jsonl run through the runtime (real SmolLM2,
   local only) with and without retrieval, over playbooks derived from the bundled sample
   sessions (assets/traces/samples) + the sample-like sessions of assets/rag/samples.py.
   Two pass rates: the runtime's gate (the task's required checks, plus overlap with the
   retrieved checklist in the retrieval arm), and the task's checks alone (the same gate
   for both arms: the fair comparison).

    .venv/bin/python benchmarks/bench_rag.py                       # both parts
    .venv/bin/python benchmarks/bench_rag.py --skip-ab             # retrieval only (~1 min)
    .venv/bin/python benchmarks/bench_rag.py --n 100000 --queries 50 --max-new-tokens 48
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def _median_ms(fn, queries) -> tuple[float, list]:
    times, outs = [], []
    for q in queries:
        t0 = time.perf_counter()
        outs.append(fn(q))
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), outs


def synthetic_playbooks(n: int, seed: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    vocab = [f"{p}{i}" for i, p in enumerate(["tok"] * 20000)]
    ranks = np.arange(1, len(vocab) + 1)
    probs = (1 / ranks ** 1.05)
    probs /= probs.sum()
    lens = rng.integers(20, 81, size=n)
    words = rng.choice(len(vocab), size=int(lens.sum()), p=probs)
    texts, off = [], 0
    for ln in lens:
        texts.append(" ".join(vocab[w] for w in words[off:off + ln]))
        off += ln
    emb = rng.normal(size=(n, 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    q_words = rng.choice(len(vocab), size=(200, 8), p=probs)
    queries = [" ".join(vocab[w] for w in row) for row in q_words]
    return texts, emb, queries


def bench_retrieval(n: int, n_queries: int, n_brute: int, k: int) -> dict:
    from assets.rag.retrieval import (EmbeddingIndex, LexicalIndex, PlaybookIndex, RetrievalConfig,
                                      brute_force_embedding, brute_force_lexical)
    from assets.rag.text import token_set

    t0 = time.perf_counter()
    texts, emb, queries = synthetic_playbooks(n)
    gen_s = time.perf_counter() - t0
    queries = queries[:n_queries]
    t0 = time.perf_counter()
    sets = [token_set(t) for t in texts]
    lex = LexicalIndex(sets)
    lex_build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    eidx = EmbeddingIndex(emb)
    emb_build_s = time.perf_counter() - t0
    recs = [{"playbook_id": f"p{i}", "title": "", "task": t, "content": "", "tags": []} for i, t in enumerate(texts)]
    index = PlaybookIndex(records=recs, lexical=lex, embeddings=eidx, ids=[r["playbook_id"] for r in recs])
    rng = np.random.default_rng(1)
    qvecs = rng.normal(size=(len(queries), 384)).astype(np.float32)
    qmap = dict(zip(queries, qvecs))

    lex_cfg = RetrievalConfig(mode="lexical", top_k=k)
    emb_cfg = RetrievalConfig(mode="embedding", top_k=k, min_score=-1.0)
    hyb_cfg = RetrievalConfig(mode="hybrid", top_k=k, min_score=-1.0)
    lex_ms, lex_out = _median_ms(lambda q: index.search(q, lex_cfg)[1], queries)
    emb_ms, emb_out = _median_ms(lambda q: index.search(q, emb_cfg, qmap[q])[1], queries)
    hyb_ms, _ = _median_ms(lambda q: index.search(q, hyb_cfg, qmap[q])[1], queries)
    brute_q = queries[:n_brute]
    blex_ms, blex_out = _median_ms(lambda q: brute_force_lexical(q, sets, k), brute_q)
    rows = list(emb)
    bemb_ms, bemb_out = _median_ms(lambda q: brute_force_embedding(qmap[q], rows, k), brute_q)
    for fast, brute in zip(lex_out, blex_out):
        assert [h.index for h in fast] == [i for i, _ in brute], "lexical top-k differs from brute force"
    for fast, brute in zip(emb_out, bemb_out):
        assert [h.index for h in fast] == [i for i, _ in brute], "embedding top-k differs from brute force"
    # what embedding a query costs (MiniLM, CPU)
    from resources.embeddings import embed_texts

    embed_texts(["warm up"])
    q_embed_ms, _ = _median_ms(lambda q: embed_texts([q]), ["How do I fix the failing pair builder test?"] * 10)
    return {
        "n": n, "queries": len(queries), "brute_queries": len(brute_q), "k": k,
        "generate_s": round(gen_s, 1), "lexical_build_s": round(lex_build_s, 2),
        "embedding_build_s": round(emb_build_s, 2),
        "lexical_ms": lex_ms, "lexical_brute_ms": blex_ms,
        "embedding_ms": emb_ms, "embedding_brute_ms": bemb_ms,
        "hybrid_ms": hyb_ms, "query_embed_ms": q_embed_ms,
        "mean_candidates_per_query": float(np.mean([len(lex.sparse_scores(token_set(q))[0]) for q in queries])),
    }


def ab_playbooks() -> tuple[list[dict], dict]:
    """Playbooks from the bundled sample sessions + the rag sample-like sessions, embedded."""
    from resources.embeddings import embed_texts
    from assets.rag.playbooks import DeriveStats, derive_playbooks
    from assets.rag.retrieval import playbook_text
    from assets.rag.samples import sample_trace_rows

    turns, steps, files = list(sample_trace_rows()), [], 0
    try:
        from assets.traces.ingest import ingest_file, sample_files

        for i, f in enumerate(sample_files()):
            _, t, s, _ = ingest_file(f, f"bundled-{i}")
            turns += t
            steps += s
            files += 1
    except ImportError as exc:  # the trace family is not importable: the rag fixture alone
        print(f"(bundled sample sessions unavailable: {exc})")
    stats = DeriveStats()
    pbs = derive_playbooks(turns=turns, steps=steps, stats=stats)
    vecs = embed_texts([playbook_text(p)[:2000] for p in pbs])
    for p, v in zip(pbs, vecs):
        p["embedding"] = v.tolist()
    return pbs, {"bundled_session_files": files, "playbooks": len(pbs), "by_label": dict(stats.playbooks)}


def bench_ab(max_new_tokens: int, limit: int) -> dict:
    from assets.rag.config import load_rag_config
    from assets.rag.gate import validate
    from assets.rag.report import markdown, report_rows
    from assets.rag.retrieval import PlaybookIndex
    from assets.rag.assets import RUN_COLUMNS
    from assets.rag.runlog import RunLog, report_view
    from assets.rag.runtime import RagRuntime, read_tasks
    from assets.rag.tables import RAG_RUNS
    from resources.lake import DeltaLake

    pbs, info = ab_playbooks()
    tasks = read_tasks(ROOT / "assets" / "rag" / "sample_tasks.jsonl")
    if limit:
        tasks = tasks[:limit]
    tmp = tempfile.mkdtemp(prefix="bench_rag_")
    lake = DeltaLake(root=f"{tmp}/lake")
    cfg = load_rag_config(env={}, max_new_tokens=max_new_tokens, allow_escalation=False, spool_dir=f"{tmp}/spool")
    rt = RagRuntime(cfg, lake=lake, index=PlaybookIndex.build(pbs), run_log=RunLog(lake, f"{tmp}/spool"))
    rt.local._model()  # load the weights before timing
    arms = {"with_retrieval": [], "no_retrieval": []}
    t0 = time.perf_counter()
    for t in tasks:
        for arm in arms:
            out = rt.run(t["task"], local_only=True, no_retrieval=arm == "no_retrieval", checks=t.get("checks") or (),
                         source="bench")
            own = validate(out.response, [], cfg.gate(), t.get("checks") or [])
            arms[arm].append({"id": t.get("id"), "gate": out.gate_passed, "rules": out.failed_rules,
                              "task_checks": own.passed, "local_ms": out.local_ms,
                              "top": out.retrieved_artifacts["rag_ids"][:1]})
            print(f"  {t.get('id')} {arm:<15} gate={'pass' if out.gate_passed else 'FAIL'} "
                  f"{','.join(out.failed_rules) or '-':<32} task-checks={'pass' if own.passed else 'FAIL'} "
                  f"{out.local_ms / 1000:.1f}s  {out.response[:70]!r}", flush=True)
    elapsed = time.perf_counter() - t0
    rows = report_rows(report_view(lake.read(RAG_RUNS, columns=RUN_COLUMNS).to_pylist()))
    res = {"tasks": len(tasks), "max_new_tokens": max_new_tokens, "seconds": round(elapsed, 1), **info}
    for arm, rs in arms.items():
        res[f"{arm}/gate_pass_rate"] = sum(r["gate"] for r in rs) / len(rs)
        res[f"{arm}/task_checks_pass_rate"] = sum(r["task_checks"] for r in rs) / len(rs)
        res[f"{arm}/median_local_s"] = statistics.median(r["local_ms"] for r in rs) / 1000
    res["report_md"] = markdown(rows)
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--brute-queries", type=int, default=5)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--tasks", type=int, default=0, help="limit the A/B to the first N sample tasks")
    ap.add_argument("--skip-ab", action="store_true")
    ap.add_argument("--skip-retrieval", action="store_true")
    args = ap.parse_args(argv)
    if not args.skip_retrieval:
        r = bench_retrieval(args.n, args.queries, args.brute_queries, args.k)
        print(f"\n== retrieval over {r['n']:,} synthetic playbooks (top-{r['k']}, {r['queries']} queries; "
              f"brute force on {r['brute_queries']}) ==")
        print(f"index build: lexical {r['lexical_build_s']} s, embedding matrix {r['embedding_build_s']} s; "
              f"mean lexical candidates/query {r['mean_candidates_per_query']:,.0f}")
        print(f"lexical   median {r['lexical_ms']:8.2f} ms/query   brute force (pure-Python Jaccard) "
              f"{r['lexical_brute_ms']:9.1f} ms   speed-up {r['lexical_brute_ms'] / r['lexical_ms']:6.1f}x")
        print(f"embedding median {r['embedding_ms']:8.2f} ms/query   brute force (per-playbook np.dot loop) "
              f"{r['embedding_brute_ms']:9.1f} ms   speed-up {r['embedding_brute_ms'] / r['embedding_ms']:6.1f}x")
        print(f"hybrid    median {r['hybrid_ms']:8.2f} ms/query   (+ MiniLM query embedding "
              f"{r['query_embed_ms']:.1f} ms)")
        print("top-k of both fast paths = brute force: OK")
    if not args.skip_ab:
        print(f"\n== A/B: SmolLM2-135M (CPU, greedy, {args.max_new_tokens} new tokens) with vs without retrieval ==")
        r = bench_ab(args.max_new_tokens, args.tasks)
        print(f"playbooks: {r['playbooks']} ({r['by_label']}), from {r['bundled_session_files']} bundled session "
              f"files + the rag sample-like sessions; {r['tasks']} tasks in {r['seconds']} s")
        for arm in ("with_retrieval", "no_retrieval"):
            print(f"{arm:<15} runtime gate pass rate {r[arm + '/gate_pass_rate']:.0%}   task-checks pass rate "
                  f"{r[arm + '/task_checks_pass_rate']:.0%}   median local {r[arm + '/median_local_s']:.1f} s")
        print("\nrag_report (bench lake):\n" + r["report_md"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
