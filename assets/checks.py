"""Asset checks shared by the families: a Delta table agrees with its spec and its last write."""

import dagster as dg

from resources.lake import DeltaLake, TableSpec


def table_check(spec: TableSpec) -> dg.AssetChecksDefinition:
    """The table exists, has the spec's columns and holds the rows its last materialization
    reported (``table_rows``): nothing wrote to it behind the asset's back."""

    @dg.asset_check(asset=spec.asset_key, name=f"{spec.name}_table",
                    description=f"{spec.path} exists, has the spec's columns and the rows last reported")
    def _check(context: dg.AssetCheckExecutionContext, lake: DeltaLake) -> dg.AssetCheckResult:
        dt = lake.table(spec)
        if dt is None:
            return dg.AssetCheckResult(passed=False, metadata={"problem": f"no table at {spec.path}"})
        ds = dt.to_pyarrow_dataset()
        rows = ds.count_rows()
        have = set(ds.schema.names)
        missing, extra = sorted(set(spec.schema.names) - have), sorted(have - set(spec.schema.names))
        ev = context.instance.get_latest_materialization_event(spec.asset_key)
        md = ev.asset_materialization.metadata if ev and ev.asset_materialization else {}
        reported = md["table_rows"].value if "table_rows" in md else None
        problems = []
        if missing:
            problems.append(f"columns missing: {missing}")
        if extra:
            problems.append(f"columns not in the spec: {extra}")
        if reported is not None and reported != rows:
            problems.append(f"{rows} rows, the last materialization reported {reported}")
        return dg.AssetCheckResult(passed=not problems, metadata={
            "rows": rows, "reported_rows": -1 if reported is None else reported,
            "delta_version": dt.version(), "problems": "; ".join(problems) or "none",
        })

    return _check
