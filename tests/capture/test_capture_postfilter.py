"""Post-filter rules on plain arrays."""

import numpy as np

from assets.capture.postfilter import PostFilterConfig, evaluate, ngram_repetition

CFG = PostFilterConfig(low_confidence_threshold=0.3, repetition_ngram=3, repetition_threshold=0.5)


def test_ngram_repetition():
    assert ngram_repetition(np.arange(10), 3) == 0.0
    assert ngram_repetition(np.array([1, 2] * 10), 3) > 0.8
    assert ngram_repetition(np.array([1]), 3) == 0.0


def test_clean_sequence_passes():
    reasons, stats = evaluate(np.arange(20), np.full(20, 0.9), 10, True, True, CFG)
    assert reasons == [] and stats["mean_top1"] == 0.9


def test_low_confidence_uses_the_generated_region():
    p = np.full(20, 0.9)
    p[9:19] = 0.1  # positions 9..18 predict the generated tokens 10..19
    assert evaluate(np.arange(20), p, 10, True, True, CFG)[0] == ["low_confidence"]
    assert evaluate(np.arange(20), p, 10, False, None, CFG)[0] == []  # read-only: whole sequence, mean 0.5


def test_repetition_and_eos_failure():
    toks = np.concatenate([np.arange(10), np.array([7, 8] * 10)])
    reasons, stats = evaluate(toks, np.full(30, 0.9), 10, True, False, CFG)
    assert reasons == ["repetition", "eos_failure"]
    assert stats["ended_with_eos"] is False and stats["n_region_tokens"] == 20
    # read-only capture never has an EOS failure
    assert "eos_failure" not in evaluate(np.arange(30), np.full(30, 0.9), 30, False, None, CFG)[0]
