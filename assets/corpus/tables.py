"""Table specs of the corpus family: the one schema definition of each table.

``replay_corpus`` keeps one snapshot per training section (keyed by a content hash) for
as long as the eviction budget allows; ``replay_sample`` is the latest recency-weighted
draw from it in TRL shape; ``replay_evictions`` logs every snapshot that was evicted.
"""

import pyarrow as pa
from deltalake import ColumnProperties

from resources.lake import TableSpec

TS = pa.timestamp("us", tz="UTC")

SECTION_TYPES = ("prose", "instruction", "preference")

REPLAY_CORPUS = TableSpec(
    layer="gold",
    name="replay_corpus",
    merge_keys=("section_id",),
    description=(
        "Long-lived store of past training rows (one snapshot per content hash) that later "
        "fine-tunes mix back in. content is the TRL row as JSON."
    ),
    schema=pa.schema(
        [
            # sha256 (first 32 hex chars) of section_type + canonical content JSON
            pa.field("section_id", pa.string(), nullable=False),
            pa.field("section_type", pa.string(), nullable=False),  # prose | instruction | preference
            # JSON of the TRL row: {"messages", "tools"?} or {"prompt", "chosen", "rejected", "tools"?}
            pa.field("content", pa.string(), nullable=False),
            pa.field("source", pa.string()),  # upstream table, e.g. gold/normalized_pairs
            pa.field("source_id", pa.string()),  # pair_id / example_id of the first sighting
            pa.field("added_at", TS, nullable=False),  # first materialization that saw it
            pa.field("last_seen_at", TS, nullable=False),  # latest materialization that saw it
            pa.field("weight", pa.float64(), nullable=False),  # base sampling weight
            pa.field("auto_mined", pa.bool_(), nullable=False),  # produced by the pipeline, not verbatim
            pa.field("byte_size", pa.int64(), nullable=False),  # UTF-8 bytes of content
            # 64-bit hash of section_id (corpus.id_hash64, as int64): the sampler draws each
            # row's random key from it and fetches the chosen rows by it
            pa.field("id_hash", pa.int64(), nullable=False),
        ]
    ),
    # Small data pages (~8 rows of content each) with an offset index: a reader can fetch a
    # sample's rows without decompressing the rest of the content column
    # (DeltaLake.read_keys). Content pages carry no min/max (useless for JSON, and large).
    # Snappy (delta-rs' default; WriterProperties alone would mean uncompressed) decodes
    # the chosen pages ~25% faster than zstd, which would store the corpus ~25% smaller.
    writer={
        "compression": "SNAPPY",
        "write_batch_size": 8,
        "data_page_size_limit": 4096,
        "column_properties": {"content": ColumnProperties(statistics_enabled="CHUNK", dictionary_enabled=False)},
    },
)

# The columns the sampler selects on (never the content).
INDEX_COLUMNS = ("id_hash", "section_type", "weight", "last_seen_at")
# The columns eviction plans on.
EVICTION_COLUMNS = ("section_id", "section_type", "byte_size", "added_at", "last_seen_at")

REPLAY_EVICTIONS = TableSpec(
    layer="gold",
    name="replay_evictions",
    description="Append-only log of replay snapshots evicted to keep the corpus within budget.",
    schema=pa.schema(
        [
            pa.field("section_id", pa.string(), nullable=False),
            pa.field("section_type", pa.string()),
            pa.field("byte_size", pa.int64()),
            pa.field("added_at", TS),
            pa.field("last_seen_at", TS),
            pa.field("evicted_at", TS, nullable=False),
            pa.field("reason", pa.string()),  # e.g. "max_bytes=…,max_rows=…"
            pa.field("run_id", pa.string()),
        ]
    ),
)

REPLAY_SAMPLE = TableSpec(
    layer="gold",
    name="replay_sample",
    description=(
        "Deterministic recency-weighted sample of the replay corpus in TRL shape "
        "(messages, or prompt/chosen/rejected, as JSON)."
    ),
    schema=pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),  # replay:<section_id>:<last_seen_at iso>
            pa.field("section_id", pa.string(), nullable=False),
            pa.field("section_type", pa.string(), nullable=False),
            pa.field("messages", pa.string()),  # JSON messages (prose / instruction)
            pa.field("prompt", pa.string()),  # JSON messages (preference)
            pa.field("chosen", pa.string()),  # JSON [assistant message]
            pa.field("rejected", pa.string()),  # JSON [assistant message]
            pa.field("tools", pa.string()),  # JSON tool schemas
            pa.field("source", pa.string()),
            pa.field("added_at", TS),
            pa.field("last_seen_at", TS, nullable=False),
            pa.field("base_weight", pa.float64()),
            pa.field("sample_weight", pa.float64(), nullable=False),  # weight used by the draw
            pa.field("rank", pa.int32(), nullable=False),  # 0 = largest A-Res key
            pa.field("scheme", pa.string(), nullable=False),
            pa.field("seed", pa.int64(), nullable=False),
            pa.field("reference_time", TS, nullable=False),
        ]
    ),
)


# The fixed tables of the family, upstream first (definitions.all_tables() lists them).
TABLES = (REPLAY_CORPUS, REPLAY_EVICTIONS, REPLAY_SAMPLE,)
