"""The rag runtime: retrieval → context bundle → local model → deterministic gate →
escalation (only when the gate fails and escalation is allowed) → one row in ``rag_runs``.

Every run is logged, whatever happens: a failing local model or escalation call is
recorded as an error on the run, and a run the lake cannot take is spooled to a local
JSONL file and flushed with the next successful append.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from assets.rag.bundle import ContextBundle, assemble_prompt, build_bundle
from assets.rag.config import RagConfig
from assets.rag.gate import GateResult, validate
from assets.rag.llm import ChatModel, LocalChatModel, OpenAICompatClient
from assets.rag.retrieval import EmbeddingIndex, Hit, LexicalIndex, PlaybookIndex, playbook_text
from assets.rag.tables import EMBEDDING_DIM, RAG_PLAYBOOKS, RAG_RUNS, RUN_SCHEMA_VERSION
from assets.rag.text import normalize_task, task_hash, token_set
from resources import settings

Embedder = Callable[[Sequence[str]], np.ndarray]


# ------------------------------------------------------------------ building blocks from config
def build_local_model(cfg: RagConfig) -> ChatModel:
    if cfg.local_base_url:
        return OpenAICompatClient(cfg.local_base_url, cfg.local_model, cfg.local_api_key_env,
                                  timeout=cfg.timeout_s, max_retries=cfg.max_retries, backoff_s=cfg.backoff_s,
                                  max_tokens=cfg.max_new_tokens)
    return LocalChatModel(cfg.local_model, max_new_tokens=cfg.max_new_tokens, device=cfg.local_device,
                          max_input_tokens=cfg.max_input_tokens, threads=cfg.local_threads,
                          gguf_cache=cfg.local_gguf_cache)


def build_escalation_model(cfg: RagConfig) -> ChatModel | None:
    if not cfg.escalation_configured:
        return None
    return OpenAICompatClient(cfg.escalation_base_url, cfg.escalation_model, cfg.escalation_api_key_env,
                              timeout=cfg.timeout_s, max_retries=cfg.max_retries, backoff_s=cfg.backoff_s,
                              max_tokens=cfg.escalation_max_tokens)


def default_embedder(device: str = "cpu") -> Embedder:
    def embed(texts: Sequence[str]) -> np.ndarray:
        from resources.embeddings import embed_texts

        return embed_texts(texts, device=device)

    return embed


def index_from_arrow(table, version: int | None = None, metric: str = "jaccard") -> PlaybookIndex:
    """Build the index from an Arrow table of rag_playbooks without per-row float lists."""
    import pyarrow.compute as pc

    emb = table.column("embedding") if "embedding" in table.column_names else None
    records = table.drop_columns(["embedding"]).to_pylist() if emb is not None else table.to_pylist()
    lex = LexicalIndex([token_set(playbook_text(r)) for r in records], metric=metric)
    embeddings = None
    if emb is not None and len(records):
        lengths = pc.fill_null(pc.list_value_length(emb), 0).to_numpy(zero_copy_only=False)
        if (lengths == EMBEDDING_DIM).all():
            flat = pc.list_flatten(emb).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
            embeddings = EmbeddingIndex(flat.reshape(len(records), EMBEDDING_DIM))
        elif (lengths > 0).any():
            embeddings = EmbeddingIndex(emb.to_pylist())
    ids = [r["playbook_id"] for r in records]
    return PlaybookIndex(records=records, lexical=lex, embeddings=embeddings, ids=ids, version=version)


def load_playbook_index(lake, metric: str = "jaccard") -> PlaybookIndex:
    version = lake.version(RAG_PLAYBOOKS)
    return index_from_arrow(lake.read(RAG_PLAYBOOKS), version=version, metric=metric)


# ------------------------------------------------------------------ the run log
def default_spool_dir() -> Path:
    return settings.cache_home() / "tracelake" / "rag_spool"


class RunLog:
    """Appends runs to rag_runs; spools them locally when the lake refuses, flushes later."""

    def __init__(self, lake, spool_dir: str | os.PathLike | None = None):
        self.lake = lake
        self.spool = Path(spool_dir) if spool_dir else default_spool_dir()

    @property
    def spool_file(self) -> Path:
        return self.spool / "rag_runs.jsonl"

    def _spooled(self) -> list[dict]:
        if not self.spool_file.is_file():
            return []
        rows = []
        for line in self.spool_file.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                r["created_at"] = datetime.fromisoformat(r["created_at"])
                rows.append(r)
        return rows

    def append(self, rows: list[dict]) -> tuple[bool, str | None]:
        pending = self._spooled()
        try:
            if self.lake is None:
                raise RuntimeError("no lake configured")
            self.lake.append(RAG_RUNS, pending + rows)
        except Exception as exc:  # noqa: BLE001 - the run must not be lost: keep it on local disk
            self.spool.mkdir(parents=True, exist_ok=True)
            with self.spool_file.open("a") as f:
                for r in rows:
                    f.write(json.dumps({**r, "created_at": r["created_at"].isoformat()}) + "\n")
            return False, f"{type(exc).__name__}: {str(exc)[:300]}"
        if pending:
            self.spool_file.unlink(missing_ok=True)
        return True, None


# ------------------------------------------------------------------ the runtime
@dataclass
class RunOutcome:
    row: dict
    hits: list[Hit] = field(default_factory=list)
    bundle: ContextBundle | None = None
    gate: GateResult | None = None
    logged: bool = False
    log_error: str | None = None

    def __getattr__(self, name: str) -> Any:  # run_id, response, gate_passed, ... straight from the row
        row = self.__dict__.get("row") or {}
        if name in row:
            return row[name]
        raise AttributeError(name)


class RagRuntime:
    def __init__(self, config: RagConfig, *, lake=None, index: PlaybookIndex | None = None,
                 local: ChatModel | None = None, escalation: ChatModel | None = None,
                 embedder: Embedder | None = None, run_log: RunLog | None = None,
                 clock: Callable[[], datetime] | None = None):
        self.config = config
        self.lake = lake
        self._index = index
        self.local = local or build_local_model(config)
        self.escalation = escalation if escalation is not None else build_escalation_model(config)
        self.embedder = embedder
        self.run_log = run_log or RunLog(lake, config.spool_dir)
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    @property
    def index(self) -> PlaybookIndex:
        if self._index is None:
            self._index = (load_playbook_index(self.lake, self.config.lexical_metric) if self.lake is not None
                           else PlaybookIndex.build([]))
        return self._index

    def _query_vec(self, task: str, errors: list[str]) -> np.ndarray | None:
        idx = self.index
        if self.config.retrieval_mode == "lexical" or idx.embeddings is None or not idx.embeddings.usable:
            return None
        embed = self.embedder or default_embedder(self.config.embedding_device)
        try:
            return np.asarray(embed([task]), dtype=np.float32)[0]
        except Exception as exc:  # noqa: BLE001 - retrieval degrades to lexical; the run says so
            errors.append(f"query embedding failed, lexical retrieval used: {type(exc).__name__}: {exc}"[:300])
            return None

    def run(self, task: str, *, local_only: bool = False, allow_escalation: bool | None = None,
            no_retrieval: bool = False, source: str = "api", run_id: str | None = None,
            checks: Sequence[str] = ()) -> RunOutcome:
        """Answer one task. ``checks``: validation lines the caller requires (e.g. from a task
        file); the gate requires the answer to cover each of them, with or without retrieval."""
        cfg = self.config
        task = normalize_task(task)
        if not task:
            raise ValueError("empty task")
        allow = (cfg.allow_escalation if allow_escalation is None else bool(allow_escalation)) and not local_only
        run_id = run_id or "run_" + uuid.uuid4().hex
        errors: list[str] = []
        t_start = time.perf_counter()

        # 1. retrieval
        t0 = time.perf_counter()
        hits: list[Hit] = []
        mode = "none"
        playbooks_version = None
        if not no_retrieval:
            qvec = self._query_vec(task, errors)
            mode, hits = self.index.search(task, cfg.retrieval(), qvec)
            playbooks_version = self.index.version
        retrieval_ms = (time.perf_counter() - t0) * 1000

        # 2. context bundle → prompt
        t0 = time.perf_counter()
        bundle = None
        if not no_retrieval:
            bundle = build_bundle(task, [(self.index.records[h.index], h.score) for h in hits], cfg.bundle())
        messages = assemble_prompt(task, bundle)
        checklist = list(bundle.validation_steps if bundle else [])
        required = [c for c in checks if c and c.strip()]
        bundle_ms = (time.perf_counter() - t0) * 1000

        # 3. local model
        attempts: list[dict] = []
        path = [f"local:{self.local.name}"]
        t0 = time.perf_counter()
        response, model_used = "", self.local.name
        try:
            res = self.local.chat(messages)
            response = res.text
            attempts.append(_attempt("local", self.local.name, res=res))
        except Exception as exc:  # noqa: BLE001 - a failing local model is a logged, failed run
            errors.append(f"local model failed: {type(exc).__name__}: {exc}"[:500])
            attempts.append(_attempt("local", self.local.name, error=errors[-1]))
        local_ms = (time.perf_counter() - t0) * 1000

        # 4. the gate (code, never a model)
        t0 = time.perf_counter()
        gate = validate(response, checklist, cfg.gate(), required)
        gate_ms = (time.perf_counter() - t0) * 1000
        attempts[-1]["gate"] = gate.to_dict()

        # 5. escalation, only when the gate failed and it is allowed
        escalation_ms = None
        if not gate.passed and allow:
            if self.escalation is None:
                errors.append("escalation allowed but no escalation model is configured")
                attempts.append(_attempt("escalation", None, error=errors[-1], status="skipped"))
            else:
                path.append(f"escalation:{self.escalation.name}")
                t0 = time.perf_counter()
                try:
                    res = self.escalation.chat(messages)
                    escalation_ms = (time.perf_counter() - t0) * 1000
                    t1 = time.perf_counter()
                    esc_gate = validate(res.text, checklist, cfg.gate(), required)
                    gate_ms += (time.perf_counter() - t1) * 1000
                    attempts.append(_attempt("escalation", self.escalation.name, res=res, gate=esc_gate.to_dict()))
                    response, model_used, gate = res.text, self.escalation.name, esc_gate
                except Exception as exc:  # noqa: BLE001 - the run is still logged, with the error
                    escalation_ms = (time.perf_counter() - t0) * 1000
                    errors.append(f"escalation failed: {type(exc).__name__}: {exc}"[:500])
                    attempts.append(_attempt("escalation", self.escalation.name, error=errors[-1]))

        row = {
            "schema_version": RUN_SCHEMA_VERSION,
            "run_id": run_id,
            "task": task,
            "task_hash": task_hash(task),
            "source": source,
            "retrieval_mode": mode,
            "retrieved_ids": [h.id for h in hits],
            "retrieved_scores": [round(h.score, 6) for h in hits],
            "playbooks_version": playbooks_version,
            "bundle": json.dumps(bundle.to_dict() if bundle else None, ensure_ascii=False),
            "prompt": json.dumps(messages, ensure_ascii=False),
            "response": response,
            "model_used": model_used,
            "local_model": self.local.name,
            "escalation_model": self.escalation.name if self.escalation is not None else None,
            "escalation_path": path,
            "escalated": len(path) > 1,
            "attempts": json.dumps(attempts, ensure_ascii=False),
            "gate_passed": gate.passed,
            "failed_rules": list(gate.failed_rules),
            "validation": json.dumps(gate.to_dict(), ensure_ascii=False),
            "error": "; ".join(errors) or None,
            "retrieval_ms": retrieval_ms,
            "bundle_ms": bundle_ms,
            "local_ms": local_ms,
            "gate_ms": gate_ms,
            "escalation_ms": escalation_ms,
            "total_ms": (time.perf_counter() - t_start) * 1000,
            "local_only": bool(local_only),
            "allow_escalation": allow,
            "no_retrieval": bool(no_retrieval),
            "config": json.dumps(cfg.public(), sort_keys=True),
            "created_at": self.clock(),
        }
        logged, log_error = self.run_log.append([row])
        return RunOutcome(row=row, hits=hits, bundle=bundle, gate=gate, logged=logged, log_error=log_error)

    def run_many(self, tasks: Sequence[str], **kw) -> list[RunOutcome]:
        return [self.run(t, **kw) for t in tasks]


def _attempt(stage: str, model: str | None, *, res=None, error: str | None = None,
             gate: dict | None = None, status: str | None = None) -> dict:
    a: dict[str, Any] = {"stage": stage, "model": model, "status": status or ("ok" if res is not None else "error")}
    if res is not None:
        a.update(response=res.text, finish_reason=res.finish_reason, input_tokens=res.input_tokens,
                 output_tokens=res.output_tokens, latency_ms=round(res.latency_ms, 2), attempts=res.attempts)
    if error:
        a["error"] = error
    if gate is not None:
        a["gate"] = gate
    return a


def read_tasks(path: str | os.PathLike) -> list[dict]:
    """Tasks from a JSONL file ({"task": ..., optional "id", "tags"}) or a plain text file (a task a line)."""
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            obj = json.loads(line)
            if not obj.get("task"):
                raise ValueError(f"{path}:{i}: no 'task'")
            out.append(obj)
        else:
            out.append({"task": line})
    return out
