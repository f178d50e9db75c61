"""Retrieval: lexical (inverted index) and embedding (matrix) agree with brute force; hybrid weights."""

import numpy as np
import pytest

from assets.rag.retrieval import (
    EmbeddingIndex,
    LexicalIndex,
    PlaybookIndex,
    RetrievalConfig,
    brute_force_embedding,
    brute_force_lexical,
    top_k,
)
from assets.rag.text import token_set, tokens


def _pb(i, text, emb=None, label="accepted"):
    return {"playbook_id": f"p{i}", "title": text, "task": text, "content": "", "tags": [],
            "label": label, "embedding": emb}


def test_tokens_are_normalized():
    assert tokens("Run the `pytest -q` tests in Tests/Pairs!") == ["run", "pytest", "tests", "tests", "pairs"]
    assert token_set("A the of") == frozenset()


def test_jaccard_and_overlap_scores():
    docs = [token_set("pytest pairs builder"), token_set("delta lake append retry"), token_set("pytest")]
    idx = LexicalIndex(docs, metric="jaccard")
    rows, s = idx.sparse_scores(token_set("pytest builder fails"))
    got = dict(zip(rows.tolist(), s.tolist()))
    assert got == pytest.approx({0: 2 / 4, 2: 1 / 3})
    ov = LexicalIndex(docs, metric="overlap")
    rows, s = ov.sparse_scores(token_set("pytest builder fails"))
    assert dict(zip(rows.tolist(), s.tolist())) == pytest.approx({0: 2 / 3, 2: 1.0})


def test_inverted_index_matches_brute_force():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(vocab, size=rng.integers(3, 30))) for _ in range(2000)]
    idx = PlaybookIndex.build([_pb(i, t) for i, t in enumerate(texts)])
    sets = [token_set(t) for t in texts]
    for q in range(20):
        query = " ".join(rng.choice(vocab, size=6))
        _, hits = idx.search(query, RetrievalConfig(mode="lexical", top_k=8))
        brute = brute_force_lexical(query, sets, k=8)
        assert [h.index for h in hits] == [i for i, _ in brute]
        assert [h.score for h in hits] == pytest.approx([s for _, s in brute], rel=1e-5)


def test_embedding_topk_matches_brute_force_and_skips_missing():
    rng = np.random.default_rng(1)
    m = rng.normal(size=(500, 16)).astype(np.float32)
    vecs = [list(v) for v in m]
    vecs[3] = None  # a playbook without an embedding scores 0
    emb = EmbeddingIndex(vecs)
    q = rng.normal(size=16).astype(np.float32)
    ranked = top_k(emb.scores(q), 8, min_score=-1.0)
    present = [(i, v) for i, v in enumerate(m) if i != 3]
    brute = brute_force_embedding(q, [v for _, v in present], k=8)
    assert [i for i, _ in ranked] == [present[j][0] for j, _ in brute]
    assert emb.scores(q)[3] == 0.0


def test_hybrid_is_the_configured_weighted_sum():
    recs = [_pb(0, "pytest pairs builder", [1, 0, 0]), _pb(1, "delta append retry", [0, 1, 0]),
            _pb(2, "pytest delta", [0.6, 0.8, 0])]
    idx = PlaybookIndex.build(recs)
    q = np.array([0, 1, 0], dtype=np.float32)
    lex = idx.lexical.dense_scores(token_set("pytest pairs"))
    for wl, we in [(0.5, 0.5), (1.0, 0.0), (0.2, 0.8)]:
        mode, hits = idx.search("pytest pairs", RetrievalConfig(mode="hybrid", lexical_weight=wl,
                                                                 embedding_weight=we, top_k=3), q)
        assert mode == "hybrid"
        expect = {i: wl * lex[i] + we * float(np.dot(np.array(r["embedding"]) / np.linalg.norm(r["embedding"]), q))
                  for i, r in enumerate(recs)}
        for h in hits:
            assert h.score == pytest.approx(expect[h.index], abs=1e-6)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    _, hits = idx.search("pytest pairs", RetrievalConfig(mode="embedding"), q)
    assert hits[0].id == "p1"
    _, hits = idx.search("pytest pairs", RetrievalConfig(mode="lexical"), q)
    assert hits[0].id == "p0"


def test_fallbacks_and_edge_cases():
    idx = PlaybookIndex.build([_pb(0, "pytest pairs")])  # no embeddings
    mode, hits = idx.search("pytest", RetrievalConfig(mode="hybrid"), np.ones(384))
    assert mode == "lexical" and [h.id for h in hits] == ["p0"]
    assert idx.search("nothing shared", RetrievalConfig(mode="lexical"))[1] == []
    assert PlaybookIndex.build([]).search("x")[1] == []
    with pytest.raises(ValueError):
        RetrievalConfig(mode="bm25")
    # ties are broken by row order, deterministically
    idx = PlaybookIndex.build([_pb(i, "same text") for i in range(20)])
    _, hits = idx.search("same text", RetrievalConfig(mode="lexical", top_k=5))
    assert [h.index for h in hits] == [0, 1, 2, 3, 4]
