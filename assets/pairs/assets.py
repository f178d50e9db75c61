"""Thin Dagster assets of the pairs family.

agent_steps + teacher_responses ─▶ preference_pairs ─▶ normalized_pairs + pair_rejections
"""

import datetime as dt
import json

import dagster as dg
import pyarrow.compute as pc
from pydantic import Field

from assets.checks import table_check
from assets.metadata import md_table
from assets.pairs.normalize import ensure_data_juicer
from assets.pairs.judge import JudgeScorer, PairJudge
from assets.pairs.mine import mine_pairs
from assets.pairs.strategies import (
    DEFAULT_BLOCKING_FLAGS,
    JudgeStrategy,
    make_strategy,
)
from assets.traces.failures import load_failure_policy
from assets.pairs.validity import RULES as VALIDITY_RULES
from assets.pairs.validity import ValidityConfig
from assets.pairs.tables import NORMALIZED_PAIRS, PAIR_REJECTIONS, PREFERENCE_PAIRS
from assets.traces.partitions import check_scope, run_sessions, session_asset
from assets.teachers.tables import TEACHER_RESPONSES
from assets.traces.tables import AGENT_STEPS, TRACE_TURNS
from assets.pairs.imported import REJECTED_TURN_COLUMNS
from resources.changes import refresh_state_event
from resources.lake import DeltaLake
from assets.pairs.normalizer import Normalizer
from assets.pairs.refresh import refresh_normalized_pairs

GROUP = "pairs"
STEP_COLUMNS = ["session_key", "step_id", "step_index", "messages", "tools", "response",
                "response_text", "is_error_site", "error_kind", "error_text", "caused_error",
                "caused_error_kind", "model", "is_sidechain"]
TEACHER_COLUMNS = ["session_key", "step_id", "teacher", "model", "status", "message", "text", "flags"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _read_steps(lake: DeltaLake, scope) -> list[dict]:
    return lake.read(AGENT_STEPS, columns=STEP_COLUMNS, scope=scope).to_pylist()


# ------------------------------------------------------------------ preference_pairs

class PairsConfig(dg.Config):
    strategies: list[str] = Field(
        default=["error_site", "recovery", "judge", "consensus"],
        description="Strategies by priority (a pair two strategies make is kept under the first). "
                    "'judge' runs only when the pair_judge resource is enabled.")
    consensus_similarity: str = Field(default="text", description="text | embedding (MiniLM)")
    consensus_threshold: float = Field(default=0.8, description="similarity at which two answers agree")
    min_answers: int = Field(default=3, description="consensus needs this many answers (original + teachers)")
    max_pairs_per_step: int = Field(default=3, description="error_site: one pair per teacher alternative "
                                    "that passes the validity rules, up to this many (they share the rejected step)")
    blocking_flags: list[str] = Field(default=list(DEFAULT_BLOCKING_FLAGS),
                                      description="teacher flags that make an answer never 'chosen'")
    failure_policy: str = Field(default="", description="failure policy YAML (mistake / informative / "
                                "external); empty: recipes/failures.yaml")
    validity_rules: list[str] = Field(default=list(VALIDITY_RULES),
                                      description="pair validity rules stamped on candidates (invalid_rule)")
    min_text_chars: int = Field(default=30, description="a text-only chosen answer needs this many characters")
    text_fixes: list[str] = Field(default=list(ValidityConfig.text_fixes),
                                  description="failure rules after which a teacher's text may replace the failed call")


def validity_from_config(config: PairsConfig) -> ValidityConfig:
    return ValidityConfig(tuple(config.validity_rules), config.min_text_chars, text_fixes=tuple(config.text_fixes))


def strategies_from_config(config: PairsConfig, judge: PairJudge | None,
                           scorer: JudgeScorer | None = None) -> tuple[list, list[str]]:
    out, skipped = [], []
    common = {"blocking_flags": config.blocking_flags, "validity": validity_from_config(config)}
    for name in config.strategies:
        if name == "judge":
            if judge is None or not judge.enabled:
                skipped.append("judge (pair_judge resource off)")
                continue
            out.append(JudgeStrategy(scorer.score if scorer is not None else judge.score,
                                     min_margin=judge.min_margin, **common))
        elif name == "consensus":
            out.append(make_strategy(name, min_answers=config.min_answers,
                                     threshold=config.consensus_threshold,
                                     similarity=config.consensus_similarity, **common))
        elif name == "error_site":
            out.append(make_strategy(name, max_pairs_per_step=config.max_pairs_per_step, **common))
        else:
            out.append(make_strategy(name, **common))
    return out, skipped


@dg.asset(**session_asset(PREFERENCE_PAIRS, [AGENT_STEPS, TEACHER_RESPONSES, TRACE_TURNS], GROUP,
                          description=PREFERENCE_PAIRS.description + " Pairs of ingested preference datasets "
                          "come in as strategy 'imported' (assets/pairs/imported.py)."))
def preference_pairs(context: dg.AssetExecutionContext, config: PairsConfig, lake: DeltaLake,
                     pair_judge: PairJudge) -> dg.MaterializeResult:
    rs = run_sessions(context, lake, AGENT_STEPS)
    step_rows = _read_steps(lake, rs.scope)
    teacher_rows = lake.read(TEACHER_RESPONSES, columns=TEACHER_COLUMNS, scope=rs.scope,
                             filter=pc.field("status") == "ok").to_pylist()
    rejected_turns = lake.read(TRACE_TURNS, columns=REJECTED_TURN_COLUMNS, scope=rs.scope,
                               filter=pc.field("kind") == "rejected").to_pylist()
    scorer = pair_judge.scorer() if pair_judge.enabled else None
    strategies, skipped = strategies_from_config(config, pair_judge, scorer)
    rows, report = mine_pairs(step_rows, teacher_rows, rejected_turns, strategies=strategies,
                              skipped_strategies=skipped, policy=load_failure_policy(config.failure_policy or None),
                              validity=validity_from_config(config), now=_now(), judge=pair_judge.describe(),
                              scorer=scorer, confirm=pair_judge.confirm, confirm_margin=pair_judge.confirm_margin)
    result = lake.replace_sessions(PREFERENCE_PAIRS, rs.stamp(rows), rs.scope)
    return dg.MaterializeResult(metadata=result.metadata() | report.metadata())


# ------------------------------------------------------------------ normalized_pairs

class NormalizeConfig(dg.Config):
    recipe: str = Field(default="", description="recipe name for this run (empty: the normalizer's)")
    full_refresh: bool = Field(default=False, description="rebuild from every pair instead of the changed sessions")
    group_rows: int = Field(default=5000, description="pairs per recipe run (memory bound of a refresh)")


@dg.multi_asset(
    name="gold__normalized_pairs",
    specs=[NORMALIZED_PAIRS.asset_spec(group_name=GROUP, deps=[PREFERENCE_PAIRS.asset_key]),
           PAIR_REJECTIONS.asset_spec(group_name=GROUP, deps=[PREFERENCE_PAIRS.asset_key])],
    description="The data-juicer recipe over the preference pairs: the kept pairs and, in the same "
                "run, every dropped pair with the op, reason and stats that dropped it. Refreshes "
                "the sessions whose pairs changed since the last run (full_refresh: all).",
)
def normalized_pairs(context: dg.AssetExecutionContext, config: NormalizeConfig, lake: DeltaLake,
                     normalizer: Normalizer):
    """The changed sessions' preference pairs through the data-juicer recipe (assets/pairs/refresh.py)."""
    recipe = normalizer.load(config.recipe or None)
    rep = refresh_normalized_pairs(lake, recipe, overrides=normalizer.overrides(), full=config.full_refresh,
                                   group_rows=config.group_rows, log=context.log.info)
    context.log.info(f"normalized_pairs: {rep.mode} ({rep.reason}): {rep.sessions} sessions, "
                     f"{rep.rows_in} pairs with recipe {recipe.name}@{recipe.version}")
    kept = lake.state(NORMALIZED_PAIRS, rows_written=rep.kept, mode="replace sessions")
    yield dg.MaterializeResult(asset_key=NORMALIZED_PAIRS.asset_key, metadata=kept.metadata() | rep.kept_metadata())
    dropped = lake.state(PAIR_REJECTIONS, rows_written=rep.dropped, mode="replace sessions")
    yield dg.MaterializeResult(asset_key=PAIR_REJECTIONS.asset_key,
                               metadata=dropped.metadata() | rep.rejected_metadata())
    context.log_event(refresh_state_event(lake, NORMALIZED_PAIRS.path))


# ------------------------------------------------------------------ asset checks

def pair_problems(row: dict) -> str:
    """'' when chosen and rejected are non-empty single assistant messages that differ."""
    try:
        chosen, rejected = json.loads(row["chosen"]), json.loads(row["rejected"])
    except (TypeError, ValueError) as exc:
        return f"invalid JSON: {exc}"
    for name, ans in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(ans, list) or len(ans) != 1 or ans[0].get("role") != "assistant":
            return f"{name} is not [assistant message]"
        if not (ans[0].get("content") or "").strip() and not ans[0].get("tool_calls"):
            return f"{name} is empty"
    if chosen == rejected:
        return "chosen == rejected"
    return ""


@dg.asset_check(asset=PREFERENCE_PAIRS.asset_key, description="chosen/rejected non-empty and different")
def preference_pairs_valid(context: dg.AssetCheckExecutionContext, lake: DeltaLake) -> dg.AssetCheckResult:
    rows = lake.read(PREFERENCE_PAIRS, columns=["pair_id", "chosen", "rejected"],
                     scope=check_scope(context, lake)).to_pylist()
    bad = [(r["pair_id"], p) for r in rows if (p := pair_problems(r))]
    return dg.AssetCheckResult(passed=not bad, metadata={
        "pairs": len(rows), "invalid": len(bad),
        "examples": md_table(["pair_id", "problem"], [list(b) for b in bad[:10]]),
    })


@dg.asset_check(asset=NORMALIZED_PAIRS.asset_key, description="kept + rejections == pairs in, ids disjoint")
def pair_drop_accounting(context: dg.AssetCheckExecutionContext, lake: DeltaLake) -> dg.AssetCheckResult:
    kept = set(lake.read(NORMALIZED_PAIRS, columns=["pair_id"]).column("pair_id").to_pylist())
    dropped = set(lake.read(PAIR_REJECTIONS, columns=["pair_id"]).column("pair_id").to_pylist())
    n_kept, n_dropped = lake.read(NORMALIZED_PAIRS, columns=["pair_id"]).num_rows, \
        lake.read(PAIR_REJECTIONS, columns=["pair_id"]).num_rows
    ev = context.instance.get_latest_materialization_event(NORMALIZED_PAIRS.asset_key)
    md = ev.asset_materialization.metadata if ev and ev.asset_materialization else {}
    # the pairs the table stands for (a refresh processes only the changed sessions: rows_in)
    rows_in = md["pairs_total"].value if "pairs_total" in md else md["rows_in"].value if "rows_in" in md else None
    problems = []
    if rows_in is None:
        problems.append("no rows_in recorded by the last materialization")
    elif n_kept + n_dropped != rows_in:
        problems.append(f"{n_kept} kept + {n_dropped} dropped != {rows_in} in")
    if kept & dropped:
        problems.append(f"{len(kept & dropped)} pair ids both kept and dropped")
    if len(kept) != n_kept or len(dropped) != n_dropped:
        problems.append("duplicate pair ids")
    version = md["preference_pairs_version"].value if "preference_pairs_version" in md else None
    if version is not None and version == lake.version(PREFERENCE_PAIRS):
        ids = set(lake.read(PREFERENCE_PAIRS, columns=["pair_id"]).column("pair_id").to_pylist())
        if ids != kept | dropped:
            problems.append(f"{len(ids - kept - dropped)} pairs neither kept nor dropped, "
                            f"{len(kept | dropped) - len(ids & (kept | dropped))} unknown")
    return dg.AssetCheckResult(passed=not problems, metadata={
        "rows_in": -1 if rows_in is None else rows_in, "kept": n_kept, "dropped": n_dropped,
        "problems": "; ".join(problems) or "none",
    })


@dg.asset_check(asset=NORMALIZED_PAIRS.asset_key,
                description="prompt+chosen / prompt+rejected render with the verifier's chat template")
def normalized_pairs_render(lake: DeltaLake, normalizer: Normalizer) -> dg.AssetCheckResult:
    rows = lake.read(NORMALIZED_PAIRS, columns=["pair_id", "prompt", "chosen", "rejected", "tools"]).to_pylist()
    sample = sorted(rows, key=lambda r: r["pair_id"])[:200]
    args = next((dict(a or {}) for p in normalizer.load().process for n, a in p.items()
                 if n == "chat_template_validation_filter"), {})
    args.update(normalizer.overrides().get("chat_template_validation_filter", {}))
    ensure_data_juicer()
    from assets.pairs.dj_ops import ChatTemplateValidationFilter

    op = ChatTemplateValidationFilter(**args)
    bad = []
    for r in sample:
        st = op.check(r["prompt"], r["chosen"], r["rejected"], r["tools"])
        if not op.keep(st):
            bad.append([r["pair_id"], op.drop_reason(st)])
    return dg.AssetCheckResult(passed=not bad, metadata={
        "checked": len(sample), "of": len(rows), "tokenizer": op.tokenizer, "failed": len(bad),
        "examples": md_table(["pair_id", "problem"], bad[:10]),
    })


ASSETS = [preference_pairs, normalized_pairs]
CHECKS = [preference_pairs_valid, pair_drop_accounting, normalized_pairs_render, table_check(PAIR_REJECTIONS)]

defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS,
                      resources={"normalizer": Normalizer(), "pair_judge": PairJudge()})
