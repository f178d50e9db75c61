"""Table specs of the student family: the held-out split, training runs, evaluations, draft heads.

Artifacts (LoRA adapters, tokenizers, draft-head weights) are files, not tables: they live
under ``<lake root>/artifacts/student/<run_id>/`` next to the tables (local or object
store) and each run row records their URI.
"""

import pyarrow as pa

from resources.lake import TableSpec

TS = pa.timestamp("us", tz="UTC")

SPLIT_VERSION = "session-sha256.v1"
RECIPE_VERSION = "student.v1"  # bump when the training recipe (data rendering, losses) changes
DRAFT_VERSION = "draft-head.v1"

SESSION_SPLIT = TableSpec(
    layer="gold",
    name="session_split",
    merge_keys=("session_key",),
    description=(
        "Held-out split by session: a deterministic hash of (seed, session_key) sends each session "
        "to train or eval; no training row ever comes from an eval session."
    ),
    schema=pa.schema([
        pa.field("session_key", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),  # train | eval
        pa.field("bucket", pa.float64(), nullable=False),  # hash → [0, 1); eval when < eval_share
        pa.field("forced", pa.bool_(), nullable=False),  # moved so that neither side is empty
        pa.field("eval_share", pa.float64(), nullable=False),
        pa.field("seed", pa.string(), nullable=False),
        pa.field("split_version", pa.string(), nullable=False),
        pa.field("n_sft", pa.int32()),  # rows of the session in each training source
        pa.field("n_pairs", pa.int32()),
        pa.field("n_kto", pa.int32()),
        pa.field("created_at", TS),
    ]),
)

STUDENT_RUNS = TableSpec(
    layer="gold",
    name="student_runs",
    merge_keys=("run_id",),
    description=(
        "One row per student training run (TRL SFT → DPO [→ KTO], LoRA): data versions, recipe "
        "version, hyperparameters, artifact URI and training metrics."
    ),
    schema=pa.schema([
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("dagster_run_id", pa.string()),
        pa.field("base_model", pa.string(), nullable=False),
        pa.field("device", pa.string(), nullable=False),
        pa.field("dtype", pa.string(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("recipe_version", pa.string(), nullable=False),
        pa.field("stages", pa.string(), nullable=False),  # e.g. "sft,dpo"
        pa.field("hyperparameters", pa.string(), nullable=False),  # JSON
        pa.field("data_versions", pa.string(), nullable=False),  # JSON {table: delta version}
        pa.field("split_version", pa.string()),
        pa.field("n_train_sessions", pa.int32()),
        pa.field("n_sft_rows", pa.int32()),
        pa.field("n_pair_rows", pa.int32()),
        pa.field("n_kto_rows", pa.int32()),
        pa.field("artifact_uri", pa.string(), nullable=False),
        pa.field("metrics", pa.string(), nullable=False),  # JSON: losses per stage, steps, seconds
        pa.field("train_seconds", pa.float64()),
        pa.field("created_at", TS),
    ]),
)

STUDENT_EVALS = TableSpec(
    layer="gold",
    name="student_evals",
    merge_keys=("eval_id",),
    description=(
        "Base vs trained student on the held-out sessions, measured in the same run: chosen-answer "
        "log-likelihood, pair accuracy, tool-call validity, RAG gate pass rate."
    ),
    schema=pa.schema([
        pa.field("eval_id", pa.string(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),  # the student_runs row evaluated
        pa.field("dagster_run_id", pa.string()),
        pa.field("base_model", pa.string(), nullable=False),
        pa.field("seed", pa.int64()),
        pa.field("n_eval_sessions", pa.int32()),
        pa.field("n_answers", pa.int32()),
        pa.field("n_pairs", pa.int32()),
        pa.field("pair_source", pa.string()),  # normalized_pairs | mined:<formats> | both
        pa.field("n_tool_prompts", pa.int32()),
        pa.field("n_rag_tasks", pa.int32()),
        pa.field("ll_base", pa.float64()),  # mean per-token log-likelihood of the chosen answers
        pa.field("ll_trained", pa.float64()),
        pa.field("ll_gain", pa.float64()),
        pa.field("pair_acc_base", pa.float64()),  # share of pairs where the policy's logp(chosen) > logp(rejected)
        pa.field("pair_acc_trained", pa.float64()),
        pa.field("reward_acc", pa.float64()),  # share with DPO implicit reward margin > 0 (vs the DPO reference: the SFT model, or the base)
        pa.field("reward_margin", pa.float64()),
        pa.field("tool_valid_base", pa.float64()),
        pa.field("tool_valid_trained", pa.float64()),
        pa.field("rag_pass_base", pa.float64()),
        pa.field("rag_pass_trained", pa.float64()),
        pa.field("details", pa.string()),  # JSON: per-pair / per-task outcomes, timings
        pa.field("eval_seconds", pa.float64()),
        pa.field("created_at", TS),
    ]),
)

DRAFT_HEADS = TableSpec(
    layer="gold",
    name="draft_heads",
    merge_keys=("run_id",),
    description=(
        "EAGLE-style draft heads trained on capture shards: top-1 agreement with the verifier and "
        "accepted length of a 4-token draft chain on held-out prompts, against a bigram baseline."
    ),
    schema=pa.schema([
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("dagster_run_id", pa.string()),
        pa.field("shard_table", pa.string(), nullable=False),
        pa.field("shard_version", pa.int64()),
        pa.field("verifier_id", pa.string(), nullable=False),
        pa.field("device", pa.string()),
        pa.field("seed", pa.int64()),
        pa.field("draft_version", pa.string(), nullable=False),
        pa.field("hyperparameters", pa.string(), nullable=False),  # JSON
        pa.field("n_train_prompts", pa.int32()),
        pa.field("n_eval_prompts", pa.int32()),
        pa.field("n_train_tokens", pa.int64()),
        pa.field("n_eval_positions", pa.int64()),
        pa.field("top1_agreement", pa.float64()),
        pa.field("baseline_top1_agreement", pa.float64()),
        pa.field("accept_len", pa.float64()),  # mean accepted draft tokens per chain (0..chain)
        pa.field("baseline_accept_len", pa.float64()),
        pa.field("chain", pa.int32()),
        pa.field("artifact_uri", pa.string()),
        pa.field("metrics", pa.string()),  # JSON: losses, per-depth acceptance, timings
        pa.field("train_seconds", pa.float64()),
        pa.field("created_at", TS),
    ]),
)

TABLES = (SESSION_SPLIT, STUDENT_RUNS, STUDENT_EVALS, DRAFT_HEADS)
