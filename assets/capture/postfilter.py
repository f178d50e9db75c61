"""Post-filter of captured sequences (pure numpy).

Rules, evaluated per sequence over its *response region* (the generated tokens when the
verifier generated a continuation, else the whole sequence):

* ``low_confidence`` — the mean verifier top-1 probability at the positions that predict
  the region's tokens is below ``low_confidence_threshold``: the verifier itself is unsure
  of this text, so a draft model learns noise from it.
* ``repetition`` — the share of repeated token n-grams (1 - distinct/total) in the region
  exceeds ``repetition_threshold`` (degenerate loops).
* ``eos_failure`` — a generated continuation that never emitted EOS within
  ``max_new_tokens`` (truncated answers).

A flagged sequence keeps its rows with ``filter_reason`` set (action ``flag``) or loses
them (action ``drop``); either way a row lands in ``gold/capture_rejections`` with the
statistics that decided it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REASONS = ("low_confidence", "repetition", "eos_failure")


@dataclass(frozen=True)
class PostFilterConfig:
    low_confidence_threshold: float = 0.25
    repetition_ngram: int = 4
    repetition_threshold: float = 0.5
    require_eos: bool = True


def ngram_repetition(tokens: np.ndarray, n: int) -> float:
    """1 - distinct n-grams / n-grams (0.0 when the sequence is shorter than n)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if n <= 0 or len(tokens) < n:
        return 0.0
    grams = np.lib.stride_tricks.sliding_window_view(tokens, n)
    distinct = np.unique(grams, axis=0).shape[0]
    return float(1.0 - distinct / grams.shape[0])


def evaluate(
    token_ids: np.ndarray,
    top1_probs: np.ndarray,
    n_prompt_tokens: int,
    generated: bool,
    ended_with_eos: bool | None,
    cfg: PostFilterConfig,
) -> tuple[list[str], dict]:
    """(reasons, stats) of one sequence. ``top1_probs[t]`` is the prediction made at position t."""
    token_ids = np.asarray(token_ids)
    top1_probs = np.asarray(top1_probs, dtype=np.float64)
    T = len(token_ids)
    if generated and n_prompt_tokens < T:
        region = token_ids[n_prompt_tokens:]
        # positions n_prompt-1 .. T-2 predict the generated tokens
        conf = top1_probs[max(n_prompt_tokens - 1, 0): T - 1]
    else:
        region = token_ids
        conf = top1_probs[: max(T - 1, 1)]
    mean_top1 = float(conf.mean()) if len(conf) else 0.0
    rep = ngram_repetition(region, cfg.repetition_ngram)
    reasons = []
    if mean_top1 < cfg.low_confidence_threshold:
        reasons.append("low_confidence")
    if rep > cfg.repetition_threshold:
        reasons.append("repetition")
    if generated and cfg.require_eos and ended_with_eos is False:
        reasons.append("eos_failure")
    stats = {
        "mean_top1": round(mean_top1, 6),
        "repetition": round(rep, 6),
        "ended_with_eos": ended_with_eos,
        "n_tokens": int(T),
        "n_region_tokens": int(len(region)),
    }
    return reasons, stats
