"""The independent privacy audit of a lake: an asset check on every table that holds text
(and what ``tracelake audit``, dagster_project/cli_audit.py, runs).

Both run detectors that did not do the scrubbing over every text column of every table
(and each table's Delta log, where commit metadata lives): for secrets the gitleaks engine
(its default rules; :mod:`resources.privacy.audit`), for the personal data the policy asks
to pseudonymize DataFog's detectors plus a separate reading of home-directory paths
(:mod:`resources.privacy.pii_audit`). They report counts by table and rule / kind -- never
the text. The check keeps its name (``no_secrets_left``) and fails on either.
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
from resources.privacy.pii_audit import pii_auditor

CHECK_NAME = "no_secrets_left"
PII_PREFIX = "personal_data:"  # audit_lake's keys of personal-data kinds (beside gitleaks' rule ids)


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
    return audit_table_all(lake, spec, scope)[0]


def audit_table_all(lake: DeltaLake, spec: TableSpec, scope=None) -> tuple[Counter, Counter]:
    """``(secrets by rule, personal data by kind)`` over every text column of ``spec``'s table."""
    cols = text_columns(spec)
    if not cols or not lake.exists(spec):
        return Counter(), Counter()
    from resources import privacy

    t = lake.read(spec, columns=cols, scope=scope)
    texts = [s for name in cols for s in _strings(t[name])]
    # every column in one pass of the engine: a gitleaks start costs ~0.4 s of CPU (its rules
    # are compiled at each start), a table has up to a dozen text columns
    return auditor().scan(texts), pii_auditor(privacy.for_lake(lake.root)).scan(texts)


def audit_delta_log(lake: DeltaLake, spec: TableSpec) -> Counter:
    """The commit metadata of a local table's Delta log (object stores: skipped)."""
    uri = lake.uri(spec)
    if "://" in uri and not uri.startswith("file://"):
        return Counter()
    log = Path(uri.removeprefix("file://")) / "_delta_log"
    texts = [line for p in sorted(log.glob("*.json")) for line in p.read_text(errors="replace").splitlines()]
    from resources import privacy

    pii = pii_auditor(privacy.for_lake(lake.root)).scan(texts)
    return auditor().scan(texts) + Counter({PII_PREFIX + k: n for k, n in pii.items()})


def audit_lake(lake: DeltaLake, specs: Iterable[TableSpec]) -> dict[str, Counter]:
    """``{layer/name: Counter({rule: n})}`` for every table of ``specs`` holding text (only
    tables with findings); personal-data kinds are keyed ``personal_data:<kind>``."""
    out: dict[str, Counter] = {}
    for spec in specs:
        sec, pii = audit_table_all(lake, spec)
        c = sec + Counter({PII_PREFIX + k: n for k, n in pii.items()})
        c += audit_delta_log(lake, spec) if lake.exists(spec) else Counter()
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
                description="Independent detectors (the gitleaks engine; DataFog and a path reader for personal "
                            "data) find no secret and none of the personal data the policy pseudonymizes in any "
                            "text column: counts by rule and kind, never the text.",
            )
            def _check(context, lake: DeltaLake) -> dg.AssetCheckResult:
                # in an ingest run: the sessions the run wrote (a tick costs what changed)
                scope = None
                if spec.partition_by == ("day",):
                    from assets.traces.partitions import check_scope

                    scope = check_scope(context, lake)
                found, personal = audit_table_all(lake, spec, scope)
                return dg.AssetCheckResult(
                    passed=not found and not personal,
                    metadata={
                        "table": spec.path,
                        "findings": sum(found.values()),
                        "findings_by_rule": dg.MetadataValue.json(dict(found)),
                        "personal_data_found": sum(personal.values()),
                        "personal_data_by_kind": dg.MetadataValue.json(dict(personal)),
                        "columns_scanned": len(text_columns(spec)),
                        "scope": "whole table" if scope is None else f"{len(scope.keys)} sessions of this run",
                    },
                )

            return _check

        checks.append(_make(spec))
    return checks
