"""The rag runtime: retrieval → context bundle → local model → deterministic gate →
escalation (only when the gate fails and escalation is allowed) → one replay_run.v1 record
in ``rag_runs`` (see ``runlog.py``).

Both models are clients of the one model client (``resources.model_client``): the local
model is the embedded SmolLM2 (or an HF dir / .gguf, or an OpenAI-compatible endpoint by
config), the escalation target any OpenAI-compatible endpoint.

Every run is logged, whatever happens: a failing local model or escalation call is
recorded as an error on the run, and a run the lake cannot take is spooled to a local
JSONL file and flushed with the next successful append. Allowing escalation without an
escalation endpoint is an error before anything runs (:class:`EscalationNotConfigured`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from assets.rag.bundle import ContextBundle, assemble_prompt, build_bundle
from assets.rag.config import ESCALATION_HELP, RagConfig
from assets.rag.gate import GateResult, validate
from assets.rag.retrieval import EmbeddingIndex, Hit, LexicalIndex, PlaybookIndex, playbook_text
from assets.rag.runlog import RunLog, recorded_run_id, sha256_hex
from assets.rag.tables import EMBEDDING_DIM, MAX_RESPONSE_CHARS, RAG_PLAYBOOKS, RUN_SCHEMA_VERSION
from assets.rag.text import normalize_task, token_set
from resources import privacy
from resources.model_client import CallOutcome, ModelClient, ModelSpec, make_client

Embedder = Callable[[Sequence[str]], np.ndarray]
RETRY_AFTER_CAP_S = 10.0  # an interactive run does not wait minutes on a server's Retry-After


class EscalationNotConfigured(ValueError):
    """Escalation was allowed but no escalation endpoint is configured."""


# ------------------------------------------------------------------ building blocks from config
def local_model_spec(cfg: RagConfig) -> ModelSpec:
    common = dict(model=cfg.local_model, max_tokens=cfg.max_new_tokens, temperature=0.0, max_concurrency=1)
    if cfg.local_base_url:
        return ModelSpec(provider="openai_compatible", base_url=cfg.local_base_url,
                         api_key_env=cfg.local_api_key_env, timeout=cfg.timeout_s,
                         max_attempts=cfg.max_retries + 1, backoff_base=cfg.backoff_s,
                         max_retry_after=RETRY_AFTER_CAP_S, **common)
    # greedy with a mild repetition penalty: a 135M model repeats itself otherwise
    return ModelSpec(provider="local", device=cfg.local_device, batch_size=1,
                     max_context_tokens=cfg.max_input_tokens + cfg.max_new_tokens, repetition_penalty=1.1,
                     gguf_cache=cfg.local_gguf_cache, torch_threads=cfg.local_threads or None,
                     dtype=cfg.local_dtype, **common)


def escalation_model_spec(cfg: RagConfig) -> ModelSpec | None:
    if not cfg.escalation_configured:
        return None
    return ModelSpec(provider="openai_compatible", base_url=cfg.escalation_base_url, model=cfg.escalation_model,
                     api_key_env=cfg.escalation_api_key_env, max_tokens=cfg.escalation_max_tokens,
                     temperature=0.0, max_concurrency=1, timeout=cfg.timeout_s,
                     max_attempts=cfg.max_retries + 1, backoff_base=cfg.backoff_s,
                     max_retry_after=RETRY_AFTER_CAP_S)


def build_local_model(cfg: RagConfig) -> ModelClient:
    return make_client(local_model_spec(cfg))


def build_escalation_model(cfg: RagConfig) -> ModelClient | None:
    spec = escalation_model_spec(cfg)
    return make_client(spec) if spec is not None else None


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


# ------------------------------------------------------------------ the runtime
@dataclass
class RunOutcome:
    row: dict  # the rag_runs row
    hits: list[Hit] = field(default_factory=list)
    bundle: ContextBundle | None = None
    gate: GateResult | None = None
    response: str = ""  # the full final answer (the row holds it cut at 4,000 characters)
    logged: bool = False
    log_error: str | None = None

    @property
    def run_id(self) -> str:
        return self.row["recorded_run_id"]

    @property
    def gate_passed(self) -> bool:
        return bool(self.row["validation_result"]["passed"])

    @property
    def failed_rules(self) -> list[str]:
        return list(self.row["validation_result"]["reasons"])

    def __getattr__(self, name: str) -> Any:  # escalated, escalation_path, ... straight from the row
        row = self.__dict__.get("row") or {}
        if name in row:
            return row[name]
        raise AttributeError(name)


class RagRuntime:
    def __init__(self, config: RagConfig, *, lake=None, index: PlaybookIndex | None = None,
                 local: ModelClient | None = None, escalation: ModelClient | None = None,
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
            no_retrieval: bool = False, source: str = "api", checks: Sequence[str] = ()) -> RunOutcome:
        """Answer one task. ``checks``: validation lines the caller requires (e.g. from a task
        file); the gate requires the answer to cover each of them, with or without retrieval.

        Raises :class:`EscalationNotConfigured` (before anything runs) when escalation is
        allowed but no escalation endpoint is configured."""
        cfg = self.config
        # a task is typed by a user and goes to the run log, the prompt and possibly an
        # escalation endpoint: scrubbed first
        task = privacy.scrub_text(normalize_task(task))[0]
        if not task:
            raise ValueError("empty task")
        allow = (cfg.allow_escalation if allow_escalation is None else bool(allow_escalation)) and not local_only
        if allow and self.escalation is None:
            raise EscalationNotConfigured(ESCALATION_HELP)
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
        path = [self.local.model_id]
        t0 = time.perf_counter()
        response, model_used = "", self.local.model_id
        res = self.local.chat(messages)
        if res.ok:
            response = (res.text or "").strip()
            attempts.append(_attempt("local", self.local.model_id, res=res))
        else:  # a failing local model is a logged, failed run
            errors.append(f"local model failed: {res.describe_error()}"[:500])
            attempts.append(_attempt("local", self.local.model_id, error=errors[-1]))
        local_ms = (time.perf_counter() - t0) * 1000

        # 4. the gate (code, never a model)
        t0 = time.perf_counter()
        gate = validate(response, checklist, cfg.gate(), required)
        gate_ms = (time.perf_counter() - t0) * 1000
        attempts[-1]["gate"] = gate.to_dict()

        # 5. escalation, only when the gate failed and it is allowed
        escalation_ms = None
        if not gate.passed and allow:
            esc = self.escalation
            path.append(esc.model_id)
            t0 = time.perf_counter()
            res = esc.chat(messages)
            escalation_ms = (time.perf_counter() - t0) * 1000
            if res.ok:
                text = (res.text or "").strip()
                t1 = time.perf_counter()
                esc_gate = validate(text, checklist, cfg.gate(), required)
                gate_ms += (time.perf_counter() - t1) * 1000
                attempts.append(_attempt("escalation", esc.model_id, res=res, gate=esc_gate.to_dict()))
                response, model_used, gate = text, esc.model_id, esc_gate
            else:  # the run is still logged, with the error
                errors.append(f"escalation failed: {res.describe_error()}"[:500])
                attempts.append(_attempt("escalation", esc.model_id, error=errors[-1]))

        now = self.clock()
        th = sha256_hex(task)
        row = {
            "schema": RUN_SCHEMA_VERSION,
            "input_task": task,
            "task_hash": th,
            "retrieved_artifacts": {"rag_ids": [h.id for h in hits]},
            "context_bundle": json.dumps(bundle.to_dict(), ensure_ascii=False) if bundle else None,
            "model_response": response[:MAX_RESPONSE_CHARS],
            "model_used": model_used,
            "escalation_path": path,
            "validation_result": {"passed": gate.passed, "reasons": list(gate.failed_rules)},
            "recorded_run_id": recorded_run_id(th, now),
            "recorded_at": now,
            "duration_ms": (time.perf_counter() - t_start) * 1000,
            "source": source,
            "response_chars": len(response),
            "retrieval_mode": mode,
            "retrieved_scores": [round(h.score, 6) for h in hits],
            "playbooks_version": playbooks_version,
            "prompt": json.dumps(messages, ensure_ascii=False),
            "local_model": self.local.model_id,
            "escalation_model": self.escalation.model_id if self.escalation is not None else None,
            "escalated": len(path) > 1,
            "attempts": json.dumps(attempts, ensure_ascii=False),
            "validation_details": json.dumps(gate.to_dict(), ensure_ascii=False),
            "error": "; ".join(errors) or None,
            "retrieval_ms": retrieval_ms,
            "bundle_ms": bundle_ms,
            "local_ms": local_ms,
            "gate_ms": gate_ms,
            "escalation_ms": escalation_ms,
            "local_only": bool(local_only),
            "allow_escalation": allow,
            "no_retrieval": bool(no_retrieval),
            "config": json.dumps(cfg.public(), sort_keys=True),
            "legacy_run_id": None,
        }
        logged, log_error = self.run_log.append([row])
        return RunOutcome(row=row, hits=hits, bundle=bundle, gate=gate, response=response,
                          logged=logged, log_error=log_error)

    def run_many(self, tasks: Sequence[str], **kw) -> list[RunOutcome]:
        return [self.run(t, **kw) for t in tasks]


def _attempt(stage: str, model: str | None, *, res: CallOutcome | None = None, error: str | None = None,
             gate: dict | None = None, status: str | None = None) -> dict:
    a: dict[str, Any] = {"stage": stage, "model": model, "status": status or ("ok" if res is not None else "error")}
    if res is not None:
        a.update(response=(res.text or "").strip(), finish_reason=res.finish_reason, input_tokens=res.input_tokens,
                 output_tokens=res.output_tokens, cost_usd=res.cost_usd,
                 latency_ms=round(res.latency_ms, 2) if res.latency_ms is not None else None,
                 attempts=res.attempts)
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
