"""Playbook retrieval: lexical (token overlap), embedding cosine, or a weighted sum of both.

Pure and Dagster-free. Everything per playbook is precomputed once when the index is built
(token sets → an inverted index of int32 posting arrays; embeddings → one L2-normalized
float32 matrix), so a query costs a few numpy operations over the postings of its own
tokens plus one matrix-vector product, and top-K comes from ``argpartition``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from assets.rag.text import token_set

MODES = ("lexical", "embedding", "hybrid")
METRICS = ("jaccard", "overlap")


@dataclass(frozen=True)
class RetrievalConfig:
    mode: str = "hybrid"  # lexical | embedding | hybrid
    top_k: int = 8
    lexical_weight: float = 0.5
    embedding_weight: float = 0.5
    lexical_metric: str = "jaccard"  # jaccard | overlap (|q∩d| / min(|q|, |d|))
    min_score: float = 0.0  # hits must score strictly above this

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"retrieval mode {self.mode!r} not in {MODES}")
        if self.lexical_metric not in METRICS:
            raise ValueError(f"lexical metric {self.lexical_metric!r} not in {METRICS}")
        if self.top_k < 1:
            raise ValueError("top_k must be >= 1")


@dataclass(frozen=True)
class Hit:
    index: int  # row in the index
    id: str
    score: float  # the combined score the ranking used
    lexical: float
    embedding: float | None


def playbook_text(rec: Mapping[str, Any]) -> str:
    """The text a playbook is matched on (lexically and for its embedding)."""
    tags = " ".join(rec.get("tags") or [])
    return f"{rec.get('title') or ''}\n{rec.get('task') or ''}\n{tags}\n{rec.get('content') or ''}"


class LexicalIndex:
    """Inverted index over token sets; scores only the playbooks sharing a query token."""

    def __init__(self, docs: Sequence[Iterable[str]], metric: str = "jaccard"):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}")
        self.metric = metric
        post: dict[str, list[int]] = defaultdict(list)
        sizes = np.zeros(len(docs), dtype=np.int32)
        for i, toks in enumerate(docs):
            s = set(toks)
            sizes[i] = len(s)
            for t in s:
                post[t].append(i)
        self.n = len(docs)
        self.sizes = sizes
        self.vocab = {t: j for j, t in enumerate(post)}
        self.postings = [np.asarray(v, dtype=np.int32) for v in post.values()]

    def sparse_scores(self, query: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row indices with at least one shared token, their scores)."""
        q = set(query)
        lists = [self.postings[self.vocab[t]] for t in q if t in self.vocab]
        if not lists:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        counts = np.bincount(np.concatenate(lists), minlength=self.n)
        cand = np.flatnonzero(counts)
        inter = counts[cand].astype(np.float32)
        sizes = self.sizes[cand].astype(np.float32)
        if self.metric == "jaccard":
            scores = inter / (len(q) + sizes - inter)
        else:
            scores = inter / np.maximum(np.minimum(float(len(q)), sizes), 1.0)
        return cand, scores

    def dense_scores(self, query: Iterable[str]) -> np.ndarray:
        out = np.zeros(self.n, dtype=np.float32)
        cand, s = self.sparse_scores(query)
        out[cand] = s
        return out


class EmbeddingIndex:
    """A (n, d) L2-normalized float32 matrix; rows without an embedding score 0."""

    def __init__(self, vectors: Sequence[Sequence[float] | None] | np.ndarray, dim: int | None = None):
        if isinstance(vectors, np.ndarray):
            m = vectors.astype(np.float32, copy=True)
            present = np.ones(len(m), dtype=bool)
        else:
            d = dim or next((len(v) for v in vectors if v is not None and len(v)), 0)
            m = np.zeros((len(vectors), d), dtype=np.float32)
            present = np.zeros(len(vectors), dtype=bool)
            for i, v in enumerate(vectors):
                if v is not None and len(v) == d and d:
                    m[i] = v
                    present[i] = True
        norms = np.linalg.norm(m, axis=1, keepdims=True) if m.size else np.zeros((len(m), 1), np.float32)
        m = np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)
        self.matrix = m
        self.present = present & (norms[:, 0] > 0 if len(m) else present)
        self.dim = m.shape[1] if m.ndim == 2 else 0

    @property
    def usable(self) -> bool:
        return bool(self.dim) and bool(self.present.any())

    def scores(self, qvec: Sequence[float]) -> np.ndarray:
        q = np.asarray(qvec, dtype=np.float32).reshape(-1)
        n = float(np.linalg.norm(q))
        if n == 0 or q.shape[0] != self.dim:
            raise ValueError(f"query vector of dim {q.shape[0]} for an index of dim {self.dim}")
        return self.matrix @ (q / n)


def top_k(scores: np.ndarray, k: int, rows: np.ndarray | None = None,
          min_score: float = 0.0) -> list[tuple[int, float]]:
    """Top-k (row, score) by score desc then row asc, keeping scores > min_score."""
    if rows is None:
        rows = np.arange(len(scores))
    keep = scores > min_score
    scores, rows = scores[keep], rows[keep]
    if len(scores) == 0:
        return []
    k = min(k, len(scores))
    if k < len(scores):
        part = np.argpartition(-scores, k - 1)[:k]
        # include every row tied with the k-th score, then cut after a deterministic sort
        kth = scores[part].min()
        part = np.flatnonzero(scores >= kth)
    else:
        part = np.arange(len(scores))
    order = part[np.lexsort((rows[part], -scores[part]))][:k]
    return [(int(rows[i]), float(scores[i])) for i in order]


@dataclass
class PlaybookIndex:
    """Playbook records + their precomputed lexical and embedding indexes."""

    records: list[dict]
    lexical: LexicalIndex
    embeddings: EmbeddingIndex | None
    ids: list[str] = field(default_factory=list)
    version: int | None = None  # Delta version the records were read at

    @classmethod
    def build(cls, records: Sequence[Mapping[str, Any]], metric: str = "jaccard",
              version: int | None = None) -> "PlaybookIndex":
        recs = [dict(r) for r in records]
        lex = LexicalIndex([token_set(playbook_text(r)) for r in recs], metric=metric)
        vecs = [r.get("embedding") for r in recs]
        emb = EmbeddingIndex(vecs) if any(v is not None and len(v) for v in vecs) else None
        return cls(records=recs, lexical=lex, embeddings=emb,
                   ids=[str(r.get("playbook_id") or i) for i, r in enumerate(recs)], version=version)

    def __len__(self) -> int:
        return len(self.records)

    def effective_mode(self, cfg: RetrievalConfig, has_query_vec: bool) -> str:
        if cfg.mode == "lexical":
            return "lexical"
        if not (has_query_vec and self.embeddings is not None and self.embeddings.usable):
            return "lexical"  # no embeddings to compare: fall back, and say so in the run log
        return cfg.mode

    def search(self, query: str, cfg: RetrievalConfig = RetrievalConfig(),
               query_vec: Sequence[float] | None = None) -> tuple[str, list[Hit]]:
        """(effective mode, hits best first)."""
        if not self.records:
            return self.effective_mode(cfg, query_vec is not None), []
        mode = self.effective_mode(cfg, query_vec is not None)
        qtoks = token_set(query)
        if mode == "lexical":
            rows, s = self.lexical.sparse_scores(qtoks)
            ranked = top_k(s, cfg.top_k, rows, cfg.min_score)
            return mode, [Hit(r, self.ids[r], sc, sc, None) for r, sc in ranked]
        emb = self.embeddings.scores(query_vec)
        if mode == "embedding":
            lex = None
            combined = emb
        else:
            lex = self.lexical.dense_scores(qtoks)
            combined = cfg.lexical_weight * lex + cfg.embedding_weight * emb
        ranked = top_k(combined, cfg.top_k, None, cfg.min_score)
        hits = []
        for r, sc in ranked:
            lx = float(lex[r]) if lex is not None else 0.0
            hits.append(Hit(r, self.ids[r], sc, lx, float(emb[r])))
        return mode, hits


# ------------------------------------------------------------- brute-force baselines (bench)
def brute_force_lexical(query: str, doc_sets: Sequence[frozenset[str]], k: int = 8) -> list[tuple[int, float]]:
    """Pure-Python per-playbook Jaccard over token sets (the seed's approach)."""
    q = token_set(query)
    scored = []
    for i, d in enumerate(doc_sets):
        inter = len(q & d)
        if inter:
            scored.append((inter / len(q | d), i))
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [(i, s) for s, i in scored[:k]]


def brute_force_embedding(qvec: np.ndarray, vectors: Sequence[np.ndarray], k: int = 8) -> list[tuple[int, float]]:
    """Per-playbook cosine in a Python loop, then a full sort."""
    q = qvec / np.linalg.norm(qvec)
    scored = [(float(np.dot(v, q) / (np.linalg.norm(v) or 1.0)), i) for i, v in enumerate(vectors)]
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [(i, s) for s, i in scored[:k]]
