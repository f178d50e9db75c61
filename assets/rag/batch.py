"""A batch of tasks through the rag runtime, Dagster-free: every variant of every task run
(and logged to rag_runs by the runtime), with a report that renders the materialization of
gold/rag_runs the batch op reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import dagster as dg

VARIANTS = ("with_retrieval", "no_retrieval")


def runs_preview(rows: list[dict], n: int = 5) -> str:
    """A markdown preview of a few runs (task, model, gate, the start of the answer)."""
    if not rows:
        return "_no runs_"
    lines = ["| recorded_run_id | task | model_used | passed | reasons | answer |", "|---|---|---|---|---|---|"]

    def cell(v: str, n: int) -> str:
        v = " ".join(str(v or "").split())
        return (v[:n] + "…" if len(v) > n else v).replace("|", "\\|")

    for r in rows[:n]:
        vr = r["validation_result"]
        lines.append(f"| {r['recorded_run_id']} | {cell(r['input_task'], 60)} | {r['model_used']} "
                     f"| {vr['passed']} | {', '.join(vr['reasons'])} | {cell(r['model_response'], 80)} |")
    return "\n".join(lines)


def run_metadata(row: Mapping[str, Any], logged: bool) -> dict[str, Any]:
    """One run's figures, as its materialization of gold/rag_runs shows them."""
    vr = row["validation_result"]
    return {
        "recorded_run_id": row["recorded_run_id"],
        "source": row["source"],
        "passed": vr["passed"],
        "reasons": ", ".join(vr["reasons"]) or "-",
        "model_used": str(row["model_used"]),
        "escalation_path": dg.MetadataValue.json(row["escalation_path"]),
        "duration_ms": dg.MetadataValue.float(round(row["duration_ms"], 1)),
        "logged": logged,
        "preview": dg.MetadataValue.md(runs_preview([row])),
    }


@dataclass
class BatchReport:
    """What a batch did; :meth:`metadata` goes beside the run log's last write."""

    tasks: int
    counts: dict[str, dict[str, int]]  # variant -> runs, passed, escalated
    spooled: int = 0  # runs the log could not write to the table (kept in its spool)
    recorded: list[dict] = field(default_factory=list)  # the rag_runs rows of the batch
    table_version: int = 0

    def metadata(self) -> dict[str, Any]:
        md: dict[str, Any] = {
            "dagster/row_count": dg.MetadataValue.int(len(self.recorded) - self.spooled),
            "tasks": self.tasks, "runs": sum(c["runs"] for c in self.counts.values()), "spooled_runs": self.spooled,
            "delta_version": self.table_version,
            "recorded_run_ids": dg.MetadataValue.json([r["recorded_run_id"] for r in self.recorded]),
            "preview": dg.MetadataValue.md(runs_preview(self.recorded)),
        }
        for v, c in self.counts.items():
            md[f"pass_rate/{v}"] = round(c["passed"] / c["runs"], 4) if c["runs"] else 0.0
            md[f"escalation_rate/{v}"] = round(c["escalated"] / c["runs"], 4) if c["runs"] else 0.0
        return md


def run_batch(runtime, tasks: Iterable[Mapping[str, Any]], variants: Iterable[str], *, local_only: bool,
              allow_escalation: bool | None, source: str, log: Callable[[str], None] = lambda m: None) -> BatchReport:
    """Run every task under every variant (``with_retrieval`` | ``no_retrieval``)."""
    tasks = list(tasks)
    variants = list(variants)
    bad = set(variants) - set(VARIANTS)
    if bad:
        raise ValueError(f"unknown variants {sorted(bad)}")
    rep = BatchReport(tasks=len(tasks), counts={v: {"runs": 0, "passed": 0, "escalated": 0} for v in variants})
    for t in tasks:
        for variant in variants:
            out = runtime.run(t["task"], local_only=local_only, allow_escalation=allow_escalation,
                              no_retrieval=variant == "no_retrieval", source=source, checks=t.get("checks") or ())
            c = rep.counts[variant]
            c["runs"] += 1
            c["passed"] += bool(out.gate_passed)
            c["escalated"] += bool(out.escalated)
            rep.spooled += not out.logged
            rep.recorded.append(out.row)
            log(f"{variant} {out.run_id}: gate={'pass' if out.gate_passed else 'fail'} "
                f"{out.failed_rules} path={out.escalation_path}")
    return rep
