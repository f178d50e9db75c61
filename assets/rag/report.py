"""Pass rate and escalation rate of rag runs, with vs without retrieval, overall and per day. Pure."""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable, Mapping


def _day(ts: Any) -> str:
    if ts is None:
        return "unknown"
    return ts.date().isoformat() if hasattr(ts, "date") else str(ts)[:10]


def report_rows(runs: Iterable[Mapping[str, Any]], now=None) -> list[dict]:
    """One row per (day, retrieval) plus ("all", retrieval)."""
    acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for r in runs:
        scope = "no_retrieval" if r.get("no_retrieval") else "with_retrieval"
        passed = bool(r.get("gate_passed"))
        esc = bool(r.get("escalated"))
        for day in ("all", _day(r.get("created_at"))):
            a = acc[(day, scope)]
            a[0] += 1
            a[1] += passed
            a[2] += esc
            a[3] += passed and not esc
    rows = []
    for (day, scope), (n, p, e, pl) in sorted(acc.items(), key=lambda kv: (kv[0][0] != "all", kv[0])):
        rows.append({"day": day, "retrieval": scope, "runs": n, "passed": p, "escalated": e, "passed_local": pl,
                     "pass_rate": round(p / n, 4), "local_pass_rate": round(pl / n, 4),
                     "escalation_rate": round(e / n, 4), "created_at": now})
    return rows


def with_totals(day_rows: Iterable[Mapping[str, Any]], now=None) -> list[dict]:
    """Per-day rows plus the ("all", retrieval) rows summed from them (an incremental refresh
    recomputes only the days that got runs and keeps the others)."""
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    rows = []
    for r in day_rows:
        if r["day"] == "all":
            continue
        a = acc[r["retrieval"]]
        for i, k in enumerate(("runs", "passed", "escalated", "passed_local")):
            a[i] += int(r[k])
        rows.append(dict(r))
    for scope, (n, p, e, pl) in acc.items():
        rows.append({"day": "all", "retrieval": scope, "runs": n, "passed": p, "escalated": e, "passed_local": pl,
                     "pass_rate": round(p / n, 4), "local_pass_rate": round(pl / n, 4),
                     "escalation_rate": round(e / n, 4), "created_at": now})
    for r in rows:
        r["created_at"] = now
    return sorted(rows, key=lambda r: (r["day"] != "all", r["day"], r["retrieval"]))


def markdown(rows: Iterable[Mapping[str, Any]], day: str | None = None, per_day: bool = False) -> str:
    """A markdown table: the overall rows (day="all") or the per-day rows."""
    sel = [r for r in rows if (r["day"] != "all") == per_day and (day is None or r["day"] == day)]
    if not sel:
        return "_no runs_"
    head = "| day | retrieval | runs | pass rate | local pass rate | escalation rate |" if per_day else \
        "| retrieval | runs | pass rate | local pass rate | escalation rate |"
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for r in sel:
        cells = ([r["day"]] if per_day else []) + [
            r["retrieval"], str(r["runs"]), f"{r['pass_rate']:.0%}", f"{r['local_pass_rate']:.0%}",
            f"{r['escalation_rate']:.0%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
