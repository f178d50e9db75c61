"""Thin Dagster assets of the capture family: prompt_pool → capture_shards (GPU pool).

Resume: prompts are keyed by content hash, so a run first reads the prompt_ids already in
the verifier's shard table (plus those the post-filter dropped for it) and captures only
the rest, one Delta append per ``prompts_per_commit`` prompts — a killed run keeps every
batch it committed. A prompt that later leaves the pool keeps its rows; join on
prompt_pool when a training set must follow the current pool exactly.
"""


import time
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc

from assets.checks import table_check
from assets.capture.draw import draw_prompt_pool
from assets.capture.pool import load_pool_config
from assets.capture.run import CaptureOptions, CaptureReport, capture_run
from assets.capture.shards import captured_prompt_ids, check_fingerprint, open_shard_table
from assets.capture.tables import (
    CAPTURE_ASSET_KEY,
    CAPTURE_REJECTIONS,
    PROMPT_POOL,
    SCHEMA_VERSION,
    capture_spec,
)
from assets.pairs.tables import NORMALIZED_PAIRS
from assets.examples.tables import SFT_EXAMPLES
from resources import settings
from resources.verifier import VerifierResource, gpu_k8s_config
from resources.changes import record_consumed
from resources.lake import DeltaLake

GROUP = "capture"

# What a Kubernetes executor / run launcher needs to put the step on a GPU node.
GPU_OP_TAGS = {"dagster-k8s/config": gpu_k8s_config()}


# ------------------------------------------------------------------------- prompt pool
class PromptPoolConfig(dg.Config):
    quotas_path: str = ""  # default: <recipes>/capture_quotas.yaml
    full_refresh: bool = False  # draw from every upstream row, not the current pool + what changed


@dg.asset(
    key=PROMPT_POOL.asset_key,
    group_name=GROUP,
    deps=[NORMALIZED_PAIRS.asset_key, SFT_EXAMPLES.asset_key],
    kinds={"delta", "gold"},
    description=PROMPT_POOL.description,
    check_specs=[dg.AssetCheckSpec(
        "quotas_met", asset=PROMPT_POOL.asset_key,
        description="Every domain quota of capture_quotas.yaml was filled (WARN on a shortfall).",
    )],
)
def prompt_pool(context: dg.AssetExecutionContext, config: PromptPoolConfig, lake: DeltaLake):
    path = Path(config.quotas_path or settings.RECIPES_DIR / "capture_quotas.yaml")
    rows, report = draw_prompt_pool(lake, load_pool_config(path), path, full_refresh=config.full_refresh)
    result = lake.overwrite(PROMPT_POOL, rows)
    record_consumed(lake, PROMPT_POOL.path, report.versions, "full" if report.full else "incremental")
    for q in report.shortfalls:
        context.log.warning(
            f"prompt_pool: quota of {q.domain} not met: {q.selected}/{q.quota} "
            f"({q.available} candidates after filters and dedup)"
        )
    check = dg.AssetCheckResult(check_name="quotas_met", passed=not report.shortfalls,
                                severity=dg.AssetCheckSeverity.WARN, metadata=report.check_metadata())
    return dg.MaterializeResult(metadata=result.metadata() | report.metadata(), check_results=[check])


# ----------------------------------------------------------------------- capture shards
class CaptureConfig(dg.Config, CaptureOptions):
    """The run's capture options (assets/capture/run.py) and which prompts it takes."""

    max_prompts: int | None = None  # cap on prompts captured by one run
    domains: list[str] | None = None  # only these domains of the pool


@dg.multi_asset(
    name="gold__capture_shards",
    specs=[
        dg.AssetSpec(CAPTURE_ASSET_KEY, group_name=GROUP, deps=[PROMPT_POOL.asset_key],
                     kinds={"pytorch", "delta", "gold"},
                     description="Per-token verifier capture (top-k ids/probs + one fp16 hidden layer) "
                                 "for draft-model training, one Delta table per verifier/dtype/schema "
                                 "version (gold/capture_shards__<verifier>__<dtype>__v<N>); resumable."),
        CAPTURE_REJECTIONS.asset_spec(group_name=GROUP, deps=[PROMPT_POOL.asset_key]),
    ],
    pool="gpu",
    op_tags=GPU_OP_TAGS,
)
def capture_shards(context: dg.AssetExecutionContext, config: CaptureConfig, lake: DeltaLake,
                   verifier: VerifierResource):
    verifier_id, dtype = verifier.identity()
    spec = capture_spec(verifier_id, dtype)
    check_fingerprint(lake, spec, verifier.fingerprint())
    pool = lake.read(PROMPT_POOL, filter=pc.field("domain").isin(config.domains) if config.domains else None)
    done = captured_prompt_ids(lake, spec)
    rows = [r for r in pool.to_pylist() if r["prompt_id"] not in done]
    skipped = pool.num_rows - len(rows)
    rows.sort(key=lambda r: (r["n_chars"], r["prompt_id"]))  # similar lengths batch together
    if config.max_prompts is not None:
        rows = rows[: config.max_prompts]
    base_md = {
        "shard_table": spec.path,
        "verifier_id": verifier_id,
        "verifier_model": verifier.model_id(),
        "verifier_fingerprint": verifier.fingerprint(),
        "dtype": dtype,
        "schema_version": SCHEMA_VERSION,
        "prompts_in_pool": pool.num_rows,
        "prompts_already_captured": skipped,
        "resumed": skipped > 0,
    }
    if not rows:
        context.log.info(f"nothing to capture: all {pool.num_rows} pool prompts are in {spec.path}")
        report = CaptureReport(spec=spec)
        shard_md = {**base_md, "prompts_captured": 0, "tokens_captured": 0}
    else:
        t_load = time.perf_counter()
        loaded = verifier.load()
        load_s = time.perf_counter() - t_load
        report = capture_run(lake, spec, verifier_id, loaded, rows, config, top_k=verifier.top_k,
                             hidden_layer=verifier.hidden_layer, batch_tokens=verifier.batch_tokens,
                             max_length=verifier.max_length, run_id=context.run.run_id, log=context.log.info)
        report.load_seconds = load_s
        if report.hidden_clamped:
            context.log.warning(f"{report.hidden_clamped} hidden-state values in {report.clamped_sequences} "
                                f"sequences were beyond the fp16 range and clamped to ±65504 "
                                f"(layer {verifier.hidden_layer})")
        shard = lake.state(spec, rows_written=report.tokens, mode="append")
        shard_md = {**base_md, **shard.metadata(), **report.metadata()}
    yield dg.MaterializeResult(asset_key=CAPTURE_ASSET_KEY, metadata=shard_md)
    rejections = lake.state(CAPTURE_REJECTIONS, rows_written=report.rejections_written, mode="merge")
    yield dg.MaterializeResult(asset_key=CAPTURE_REJECTIONS.asset_key,
                               metadata=rejections.metadata() | report.rejections_metadata())


# --------------------------------------------------------------------------- checks
@dg.asset_check(asset=CAPTURE_ASSET_KEY, description=(
    "The shard table of the configured verifier records this code's schema version, its newest "
    "data file holds tensors of the recorded widths, and no (prompt, sequence, position) repeats."
))
def capture_shards_contract(lake: DeltaLake, verifier: VerifierResource) -> dg.AssetCheckResult:
    verifier_id, dtype = verifier.identity()
    try:
        spec, dt, props = open_shard_table(lake, verifier_id, dtype)
    except Exception as exc:  # missing table or other schema version
        return dg.AssetCheckResult(passed=False, metadata={"error": str(exc)})
    k, h = int(props["top_k"]), int(props["hidden_size"])
    problems = []
    frags = sorted(dt.to_pyarrow_dataset().get_fragments(), key=lambda f: f.path)
    if frags:
        sample = frags[-1].to_table(columns=["top_token_ids", "top_probs", "hidden_state"])
        for col, width in (("top_token_ids", 4 * k), ("top_probs", 2 * k), ("hidden_state", 2 * h)):
            lens = pc.binary_length(sample.column(col))
            if sample.num_rows and (pc.min(lens).as_py() != width or pc.max(lens).as_py() != width):
                problems.append(f"{col} not {width} bytes wide")
    keys = lake.read(spec, columns=["prompt_id", "sequence_index", "position_in_sequence"])
    dup = keys.group_by(["prompt_id", "sequence_index", "position_in_sequence"]).aggregate([([], "count_all")])
    n_dup = int(pc.sum(pc.greater(dup.column("count_all"), 1)).as_py() or 0)
    if n_dup:
        problems.append(f"{n_dup} duplicated positions")
    return dg.AssetCheckResult(
        passed=not problems,
        metadata={"table": spec.path, "rows": keys.num_rows, "problems": "; ".join(problems) or "none",
                  "files_sampled": min(1, len(frags))},
    )


ASSETS = [prompt_pool, capture_shards]
CHECKS = [capture_shards_contract, table_check(CAPTURE_REJECTIONS)]

defs = dg.Definitions(assets=ASSETS, asset_checks=CHECKS, resources={"verifier": VerifierResource()})
