"""The capture run, Dagster-free: prompts → verifier capture → post-filter → shard commits.

:func:`capture_run` works through the prompts ``prompts_per_commit`` at a time; each group
is one Delta append to the verifier's shard table (a killed run keeps every group it
committed) plus a merge of what the post-filter flagged or dropped into
``gold/capture_rejections``. It returns a :class:`CaptureReport` that renders its own
metadata.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

import dagster as dg
import numpy as np
from pydantic import BaseModel, field_validator

from assets.capture import postfilter
from assets.capture.capture import CaptureSettings, PromptIn, build_shard_table, capture_prompts, iter_chunks, sliding_window_of
from assets.capture.shards import append_shard, ensure_shard_table, table_properties
from assets.capture.tables import CAPTURE_REJECTIONS
from assets.metadata import md_counts, md_preview, md_table
from resources.lake import DeltaLake, TableSpec

HIST_EDGES = np.linspace(0.0, 1.0, 11)


class CaptureOptions(BaseModel):
    """What one run captures and how (the fields of the asset's config, which extends this)."""

    max_new_tokens: int = 0  # 0 = read-only capture of the conversation; > 0 = greedy answer
    block_size: int = 16  # KV-cache block size for block_index / position_in_block
    prompts_per_commit: int = 32  # one Delta commit per this many prompts (resume granularity)
    low_confidence_threshold: float = 0.25
    repetition_ngram: int = 4
    repetition_threshold: float = 0.5
    postfilter_action: str = "flag"  # flag (keep rows, set filter_reason) | drop

    @field_validator("postfilter_action")
    @classmethod
    def _action(cls, v: str) -> str:
        if v not in ("flag", "drop"):
            raise ValueError("postfilter_action must be 'flag' or 'drop'")
        return v


@dataclass
class CaptureReport:
    """What a capture run did; :meth:`metadata` is what the asset reports."""

    spec: TableSpec
    device: str = ""
    top_k: int = 0
    hidden_size: int = 0
    hidden_layer: int = 0
    block_size: int = 0
    max_new_tokens: int = 0
    prompts: int = 0
    sequences: int = 0
    tokens: int = 0
    generated_tokens: int = 0
    truncated: int = 0
    commits: int = 0
    bytes_added: int = 0
    flagged: int = 0
    dropped: int = 0
    rejections_written: int = 0
    reasons: Counter = field(default_factory=Counter)
    measured: Counter = field(default_factory=Counter)  # what each post-filter rule measured, per sequence
    answer_tokens: int = 0
    no_answer: int = 0
    hidden_clamped: int = 0
    clamped_sequences: int = 0
    preview: list = field(default_factory=list)  # a few captured sequences, for the UI
    hist: np.ndarray = field(default_factory=lambda: np.zeros(len(HIST_EDGES) - 1, dtype=np.int64))
    top1_sum: float = 0.0
    load_seconds: float = 0.0
    seconds: float = 0.0

    def rejections_metadata(self) -> dict[str, Any]:
        """capture_rejections' figures (beside the table's state)."""
        return {
            "shard_table": self.spec.path,
            "postfilter_flagged": self.flagged,
            "postfilter_dropped": self.dropped,
            "postfilter": md_table(("reason", "sequences"), sorted(self.reasons.items())),
        }

    def metadata(self) -> dict[str, Any]:
        target = 2 * self.hidden_size + 6 * self.top_k
        bpt = self.bytes_added / self.tokens if self.tokens else 0.0
        return {
            "device": self.device,
            "top_k": self.top_k,
            "hidden_size": self.hidden_size,
            "hidden_layer": self.hidden_layer,
            "block_size": self.block_size,
            "max_new_tokens": self.max_new_tokens,
            "prompts_captured": self.prompts,
            "sequences_written": self.sequences,
            "tokens_captured": self.tokens,
            "generated_tokens": self.generated_tokens,
            "answer_tokens_scored": self.answer_tokens,
            "sequences_without_answer_tokens": self.no_answer,
            "postfilter_measured": md_counts("rule: what it measured (sequences)", dict(self.measured)),
            "hidden_values_clamped_fp16": self.hidden_clamped,
            "sequences_with_clamped_hidden": self.clamped_sequences,
            "preview": md_preview(self.preview, {k: (lambda r, k=k: r[k]) for k in
                                                 ("prompt_id", "domain", "tokens", "answer_tokens", "mean_top1",
                                                  "filter")}),
            "truncated_sequences": self.truncated,
            "commits": self.commits,
            "bytes_written": self.bytes_added,
            "bytes_per_token": round(bpt, 1),
            "bytes_per_token_vs_2H_plus_6K": round(bpt / target, 3) if self.tokens else 0.0,
            "mean_top1_prob": round(self.top1_sum / self.tokens, 4) if self.tokens else 0.0,
            "top1_prob_histogram": histogram_md(self.hist),
            "postfilter": md_table(("reason", "sequences"), sorted(self.reasons.items())),
            "postfilter_flagged": self.flagged,
            "postfilter_dropped": self.dropped,
            "model_load_s": round(self.load_seconds, 2),
            "capture_s": round(self.seconds, 2),
            "tokens_per_s": round(self.tokens / self.seconds, 1) if self.seconds > 0 else 0.0,
        }


def histogram_md(counts: np.ndarray) -> dg.MetadataValue:
    total = int(counts.sum()) or 1
    rows = [(f"{HIST_EDGES[i]:.1f}–{HIST_EDGES[i + 1]:.1f}", int(c), f"{100 * c / total:.1f}%",
             "█" * int(round(20 * c / total))) for i, c in enumerate(counts)]
    return md_table(("top-1 prob", "tokens", "share", ""), rows)


def capture_run(lake: DeltaLake, spec: TableSpec, verifier_id: str, loaded: Any, prompt_rows: list[Mapping],
                opts: CaptureOptions, *, top_k: int, hidden_layer: int, batch_tokens: int, max_length: int,
                run_id: str | None = None, log: Callable[[str], None] = lambda _msg: None) -> CaptureReport:
    """Capture ``prompt_rows`` (PROMPT_POOL rows) with the ``loaded`` verifier into ``spec``."""
    report = CaptureReport(spec=spec, device=loaded.device, top_k=top_k, hidden_size=loaded.hidden_size,
                           hidden_layer=hidden_layer, block_size=opts.block_size,
                           max_new_tokens=opts.max_new_tokens, prompts=len(prompt_rows))
    if not -(loaded.num_layers + 1) <= hidden_layer <= loaded.num_layers:
        raise ValueError(f"hidden_layer {hidden_layer} outside the verifier's "
                         f"{loaded.num_layers + 1} hidden states (embeddings + layers)")
    settings = CaptureSettings(top_k=top_k, hidden_layer=hidden_layer, batch_tokens=batch_tokens,
                               max_length=max_length, max_new_tokens=opts.max_new_tokens,
                               block_size=opts.block_size)
    props = table_properties(verifier_id=verifier_id, dtype=loaded.dtype, top_k=top_k,
                             hidden_size=loaded.hidden_size, hidden_layer=hidden_layer,
                             block_size=opts.block_size, verifier_fingerprint=loaded.fingerprint,
                             verifier_model=loaded.model_id)
    ensure_shard_table(lake, spec, props)
    pf = postfilter.PostFilterConfig(opts.low_confidence_threshold, opts.repetition_ngram,
                                     opts.repetition_threshold)
    window = sliding_window_of(loaded.model)
    commit_md = {**props, "tracelake.run_id": run_id, "tracelake.verifier_path": loaded.path,
                 "tracelake.device": loaded.device, "tracelake.max_new_tokens": opts.max_new_tokens}
    t0 = time.perf_counter()
    for group in iter_chunks(prompt_rows, max(1, opts.prompts_per_commit)):
        caps = capture_prompts(loaded, [PromptIn.from_row(r) for r in group], settings)
        keep, keep_reasons, rejections = _postfilter(caps, pf, opts.postfilter_action, spec, run_id, report)
        table = build_shard_table(keep, keep_reasons, opts.block_size, window, run_id)
        version = None
        if table.num_rows:
            res = append_shard(lake, spec, table, {
                **commit_md, "tracelake.tokens": table.num_rows, "tracelake.sequences": len(keep),
                "tracelake.hidden_values_clamped_fp16": sum(c.hidden_clamped for c in keep)})
            version = res.version
            report.commits += 1
            report.bytes_added += res.bytes_added
            report.tokens += table.num_rows
            report.generated_tokens += int(sum(int(c.n_tokens - c.n_prompt_tokens) for c in keep if c.generated))
            report.sequences += len(keep)
            report.truncated += sum(c.truncated for c in keep)
            top1 = table.column("verifier_top1_prob").to_numpy()
            report.hist += np.histogram(top1, bins=HIST_EDGES)[0]
            report.top1_sum += float(top1.sum(dtype=np.float64))
        if rejections:
            lake.merge(CAPTURE_REJECTIONS, rejections)
            report.rejections_written += len(rejections)
        log(f"committed {len(group)} prompts, {table.num_rows} tokens → {spec.path} v{version}")
    report.seconds = time.perf_counter() - t0
    return report


def _postfilter(caps, pf, action: str, spec: TableSpec, run_id: str | None, report: CaptureReport):
    """Split captured sequences into kept (with their flag, if any) and CAPTURE_REJECTIONS rows."""
    keep, keep_reasons, rejections = [], [], []
    now = datetime.now(timezone.utc)
    for c in caps:
        rs, st = postfilter.evaluate(c.token_ids, c.top1, c.n_prompt_tokens, c.generated, c.ended_with_eos, pf,
                                     answer_start=c.answer_start)
        report.measured.update(f"{rule}: {how}" for rule, how in st["measured"].items())
        report.answer_tokens += st["n_answer_tokens"]
        report.no_answer += st["n_answer_tokens"] == 0
        report.hidden_clamped += c.hidden_clamped
        report.clamped_sequences += c.hidden_clamped > 0
        if len(report.preview) < 3:
            report.preview.append({"prompt_id": c.prompt.prompt_id, "domain": c.prompt.domain, "tokens": c.n_tokens,
                                   "answer_tokens": st["n_answer_tokens"], "mean_top1": st["mean_top1"],
                                   "filter": ";".join(rs) or "-"})
        reason = ";".join(rs) or None
        report.reasons.update(rs)
        if reason:
            verdict = "dropped" if action == "drop" else "flagged"
            report.flagged += verdict == "flagged"
            report.dropped += verdict == "dropped"
            rejections.append({
                "shard_table": spec.name, "prompt_id": c.prompt.prompt_id,
                "sequence_index": c.sequence_index, "action": verdict, "reason": reason,
                "stats": json.dumps({**st, "truncated": c.truncated}), "n_tokens": c.n_tokens,
                "run_id": run_id, "created_at": now,
            })
        if reason is None or action == "flag":
            keep.append(c)
            keep_reasons.append(reason)
    return keep, keep_reasons, rejections
