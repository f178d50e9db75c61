"""Table specs of the trace family: the one schema definition of each table."""

import pyarrow as pa

from resources.lake import TableSpec

TS = pa.timestamp("us", tz="UTC")

# Session tables are partitioned by the UTC day their session started ("YYYY-MM-DD", the
# Dagster partition key) and written per (day, session) (resources.lake.SessionScope).
# The pure builders leave it unset (the assets stamp it from the registry); a write of a
# row whose day is outside the run's days is refused (DeltaLake.replace_sessions).
DAY_FIELD = pa.field("day", pa.string())

RAW_TRACES = TableSpec(
    layer="bronze",
    name="raw_traces",
    partition_by=("day",),
    description="One row per source line of a session file, lossless except for scrubbed secrets.",
    schema=pa.schema(
        [
            DAY_FIELD,
            pa.field("session_key", pa.string(), nullable=False),
            pa.field("source_file", pa.string(), nullable=False),
            pa.field("source_format", pa.string()),
            pa.field("line_no", pa.int64(), nullable=False),  # 1-based
            pa.field("byte_offset", pa.int64(), nullable=False),
            pa.field("byte_len", pa.int64(), nullable=False),
            pa.field("record_type", pa.string()),
            pa.field("raw", pa.string()),  # scrubbed text of the line (no trailing newline)
            pa.field("raw_bytes", pa.binary()),  # only for lines that are not valid UTF-8 (scrubbed)
            pa.field("quarantined", pa.bool_(), nullable=False),
            pa.field("quarantine_reason", pa.string()),
            pa.field("secrets_scrubbed", pa.int32(), nullable=False),  # secrets redacted in the line
            # personal data pseudonymized in the line (null: rows of lakes older than the column,
            # whose secrets_scrubbed counted both)
            pa.field("personal_data_replaced", pa.int32()),
            pa.field("ingested_at", TS, nullable=False),
        ]
    ),
)

TRACE_TURNS = TableSpec(
    layer="silver",
    name="trace_turns",
    partition_by=("day",),
    description="Normalized turns of every supported transcript format (one row per message).",
    schema=pa.schema(
        [
            DAY_FIELD,
            pa.field("session_key", pa.string(), nullable=False),
            pa.field("session_id", pa.string()),
            pa.field("source_format", pa.string(), nullable=False),
            pa.field("turn_id", pa.string(), nullable=False),  # unique in the table
            pa.field("turn_index", pa.int32(), nullable=False),  # order within the session file
            pa.field("parent_turn_id", pa.string()),
            pa.field("role", pa.string(), nullable=False),  # system | user | assistant | tool | meta
            pa.field("kind", pa.string(), nullable=False),  # message | tool_result | compaction | summary | unknown ...
            pa.field("content", pa.string()),  # visible text
            pa.field("thinking", pa.string()),  # reasoning kept apart from visible text
            pa.field("tool_calls", pa.string()),  # JSON: OpenAI tool_calls list
            pa.field("tool_call_id", pa.string()),  # on tool results: the call answered
            pa.field("tool_name", pa.string()),
            pa.field("tool_error", pa.bool_()),
            pa.field("error_kind", pa.string()),
            pa.field("is_sidechain", pa.bool_()),
            pa.field("agent_id", pa.string()),
            pa.field("parent_session_id", pa.string()),
            pa.field("is_compact_summary", pa.bool_()),
            pa.field("is_compaction_boundary", pa.bool_()),
            pa.field("record_type", pa.string()),
            pa.field("model", pa.string()),
            pa.field("message_id", pa.string()),
            pa.field("input_tokens", pa.int64()),
            pa.field("output_tokens", pa.int64()),
            pa.field("cache_read_tokens", pa.int64()),
            pa.field("cache_creation_tokens", pa.int64()),
            pa.field("timestamp", TS),
            pa.field("source_lines", pa.list_(pa.int64())),
            pa.field("extra", pa.string()),  # JSON of fields not mapped above
        ]
    ),
)

AGENT_STEPS = TableSpec(
    layer="silver",
    name="agent_steps",
    partition_by=("day",),
    description="One row per assistant step: its context in OpenAI chat format, tools and original response.",
    schema=pa.schema(
        [
            DAY_FIELD,
            pa.field("session_key", pa.string(), nullable=False),
            pa.field("step_id", pa.string(), nullable=False),  # unique in the table
            pa.field("session_id", pa.string()),
            pa.field("source_format", pa.string(), nullable=False),
            pa.field("turn_id", pa.string(), nullable=False),
            pa.field("step_index", pa.int32(), nullable=False),
            pa.field("messages", pa.string(), nullable=False),  # JSON: context before the step (OpenAI messages)
            pa.field("tools", pa.string()),  # JSON: list of OpenAI tool schemas available
            pa.field("response", pa.string(), nullable=False),  # JSON: the original assistant message
            pa.field("response_text", pa.string()),
            pa.field("is_error_site", pa.bool_(), nullable=False),  # right after a failed tool result
            pa.field("error_kind", pa.string()),  # kind of that failure
            pa.field("error_text", pa.string()),  # the failed tool result's text (SDPO hint)
            pa.field("caused_error", pa.bool_(), nullable=False),  # a tool call of this step failed
            pa.field("caused_error_kind", pa.string()),
            pa.field("model", pa.string()),
            pa.field("is_sidechain", pa.bool_()),
            pa.field("n_context_messages", pa.int32()),
            pa.field("context_chars", pa.int64()),
        ]
    ),
)

SESSION_FILES = TableSpec(
    layer="bronze",
    name="session_files",
    merge_keys=("session_key",),
    description=(
        "The session-file registry: every file the sensor handed to a run, its day (the UTC date "
        "its session started), size, mtime, head fingerprint, format and status. A backfill of a "
        "day re-reads exactly the files registered for that day."
    ),
    schema=pa.schema(
        [
            pa.field("session_key", pa.string(), nullable=False),  # path under the root, "/" as "~"
            pa.field("path", pa.string(), nullable=False),  # path under the watched directory
            pa.field("format", pa.string()),  # transcript format detected from the content
            pa.field("day", pa.string(), nullable=False),  # partition: UTC start date of the session
            pa.field("prev_day", pa.string()),  # the day it had before (a replaced file), this run only
            pa.field("started_at", TS),  # first timestamp in the file (null: none, day from mtime)
            pa.field("size", pa.int64(), nullable=False),  # bytes read (stat at read time)
            pa.field("mtime_ns", pa.int64(), nullable=False),
            pa.field("head_len", pa.int64(), nullable=False),  # bytes hashed into head_fp
            pa.field("head_fp", pa.string(), nullable=False),  # tells appended from rewritten
            pa.field("lines", pa.int64()),
            pa.field("status", pa.string(), nullable=False),  # ingested | empty | not_session | unreadable | vanished | deleted
            pa.field("change", pa.string(), nullable=False),  # new | appended | rewritten | deleted | backfill
            pa.field("reason", pa.string()),  # what was wrong (unreadable, not a session ...)
            pa.field("run_id", pa.string(), nullable=False),  # the run that last touched it
            pa.field("first_seen_at", TS, nullable=False),
            pa.field("last_seen_at", TS, nullable=False),
        ]
    ),
)

# The fixed tables of the family, upstream first (definitions.all_tables() lists them).
TABLES = (SESSION_FILES, RAW_TRACES, TRACE_TURNS, AGENT_STEPS,)
