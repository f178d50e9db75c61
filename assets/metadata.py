"""Markdown tables for materialization metadata (what users read in the Dagster UI)."""

from typing import Any, Iterable, Mapping, Sequence

import dagster as dg


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "_none_") -> dg.MetadataValue:
    rows = [list(r) for r in rows]
    if not rows:
        return dg.MetadataValue.md(empty)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def md_counts(title: str, counts: Mapping[Any, int]) -> dg.MetadataValue:
    """A count per key, largest first."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return md_table([title, "count"], ordered, empty=f"_no {title}_")
