"""Thin Dagster assets of the pairs family.

agent_steps + teacher_responses ─▶ preference_pairs ─▶ normalized_pairs + pair_rejections
"""

import datetime as dt
import json
import time
from collections import Counter

import dagster as dg
import pyarrow.compute as pc
from pydantic import Field

from assets.metadata import md_counts, md_table
from assets.pairs.dj_env import ensure_data_juicer
from assets.pairs.judge import PairJudge
from assets.pairs.strategies import (
    DEFAULT_BLOCKING_FLAGS,
    JudgeStrategy,
    build_pairs,
    make_strategy,
    steps_from_rows,
)
from assets.pairs.tables import NORMALIZED_PAIRS, PAIR_REJECTIONS, PREFERENCE_PAIRS
from assets.partitions import SESSION_BACKFILL, SESSIONS, check_scope, run_sessions
from assets.teachers.tables import TEACHER_RESPONSES
from assets.traces.tables import AGENT_STEPS
from resources.lake import DeltaLake, metadata_for
from assets.pairs.normalizer import Normalizer

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
        default=["error_site", "judge", "consensus"],
        description="Strategies by priority (a pair two strategies make is kept under the first). "
                    "'judge' runs only when the pair_judge resource is enabled.")
    consensus_similarity: str = Field(default="text", description="text | embedding (MiniLM)")
    consensus_threshold: float = Field(default=0.8, description="similarity at which two answers agree")
    min_answers: int = Field(default=3, description="consensus needs this many answers (original + teachers)")
    max_pairs_per_step: int = 1
    blocking_flags: list[str] = Field(default=list(DEFAULT_BLOCKING_FLAGS),
                                      description="teacher flags that make an answer never 'chosen'")


def strategies_from_config(config: PairsConfig, judge: PairJudge | None) -> tuple[list, list[str]]:
    out, skipped = [], []
    common = {"blocking_flags": config.blocking_flags}
    for name in config.strategies:
        if name == "judge":
            if judge is None or not judge.enabled:
                skipped.append("judge (pair_judge resource off)")
                continue
            out.append(JudgeStrategy(judge.score, min_margin=judge.min_margin, **common))
        elif name == "consensus":
            out.append(make_strategy(name, min_answers=config.min_answers,
                                     threshold=config.consensus_threshold,
                                     similarity=config.consensus_similarity, **common))
        elif name == "error_site":
            out.append(make_strategy(name, max_pairs_per_step=config.max_pairs_per_step, **common))
        else:
            out.append(make_strategy(name, **common))
    return out, skipped


@dg.asset(
    key=PREFERENCE_PAIRS.asset_key,
    group_name=GROUP,
    partitions_def=SESSIONS,
    backfill_policy=SESSION_BACKFILL,
    deps=[AGENT_STEPS.asset_key, TEACHER_RESPONSES.asset_key],
    kinds={"delta", "gold"},
    description=PREFERENCE_PAIRS.description,
)
def preference_pairs(context: dg.AssetExecutionContext, config: PairsConfig, lake: DeltaLake,
                     pair_judge: PairJudge) -> dg.MaterializeResult:
    rs = run_sessions(context, lake, AGENT_STEPS)
    keys = rs.keys
    t0 = time.perf_counter()
    step_rows = _read_steps(lake, rs.scope)
    teacher_rows = lake.read(TEACHER_RESPONSES, columns=TEACHER_COLUMNS, scope=rs.scope,
                             filter=pc.field("status") == "ok").to_pylist()
    strategies, skipped = strategies_from_config(config, pair_judge)
    rows, report = build_pairs(steps_from_rows(step_rows, teacher_rows), strategies, _now())
    result = lake.replace_sessions(PREFERENCE_PAIRS, rs.stamp(rows), rs.scope)
    by_source = Counter(f"{r['chosen_source']} > {r['rejected_source']}" for r in rows)
    md = result.metadata() | {
        "pairs": dg.MetadataValue.int(len(rows)),
        "steps": dg.MetadataValue.int(report.steps),
        "steps_with_teacher_answers": dg.MetadataValue.int(report.steps_with_teachers),
        "teacher_answers_ok": dg.MetadataValue.int(len(teacher_rows)),
        "pairs_by_strategy": md_counts("strategy", dict(report.by_strategy)),
        "pairs_by_source": md_counts("chosen > rejected", dict(by_source)),
        "merged_duplicates": dg.MetadataValue.int(report.merged_duplicates),
        "strategies": ", ".join(s.name for s in strategies) + (f" (skipped: {', '.join(skipped)})" if skipped else ""),
        "seconds": dg.MetadataValue.float(round(time.perf_counter() - t0, 3)),
    }
    return dg.MaterializeResult(metadata=md)


# ------------------------------------------------------------------ normalized_pairs

class NormalizeConfig(dg.Config):
    recipe: str = Field(default="", description="recipe name for this run (empty: the normalizer's)")


@dg.asset(
    key=NORMALIZED_PAIRS.asset_key,
    group_name=GROUP,
    deps=[PREFERENCE_PAIRS.asset_key],
    kinds={"delta", "gold"},
    description=NORMALIZED_PAIRS.description + " Also writes gold/pair_rejections (every dropped "
                "pair with the op, reason and stats that dropped it) in the same run.",
)
def normalized_pairs(context: dg.AssetExecutionContext, config: NormalizeConfig, lake: DeltaLake,
                     normalizer: Normalizer) -> dg.MaterializeResult:
    """All preference pairs through the data-juicer recipe (global dedup needs the whole set)."""
    recipe = normalizer.load(config.recipe or None)
    pairs = lake.read(PREFERENCE_PAIRS).to_pylist()
    pairs.sort(key=lambda r: (r["session_key"], r["step_id"], r["pair_id"]))
    pairs_version = lake.version(PREFERENCE_PAIRS)
    context.log.info(f"normalizing {len(pairs)} pairs with recipe {recipe.name}@{recipe.version}")
    res = normalizer.normalize(pairs, recipe)
    if len(res.kept) + len(res.rejections) != len(pairs):  # also asserted inside normalize
        raise dg.Failure(f"drop accounting: {len(res.kept)} kept + {len(res.rejections)} dropped "
                         f"!= {len(pairs)} pairs in")
    w_kept = lake.overwrite(NORMALIZED_PAIRS, res.kept)
    w_rej = lake.overwrite(PAIR_REJECTIONS, res.rejections)
    examples: dict[str, str] = {}
    for r in res.rejections:
        examples.setdefault(r["op"], r["reason"])
    ops_md = md_table(
        ["op", "rows in", "dropped", "seconds", "example reason"],
        [[o.name, o.rows_in, o.dropped, f"{o.seconds:.2f}", examples.get(o.name, "")[:120]] for o in res.ops])
    common = {
        "recipe": recipe.name,
        "recipe_version": recipe.version,
        "recipe_path": dg.MetadataValue.path(str(recipe.path)),
        "rows_in": dg.MetadataValue.int(len(pairs)),
        "rows_kept": dg.MetadataValue.int(len(res.kept)),
        "rows_dropped": dg.MetadataValue.int(len(res.rejections)),
        "preference_pairs_version": dg.MetadataValue.int(-1 if pairs_version is None else pairs_version),
    }
    langs = Counter(r.get("language") or "n/a" for r in res.kept)
    strategies = Counter(r["strategy"] for r in res.kept)
    return dg.MaterializeResult(metadata=metadata_for({"kept": w_kept, "pair_rejections": w_rej}) | common | {
        "drops_by_op": ops_md,
        "kept_by_strategy": md_counts("strategy", dict(strategies)),
        "kept_by_language": md_counts("language", dict(langs)),
        "seconds": dg.MetadataValue.float(round(res.seconds, 3)),
    })


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
    rows_in = md["rows_in"].value if "rows_in" in md else None
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
CHECKS = [preference_pairs_valid, pair_drop_accounting, normalized_pairs_render]
