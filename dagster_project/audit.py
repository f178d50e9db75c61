"""The independent privacy audit of a lake: an asset check on every table that holds text
(and what ``tracelake audit``, dagster_project/cli_audit.py, runs).

Both run the gitleaks engine (its default rules; :mod:`resources.privacy.audit`), a second detector that did
not do the scrubbing, over every text column of every table (and each table's Delta log,
where commit metadata lives). They report counts by table and rule -- never the text.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import pyarrow as pa

from resources.lake import DeltaLake, TableSpec
from resources.privacy.audit import auditor

CHECK_NAME = "no_secrets_left"


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _is_text(t.value_type)
    if pa.types.is_struct(t):
        return any(_is_text(t.field(i).type) for i in range(t.num_fields))
    return False


def text_columns(spec: TableSpec) -> list[str]:
    return [f.name for f in spec.schema if _is_text(f.type)]


def _strings(col: pa.ChunkedArray) -> list[str]:
    t = col.type
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return [b.decode("utf-8", "replace") for b in col.to_pylist() if b]
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return [s for s in col.to_pylist() if s]
    return [json.dumps(v) for v in col.to_pylist() if v]  # lists / structs: their JSON text


def audit_table(lake: DeltaLake, spec: TableSpec, scope=None) -> Counter:
    """``Counter({rule: n})`` over every text column of ``spec``'s table (empty if absent);
    ``scope`` (a SessionScope) limits it to those sessions' rows."""
    cols = text_columns(spec)
    if not cols or not lake.exists(spec):
        return Counter()
    t = lake.read(spec, columns=cols, scope=scope)
    # every column in one pass of the engine: a gitleaks start costs ~0.4 s of CPU (its rules
    # are compiled at each start), a table has up to a dozen text columns
    return auditor().scan(s for name in cols for s in _strings(t[name]))


def audit_delta_log(lake: DeltaLake, spec: TableSpec) -> Counter:
    """The commit metadata of a local table's Delta log (object stores: skipped)."""
    uri = lake.uri(spec)
    if "://" in uri and not uri.startswith("file://"):
        return Counter()
    log = Path(uri.removeprefix("file://")) / "_delta_log"
    texts = [line for p in sorted(log.glob("*.json")) for line in p.read_text(errors="replace").splitlines()]
    return auditor().scan(texts)


def audit_lake(lake: DeltaLake, specs: Iterable[TableSpec]) -> dict[str, Counter]:
    """``{layer/name: Counter({rule: n})}`` for every table of ``specs`` holding text (only
    tables with findings)."""
    out: dict[str, Counter] = {}
    for spec in specs:
        c = audit_table(lake, spec) + (audit_delta_log(lake, spec) if lake.exists(spec) else Counter())
        if c:
            out[spec.path] = c
    return out


def build_audit_checks(specs: list[TableSpec], asset_keys: set[dg.AssetKey]) -> list[dg.AssetChecksDefinition]:
    """One check per table that holds text (and is an asset of these definitions)."""
    checks = []
    for spec in specs:
        if spec.asset_key not in asset_keys or not text_columns(spec):
            continue

        def _make(spec: TableSpec):
            @dg.asset_check(
                asset=spec.asset_key,
                name=CHECK_NAME,
                description="An independent detector (the gitleaks engine, not the scrubber) finds no secret "
                            "in any text column: counts by rule, never the text.",
            )
            def _check(context, lake: DeltaLake) -> dg.AssetCheckResult:
                # in an ingest run: the sessions the run wrote (a tick costs what changed)
                scope = None
                if spec.partition_by == ("day",):
                    from assets.traces.partitions import check_scope

                    scope = check_scope(context, lake)
                found = audit_table(lake, spec, scope)
                return dg.AssetCheckResult(
                    passed=not found,
                    metadata={
                        "table": spec.path,
                        "findings": sum(found.values()),
                        "findings_by_rule": dg.MetadataValue.json(dict(found)),
                        "columns_scanned": len(text_columns(spec)),
                        "scope": "whole table" if scope is None else f"{len(scope.keys)} sessions of this run",
                    },
                )

            return _check

        checks.append(_make(spec))
    return checks
