"""Load capture shards back into torch tensors, without per-row Python work.

``load_batch(lake, verifier_id, dtype)`` opens ``gold/capture_shards__<verifier>__<dtype>__v1``
(refusing a table of another schema version), reads it through ``lake.read`` as Arrow,
and decodes each fixed-width binary column with one ``numpy.frombuffer`` over the Arrow
data buffer per chunk (offsets are checked to be exactly ``width`` apart, vectorized),
then ``torch.from_numpy``. Rows come sorted by (prompt_id, sequence_index,
position_in_sequence); ``sequence_offsets`` (CSR style, S+1 entries) splits them into
sequences, ``sequence_id`` numbers them 0..S-1 in that order.

By default only kept rows are loaded (``filter_reason`` is null); ``include_flagged=True``
loads the sequences the post-filter flagged too.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from assets.capture.shards import CaptureTableMismatch, open_shard_table
from assets.capture.tables import SCHEMA_VERSION
from resources.lake import DeltaLake

_INT_COLUMNS = ("token_id", "sequence_index", "position_in_sequence", "position_in_block",
                "block_index", "cache_logical_size")


def binary_matrix(col: pa.Array | pa.ChunkedArray, width: int, dtype: str) -> np.ndarray:
    """Fixed-width binary values → a [n, width/itemsize] array (one memcpy per chunk)."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    item = np.dtype(dtype).itemsize
    parts = []
    for ch in chunks:
        if not (pa.types.is_binary(ch.type) or pa.types.is_large_binary(ch.type)):
            ch = ch.cast(pa.binary())  # binary_view / fixed_size_binary → offsets + data
        n = len(ch)
        if n == 0:
            continue
        if ch.null_count:
            raise ValueError("null tensor values in a capture column")
        bufs = ch.buffers()
        off_t = np.int64 if pa.types.is_large_binary(ch.type) else np.int32
        offsets = np.frombuffer(bufs[1], dtype=off_t, count=n + 1, offset=ch.offset * np.dtype(off_t).itemsize)
        if not np.all(np.diff(offsets) == width):
            raise CaptureTableMismatch(f"tensor values are not all {width} bytes wide")
        data = np.frombuffer(bufs[2], dtype=np.uint8, count=n * width, offset=int(offsets[0]))
        parts.append(data.view(dtype).reshape(n, width // item))
    if not parts:
        return np.empty((0, width // item), dtype=dtype)
    return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()


def load_table(lake: DeltaLake, verifier_id: str, dtype: str, prompt_ids: Iterable[str] | None = None,
               *, include_flagged: bool = False, schema_version: int = SCHEMA_VERSION):
    """(Arrow table sorted by sequence and position, capture properties)."""
    spec, _dt, props = open_shard_table(lake, verifier_id, dtype, schema_version)
    expr = None
    if prompt_ids is not None:
        ids = sorted(set(prompt_ids))
        expr = pc.field("prompt_id").isin(ids)
    if not include_flagged:
        kept = pc.field("filter_reason").is_null()
        expr = kept if expr is None else expr & kept
    table = lake.read(spec, filter=expr)
    table = table.sort_by([("prompt_id", "ascending"), ("sequence_index", "ascending"),
                           ("position_in_sequence", "ascending")])
    return table, props


def to_tensors(table: pa.Table, props: dict[str, str]) -> dict:
    import torch

    k, h = int(props["top_k"]), int(props["hidden_size"])
    out = {}
    for c in _INT_COLUMNS:
        out[c] = torch.from_numpy(table.column(c).to_numpy().astype(np.int64))
    out["is_generated"] = torch.from_numpy(table.column("is_generated").to_numpy(zero_copy_only=False).astype(bool))
    out["verifier_top1_prob"] = torch.from_numpy(table.column("verifier_top1_prob").to_numpy().astype(np.float32))
    out["top_token_ids"] = torch.from_numpy(binary_matrix(table.column("top_token_ids"), 4 * k, "<i4").astype(np.int64))
    out["top_probs"] = torch.from_numpy(binary_matrix(table.column("top_probs"), 2 * k, "<f2").astype(np.float16))
    out["hidden_state"] = torch.from_numpy(binary_matrix(table.column("hidden_state"), 2 * h, "<f2").astype(np.float16))
    pos = out["position_in_sequence"].numpy()
    starts = np.flatnonzero(pos == 0)
    n = len(pos)
    out["sequence_offsets"] = torch.from_numpy(np.append(starts, n).astype(np.int64))
    seq_id = np.zeros(n, dtype=np.int64)
    if n:
        seq_id[starts[1:]] = 1
        seq_id = np.cumsum(seq_id)
    out["sequence_id"] = torch.from_numpy(seq_id)
    return out


def load_batch(lake: DeltaLake, verifier_id: str, dtype: str, prompt_ids: Iterable[str] | None = None,
               *, include_flagged: bool = False, schema_version: int = SCHEMA_VERSION) -> dict:
    """Capture rows of a verifier as tensors.

    Keys: ``hidden_state`` [N,H] float16, ``top_token_ids`` [N,K] int64, ``top_probs`` [N,K]
    float16, ``verifier_top1_prob`` [N] float32, ``token_id`` / ``sequence_index`` /
    ``position_in_sequence`` / ``position_in_block`` / ``block_index`` /
    ``cache_logical_size`` [N] int64, ``is_generated`` [N] bool, ``sequence_id`` [N] int64,
    ``sequence_offsets`` [S+1] int64. Raises ``SchemaVersionMismatch`` for a table written
    with another schema version, ``CaptureNotFound`` when nothing was captured.
    """
    table, props = load_table(lake, verifier_id, dtype, prompt_ids,
                              include_flagged=include_flagged, schema_version=schema_version)
    return to_tensors(table, props)
