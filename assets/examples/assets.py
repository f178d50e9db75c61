"""Thin Dagster assets of the examples family: the TRL training sets.

agent_steps (+ preference_pairs) ─▶ sft_examples, kto_examples, sdpo_examples
"""

import datetime as dt
import json
from collections import Counter

import dagster as dg
from pydantic import Field

from assets.examples.tables import KTO_EXAMPLES, SDPO_EXAMPLES, SFT_EXAMPLES
from assets.examples.training import kto_rows, sdpo_rows, sft_rows
from assets.metadata import md_counts, md_sizes
from assets.pairs.tables import PREFERENCE_PAIRS
from assets.partitions import SESSION_BACKFILL, SESSIONS, run_sessions
from assets.traces.tables import AGENT_STEPS
from resources.lake import DeltaLake

GROUP = "examples"
STEP_COLUMNS = ["session_key", "step_id", "step_index", "messages", "tools", "response",
                "response_text", "is_error_site", "error_kind", "error_text", "caused_error",
                "caused_error_kind", "model", "is_sidechain"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _read_steps(lake: DeltaLake, scope) -> list[dict]:
    return lake.read(AGENT_STEPS, columns=STEP_COLUMNS, scope=scope).to_pylist()


def _partitioned(spec, deps, description=None):
    return dict(key=spec.asset_key, group_name=GROUP, partitions_def=SESSIONS,
                backfill_policy=SESSION_BACKFILL, deps=deps, kinds={"delta", "gold"},
                description=description or spec.description)


@dg.asset(**_partitioned(SFT_EXAMPLES, [AGENT_STEPS.asset_key]))
def sft_examples(context: dg.AssetExecutionContext, lake: DeltaLake) -> dg.MaterializeResult:
    rs = run_sessions(context, lake, AGENT_STEPS)
    keys = rs.keys
    rows, skipped = sft_rows(_read_steps(lake, rs.scope), _now())
    w = lake.replace_sessions(SFT_EXAMPLES, rs.stamp(rows), rs.scope)
    return dg.MaterializeResult(metadata=w.metadata() | {
        "examples": dg.MetadataValue.int(len(rows)),
        "skipped_steps": md_counts("reason", dict(skipped)),
        "messages_per_example": md_sizes([len(json.loads(r["messages"])) for r in rows]),
        "chars_per_example": md_sizes([len(r["messages"]) for r in rows]),
    })


@dg.asset(**_partitioned(KTO_EXAMPLES, [AGENT_STEPS.asset_key, PREFERENCE_PAIRS.asset_key]))
def kto_examples(context: dg.AssetExecutionContext, lake: DeltaLake) -> dg.MaterializeResult:
    rs = run_sessions(context, lake, AGENT_STEPS)
    keys = rs.keys
    pairs = lake.read(PREFERENCE_PAIRS, columns=["session_key", "step_id", "prompt", "chosen", "tools",
                                                 "chosen_source"], scope=rs.scope).to_pylist()
    rows, counts = kto_rows(_read_steps(lake, rs.scope), pairs, _now())
    w = lake.replace_sessions(KTO_EXAMPLES, rs.stamp(rows), rs.scope)
    return dg.MaterializeResult(metadata=w.metadata() | {
        "examples": dg.MetadataValue.int(len(rows)),
        "labels": md_counts("label", dict(counts)),
        "by_source": md_counts("source", dict(Counter(r["source"] for r in rows))),
        "prompt_messages": md_sizes([len(json.loads(r["prompt"])) for r in rows]),
        "chars_per_example": md_sizes([len(r["prompt"]) + len(r["completion"]) for r in rows]),
    })


class SdpoConfig(dg.Config):
    hint_role: str = Field(default="user", description="role of the injected hint message (user | system)")
    max_hint_chars: int = 800


@dg.asset(**_partitioned(SDPO_EXAMPLES, [AGENT_STEPS.asset_key]))
def sdpo_examples(context: dg.AssetExecutionContext, config: SdpoConfig, lake: DeltaLake) -> dg.MaterializeResult:
    rs = run_sessions(context, lake, AGENT_STEPS)
    keys = rs.keys
    rows, counts = sdpo_rows(_read_steps(lake, rs.scope), _now(), hint_role=config.hint_role,
                             max_hint_chars=config.max_hint_chars)
    w = lake.replace_sessions(SDPO_EXAMPLES, rs.stamp(rows), rs.scope)
    return dg.MaterializeResult(metadata=w.metadata() | {
        "examples": dg.MetadataValue.int(len(rows)),
        "hints": md_counts("hint", dict(counts)),
        "by_error_kind": md_counts("error_kind", dict(Counter(r["error_kind"] or "n/a" for r in rows))),
        "prompt_messages": md_sizes([len(json.loads(r["prompt"])) for r in rows]),
        "hint_chars": md_sizes([len(r["hint"] or "") for r in rows]),
    })



ASSETS = [sft_examples, kto_examples, sdpo_examples]
CHECKS: list = []
