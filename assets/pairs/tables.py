"""Table specs of the pairs family.

JSON columns hold TRL conversational rows: `prompt` is a list of OpenAI messages,
`chosen`/`rejected` are lists of assistant messages, `tools` a list of OpenAI function
schemas.
"""

import pyarrow as pa

from resources.lake import TableSpec

TS = pa.timestamp("us", tz="UTC")

_PAIR_FIELDS = [
    pa.field("pair_id", pa.string(), nullable=False),  # content hash of (prompt, chosen, rejected)
    pa.field("session_key", pa.string(), nullable=False),
    pa.field("day", pa.string()),  # the session's day (the partition of preference_pairs)
    pa.field("step_id", pa.string(), nullable=False),
    pa.field("prompt", pa.string(), nullable=False),  # JSON messages
    pa.field("chosen", pa.string(), nullable=False),  # JSON [assistant message]
    pa.field("rejected", pa.string(), nullable=False),  # JSON [assistant message]
    pa.field("tools", pa.string()),  # JSON tool schemas
    pa.field("chosen_source", pa.string()),  # "original", a teacher name, or "recovery" (the agent's next turn)
    pa.field("rejected_source", pa.string()),
    pa.field("chosen_model", pa.string()),
    pa.field("rejected_model", pa.string()),
    pa.field("strategy", pa.string(), nullable=False),  # error_site | consensus | judge
    pa.field("score_chosen", pa.float64()),
    pa.field("score_rejected", pa.float64()),
    # "<class>:<rule>" of the rejected original's failure (recipes/failures.yaml), else null
    pa.field("rejected_failure", pa.string()),
    # first validity rule the candidate breaks (assets/pairs/validity.py); null = worth training on
    pa.field("invalid_rule", pa.string()),
    pa.field("invalid_reason", pa.string()),
    pa.field("created_at", TS),
]

PREFERENCE_PAIRS = TableSpec(
    layer="gold", name="preference_pairs", partition_by=("day",),
    description="DPO pair candidates from teacher disagreement (TRL conversational format, JSON "
                "columns); each carries the validity rule it breaks (invalid_rule, null when valid).",
    schema=pa.schema(_PAIR_FIELDS),
)

NORMALIZED_PAIRS = TableSpec(
    layer="gold", name="normalized_pairs", merge_keys=("pair_id",),
    description="Preference pairs kept by the data-juicer recipe.",
    schema=pa.schema(_PAIR_FIELDS + [
        pa.field("language", pa.string()),
        pa.field("recipe", pa.string()),
        pa.field("recipe_version", pa.string()),
        # hash of the recipe's exact-dedup key: duplicates are found across refreshes
        pa.field("text_hash", pa.string()),
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


# The fixed tables of the family, upstream first (definitions.all_tables() lists them).
TABLES = (PREFERENCE_PAIRS, NORMALIZED_PAIRS, PAIR_REJECTIONS,)
