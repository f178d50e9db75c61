"""preference_pairs of one run, Dagster-free: agent steps + teacher answers (+ pairs that
came in as data) → candidate pair rows, each valid or marked with the rule it breaks, and
optionally confirmed by the judge.

:func:`mine_pairs` returns the rows and a :class:`MineReport` that renders the asset's
metadata (beside the write's).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import dagster as dg

from assets.metadata import md_counts, md_table, pair_preview
from assets.traces.failures import FailurePolicy
from assets.pairs.imported import imported_pairs
from assets.pairs.judge import ConfirmReport, JudgeScorer, confirm_pairs
from assets.pairs.strategies import PairBuildReport, build_pairs, steps_from_rows
from assets.pairs.validity import RULES as VALIDITY_RULES
from assets.pairs.validity import ValidityConfig


@dataclass
class MineReport:
    """What mining one run's pairs did; :meth:`metadata` is what the asset reports."""

    build: PairBuildReport
    policy: FailurePolicy
    validity: ValidityConfig
    strategies: list[str]
    skipped_strategies: list[str]
    teacher_answers: int
    imported: Counter
    judge: str
    confirm: ConfirmReport | None = None
    judge_calls: dict | None = None
    valid: int = 0
    by_source: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # invalid rule -> the first reason
    preview: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def metadata(self) -> dict[str, Any]:
        rep = self.build
        removed = {rule: n for rule, n in rep.removed_by_rule.items() if n}
        md: dict[str, Any] = {
            "pairs": dg.MetadataValue.int(self.valid),
            "candidates": dg.MetadataValue.int(rep.candidates),
            "removed_by_rule": md_table(
                ["validity rule", "candidates removed", "example"],
                [[rule, removed.get(rule, 0), (self.examples.get(rule) or "")[:140]] for rule in VALIDITY_RULES
                 if rule in self.validity.rules]),
            "failed_steps_by_class": md_counts("class (rule)", dict(rep.failures)),
            "failure_policy": f"{self.policy.path} @ {self.policy.version}",
            "preview": pair_preview(self.preview, n=3),
            "steps": dg.MetadataValue.int(rep.steps),
            "steps_with_teacher_answers": dg.MetadataValue.int(rep.steps_with_teachers),
            "teacher_answers_ok": dg.MetadataValue.int(self.teacher_answers),
            "pairs_by_strategy": md_counts("strategy", dict(rep.by_strategy) | (
                {"imported": self.imported["pairs"]} if self.imported["pairs"] else {})),
            "imported_from_datasets": dg.MetadataValue.json(dict(self.imported)),
            "pairs_by_source": md_counts("chosen > rejected", dict(self.by_source)),
            "merged_duplicates": dg.MetadataValue.int(rep.merged_duplicates),
            "strategies": ", ".join(self.strategies) + (
                f" (skipped: {', '.join(self.skipped_strategies)})" if self.skipped_strategies else ""),
            "seconds": dg.MetadataValue.float(round(self.seconds, 3)),
            "judge": self.judge,
        }
        if self.confirm is not None:
            md["judge_confirmation"] = dg.MetadataValue.json(self.confirm.as_dict())
            if self.confirm.examples:
                cols = ("pair_id", "strategy", "rule", "score_chosen", "score_rejected", "chosen", "rejected")
                md["judge_dropped_examples"] = md_table(list(cols), [[e[k] for k in cols]
                                                                     for e in self.confirm.examples])
        if self.judge_calls is not None:
            md["judge_calls"] = dg.MetadataValue.json(self.judge_calls)
        return md


def mine_pairs(step_rows: Sequence[Mapping], teacher_rows: Sequence[Mapping], rejected_turns: Sequence[Mapping],
               *, strategies: Sequence, skipped_strategies: Sequence[str] = (), policy: FailurePolicy,
               validity: ValidityConfig, now: dt.datetime, judge: str = "off",
               scorer: JudgeScorer | None = None, confirm: Sequence[str] = (), confirm_margin: float = 1.0,
               ) -> tuple[list[dict], MineReport]:
    """The run's pair rows: every strategy over the steps with teacher answers, then the pairs
    of ingested preference datasets (strategy ``imported``, ids the strategies made win),
    then, with a ``scorer`` and ``confirm`` strategies, the judge's confirmation (pairs it
    does not confirm stay, marked ``invalid_rule = judge_*``)."""
    import time

    t0 = time.perf_counter()
    rows, build = build_pairs(steps_from_rows(step_rows, teacher_rows, policy), strategies, now, validity)
    # a separate source: pairs that arrived as data (preference datasets ingested as sessions)
    imported, imported_counts = imported_pairs(step_rows, rejected_turns, now, validity)
    mined_ids = {r["pair_id"] for r in rows}
    rows += [r for r in imported if r["pair_id"] not in mined_ids]
    report = MineReport(build=build, policy=policy, validity=validity, strategies=[s.name for s in strategies],
                        skipped_strategies=list(skipped_strategies), teacher_answers=len(teacher_rows),
                        imported=Counter(imported_counts), judge=judge)
    if scorer is not None and confirm:
        # only candidates that pass the validity rules are worth a judge call
        invalid = [r for r in rows if r["invalid_rule"]]
        kept, dropped, report.confirm = confirm_pairs([r for r in rows if not r["invalid_rule"]], scorer,
                                                      confirm, confirm_margin)
        rows = kept + invalid + dropped  # dropped: marked invalid_rule judge_*, rejected by the recipe
    if scorer is not None:
        report.judge_calls = {**scorer.stats.as_dict(), "usage": scorer.usage}
    valid = [r for r in rows if r["invalid_rule"] is None]
    report.valid = len(valid)
    report.by_source = Counter(f"{r['chosen_source']} > {r['rejected_source']}" for r in valid)
    for r in rows:
        if r["invalid_rule"]:
            report.examples.setdefault(r["invalid_rule"], r["invalid_reason"])
    report.preview = sorted(valid, key=lambda r: (r["strategy"] != "error_site", r["pair_id"]))[:3]
    report.seconds = time.perf_counter() - t0
    return rows, report
