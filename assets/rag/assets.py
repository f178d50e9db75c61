"""Thin Dagster wrappers of the rag family: playbooks, the run log, the batch job and the report."""

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Optional

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from assets.metadata import md_counts, md_preview
from assets.examples.tables import SFT_EXAMPLES
from assets.pairs.tables import NORMALIZED_PAIRS
from assets.rag.config import ESCALATION_HELP, RagConfig, load_rag_config
from resources.embeddings import embed_texts
from assets.rag.refresh import refresh_playbooks
from assets.rag.report import _day, markdown, report_rows, with_totals
from assets.rag.retrieval import playbook_text
from assets.rag.runlog import RunLog, migrate_rag_runs, report_view
from assets.rag.runtime import RagRuntime, read_tasks
from assets.rag.tables import EMBEDDING_DIM, LABELS, RAG_PLAYBOOKS, RAG_REPORT, RAG_RUNS
from assets.traces.tables import AGENT_STEPS, TRACE_TURNS
from resources.embeddings import EmbeddingsResource
from resources.changes import changes_since, consumed_versions, record_consumed, scan
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
    t0 = time.perf_counter()
    migrate_rag_runs(lake)
    embed_s = 0.0

    def embed(records, todo):
        nonlocal embed_s
        t = time.perf_counter()
        vecs = embed_texts([playbook_text(records[i])[:2000] for i in todo],
                           batch_size=rag_embeddings.batch_size, device=rag_embeddings.device)
        for i, v in zip(todo, vecs):
            records[i]["embedding"] = v.tolist()
            records[i]["embedding_model"] = EMBEDDING_MODEL
        embed_s += time.perf_counter() - t

    rep = refresh_playbooks(lake, turn_columns=TURN_COLUMNS, run_columns=RUN_COLUMNS, embed=embed,
                            model=EMBEDDING_MODEL, now=datetime.now(timezone.utc), full=config.full_refresh)
    t = lake.read(RAG_PLAYBOOKS, columns=["label", "mined"])
    labels = {lab: int(pc.sum(pc.equal(t.column("label"), lab)).as_py() or 0) for lab in LABELS}
    stats = rep.stats
    dt = lake.table(RAG_PLAYBOOKS)
    return dg.MaterializeResult(metadata={
        "table_uri": dg.MetadataValue.path(lake.uri(RAG_PLAYBOOKS)),
        "delta_version": dg.MetadataValue.int(dt.version()),
        "table_rows": dg.MetadataValue.int(t.num_rows),
        "dagster/row_count": dg.MetadataValue.int(t.num_rows),
        "refresh_mode": rep.mode,
        "input_modes": dg.MetadataValue.json(rep.modes),
        "sessions": rep.sessions,
        "sessions_refreshed": rep.sessions,
        "runs_mined_from": rep.runs,
        "playbooks_written": rep.records,
        "playbooks": t.num_rows,
        "mined": int(pc.sum(t.column("mined")).as_py() or 0) if t.num_rows else 0,
        "accepted": labels["accepted"],
        "partially_accepted": labels["partially_accepted"],
        "rejected": labels["rejected"],
        "by_source_and_label": md_counts("source/label", dict(stats.playbooks)),
        "dropped_by_reason": md_counts("reason", dict(stats.dropped)),
        "embedded_new": rep.embedded,
        "embeddings_reused": rep.reused,
        "seconds": round(time.perf_counter() - t0, 2),
        "preview": md_preview(lake.read(RAG_PLAYBOOKS, columns=["title", "source_kind", "label", "content"])
                              .slice(0, 3).to_pylist(),
                              {"title": lambda r: r["title"], "source": lambda r: r["source_kind"],
                               "label": lambda r: r["label"], "content": lambda r: r["content"]}),
        "embed_s": round(embed_s, 2),
    })


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


REPORT_RUN_COLUMNS = ["validation_result", "escalated", "recorded_at", "no_retrieval"]


def _report_runs(lake: DeltaLake, filter=None):
    """rag_runs rows (the report's columns), a batch at a time."""
    for b in scan(lake, RAG_RUNS, REPORT_RUN_COLUMNS, filter=filter):
        yield from report_view(b.to_pylist())


def _days_filter(days: set[str]):
    """recorded_at on one of these UTC days ("unknown": no timestamp)."""
    expr = None
    field = pc.field("recorded_at")
    for d in sorted(days):
        if d == "unknown":
            e = field.is_null()
        else:
            start = datetime.fromisoformat(d).replace(tzinfo=timezone.utc)
            e = (field >= pa.scalar(start, pa.timestamp("us", tz="UTC"))) & (
                field < pa.scalar(start + timedelta(days=1), pa.timestamp("us", tz="UTC")))
        expr = e if expr is None else (expr | e)
    return expr


@dg.asset(
    key=RAG_REPORT.asset_key,
    group_name=GROUP,
    deps=[RAG_RUNS.asset_key],
    kinds={"delta", "gold"},
    description=RAG_REPORT.description + " Recounts only the days that got runs since the last refresh.",
)
def rag_report(context: dg.AssetExecutionContext, config: RagReportConfig, lake: DeltaLake):
    migrate_rag_runs(lake)
    now = datetime.now(timezone.utc)
    state = consumed_versions(lake, RAG_REPORT.path)
    ch = changes_since(lake, RAG_RUNS, state.get(RAG_RUNS.path), ["recorded_at"],
                       full=config.full_refresh or not lake.exists(RAG_REPORT))
    days: set[str] = set()
    if ch.version is None or ch.full:  # every run, counted a batch at a time
        rows = report_rows(_report_runs(lake), now=now)
        mode = "full"
    else:  # recount only the days that got runs since the last refresh
        for b in ch.batches():
            days.update(_day(ts) for ts in b.column("recorded_at").to_pylist())
        kept = [r for r in lake.read(RAG_REPORT).to_pylist() if r["day"] not in days]
        fresh = report_rows(_report_runs(lake, _days_filter(days)), now=now) if days else []
        rows = with_totals(kept + [r for r in fresh if r["day"] != "all"], now=now)
        mode = "incremental"
    result = lake.overwrite(RAG_REPORT, rows)
    record_consumed(lake, RAG_REPORT.path, {RAG_RUNS.path: ch.version}, mode)
    overall = {r["retrieval"]: r for r in rows if r["day"] == "all"}
    md = {
        **result.metadata(),
        "runs": sum(r["runs"] for r in overall.values()),
        "refresh_mode": mode,
        "refresh_reason": ch.reason,
        "days_recounted": ", ".join(sorted(days)) if mode == "incremental" else "all",
        "rag_runs_version": -1 if ch.version is None else ch.version,
        "overall": dg.MetadataValue.md(markdown(rows)),
        "per_day": dg.MetadataValue.md(markdown(rows, per_day=True)),
    }
    for scope, r in overall.items():
        md[f"pass_rate/{scope}"] = dg.MetadataValue.float(r["pass_rate"])
        md[f"escalation_rate/{scope}"] = dg.MetadataValue.float(r["escalation_rate"])
    return dg.MaterializeResult(metadata=md)


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
    bad = set(config.variants) - {"with_retrieval", "no_retrieval"}
    if bad:
        raise dg.Failure(f"unknown variants {sorted(bad)}")
    runtime = rag.runtime(lake)
    allow = runtime.config.allow_escalation if config.allow_escalation is None else config.allow_escalation
    if allow and not config.local_only and runtime.escalation is None:
        raise dg.Failure(ESCALATION_HELP)
    counts = {v: {"runs": 0, "passed": 0, "escalated": 0} for v in config.variants}
    spooled = 0
    recorded: list[dict] = []
    for t in tasks:
        for variant in config.variants:
            out = runtime.run(t["task"], local_only=config.local_only, allow_escalation=config.allow_escalation,
                              no_retrieval=variant == "no_retrieval", source=f"batch:{context.run.run_id}",
                              checks=t.get("checks") or ())
            c = counts[variant]
            c["runs"] += 1
            c["passed"] += bool(out.gate_passed)
            c["escalated"] += bool(out.escalated)
            spooled += not out.logged
            recorded.append(out.row)
            context.log.info(f"{variant} {out.run_id}: gate={'pass' if out.gate_passed else 'fail'} "
                             f"{out.failed_rules} path={out.escalation_path}")
    last = runtime.run_log.last_write
    md = {**(last.metadata() if last is not None else {}),
          "dagster/row_count": dg.MetadataValue.int(len(recorded) - spooled),
          "tasks": len(tasks), "runs": sum(c["runs"] for c in counts.values()), "spooled_runs": spooled,
          "delta_version": lake.version(RAG_RUNS) or 0,
          "recorded_run_ids": dg.MetadataValue.json([r["recorded_run_id"] for r in recorded]),
          "preview": dg.MetadataValue.md(runs_preview(recorded))}
    for v, c in counts.items():
        md[f"pass_rate/{v}"] = round(c["passed"] / c["runs"], 4) if c["runs"] else 0.0
        md[f"escalation_rate/{v}"] = round(c["escalated"] / c["runs"], 4) if c["runs"] else 0.0
    context.log_event(dg.AssetMaterialization(asset_key=RAG_RUNS.asset_key, metadata=md))
    return {"counts": counts, "spooled": spooled}


@dg.job(name="rag_batch_job", description="Run a batch of tasks (run config: tasks_path) through the rag runtime.")
def rag_batch_job():
    rag_batch()


rag_refresh_job = dg.define_asset_job(
    "rag_refresh_job", selection=[RAG_PLAYBOOKS.asset_key, RAG_REPORT.asset_key],
    description="Rebuild the playbooks (mining accepted runs) and the report.",
)


def runs_preview(rows: list[dict], n: int = 5) -> str:
    """A markdown preview of a few runs (task, model, gate, the start of the answer)."""
    if not rows:
        return "_no runs_"
    lines = ["| recorded_run_id | task | model_used | passed | reasons | answer |", "|---|---|---|---|---|---|"]

    def cell(v: str, n: int) -> str:
        v = " ".join(str(v or "").split())
        return (v[:n] + "…" if len(v) > n else v).replace("|", "\\|")

    for r in rows[:n]:
        vr = r["validation_result"]
        lines.append(f"| {r['recorded_run_id']} | {cell(r['input_task'], 60)} | {r['model_used']} "
                     f"| {vr['passed']} | {', '.join(vr['reasons'])} | {cell(r['model_response'], 80)} |")
    return "\n".join(lines)


def record_run_materialization(instance: dg.DagsterInstance, lake: DeltaLake, row: dict, logged: bool,
                               write=None) -> None:
    """Report one CLI run as a materialization of gold/rag_runs (downstream assets follow it).
    ``write``: the WriteResult of the append (table URI, Delta version, row counts)."""
    vr = row["validation_result"]
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=RAG_RUNS.asset_key,
        description=f"rag run {row['recorded_run_id']} ({row['source']})",
        metadata={
            **(write.metadata() if write is not None else {}),
            "recorded_run_id": row["recorded_run_id"],
            "source": row["source"],
            "passed": vr["passed"],
            "reasons": ", ".join(vr["reasons"]) or "-",
            "model_used": str(row["model_used"]),
            "escalation_path": dg.MetadataValue.json(row["escalation_path"]),
            "duration_ms": dg.MetadataValue.float(round(row["duration_ms"], 1)),
            "logged": logged,
            "delta_version": lake.version(RAG_RUNS) or 0,
            "table_uri": dg.MetadataValue.path(lake.uri(RAG_RUNS)),
            "preview": dg.MetadataValue.md(runs_preview([row])),
        },
    ))


ASSETS = [rag_playbooks, rag_runs, rag_report]
CHECKS = [rag_playbooks_embedded, rag_playbooks_valid]
JOBS = [rag_batch_job, rag_refresh_job]

defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, jobs=JOBS,
                      resources={"rag": RagResource(), "rag_embeddings": EmbeddingsResource()})
