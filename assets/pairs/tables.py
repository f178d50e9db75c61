"""Table specs of the pairs / training-set family.

JSON columns hold TRL conversational rows: `prompt`/`messages` are lists of OpenAI
messages, `chosen`/`rejected`/`completion` are lists of assistant messages, `tools`
a list of OpenAI function schemas.
"""

import pyarrow as pa

from resources.lake import TableSpec

TS = pa.timestamp("us", tz="UTC")

_PAIR_FIELDS = [
    pa.field("pair_id", pa.string(), nullable=False),  # content hash of (prompt, chosen, rejected)
    pa.field("session_key", pa.string(), nullable=False),
    pa.field("step_id", pa.string(), nullable=False),
    pa.field("prompt", pa.string(), nullable=False),  # JSON messages
    pa.field("chosen", pa.string(), nullable=False),  # JSON [assistant message]
    pa.field("rejected", pa.string(), nullable=False),  # JSON [assistant message]
    pa.field("tools", pa.string()),  # JSON tool schemas
    pa.field("chosen_source", pa.string()),  # "original" or a teacher name
    pa.field("rejected_source", pa.string()),
    pa.field("chosen_model", pa.string()),
    pa.field("rejected_model", pa.string()),
    pa.field("strategy", pa.string(), nullable=False),  # error_site | consensus | judge
    pa.field("score_chosen", pa.float64()),
    pa.field("score_rejected", pa.float64()),
    pa.field("created_at", TS),
]

PREFERENCE_PAIRS = TableSpec(
    layer="gold", name="preference_pairs", partition_by=("session_key",),
    description="DPO pairs from teacher disagreement (TRL conversational format, JSON columns).",
    schema=pa.schema(_PAIR_FIELDS),
)

NORMALIZED_PAIRS = TableSpec(
    layer="gold", name="normalized_pairs", merge_keys=("pair_id",),
    description="Preference pairs kept by the data-juicer recipe.",
    schema=pa.schema(_PAIR_FIELDS + [
        pa.field("language", pa.string()),
        pa.field("recipe", pa.string()),
        pa.field("recipe_version", pa.string()),
    ]),
)

PAIR_REJECTIONS = TableSpec(
    layer="gold", name="pair_rejections", merge_keys=("pair_id",),
    description="Every pair a recipe dropped, with the op and the statistic that dropped it.",
    schema=pa.schema(_PAIR_FIELDS + [
        pa.field("op", pa.string(), nullable=False),
        pa.field("reason", pa.string()),
        pa.field("stats", pa.string()),  # JSON of the op's statistics for this row
        pa.field("recipe", pa.string()),
        pa.field("recipe_version", pa.string()),
    ]),
)

SFT_EXAMPLES = TableSpec(
    layer="gold", name="sft_examples", partition_by=("session_key",),
    description="TRL conversational SFT rows (messages with tool calls, tools column).",
    schema=pa.schema([
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("session_key", pa.string(), nullable=False),
        pa.field("step_id", pa.string()),
        pa.field("messages", pa.string(), nullable=False),  # JSON messages ending with the assistant turn
        pa.field("tools", pa.string()),
        pa.field("source", pa.string()),  # original | teacher name
        pa.field("created_at", TS),
    ]),
)

KTO_EXAMPLES = TableSpec(
    layer="gold", name="kto_examples", partition_by=("session_key",),
    description="TRL KTO rows: prompt, completion, label.",
    schema=pa.schema([
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("session_key", pa.string(), nullable=False),
        pa.field("step_id", pa.string()),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("completion", pa.string(), nullable=False),
        pa.field("label", pa.bool_(), nullable=False),
        pa.field("tools", pa.string()),
        pa.field("source", pa.string()),
        pa.field("created_at", TS),
    ]),
)

SDPO_EXAMPLES = TableSpec(
    layer="gold", name="sdpo_examples", partition_by=("session_key",),
    description="Error sites with a hint-injected context (SDPO).",
    schema=pa.schema([
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("session_key", pa.string(), nullable=False),
        pa.field("step_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),  # JSON messages up to the failed step
        pa.field("hinted_prompt", pa.string(), nullable=False),  # same, with the hint injected
        pa.field("completion", pa.string(), nullable=False),  # JSON [assistant message] (original, failed)
        pa.field("hint", pa.string()),
        pa.field("error_kind", pa.string()),
        pa.field("tools", pa.string()),
        pa.field("created_at", TS),
    ]),
)
