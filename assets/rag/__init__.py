"""The rag asset family: playbooks from what the lakehouse knows, and a RAG runtime that
answers a task with the local model grounded in retrieved playbooks, gated by code,
escalated only when allowed, and logged to rag_runs (see assets.py, runtime.py).

``defs`` is built on first access, so the pure modules (retrieval, bundle, gate,
playbooks, runtime) import without building any Dagster definition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import dagster as dg

    defs: dg.Definitions


def _build_defs():
    import dagster as dg

    from assets.rag.assets import (
        RagResource,
        rag_batch_job,
        rag_playbooks,
        rag_playbooks_embedded,
        rag_playbooks_valid,
        rag_refresh_job,
        rag_report,
        rag_runs,
    )
    from resources.embeddings import EmbeddingsResource

    return dg.Definitions(
        assets=[rag_playbooks, rag_runs, rag_report],
        asset_checks=[rag_playbooks_embedded, rag_playbooks_valid],
        jobs=[rag_batch_job, rag_refresh_job],
        resources={"rag": RagResource(), "rag_embeddings": EmbeddingsResource()},
    )


_DEFS = None


def __getattr__(name: str):
    global _DEFS
    if name == "defs":
        if _DEFS is None:
            _DEFS = _build_defs()
        return _DEFS
    raise AttributeError(f"module 'assets.rag' has no attribute {name!r}")
