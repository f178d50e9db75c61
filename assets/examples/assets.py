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
from assets.metadata import json_preview, md_counts, md_preview, md_sizes
from assets.pairs.failures import INFORMATIVE, MISTAKE, load_failure_policy
from assets.pairs.tables import PREFERENCE_PAIRS
from assets.traces.partitions import SESSION_BACKFILL, SESSIONS, check_scope, run_sessions
from assets.traces.tables import AGENT_STEPS
from resources.lake import DeltaLake

GROUP = "examples"
STEP_COLUMNS = ["session_key", "session_id", "step_id", "step_index", "messages", "tools", "response",
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


class FailurePolicyConfig(dg.Config):
    failure_policy: str = Field(default="", description="failure policy YAML (mistake / informative / "
                                "external); empty: recipes/failures.yaml")


def _policy_md(policy) -> str:
    return f"{policy.path} @ {policy.version}"


@dg.asset(**_partitioned(SFT_EXAMPLES, [AGENT_STEPS.asset_key]))
def sft_examples(context: dg.AssetExecutionContext, config: FailurePolicyConfig,
                 lake: DeltaLake) -> dg.MaterializeResult:
    rs = run_sessions(context, lake, AGENT_STEPS)
    keys = rs.keys
    policy = load_failure_policy(config.failure_policy or None)
    rows, skipped = sft_rows(_read_steps(lake, rs.scope), _now(), policy)
    w = lake.replace_sessions(SFT_EXAMPLES, rs.stamp(rows), rs.scope)
    return dg.MaterializeResult(metadata=w.metadata() | {
        "examples": dg.MetadataValue.int(len(rows)),
        "skipped_steps": md_counts("reason", dict(skipped)),
        "messages_per_example": md_sizes([len(json.loads(r["messages"])) for r in rows]),
        "chars_per_example": md_sizes([len(r["messages"]) for r in rows]),
        "failure_policy": _policy_md(policy),
        "preview": md_preview(rows, {
            "context (end)": lambda r: json_preview(json.loads(r["messages"])[:-1]),
            "assistant turn": lambda r: json_preview(json.loads(r["messages"])[-1]),
        }, tail_columns=("context (end)",)),
    })


@dg.asset(**_partitioned(KTO_EXAMPLES, [AGENT_STEPS.asset_key, PREFERENCE_PAIRS.asset_key]))
def kto_examples(context: dg.AssetExecutionContext, config: FailurePolicyConfig,
                 lake: DeltaLake) -> dg.MaterializeResult:
    rs = run_sessions(context, lake, AGENT_STEPS)
    keys = rs.keys
    policy = load_failure_policy(config.failure_policy or None)
    pairs = lake.read(PREFERENCE_PAIRS, columns=["session_key", "step_id", "prompt", "chosen", "tools",
                                                 "chosen_source", "invalid_rule"], scope=rs.scope).to_pylist()
    rows, counts = kto_rows(_read_steps(lake, rs.scope), pairs, _now(), policy)
    w = lake.replace_sessions(KTO_EXAMPLES, rs.stamp(rows), rs.scope)
    return dg.MaterializeResult(metadata=w.metadata() | {
        "examples": dg.MetadataValue.int(len(rows)),
        "labels": md_counts("label", dict(counts)),
        "by_source": md_counts("source", dict(Counter(r["source"] for r in rows))),
        "prompt_messages": md_sizes([len(json.loads(r["prompt"])) for r in rows]),
        "chars_per_example": md_sizes([len(r["prompt"]) + len(r["completion"]) for r in rows]),
        "failure_policy": _policy_md(policy),
        "preview": md_preview(sorted(rows, key=lambda r: r["label"]), {
            "prompt (end)": lambda r: json_preview(r["prompt"]),
            "completion": lambda r: json_preview(r["completion"]),
            "label": lambda r: r["label"], "source": lambda r: r["source"],
        }, tail_columns=("prompt (end)",)),
    })


class SdpoConfig(dg.Config):
    site: str = Field(default="recovery", description="recovery: the assistant turn right after a failed "
                      "tool result (hint = the error excerpt); failing_turn: the turn whose own call "
                      "failed (hindsight hint)")
    hint_generator: str = Field(default="template", description="registered hint generator "
                                "(assets.examples.training.register_hint_generator): template | excerpt | ...")
    site_classes: list[str] = Field(default=[MISTAKE, INFORMATIVE],
                                    description="failure classes that make a site (recipes/failures.yaml)")
    failure_policy: str = Field(default="", description="failure policy YAML; empty: recipes/failures.yaml")
    hint_role: str = Field(default="user", description="role of the injected hint message (user | system)")
    max_hint_chars: int = 800


@dg.asset(**_partitioned(SDPO_EXAMPLES, [AGENT_STEPS.asset_key]))
def sdpo_examples(context: dg.AssetExecutionContext, config: SdpoConfig, lake: DeltaLake) -> dg.MaterializeResult:
    rs = run_sessions(context, lake, AGENT_STEPS)
    keys = rs.keys
    policy = load_failure_policy(config.failure_policy or None)
    rows, counts = sdpo_rows(_read_steps(lake, rs.scope), _now(), hint_role=config.hint_role,
                             max_hint_chars=config.max_hint_chars, site=config.site,
                             hint_generator_name=config.hint_generator, policy=policy,
                             site_classes=tuple(config.site_classes))
    w = lake.replace_sessions(SDPO_EXAMPLES, rs.stamp(rows), rs.scope)
    return dg.MaterializeResult(metadata=w.metadata() | {
        "examples": dg.MetadataValue.int(len(rows)),
        "hints": md_counts("hint", dict(counts)),
        "by_error_kind": md_counts("error_kind", dict(Counter(r["error_kind"] or "n/a" for r in rows))),
        "prompt_messages": md_sizes([len(json.loads(r["prompt"])) for r in rows]),
        "hint_chars": md_sizes([len(r["hint"] or "") for r in rows]),
        "site": config.site, "hint_generator": config.hint_generator,
        "by_failure_class": md_counts("class", dict(Counter(r["failure_class"] or "n/a" for r in rows))),
        "final_reward": md_counts("final_reward", dict(Counter(r["final_reward"] for r in rows))),
        "preview": md_preview(rows, {
            "prompt (end)": lambda r: json_preview(r["prompt"]),
            "hint": lambda r: r["hint"],
            "completion": lambda r: json_preview(r["completion"]),
            "final_reward": lambda r: r["final_reward"],
        }, tail_columns=("prompt (end)",)),
    })



ASSETS = [sft_examples, kto_examples, sdpo_examples]
CHECKS: list = []

defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS)
