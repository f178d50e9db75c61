"""Markdown tables for materialization metadata (what users read in the Dagster UI)."""

from typing import Any, Callable, Iterable, Mapping, Sequence

import dagster as dg
import numpy as np


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], empty: str = "_none_") -> dg.MetadataValue:
    rows = [list(r) for r in rows]
    if not rows:
        return dg.MetadataValue.md(empty)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |"
              for r in rows]
    return dg.MetadataValue.md("\n".join(lines))


def md_counts(title: str, counts: Mapping[Any, int]) -> dg.MetadataValue:
    """A count per key, largest first."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
    return md_table([title, "count"], ordered, empty=f"_no {title}_")


def md_per_session(
    keys: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    columns: Mapping[str, Callable[[Mapping[str, Any]], Any]],
    limit: int = 100,
) -> dg.MetadataValue:
    """One line per session partition of the run, summing ``columns`` over its rows.

    A run over several partitions records the same metadata on each of them; this table is
    where each partition's own figures stand. Each column maps a row to a number (a bool
    counts as 0/1); keys of the run with no rows get zeros.
    """
    sums = {k: [0] * len(columns) for k in keys}
    fns = list(columns.values())
    for r in rows:
        acc = sums.setdefault(r["session_key"], [0] * len(columns))
        for i, fn in enumerate(fns):
            acc[i] += fn(r) or 0
    lines = [[k, *v] for k, v in sorted(sums.items())]
    more = len(lines) - limit
    table = md_table(["session", *columns], lines[:limit], empty="_no sessions_")
    if more > 0:
        return dg.MetadataValue.md(table.value + f"\n\n_… and {more} more sessions_")
    return table


def percentiles(values: Sequence[float], qs: Sequence[float]) -> list[float | None]:
    """Linear-interpolated percentiles of ``values``, rounded (None for each q when empty)."""
    if not len(values):
        return [None] * len(qs)
    return [round(float(x), 1) for x in np.percentile(values, qs)]


def md_sizes(values: Sequence[float]) -> dg.MetadataValue:
    """Distribution of a size (chars, messages, tokens...) over a table's rows."""
    p50, p95 = percentiles(values, (50, 95))
    return dg.MetadataValue.json({"rows": len(values), "min": min(values, default=None), "p50": p50,
                                  "p95": p95, "max": max(values, default=None)})


def _clip(value: Any, width: int, tail: bool = False) -> str:
    s = " ".join(str("" if value is None else value).split())
    if len(s) <= width:
        return s
    return "…" + s[-(width - 1):] if tail else s[: width - 1] + "…"


def _message_preview(m: Mapping[str, Any]) -> str:
    parts = [str(m.get("content") or "")]
    for tc in m.get("tool_calls") or []:
        fn = tc.get("function") or {}
        parts.append(f"{fn.get('name')}({fn.get('arguments')})")
    return f"{m.get('role', '?')}: " + " ".join(p for p in parts if p)


def json_preview(value: Any) -> str:
    """A JSON messages column (list of messages) or message, read as text."""
    import json

    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    if isinstance(value, Mapping):
        value = [value]
    if isinstance(value, list) and all(isinstance(m, Mapping) for m in value):
        return " ⏎ ".join(_message_preview(m) for m in value)
    return "" if value is None else str(value)


def md_preview(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, Callable[[Mapping[str, Any]], Any]],
               n: int = 3, width: int = 160, tail_columns: Sequence[str] = ()) -> dg.MetadataValue:
    """A markdown preview of the first ``n`` rows: one line per row, each column a function
    of the row, clipped to ``width`` characters (``tail_columns`` keep their END, e.g. the
    end of a prompt)."""
    lines = [[_clip(fn(r), width, name in tail_columns) for name, fn in columns.items()] for r in rows[:n]]
    return md_table(list(columns), lines, empty="_no rows_")


def pair_preview(rows: Sequence[Mapping[str, Any]], n: int = 3, why: Callable[[Mapping[str, Any]], Any] | None = None
                 ) -> dg.MetadataValue:
    """Preference pairs as a user reads them: end of the prompt, chosen, rejected, why."""
    def default_why(r):
        bits = [r.get("strategy") or ""]
        if r.get("rejected_failure"):
            bits.append(f"rejected failed: {r['rejected_failure']}")
        if r.get("chosen_source"):
            bits.append(f"{r.get('chosen_source')} > {r.get('rejected_source')}")
        return "; ".join(b for b in bits if b)

    return md_preview(rows, {
        "prompt (end)": lambda r: json_preview(r.get("prompt")),
        "chosen": lambda r: json_preview(r.get("chosen")),
        "rejected": lambda r: json_preview(r.get("rejected")),
        "why": why or default_why,
    }, n=n, tail_columns=("prompt (end)",))


class SessionSums:
    """Per-session sums accumulated over the groups a big run writes in (``md_per_session``
    without holding every row)."""

    def __init__(self, columns: Mapping[str, Callable[[Mapping[str, Any]], Any]]):
        self.columns = dict(columns)
        self.sums: dict[str, list] = {}

    def add(self, rows: Iterable[Mapping[str, Any]]) -> None:
        fns = list(self.columns.values())
        n = len(fns)
        for r in rows:
            acc = self.sums.get(r["session_key"])
            if acc is None:
                acc = self.sums[r["session_key"]] = [0] * n
            for i, fn in enumerate(fns):
                acc[i] += fn(r) or 0

    def total(self, column: str) -> int:
        i = list(self.columns).index(column)
        return sum(v[i] for v in self.sums.values())

    def sessions(self) -> int:
        return len(self.sums)

    def md(self, columns: Sequence[str] | None = None, limit: int = 100) -> dg.MetadataValue:
        cols = list(columns or self.columns)
        idx = [list(self.columns).index(c) for c in cols]
        lines = [[k, *(v[i] for i in idx)] for k, v in sorted(self.sums.items())]
        more = len(lines) - limit
        table = md_table(["session", *cols], lines[:limit], empty="_no sessions_")
        if more > 0:
            return dg.MetadataValue.md(table.value + f"\n\n_… and {more} more sessions_")
        return table
