"""Table specs of the examples family (the SFT / KTO / SDPO training sets).

JSON columns hold TRL conversational rows: `prompt`/`messages` are lists of OpenAI
messages, `completion` a list of assistant messages, `tools` a list of OpenAI function
schemas.
"""

import pyarrow as pa

from assets.traces.tables import DAY_FIELD
from resources.lake import TableSpec

TS = pa.timestamp("us", tz="UTC")

SFT_EXAMPLES = TableSpec(
    layer="gold", name="sft_examples", partition_by=("day",),
    description="TRL conversational SFT rows (messages with tool calls, tools column).",
    schema=pa.schema([
        pa.field("example_id", pa.string(), nullable=False),
        DAY_FIELD,
        pa.field("session_key", pa.string(), nullable=False),
        pa.field("step_id", pa.string()),
        pa.field("messages", pa.string(), nullable=False),  # JSON messages ending with the assistant turn
        pa.field("tools", pa.string()),
        pa.field("source", pa.string()),  # original | teacher name
        pa.field("created_at", TS),
    ]),
)

KTO_EXAMPLES = TableSpec(
    layer="gold", name="kto_examples", partition_by=("day",),
    description="TRL KTO rows: prompt, completion, label.",
    schema=pa.schema([
        pa.field("example_id", pa.string(), nullable=False),
        DAY_FIELD,
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
    layer="gold", name="sdpo_examples", partition_by=("day",),
    description="SDPO self-distillation sites with a hint-injected context: by default the recovery "
                "turn (the assistant turn right after a failed tool result), hint = the error excerpt; "
                "{trace_id, turns = prompt + completion, final_reward}.",
    schema=pa.schema([
        pa.field("example_id", pa.string(), nullable=False),
        DAY_FIELD,
        pa.field("session_key", pa.string(), nullable=False),
        pa.field("step_id", pa.string(), nullable=False),
        pa.field("trace_id", pa.string()),  # the agent session (session id) the turns come from
        pa.field("site", pa.string()),  # recovery | failing_turn
        pa.field("prompt", pa.string(), nullable=False),  # JSON messages before the site's turn
        pa.field("hinted_prompt", pa.string(), nullable=False),  # same, with the hint injected
        pa.field("completion", pa.string(), nullable=False),  # JSON [assistant message] (the original turn)
        pa.field("hint", pa.string()),
        pa.field("hint_generator", pa.string()),  # registered name of the hint generator
        pa.field("error_kind", pa.string()),
        pa.field("failure_class", pa.string()),  # mistake | informative | external (recipes/failures.yaml)
        pa.field("final_reward", pa.float64()),  # 0.0 unresolved session; else 1 / (1 + later mistakes)
        pa.field("tools", pa.string()),
        pa.field("created_at", TS),
    ]),
)


# The fixed tables of the family, upstream first (definitions.all_tables() lists them).
TABLES = (SFT_EXAMPLES, KTO_EXAMPLES, SDPO_EXAMPLES,)
