"""Post-filter of captured sequences (pure numpy).

Rules, evaluated per sequence over its *answer tokens*: the tokens the verifier generated
(``max_new_tokens > 0``), or in a read-only capture (``max_new_tokens: 0``) the tokens of
the conversation's trailing assistant turn(s). Each rule says what it measured
(``stats["measured"]``):

* ``low_confidence`` — the mean verifier top-1 probability at the positions that predict
  the answer tokens is below ``low_confidence_threshold``: the verifier itself is unsure
  of this text, so a draft model learns noise from it. **Off** when there are no answer
  tokens (a conversation that ends with a user turn): prompt tokens say nothing about the
  verifier's confidence in an answer.
* ``repetition`` — the share of repeated token n-grams (1 - distinct/total) in the answer
  tokens exceeds ``repetition_threshold`` (degenerate loops); over the whole sequence when
  there are no answer tokens.
* ``eos_failure`` — a generated continuation that never emitted EOS within
  ``max_new_tokens`` (truncated answers). **Off** when nothing was generated.

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
    answer_start: int | None = None,
) -> tuple[list[str], dict]:
    """(reasons, stats) of one sequence. ``top1_probs[t]`` is the prediction made at position t.

    Answer tokens start at ``n_prompt_tokens`` when ``generated``, else at ``answer_start``
    (the first token of the trailing assistant turn of a read-only capture; None: none).
    """
    token_ids = np.asarray(token_ids)
    top1_probs = np.asarray(top1_probs, dtype=np.float64)
    T = len(token_ids)
    start = n_prompt_tokens if generated else answer_start
    has_answer = start is not None and 0 < start < T
    measured = {}
    if has_answer:
        region = token_ids[start:]
        # positions start-1 .. T-2 predict the answer tokens
        conf = top1_probs[start - 1: T - 1]
        measured["low_confidence"] = "generated tokens" if generated else "answer tokens (trailing assistant turn)"
        measured["repetition"] = measured["low_confidence"]
    else:
        region, conf = token_ids, top1_probs[:0]
        measured["low_confidence"] = "off: no answer tokens"
        measured["repetition"] = "whole sequence (no answer tokens)"
    measured["eos_failure"] = ("generated tokens" if generated and cfg.require_eos
                               else "off: nothing generated" if not generated else "off: require_eos false")
    mean_top1 = float(conf.mean()) if len(conf) else None
    rep = ngram_repetition(region, cfg.repetition_ngram)
    reasons = []
    if mean_top1 is not None and mean_top1 < cfg.low_confidence_threshold:
        reasons.append("low_confidence")
    if rep > cfg.repetition_threshold:
        reasons.append("repetition")
    if generated and cfg.require_eos and ended_with_eos is False:
        reasons.append("eos_failure")
    stats = {
        "mean_top1": None if mean_top1 is None else round(mean_top1, 6),
        "repetition": round(rep, 6),
        "ended_with_eos": ended_with_eos,
        "n_tokens": int(T),
        "n_region_tokens": int(len(region)),
        "n_answer_tokens": int(T - start) if has_answer else 0,
        "measured": measured,
    }
    return reasons, stats
