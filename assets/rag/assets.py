"""Thin Dagster wrappers of the rag family: playbooks, the run log, the batch job and the report."""

from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import dagster as dg
import pyarrow.compute as pc

from assets.examples.tables import SFT_EXAMPLES
from assets.pairs.tables import NORMALIZED_PAIRS
from assets.rag.batch import VARIANTS, run_batch, run_metadata
from assets.rag.config import ESCALATION_HELP, RagConfig, load_rag_config
from resources.embeddings import embed_texts
from assets.rag.refresh import recount_report, refresh_playbooks
from assets.rag.retrieval import playbook_text
from assets.rag.runlog import RunLog, migrate_rag_runs
from assets.rag.runtime import RagRuntime, read_tasks
from assets.rag.tables import EMBEDDING_DIM, LABELS, RAG_PLAYBOOKS, RAG_REPORT, RAG_RUNS
from assets.traces.tables import AGENT_STEPS, TRACE_TURNS
from resources.embeddings import EmbeddingsResource
from resources.changes import record_consumed
from resources.lake import DeltaLake

GROUP = "rag"
SAMPLE_TASKS = Path(__file__).with_name("sample_tasks.jsonl")
EMBEDDING_MODEL = "all-MiniLM-L6-v2"

RUN_COLUMNS = ["recorded_run_id", "input_task", "task_hash", "model_response", "validation_result", "escalated",
               "model_used", "recorded_at", "no_retrieval"]
TURN_COLUMNS = ["session_key", "source_format", "turn_id", "turn_index", "role", "kind", "content",
                "tool_calls", "tool_call_id", "tool_name", "tool_error", "error_kind", "is_sidechain",
                "is_compact_summary"]


class RagResource(dg.ConfigurableResource):
    """Configuration of the rag runtime: recipes/rag.yaml (or ``recipe``) < TRACELAKE_RAG_* env < these fields.

    Endpoints name the environment variable holding their key (``*_api_key_env``); keys are
    read at call time and never stored.
    """

    recipe: Optional[str] = None
    local_model: Optional[str] = None
    local_base_url: Optional[str] = None
    local_api_key_env: Optional[str] = None
    max_new_tokens: Optional[int] = None
    escalation_base_url: Optional[str] = None
    escalation_model: Optional[str] = None
    escalation_api_key_env: Optional[str] = None
    allow_escalation: Optional[bool] = None
    retrieval_mode: Optional[str] = None
    top_k: Optional[int] = None
    min_chars: Optional[int] = None
    min_checklist_overlap: Optional[int] = None
    spool_dir: Optional[str] = None

    def config(self) -> RagConfig:
        fields = {k: getattr(self, k) for k in (
            "local_model", "local_base_url", "local_api_key_env", "max_new_tokens", "escalation_base_url",
            "escalation_model", "escalation_api_key_env", "allow_escalation", "retrieval_mode", "top_k",
            "min_chars", "min_checklist_overlap", "spool_dir")}
        return load_rag_config(self.recipe, **fields)

    def runtime(self, lake: DeltaLake, **kw) -> RagRuntime:
        cfg = self.config()
        return RagRuntime(cfg, lake=lake, run_log=RunLog(lake, cfg.spool_dir), **kw)


rag_runs = dg.AssetSpec(
    key=RAG_RUNS.asset_key,
    group_name=GROUP,
    kinds={"delta", "gold"},
    description=RAG_RUNS.description + " Written by `tracelake rag run` and the rag_batch_job (append-only).",
)


class RagPlaybooksConfig(dg.Config):
    full_refresh: bool = False  # re-derive every session and run, not only what changed


@dg.asset(
    key=RAG_PLAYBOOKS.asset_key,
    group_name=GROUP,
    deps=[TRACE_TURNS.asset_key, AGENT_STEPS.asset_key, NORMALIZED_PAIRS.asset_key, SFT_EXAMPLES.asset_key,
          RAG_RUNS.asset_key],
    kinds={"delta", "gold"},
    description=RAG_PLAYBOOKS.description,
)
def rag_playbooks(context: dg.AssetExecutionContext, config: RagPlaybooksConfig, lake: DeltaLake,
                  rag_embeddings: EmbeddingsResource):
    migrate_rag_runs(lake)

    def embed(records, todo):
        vecs = embed_texts([playbook_text(records[i])[:2000] for i in todo],
                           batch_size=rag_embeddings.batch_size, device=rag_embeddings.device)
        for i, v in zip(todo, vecs):
            records[i]["embedding"] = v.tolist()
            records[i]["embedding_model"] = EMBEDDING_MODEL

    rep = refresh_playbooks(lake, turn_columns=TURN_COLUMNS, run_columns=RUN_COLUMNS, embed=embed,
                            model=EMBEDDING_MODEL, now=datetime.now(timezone.utc), full=config.full_refresh)
    table = lake.state(RAG_PLAYBOOKS, rows_written=rep.records, mode="merge")
    return dg.MaterializeResult(metadata=table.metadata() | rep.metadata())


@dg.asset_check(asset=RAG_PLAYBOOKS.asset_key, description="Every playbook has a 384-d embedding.")
def rag_playbooks_embedded(lake: DeltaLake) -> dg.AssetCheckResult:
    t = lake.read(RAG_PLAYBOOKS, columns=["embedding"])
    lengths = pc.fill_null(pc.list_value_length(t.column("embedding")), 0).to_pylist()
    bad = sum(1 for n in lengths if n != EMBEDDING_DIM)
    return dg.AssetCheckResult(passed=bad == 0, metadata={"rows": len(lengths), "bad_embeddings": bad})


@dg.asset_check(asset=RAG_PLAYBOOKS.asset_key, description="Playbook ids are unique and labels valid.")
def rag_playbooks_valid(lake: DeltaLake) -> dg.AssetCheckResult:
    t = lake.read(RAG_PLAYBOOKS, columns=["playbook_id", "label"])
    ids = t.column("playbook_id").to_pylist()
    bad_labels = sum(1 for lab in t.column("label").to_pylist() if lab not in LABELS)
    dupes = len(ids) - len(set(ids))
    return dg.AssetCheckResult(passed=dupes == 0 and bad_labels == 0,
                               metadata={"rows": len(ids), "duplicate_ids": dupes, "bad_labels": bad_labels})


class RagReportConfig(dg.Config):
    full_refresh: bool = False  # recount every run, not only the days that got new runs


@dg.asset(
    key=RAG_REPORT.asset_key,
    group_name=GROUP,
    deps=[RAG_RUNS.asset_key],
    kinds={"delta", "gold"},
    description=RAG_REPORT.description + " Recounts only the days that got runs since the last refresh.",
)
def rag_report(context: dg.AssetExecutionContext, config: RagReportConfig, lake: DeltaLake):
    migrate_rag_runs(lake)
    rep = recount_report(lake, full=config.full_refresh, now=datetime.now(timezone.utc))
    result = lake.overwrite(RAG_REPORT, rep.rows)
    record_consumed(lake, RAG_REPORT.path, {RAG_RUNS.path: rep.version}, rep.mode)
    return dg.MaterializeResult(metadata=result.metadata() | rep.metadata())


class RagBatchConfig(dg.Config):
    tasks_path: str = str(SAMPLE_TASKS)  # JSONL ({"task": ...} a line) or plain text (a task a line)
    limit: int = 0  # 0: all tasks
    variants: list[str] = ["with_retrieval"]  # with_retrieval and/or no_retrieval (an A/B batch)
    local_only: bool = False
    allow_escalation: Optional[bool] = None  # None: the recipe's allow_escalation


@dg.op(description="Answer a batch of tasks with the rag runtime; every run is appended to rag_runs.")
def rag_batch(context: dg.OpExecutionContext, config: RagBatchConfig, lake: DeltaLake, rag: RagResource) -> dict:
    tasks = read_tasks(config.tasks_path)
    if config.limit:
        tasks = tasks[: config.limit]
    bad = set(config.variants) - set(VARIANTS)
    if bad:
        raise dg.Failure(f"unknown variants {sorted(bad)}")
    runtime = rag.runtime(lake)
    allow = runtime.config.allow_escalation if config.allow_escalation is None else config.allow_escalation
    if allow and not config.local_only and runtime.escalation is None:
        raise dg.Failure(ESCALATION_HELP)
    rep = run_batch(runtime, tasks, config.variants, local_only=config.local_only,
                    allow_escalation=config.allow_escalation, source=f"batch:{context.run.run_id}",
                    log=context.log.info)
    last = runtime.run_log.last_write
    rep.table_version = lake.version(RAG_RUNS) or 0
    context.log_event(dg.AssetMaterialization(
        asset_key=RAG_RUNS.asset_key, metadata=(last.metadata() if last is not None else {}) | rep.metadata()))
    return {"counts": rep.counts, "spooled": rep.spooled}


@dg.job(name="rag_batch_job", description="Run a batch of tasks (run config: tasks_path) through the rag runtime.")
def rag_batch_job():
    rag_batch()


rag_refresh_job = dg.define_asset_job(
    "rag_refresh_job", selection=[RAG_PLAYBOOKS.asset_key, RAG_REPORT.asset_key],
    description="Rebuild the playbooks (mining accepted runs) and the report.",
)


def record_run_materialization(instance: dg.DagsterInstance, lake: DeltaLake, row: dict, logged: bool,
                               write=None) -> None:
    """Report one CLI run as a materialization of gold/rag_runs (downstream assets follow it).
    ``write``: the WriteResult of the append (table URI, Delta version, row counts)."""
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=RAG_RUNS.asset_key,
        description=f"rag run {row['recorded_run_id']} ({row['source']})",
        metadata=(write.metadata() if write is not None else {}) | run_metadata(row, logged) | {
            "delta_version": lake.version(RAG_RUNS) or 0,
            "table_uri": dg.MetadataValue.path(lake.uri(RAG_RUNS)),
        },
    ))


ASSETS = [rag_playbooks, rag_runs, rag_report]
CHECKS = [rag_playbooks_embedded, rag_playbooks_valid]
JOBS = [rag_batch_job, rag_refresh_job]

defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, jobs=JOBS,
                      resources={"rag": RagResource(), "rag_embeddings": EmbeddingsResource()})
