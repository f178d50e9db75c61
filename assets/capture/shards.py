"""Shard tables on the lake: open/create with checked properties, append, resume state.

Goes through the ``lake`` resource for every location, credential, table handle and write
(``lake.ensure``/``lake.table``/``lake.read``/``lake.append``/``lake.merge``): the shard
spec carries the parquet writer properties, ``lake.append`` the commit metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from assets.capture.tables import (
    CAPTURE_REJECTIONS,
    HIDDEN_ENCODING,
    PROP_PREFIX,
    SCHEMA_VERSION,
    TOP_IDS_ENCODING,
    TOP_PROBS_ENCODING,
    capture_spec,
)
from resources.lake import DeltaLake, TableSpec

# Properties that must agree between a table and the code/config writing or reading it.
CHECKED_PROPS = ("schema_version", "verifier_id", "verifier_fingerprint", "dtype", "top_k", "hidden_size", "hidden_layer",
                 "block_size", "hidden_encoding", "top_ids_encoding", "top_probs_encoding")


class SchemaVersionMismatch(RuntimeError):
    """The table was written with another capture schema version than this code reads."""


class CaptureTableMismatch(RuntimeError):
    """A write's K / H / layer / block size disagrees with what the table already holds."""


class CaptureNotFound(LookupError):
    pass


def table_properties(*, verifier_id: str, dtype: str, top_k: int, hidden_size: int,
                     hidden_layer: int, block_size: int, verifier_fingerprint: str = "",
                     verifier_model: str = "") -> dict[str, str]:
    props = {
        "schema_version": SCHEMA_VERSION,
        "verifier_id": verifier_id,
        # weights + config of the verifier (resources.verifier.verifier_fingerprint): checked on
        # every append, so a table never mixes two checkpoints
        "verifier_fingerprint": verifier_fingerprint,
        "verifier_model": verifier_model,
        "dtype": dtype,
        "top_k": top_k,
        "hidden_size": hidden_size,
        "hidden_layer": hidden_layer,
        "block_size": block_size,
        "hidden_encoding": HIDDEN_ENCODING,
        "top_ids_encoding": TOP_IDS_ENCODING,
        "top_probs_encoding": TOP_PROBS_ENCODING,
    }
    return {PROP_PREFIX + k: str(v) for k, v in props.items()}


def capture_properties(dt: DeltaTable) -> dict[str, str]:
    conf = dt.metadata().configuration or {}
    return {k[len(PROP_PREFIX):]: v for k, v in conf.items() if k.startswith(PROP_PREFIX) and v is not None}


def ensure_shard_table(lake: DeltaLake, spec: TableSpec, props: Mapping[str, str]) -> DeltaTable:
    """Create the table (with its properties) or check that the existing one matches."""
    dt = lake.ensure(spec)
    current = capture_properties(dt)
    if not current:
        dt.alter.set_table_properties(dict(props), raise_if_not_exists=False)
        dt = lake.table(spec)
        current = capture_properties(dt)
    want = {k[len(PROP_PREFIX):]: v for k, v in props.items()}
    if current.get("schema_version") != want["schema_version"]:
        raise SchemaVersionMismatch(
            f"{spec.path} holds capture schema v{current.get('schema_version')}, this code writes "
            f"v{want['schema_version']}"
        )
    diff = {k: (current.get(k), want[k]) for k in CHECKED_PROPS if current.get(k) != want[k]}
    if diff:
        detail = ", ".join(f"{k}: table={a} run={b}" for k, (a, b) in diff.items())
        raise CaptureTableMismatch(
            f"{spec.path} was captured with other settings ({detail}); keep the table's settings, "
            "or set a different verifier_id for a new table"
        )
    return dt


def check_fingerprint(lake: DeltaLake, spec: TableSpec, fingerprint: str) -> None:
    """Refuse to resume or append into a table captured from other weights (before anything
    is read from it: its captured prompts are not this checkpoint's)."""
    if not lake.exists(spec):
        return
    current = capture_properties(lake.table(spec))
    if current and current.get("verifier_fingerprint") != fingerprint:
        raise CaptureTableMismatch(
            f"{spec.path} was captured with other settings (verifier_fingerprint: "
            f"table={current.get('verifier_fingerprint')} run={fingerprint}): other weights or config; "
            "keep the table's verifier, or set a different verifier_id for a new table")


@dataclass
class AppendResult:
    version: int
    rows: int
    bytes_added: int
    files_added: int


def _add_sizes(dt: DeltaTable) -> dict[str, int]:
    adds = pa.table(dt.get_add_actions(flatten=True))
    return dict(zip(adds.column("path").to_pylist(), adds.column("size_bytes").to_pylist()))


def append_shard(lake: DeltaLake, spec: TableSpec, table: pa.Table,
                 custom_metadata: Mapping[str, str]) -> AppendResult:
    """Append one commit (one batch of prompts) through the lake: the spec carries the capture
    writer properties, ``custom_metadata`` goes into the commit info."""
    dt = lake.table(spec)
    if dt is None:
        raise CaptureNotFound(f"{spec.path}: create it with ensure_shard_table first")
    before = _add_sizes(dt)
    res = lake.append(spec, table, commit_metadata=custom_metadata)
    after = _add_sizes(lake.table(spec))
    new = {p: s for p, s in after.items() if p not in before}
    return AppendResult(res.version, res.rows_written, int(sum(new.values())), len(new))


def captured_prompt_ids(lake: DeltaLake, spec: TableSpec) -> set[str]:
    """Prompts this table already holds, plus those the post-filter dropped for it."""
    done: set[str] = set()
    if lake.exists(spec):
        done.update(pc.unique(lake.read(spec, columns=["prompt_id"]).column("prompt_id")).to_pylist())
    if lake.exists(CAPTURE_REJECTIONS):
        rej = lake.read(CAPTURE_REJECTIONS, columns=["prompt_id"],
                        filter=(pc.field("shard_table") == spec.name) & (pc.field("action") == "dropped"))
        done.update(rej.column("prompt_id").to_pylist())
    return done


def open_shard_table(lake: DeltaLake, verifier_id: str, dtype: str,
                     schema_version: int = SCHEMA_VERSION) -> tuple[TableSpec, DeltaTable, dict[str, str]]:
    """The shard table of (verifier, dtype) at this code's schema version — or a clear refusal."""
    spec = capture_spec(verifier_id, dtype, schema_version)
    dt = lake.table(spec)
    if dt is None:
        others = [v for v in range(0, schema_version + 6)
                  if v != schema_version and lake.exists(capture_spec(verifier_id, dtype, v))]
        if others:
            raise SchemaVersionMismatch(
                f"no schema v{schema_version} capture for {verifier_id}/{dtype}; the lake holds "
                f"schema v{', v'.join(map(str, others))} ({capture_spec(verifier_id, dtype, others[0]).path}). "
                f"This code reads v{schema_version}: re-capture, or read with a matching tracelake version."
            )
        raise CaptureNotFound(f"no capture table {spec.path} in {lake.root}")
    props = capture_properties(dt)
    found = props.get("schema_version")
    if found != str(schema_version):
        raise SchemaVersionMismatch(
            f"{spec.path} records capture schema version {found!r}, this code reads v{schema_version}; "
            "refusing to decode its binary columns."
        )
    return spec, dt, props
