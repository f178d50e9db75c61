"""Thin Dagster assets of the examples family: the TRL training sets.

agent_steps (+ preference_pairs) ─▶ sft_examples, kto_examples, sdpo_examples
"""

import datetime as dt

import dagster as dg
from pydantic import Field

from assets.examples.tables import KTO_EXAMPLES, SDPO_EXAMPLES, SFT_EXAMPLES
from assets.examples.build import build_kto, build_sdpo, build_sft
from assets.traces.failures import INFORMATIVE, MISTAKE, load_failure_policy
from assets.pairs.tables import PREFERENCE_PAIRS
from assets.traces.partitions import run_sessions, session_asset
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


class FailurePolicyConfig(dg.Config):
    failure_policy: str = Field(default="", description="failure policy YAML (mistake / informative / "
                                "external); empty: recipes/failures.yaml")


@dg.asset(**session_asset(SFT_EXAMPLES, [AGENT_STEPS], GROUP))
def sft_examples(context: dg.AssetExecutionContext, config: FailurePolicyConfig,
                 lake: DeltaLake) -> dg.MaterializeResult:
    rs = run_sessions(context, lake, AGENT_STEPS)
    rows, report = build_sft(_read_steps(lake, rs.scope), _now(), load_failure_policy(config.failure_policy or None))
    w = lake.replace_sessions(SFT_EXAMPLES, rs.stamp(rows), rs.scope)
    return dg.MaterializeResult(metadata=w.metadata() | report.metadata())


@dg.asset(**session_asset(KTO_EXAMPLES, [AGENT_STEPS, PREFERENCE_PAIRS], GROUP))
def kto_examples(context: dg.AssetExecutionContext, config: FailurePolicyConfig,
                 lake: DeltaLake) -> dg.MaterializeResult:
    rs = run_sessions(context, lake, AGENT_STEPS)
    pairs = lake.read(PREFERENCE_PAIRS, columns=["session_key", "step_id", "prompt", "chosen", "tools",
                                                 "chosen_source", "invalid_rule"], scope=rs.scope).to_pylist()
    rows, report = build_kto(_read_steps(lake, rs.scope), pairs, _now(),
                             load_failure_policy(config.failure_policy or None))
    w = lake.replace_sessions(KTO_EXAMPLES, rs.stamp(rows), rs.scope)
    return dg.MaterializeResult(metadata=w.metadata() | report.metadata())


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


@dg.asset(**session_asset(SDPO_EXAMPLES, [AGENT_STEPS], GROUP))
def sdpo_examples(context: dg.AssetExecutionContext, config: SdpoConfig, lake: DeltaLake) -> dg.MaterializeResult:
    rs = run_sessions(context, lake, AGENT_STEPS)
    rows, report = build_sdpo(_read_steps(lake, rs.scope), _now(),
                              policy=load_failure_policy(config.failure_policy or None), site=config.site,
                              hint_generator=config.hint_generator, hint_role=config.hint_role,
                              max_hint_chars=config.max_hint_chars, site_classes=config.site_classes)
    w = lake.replace_sessions(SDPO_EXAMPLES, rs.stamp(rows), rs.scope)
    return dg.MaterializeResult(metadata=w.metadata() | report.metadata())


ASSETS = [sft_examples, kto_examples, sdpo_examples]
CHECKS: list = []

defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS)
