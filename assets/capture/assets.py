"""Thin Dagster assets of the capture family: prompt_pool → capture_shards (GPU pool).

Resume: prompts are keyed by content hash, so a run first reads the prompt_ids already in
the verifier's shard table (plus those the post-filter dropped for it) and captures only
the rest, one Delta append per ``prompts_per_commit`` prompts — a killed run keeps every
batch it committed. A prompt that later leaves the pool keeps its rows; join on
prompt_pool when a training set must follow the current pool exactly.
"""


import json
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow.compute as pc

from assets.metadata import md_table
from assets.capture import postfilter
from assets.capture.capture import (
    CaptureSettings,
    PromptIn,
    build_shard_table,
    capture_prompts,
    iter_chunks,
    sliding_window_of,
)
from assets.capture.pool import (
    candidates_from_file,
    candidates_from_pairs,
    candidates_from_sft,
    compose_pool,
    load_pool_config,
)
from assets.capture.shards import (
    append_shard,
    captured_prompt_ids,
    ensure_shard_table,
    open_shard_table,
    table_properties,
)
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
from resources.lake import DeltaLake, count_rows

GROUP = "capture"

# What a Kubernetes executor / run launcher needs to put the step on a GPU node.
GPU_OP_TAGS = {"dagster-k8s/config": gpu_k8s_config()}


# ------------------------------------------------------------------------- prompt pool
class PromptPoolConfig(dg.Config):
    quotas_path: str = ""  # default: <recipes>/capture_quotas.yaml


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
    if cfg.use_normalized_pairs:
        pairs = lake.read(NORMALIZED_PAIRS, columns=["pair_id", "prompt", "chosen", "tools"]).to_pylist()
        candidates += candidates_from_pairs(pairs)
        per_source["normalized_pairs"] = len(pairs)
    if cfg.use_sft_examples:
        sft = lake.read(SFT_EXAMPLES, columns=["example_id", "messages", "tools"]).to_pylist()
        candidates += candidates_from_sft(sft)
        per_source["sft_examples"] = len(sft)
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


HIST_EDGES = np.linspace(0.0, 1.0, 11)


def _histogram_md(counts: np.ndarray) -> dg.MetadataValue:
    total = int(counts.sum()) or 1
    rows = [(f"{HIST_EDGES[i]:.1f}–{HIST_EDGES[i + 1]:.1f}", int(c), f"{100 * c / total:.1f}%",
             "█" * int(round(20 * c / total))) for i, c in enumerate(counts)]
    return md_table(("top-1 prob", "tokens", "share", ""), rows)


@dg.asset(
    key=CAPTURE_ASSET_KEY,
    group_name=GROUP,
    deps=[PROMPT_POOL.asset_key],
    pool="gpu",
    op_tags=GPU_OP_TAGS,
    kinds={"pytorch", "delta", "gold"},
    description=(
        "Per-token verifier capture (top-k ids/probs + one fp16 hidden layer) for draft-model "
        "training, one Delta table per verifier/dtype/schema version; resumable."
    ),
)
def capture_shards(context: dg.AssetExecutionContext, config: CaptureConfig, lake: DeltaLake, verifier: VerifierResource):
    if config.postfilter_action not in ("flag", "drop"):
        raise ValueError("postfilter_action must be 'flag' or 'drop'")
    verifier_id, dtype = verifier.identity()
    spec = capture_spec(verifier_id, dtype)
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
        "dtype": dtype,
        "schema_version": SCHEMA_VERSION,
        "prompts_in_pool": pool.num_rows,
        "prompts_already_captured": skipped,
        "resumed": skipped > 0,
    }
    if not rows:
        context.log.info(f"nothing to capture: all {pool.num_rows} pool prompts are in {spec.path}")
        return dg.MaterializeResult(metadata={**base_md, "prompts_captured": 0, "tokens_captured": 0})

    t_load = time.perf_counter()
    loaded = verifier.load()
    load_s = time.perf_counter() - t_load
    settings_ = CaptureSettings(top_k=verifier.top_k, hidden_layer=verifier.hidden_layer, batch_tokens=verifier.batch_tokens,
                                max_length=verifier.max_length, max_new_tokens=config.max_new_tokens,
                                block_size=config.block_size)
    H, K = loaded.hidden_size, verifier.top_k
    if not -(loaded.num_layers + 1) <= verifier.hidden_layer <= loaded.num_layers:
        raise ValueError(f"hidden_layer {verifier.hidden_layer} outside the verifier's "
                         f"{loaded.num_layers + 1} hidden states (embeddings + layers)")
    props = table_properties(verifier_id=verifier_id, dtype=loaded.dtype, top_k=K, hidden_size=H,
                             hidden_layer=verifier.hidden_layer, block_size=config.block_size)
    ensure_shard_table(lake, spec, props)
    pf = postfilter.PostFilterConfig(config.low_confidence_threshold, config.repetition_ngram,
                                     config.repetition_threshold)
    window = sliding_window_of(loaded.model)
    run_id = context.run.run_id

    tokens = gen_tokens = seqs = truncated = bytes_added = commits = 0
    version = None
    hist = np.zeros(len(HIST_EDGES) - 1, dtype=np.int64)
    top1_sum = 0.0
    reasons_count: Counter = Counter()
    flagged = dropped = 0
    t0 = time.perf_counter()
    for group in iter_chunks(rows, max(1, config.prompts_per_commit)):
        caps = capture_prompts(loaded, [PromptIn.from_row(r) for r in group], settings_)
        rejections, keep, keep_reasons = [], [], []
        now = datetime.now(timezone.utc)
        for c in caps:
            rs, st = postfilter.evaluate(c.token_ids, c.top1, c.n_prompt_tokens, c.generated,
                                         c.ended_with_eos, pf)
            reason = ";".join(rs) or None
            reasons_count.update(rs)
            if reason:
                action = "dropped" if config.postfilter_action == "drop" else "flagged"
                flagged += action == "flagged"
                dropped += action == "dropped"
                rejections.append({
                    "shard_table": spec.name, "prompt_id": c.prompt.prompt_id,
                    "sequence_index": c.sequence_index, "action": action, "reason": reason,
                    "stats": json.dumps({**st, "truncated": c.truncated}), "n_tokens": c.n_tokens,
                    "run_id": run_id, "created_at": now,
                })
            if reason is None or config.postfilter_action == "flag":
                keep.append(c)
                keep_reasons.append(reason)
        table = build_shard_table(keep, keep_reasons, config.block_size, window, run_id)
        if table.num_rows:
            n_gen = int(sum(int(c.n_tokens - c.n_prompt_tokens) for c in keep if c.generated))
            res = append_shard(lake, spec, table, {
                **{k: v for k, v in props.items()}, "tracelake.run_id": run_id,
                "tracelake.verifier_path": loaded.path, "tracelake.device": loaded.device,
                "tracelake.max_new_tokens": config.max_new_tokens,
                "tracelake.tokens": table.num_rows, "tracelake.sequences": len(keep),
            })
            version, commits = res.version, commits + 1
            bytes_added += res.bytes_added
            tokens += table.num_rows
            gen_tokens += n_gen
            seqs += len(keep)
            truncated += sum(c.truncated for c in keep)
            top1 = table.column("verifier_top1_prob").to_numpy()
            hist += np.histogram(top1, bins=HIST_EDGES)[0]
            top1_sum += float(top1.sum(dtype=np.float64))
        if rejections:
            lake.merge(CAPTURE_REJECTIONS, rejections)
        context.log.info(f"committed {len(group)} prompts, {table.num_rows} tokens → {spec.path} v{version}")
    elapsed = time.perf_counter() - t0

    target = 2 * H + 6 * K
    bpt = bytes_added / tokens if tokens else 0.0
    dt = lake.table(spec)
    return dg.MaterializeResult(metadata={
        **base_md,
        "table_uri": dg.MetadataValue.path(lake.uri(spec)),
        "delta_version": dg.MetadataValue.int(dt.version()) if dt is not None else 0,
        "table_rows": count_rows(dt) if dt is not None else 0,
        "dagster/row_count": tokens,
        "device": loaded.device,
        "top_k": K,
        "hidden_size": H,
        "hidden_layer": verifier.hidden_layer,
        "block_size": config.block_size,
        "max_new_tokens": config.max_new_tokens,
        "prompts_captured": len(rows),
        "sequences_written": seqs,
        "tokens_captured": tokens,
        "generated_tokens": gen_tokens,
        "truncated_sequences": truncated,
        "commits": commits,
        "bytes_written": bytes_added,
        "bytes_per_token": round(bpt, 1),
        "bytes_per_token_vs_2H_plus_6K": round(bpt / target, 3) if tokens else 0.0,
        "mean_top1_prob": round(top1_sum / tokens, 4) if tokens else 0.0,
        "top1_prob_histogram": _histogram_md(hist),
        "postfilter": md_table(("reason", "sequences"), sorted(reasons_count.items())),
        "postfilter_flagged": flagged,
        "postfilter_dropped": dropped,
        "model_load_s": round(load_s, 2),
        "capture_s": round(elapsed, 2),
        "tokens_per_s": round(tokens / elapsed, 1) if elapsed > 0 else 0.0,
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
