"""Table specs of the rag family: playbooks, the run log and its report."""

import pyarrow as pa

from resources.lake import TableSpec

TS = pa.timestamp("us", tz="UTC")
EMBEDDING_DIM = 384
RUN_SCHEMA_VERSION = "replay_run.v1"
MAX_RESPONSE_CHARS = 4000  # model_response is cut here in the log
LABELS = ("accepted", "partially_accepted", "rejected")

RAG_PLAYBOOKS = TableSpec(
    layer="gold",
    name="rag_playbooks",
    merge_keys=("playbook_id",),
    description=(
        "Playbooks for retrieval: what was done for a task (steps, tools, commands, files, outcome), "
        "derived from traces, accepted training data and accepted rag runs (mined), with a success "
        "label and a MiniLM embedding."
    ),
    schema=pa.schema(
        [
            pa.field("playbook_id", pa.string(), nullable=False),  # content address (source kind + source + content)
            pa.field("title", pa.string(), nullable=False),
            pa.field("task", pa.string(), nullable=False),
            pa.field("content", pa.string(), nullable=False),
            pa.field("tags", pa.list_(pa.string())),
            pa.field("source_kind", pa.string(), nullable=False),  # trace | sft | pair_chosen | pair_rejected | mined
            pa.field("session_key", pa.string()),
            pa.field("source_step_ids", pa.list_(pa.string())),
            pa.field("source_run_id", pa.string()),  # rag run a mined playbook came from
            pa.field("tools", pa.list_(pa.string())),
            pa.field("commands", pa.list_(pa.string())),
            pa.field("files_edited", pa.list_(pa.string())),
            pa.field("validation_steps", pa.list_(pa.string())),
            pa.field("n_steps", pa.int32()),
            pa.field("n_tool_errors", pa.int32()),
            pa.field("n_unresolved_errors", pa.int32()),
            pa.field("teacher_agreement", pa.float64()),  # share of the source's judged steps that teachers endorsed
            pa.field("success_score", pa.float64(), nullable=False),  # 0..1
            pa.field("label", pa.string(), nullable=False),  # accepted | partially_accepted | rejected
            pa.field("label_reasons", pa.list_(pa.string())),
            pa.field("content_hash", pa.string(), nullable=False),  # of the embedded text: embeddings are reused
            pa.field("embedding", pa.list_(pa.float32())),  # 384-d, L2-normalized (MiniLM)
            pa.field("embedding_model", pa.string()),
            pa.field("mined", pa.bool_(), nullable=False),
            pa.field("created_at", TS),
        ]
    ),
)

RAG_RUNS = TableSpec(
    layer="gold",
    name="rag_runs",
    description=(
        "Append-only log of every rag run (retrieval → context bundle → local model → deterministic "
        "gate → escalation): one replay_run.v1 record per run under the design's field names, with "
        "provenance columns beside them. `tracelake rag export-log` writes the records as JSONL."
    ),
    schema=pa.schema(
        [
            # ---- the replay_run.v1 record (names and meaning fixed by the design)
            pa.field("schema", pa.string(), nullable=False),  # "replay_run.v1"
            pa.field("input_task", pa.string(), nullable=False),  # the task (whitespace-normalized)
            pa.field("task_hash", pa.string(), nullable=False),  # sha256 hex of input_task (UTF-8)
            pa.field("retrieved_artifacts", pa.struct([pa.field("rag_ids", pa.list_(pa.string()))])),
            pa.field("context_bundle", pa.string()),  # JSON: the context bundle; null without retrieval
            pa.field("model_response", pa.string()),  # the final answer, cut at 4,000 characters
            pa.field("model_used", pa.string()),  # the model whose answer is model_response
            pa.field("escalation_path", pa.list_(pa.string())),  # models tried, in order
            pa.field("validation_result", pa.struct([pa.field("passed", pa.bool_()),
                                                     pa.field("reasons", pa.list_(pa.string()))])),
            pa.field("recorded_run_id", pa.string(), nullable=False),  # replay:<task_hash[:16]>:<epoch ms>
            pa.field("recorded_at", TS, nullable=False),  # ISO time in the JSONL record
            pa.field("duration_ms", pa.float64()),
            # ---- beside the record: provenance and timings
            pa.field("source", pa.string()),  # cli | batch:<dagster run id> | api
            pa.field("response_chars", pa.int64()),  # length of the full answer before the cut
            pa.field("retrieval_mode", pa.string()),  # lexical | embedding | hybrid | none
            pa.field("retrieved_scores", pa.list_(pa.float64())),
            pa.field("playbooks_version", pa.int64()),  # Delta version of rag_playbooks read
            pa.field("prompt", pa.string()),  # JSON: chat messages sent to the models
            pa.field("local_model", pa.string()),
            pa.field("escalation_model", pa.string()),
            pa.field("escalated", pa.bool_(), nullable=False),
            pa.field("attempts", pa.string()),  # JSON: every model call (stage, model, response, gate, error, ms)
            pa.field("validation_details", pa.string()),  # JSON: the final gate result with per-rule details
            pa.field("error", pa.string()),  # e.g. the escalation call failed
            pa.field("retrieval_ms", pa.float64()),
            pa.field("bundle_ms", pa.float64()),
            pa.field("local_ms", pa.float64()),
            pa.field("gate_ms", pa.float64()),
            pa.field("escalation_ms", pa.float64()),
            pa.field("local_only", pa.bool_(), nullable=False),
            pa.field("allow_escalation", pa.bool_(), nullable=False),
            pa.field("no_retrieval", pa.bool_(), nullable=False),
            pa.field("config", pa.string()),  # JSON: the (secret-free) runtime config
            pa.field("legacy_run_id", pa.string()),  # run_id of a row carried over from the old layout
        ]
    ),
)

RAG_REPORT = TableSpec(
    layer="gold",
    name="rag_report",
    description="Pass rate and escalation rate of rag runs, with vs without retrieval, overall and per day.",
    schema=pa.schema(
        [
            pa.field("day", pa.string(), nullable=False),  # YYYY-MM-DD or "all"
            pa.field("retrieval", pa.string(), nullable=False),  # with_retrieval | no_retrieval
            pa.field("runs", pa.int64(), nullable=False),
            pa.field("passed", pa.int64(), nullable=False),
            pa.field("escalated", pa.int64(), nullable=False),
            pa.field("passed_local", pa.int64(), nullable=False),  # passed without escalation
            pa.field("pass_rate", pa.float64()),
            pa.field("local_pass_rate", pa.float64()),
            pa.field("escalation_rate", pa.float64()),
            pa.field("created_at", TS),
        ]
    ),
)

TABLES = [RAG_PLAYBOOKS, RAG_RUNS, RAG_REPORT]


# The fixed tables of the family, upstream first (definitions.all_tables() lists them).
TABLES = (RAG_PLAYBOOKS, RAG_RUNS, RAG_REPORT,)
