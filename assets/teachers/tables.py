"""Table specs of the teacher family."""

import pyarrow as pa

from assets.traces.tables import DAY_FIELD
from resources.lake import TableSpec

TS = pa.timestamp("us", tz="UTC")

TEACHER_RESPONSES = TableSpec(
    layer="silver",
    name="teacher_responses",
    partition_by=("day",),
    merge_keys=("step_id", "teacher"),
    description="Each teacher's answer at each agent step, with cost, flags and provenance.",
    schema=pa.schema(
        [
            DAY_FIELD,
            pa.field("session_key", pa.string(), nullable=False),
            pa.field("step_id", pa.string(), nullable=False),
            pa.field("teacher", pa.string(), nullable=False),  # name in the teacher pool
            pa.field("provider", pa.string()),  # openai_compatible | local
            pa.field("model", pa.string()),
            pa.field("request_hash", pa.string(), nullable=False),  # content address of the request (cache key)
            pa.field("status", pa.string(), nullable=False),  # ok | error | skipped_budget
            pa.field("message", pa.string()),  # JSON: the assistant message (content + tool_calls)
            pa.field("text", pa.string()),
            pa.field("finish_reason", pa.string()),
            pa.field("flags", pa.list_(pa.string())),  # empty | refusal | hedge | truncated | invalid_tool_json ...
            pa.field("input_tokens", pa.int64()),
            pa.field("output_tokens", pa.int64()),
            pa.field("cost_usd", pa.float64()),
            pa.field("latency_ms", pa.float64()),
            pa.field("attempts", pa.int32()),
            pa.field("error", pa.string()),
            pa.field("cached", pa.bool_()),  # answered from the response cache in this run
            pa.field("created_at", TS),
        ]
    ),
)

TEACHER_CACHE = TableSpec(
    layer="silver",
    name="teacher_cache",
    merge_keys=("request_hash",),
    description=(
        "Content-addressed cache of the teachers' answers: request_hash -> answer, usage "
        "and cost. Append-only, written in small batches while a run is in flight; each answer is "
        "also spooled locally as it arrives (folded in after a kill -9); only successful answers "
        "are stored."
    ),
    schema=pa.schema(
        [
            pa.field("request_hash", pa.string(), nullable=False),
            pa.field("provider", pa.string()),
            pa.field("base_url", pa.string()),
            pa.field("model", pa.string()),
            pa.field("teacher", pa.string()),  # name of the teacher that first paid for it
            pa.field("status", pa.string(), nullable=False),  # ok
            pa.field("message", pa.string()),  # JSON assistant message
            pa.field("text", pa.string()),
            pa.field("finish_reason", pa.string()),
            pa.field("flags", pa.list_(pa.string())),
            pa.field("input_tokens", pa.int64()),
            pa.field("output_tokens", pa.int64()),
            pa.field("cost_usd", pa.float64()),
            pa.field("latency_ms", pa.float64()),
            pa.field("attempts", pa.int32()),
            pa.field("run_id", pa.string()),
            pa.field("created_at", TS, nullable=False),
        ]
    ),
)


# The fixed tables of the family, upstream first (definitions.all_tables() lists them).
TABLES = (TEACHER_RESPONSES, TEACHER_CACHE,)
