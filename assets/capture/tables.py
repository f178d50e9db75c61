"""Table specs of the capture family: the prompt pool, the capture shards, the rejections.

Capture shards (schema version 1)
---------------------------------
One row per token a verifier read or produced. Delta has no fixed-size list and no
float16, so the per-token tensors are stored as fixed-width ``binary`` values holding
little-endian bytes:

=================  ==========================  ===========================
column             bytes per row               decodes to
=================  ==========================  ===========================
``hidden_state``   2·H  (IEEE fp16, ``<f2``)    ``float16[H]``
``top_token_ids``  4·K  (``<i4``)               ``int32[K]`` (descending prob)
``top_probs``      2·K  (IEEE fp16, ``<f2``)    ``float16[K]``
=================  ==========================  ===========================

These round-trip bit-exactly, keep hidden states at 2 bytes per element and load as one
``numpy.frombuffer`` over the Arrow data buffer (no per-row Python, see reader.py). They
are written without dictionary encoding, without statistics and with
``DELTA_LENGTH_BYTE_ARRAY`` (the constant lengths cost ~nothing, PLAIN would add 4 bytes
per value), zstd-compressed (fp16 hidden states shrink a few %).

Isolation: one Delta table per (verifier id, compute dtype, schema version), at
``gold/capture_shards__<verifier>__<dtype>__v<N>`` (:func:`capture_spec`); the Dagster
asset key stays ``["gold", "capture_shards"]``. What a table holds is recorded twice:

* table properties (``tracelake.capture.*``: schema_version, verifier_id, dtype, top_k,
  hidden_size, hidden_layer, block_size, encodings), set when the table is created and
  checked before every append and every read (a mismatch refuses with a clear error);
* the commit info of every write (Delta ``custom_metadata``: the same keys plus run id,
  verifier path, device, max_new_tokens, tokens and sequences written), visible in
  ``DeltaTable.history()``.
"""

from __future__ import annotations

import re

import dagster as dg
import pyarrow as pa
from deltalake import ColumnProperties

from resources.lake import TableSpec

TS = pa.timestamp("us", tz="UTC")

SCHEMA_VERSION = 1
CAPTURE_ASSET_KEY = dg.AssetKey(["gold", "capture_shards"])
PROP_PREFIX = "tracelake.capture."

# Encodings of the binary columns (recorded as table properties).
HIDDEN_ENCODING = "float16-le"
TOP_IDS_ENCODING = "int32-le"
TOP_PROBS_ENCODING = "float16-le"
BINARY_COLUMNS = ("hidden_state", "top_token_ids", "top_probs")

DOMAINS = ("chat-en", "chat-zh", "code", "math", "long-context", "multi-turn", "tool-call")

PROMPT_POOL = TableSpec(
    layer="gold",
    name="prompt_pool",
    merge_keys=("prompt_id",),
    description="Prompts for verifier capture, composed by domain quotas (recipes/capture_quotas.yaml).",
    schema=pa.schema([
        pa.field("prompt_id", pa.string(), nullable=False),  # sha256 of the canonical messages (+tools)
        pa.field("domain", pa.string(), nullable=False),
        pa.field("language", pa.string(), nullable=False),  # ISO 639-1, "und" if undetermined / code only
        pa.field("messages", pa.string(), nullable=False),  # JSON OpenAI messages (full conversation)
        pa.field("tools", pa.string()),  # JSON tool schemas
        pa.field("system_prompt_hash", pa.string()),  # sha256 of the system message(s), null if none
        pa.field("n_chars", pa.int64(), nullable=False),
        pa.field("n_messages", pa.int32(), nullable=False),
        pa.field("n_user_turns", pa.int32(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # normalized_pairs | sft_examples | file:<name>
        pa.field("source_id", pa.string()),  # pair_id / example_id / line number
        pa.field("selection_rank", pa.int32(), nullable=False),  # order of selection within the domain
        pa.field("domain_quota", pa.int32(), nullable=False),
        pa.field("domain_available", pa.int32(), nullable=False),  # candidates after filters + dedup
        pa.field("domain_shortfall", pa.int32(), nullable=False),  # quota - selected (0 when met)
        pa.field("pool_seed", pa.int64(), nullable=False),
        pa.field("config_hash", pa.string(), nullable=False),  # sha256 of the quota config
        pa.field("created_at", TS),
    ]),
)

CAPTURE_FIELDS = [
    pa.field("prompt_id", pa.string(), nullable=False),
    pa.field("domain", pa.string(), nullable=False),
    pa.field("language", pa.string(), nullable=False),
    pa.field("system_prompt_hash", pa.string()),
    pa.field("sequence_index", pa.int32(), nullable=False),
    pa.field("position_in_sequence", pa.int32(), nullable=False),
    pa.field("position_in_block", pa.int32(), nullable=False),
    pa.field("block_index", pa.int32(), nullable=False),
    pa.field("cache_logical_size", pa.int32(), nullable=False),
    pa.field("token_id", pa.int32(), nullable=False),
    pa.field("is_generated", pa.bool_(), nullable=False),
    pa.field("top_token_ids", pa.binary(), nullable=False),  # K x int32 LE
    pa.field("top_probs", pa.binary(), nullable=False),  # K x float16 LE
    pa.field("hidden_state", pa.binary(), nullable=False),  # H x float16 LE
    pa.field("verifier_top1_prob", pa.float32(), nullable=False),
    pa.field("filter_reason", pa.string()),  # null = kept; else ";"-joined post-filter reasons
    pa.field("run_id", pa.string()),
]
CAPTURE_SCHEMA = pa.schema(CAPTURE_FIELDS)

CAPTURE_REJECTIONS = TableSpec(
    layer="gold",
    name="capture_rejections",
    merge_keys=("shard_table", "prompt_id", "sequence_index"),
    description="Every captured sequence the post-filter flagged or dropped, with its statistics.",
    schema=pa.schema([
        pa.field("shard_table", pa.string(), nullable=False),  # capture_shards__<verifier>__<dtype>__vN
        pa.field("prompt_id", pa.string(), nullable=False),
        pa.field("sequence_index", pa.int32(), nullable=False),
        pa.field("action", pa.string(), nullable=False),  # flagged | dropped
        pa.field("reason", pa.string(), nullable=False),  # ";"-joined: low_confidence, repetition, eos_failure
        pa.field("stats", pa.string()),  # JSON: mean_top1, repetition, ended_with_eos, n_tokens...
        pa.field("n_tokens", pa.int32()),
        pa.field("run_id", pa.string()),
        pa.field("created_at", TS),
    ]),
)


def slug(value: str) -> str:
    """A path-safe id: lowercase [a-z0-9-], no '__' (our name separator)."""
    s = re.sub(r"[^a-z0-9-]+", "-", value.strip().lower()).strip("-")
    s = re.sub(r"-{2,}", "-", s)
    if not s:
        raise ValueError(f"empty id from {value!r}")
    return s


DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "torch.float32": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16", "torch.float16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16", "torch.bfloat16": "bfloat16",
}


def dtype_name(dtype) -> str:
    key = str(dtype).lower()
    if key not in DTYPE_NAMES:
        raise ValueError(f"unknown compute dtype {dtype!r} (expected one of float32, float16, bfloat16)")
    return DTYPE_NAMES[key]


def shard_table_name(verifier_id: str, dtype: str, schema_version: int = SCHEMA_VERSION) -> str:
    return f"capture_shards__{slug(verifier_id)}__{dtype_name(dtype)}__v{int(schema_version)}"


# Binary tensor columns: no dictionary, no statistics, DELTA_LENGTH_BYTE_ARRAY; zstd level 1.
SHARD_WRITER = {
    "compression": "ZSTD",
    "compression_level": 1,
    "column_properties": {c: ColumnProperties(dictionary_enabled=False, statistics_enabled="NONE",
                                              encoding="DELTA_LENGTH_BYTE_ARRAY") for c in BINARY_COLUMNS},
}


def capture_spec(verifier_id: str, dtype: str, schema_version: int = SCHEMA_VERSION) -> TableSpec:
    """The shard table of one verifier, compute dtype and schema version."""
    return TableSpec(
        layer="gold",
        name=shard_table_name(verifier_id, dtype, schema_version),
        schema=CAPTURE_SCHEMA,
        merge_keys=("prompt_id", "sequence_index", "position_in_sequence"),
        writer=SHARD_WRITER,
        description=(
            f"Per-token verifier capture (schema v{schema_version}) of {verifier_id} in "
            f"{dtype_name(dtype)}: top-k ids/probs and one fp16 hidden layer per token."
        ),
    )


# The fixed tables of the family, upstream first (definitions.all_tables() lists them).
TABLES = (PROMPT_POOL, CAPTURE_REJECTIONS,)  # + one capture_spec(...) table per verifier, dtype and schema version
