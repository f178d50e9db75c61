"""Thin Dagster assets of the capture family: prompt_pool → capture_shards (GPU pool).

Resume: prompts are keyed by content hash, so a run first reads the prompt_ids already in
the verifier's shard table (plus those the post-filter dropped for it) and captures only
the rest, one Delta append per ``prompts_per_commit`` prompts — a killed run keeps every
batch it committed. A prompt that later leaves the pool keeps its rows; join on
prompt_pool when a training set must follow the current pool exactly.
"""


import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pyarrow.compute as pc

from assets.checks import table_check
from assets.metadata import json_preview, md_preview, md_table
from assets.capture.pool import (
    candidates_from_file,
    candidates_from_pairs,
    candidates_from_pool,
    candidates_from_sft,
    compose_pool,
    load_pool_config,
)
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
from resources.changes import changes_since, consumed_versions, record_consumed, scan
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
    cfg = load_pool_config(path)
    candidates, per_source, bad_lines = [], Counter(), 0
    # Only what changed upstream since the last refresh (change feeds), drawn together with
    # the current pool: a prompt's draw rank does not depend on the others, so this is the
    # pool a full draw over everything gives (except prompts deleted upstream, which stay).
    state = consumed_versions(lake, PROMPT_POOL.path)
    cfg_version = int(cfg.config_hash[:12], 16)
    full = (config.full_refresh or not lake.exists(PROMPT_POOL)
            or state.get("quota_config") not in (None, cfg_version))
    if not full:
        current = lake.read(PROMPT_POOL, columns=["prompt_id", "messages", "tools", "source", "source_id"])
        candidates += candidates_from_pool(current.to_pylist())
        per_source["current pool"] = current.num_rows
    inputs = []
    if cfg.use_normalized_pairs:
        inputs.append((NORMALIZED_PAIRS, ["pair_id", "prompt", "chosen", "tools"], candidates_from_pairs))
    if cfg.use_sft_examples:
        inputs.append((SFT_EXAMPLES, ["example_id", "messages", "tools"], candidates_from_sft))
    versions, modes = {"quota_config": cfg_version}, {}
    for spec, cols, make in inputs:
        ch = changes_since(lake, spec, state.get(spec.path), cols, full=full)
        versions[spec.path], modes[spec.name] = ch.version, ("full" if ch.full else "incremental")
        if ch.version is None or ch.empty:
            continue
        for b in (scan(lake, spec, cols, version=ch.version) if ch.full else ch.inserted()):
            candidates += make(b.to_pylist())
            per_source[spec.name] += b.num_rows
    for f in cfg.file_paths():
        if not f.is_file():
            raise FileNotFoundError(f"prompt file listed in {path} does not exist: {f}")
        got, bad = candidates_from_file(f)
        candidates += got
        bad_lines += bad
        per_source[f"file:{f.name}"] = len(got)

    rows, report = compose_pool(candidates, cfg)
    now = datetime.now(timezone.utc)
    for r in rows:
        r["created_at"] = now
    result = lake.overwrite(PROMPT_POOL, rows)
    record_consumed(lake, PROMPT_POOL.path, versions, "full" if full else "incremental")

    shortfalls = report.shortfalls
    for q in shortfalls:
        context.log.warning(
            f"prompt_pool: quota of {q.domain} not met: {q.selected}/{q.quota} "
            f"({q.available} candidates after filters and dedup)"
        )
    quota_md = md_table(("domain", "quota", "available", "selected", "shortfall"),
                         [(q.domain, q.quota, q.available, q.selected, q.shortfall) for q in report.quotas])
    check = dg.AssetCheckResult(
        check_name="quotas_met",
        passed=not shortfalls,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "shortfall_domains": ", ".join(q.domain for q in shortfalls) or "none",
            "total_shortfall": sum(q.shortfall for q in shortfalls),
            "quotas": quota_md,
        },
    )
    return dg.MaterializeResult(
        metadata={
            **result.metadata(),
            "quota_config": dg.MetadataValue.path(str(path)),
            "refresh_mode": "full" if full else "incremental",
            "input_refresh": md_table(("input", "mode", "version"),
                                      [(k, modes[k.split("/")[-1]], v) for k, v in versions.items() if "/" in k]),
            "config_hash": cfg.config_hash,
            "seed": cfg.seed,
            "candidates": report.candidates,
            "candidates_by_source": md_table(("source", "rows"), sorted(per_source.items())),
            "bad_file_lines": bad_lines,
            "dropped_by_reason": md_table(("reason", "count"), sorted(report.dropped.items())),
            "unassigned_by_domain": md_table(("domain (no quota)", "candidates"), sorted(report.unassigned.items())),
            "quotas": quota_md,
            "quota_shortfall_total": sum(q.shortfall for q in shortfalls),
            "languages": md_table(("language", "prompts"), sorted(report.languages.items(), key=lambda kv: -kv[1])),
            "language_detector": cfg.language_detector,
            "near_duplicate_threshold": cfg.near_duplicate_threshold,
            "near_duplicates": md_table(("dropped prompt_id", "near-duplicate of"),
                                        sorted(report.near_duplicates.items())[:5]),
            "preview": md_preview(rows, {
                "domain": lambda r: r["domain"], "language": lambda r: r["language"],
                "conversation": lambda r: json_preview(r["messages"]),
            }, n=3),
        },
        check_results=[check],
    )


# ----------------------------------------------------------------------- capture shards
class CaptureConfig(dg.Config):
    max_new_tokens: int = 0  # 0 = read-only capture of the conversation; > 0 = greedy answer
    block_size: int = 16  # KV-cache block size for block_index / position_in_block
    prompts_per_commit: int = 32  # one Delta commit per this many prompts (resume granularity)
    max_prompts: int | None = None  # cap on prompts captured by one run
    domains: list[str] | None = None  # only these domains of the pool
    low_confidence_threshold: float = 0.25
    repetition_ngram: int = 4
    repetition_threshold: float = 0.5
    postfilter_action: str = "flag"  # flag (keep rows, set filter_reason) | drop


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
    opts = CaptureOptions(**config.model_dump(exclude={"max_prompts", "domains"}))
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
        report = capture_run(lake, spec, verifier_id, loaded, rows, opts, top_k=verifier.top_k,
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
    yield dg.MaterializeResult(asset_key=CAPTURE_REJECTIONS.asset_key, metadata=rejections.metadata() | {
        "shard_table": spec.path,
        "postfilter_flagged": report.flagged,
        "postfilter_dropped": report.dropped,
        "postfilter": md_table(("reason", "sequences"), sorted(report.reasons.items())),
    })


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
