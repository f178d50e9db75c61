"""The training sets of one run, Dagster-free: each builder returns the rows of its table
and a report that renders the asset's metadata (beside the write's).

The row builders themselves live in ``training.py`` (the exporter and the tests use them
alone); this module counts what they made for the UI.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import dagster as dg

from assets.examples.training import kto_rows, sdpo_rows, sft_rows
from assets.metadata import json_preview, md_counts, md_preview, md_sizes
from assets.traces.failures import INFORMATIVE, MISTAKE, FailurePolicy


def _policy(policy: FailurePolicy) -> str:
    return f"{policy.path} @ {policy.version}"


@dataclass
class SftReport:
    rows: list[dict]
    skipped: Counter  # reason -> steps
    policy: FailurePolicy

    def metadata(self) -> dict[str, Any]:
        rows = self.rows
        return {
            "examples": dg.MetadataValue.int(len(rows)),
            "skipped_steps": md_counts("reason", dict(self.skipped)),
            "messages_per_example": md_sizes([len(json.loads(r["messages"])) for r in rows]),
            "chars_per_example": md_sizes([len(r["messages"]) for r in rows]),
            "failure_policy": _policy(self.policy),
            "preview": md_preview(rows, {
                "context (end)": lambda r: json_preview(json.loads(r["messages"])[:-1]),
                "assistant turn": lambda r: json_preview(json.loads(r["messages"])[-1]),
            }, tail_columns=("context (end)",)),
        }


@dataclass
class KtoReport:
    rows: list[dict]
    labels: Counter  # label -> examples
    policy: FailurePolicy

    def metadata(self) -> dict[str, Any]:
        rows = self.rows
        return {
            "examples": dg.MetadataValue.int(len(rows)),
            "labels": md_counts("label", dict(self.labels)),
            "by_source": md_counts("source", dict(Counter(r["source"] for r in rows))),
            "prompt_messages": md_sizes([len(json.loads(r["prompt"])) for r in rows]),
            "chars_per_example": md_sizes([len(r["prompt"]) + len(r["completion"]) for r in rows]),
            "failure_policy": _policy(self.policy),
            "preview": md_preview(sorted(rows, key=lambda r: r["label"]), {
                "prompt (end)": lambda r: json_preview(r["prompt"]),
                "completion": lambda r: json_preview(r["completion"]),
                "label": lambda r: r["label"], "source": lambda r: r["source"],
            }, tail_columns=("prompt (end)",)),
        }


@dataclass
class SdpoReport:
    rows: list[dict]
    hints: Counter  # hint kind -> examples
    site: str
    hint_generator: str

    def metadata(self) -> dict[str, Any]:
        rows = self.rows
        return {
            "examples": dg.MetadataValue.int(len(rows)),
            "hints": md_counts("hint", dict(self.hints)),
            "by_error_kind": md_counts("error_kind", dict(Counter(r["error_kind"] or "n/a" for r in rows))),
            "prompt_messages": md_sizes([len(json.loads(r["prompt"])) for r in rows]),
            "hint_chars": md_sizes([len(r["hint"] or "") for r in rows]),
            "site": self.site, "hint_generator": self.hint_generator,
            "by_failure_class": md_counts("class", dict(Counter(r["failure_class"] or "n/a" for r in rows))),
            "final_reward": md_counts("final_reward", dict(Counter(r["final_reward"] for r in rows))),
            "preview": md_preview(rows, {
                "prompt (end)": lambda r: json_preview(r["prompt"]),
                "hint": lambda r: r["hint"],
                "completion": lambda r: json_preview(r["completion"]),
                "final_reward": lambda r: r["final_reward"],
            }, tail_columns=("prompt (end)",)),
        }


def build_sft(steps: Iterable[Mapping], now: dt.datetime, policy: FailurePolicy) -> tuple[list[dict], SftReport]:
    rows, skipped = sft_rows(steps, now, policy)
    return rows, SftReport(rows, skipped, policy)


def build_kto(steps: Iterable[Mapping], pairs: Iterable[Mapping], now: dt.datetime,
              policy: FailurePolicy) -> tuple[list[dict], KtoReport]:
    rows, labels = kto_rows(steps, pairs, now, policy)
    return rows, KtoReport(rows, labels, policy)


def build_sdpo(steps: Iterable[Mapping], now: dt.datetime, *, policy: FailurePolicy, site: str = "recovery",
               hint_generator: str = "template", hint_role: str = "user", max_hint_chars: int = 800,
               site_classes: Sequence[str] = (MISTAKE, INFORMATIVE)) -> tuple[list[dict], SdpoReport]:
    rows, hints = sdpo_rows(steps, now, hint_role=hint_role, max_hint_chars=max_hint_chars, site=site,
                            hint_generator_name=hint_generator, policy=policy, site_classes=tuple(site_classes))
    return rows, SdpoReport(rows, hints, site, hint_generator)
