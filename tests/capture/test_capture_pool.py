"""Prompt pool: domain rules, language tags, dedup, determinism, quota shortfalls."""

import json
import random

from assets.capture.pool import (
    Candidate,
    PoolConfig,
    candidates_from_file,
    candidates_from_pairs,
    candidates_from_sft,
    classify_domain,
    compose_pool,
    detect_language,
    load_pool_config,
)
from tests.capture.capture_fixtures import pair_rows, sft_rows, write_quotas

CFG = PoolConfig(quotas={}, long_context_chars=500)


def _dom(*msgs):
    return classify_domain(list(msgs), CFG)


def test_domain_rules():
    u = lambda t: {"role": "user", "content": t}  # noqa: E731
    a = lambda t, **k: {"role": "assistant", "content": t, **k}  # noqa: E731
    assert _dom(u("ls please"), a("", tool_calls=[{"function": {"name": "bash"}}])) == "tool-call"
    assert _dom(u("run"), {"role": "tool", "content": "ok"}) == "tool-call"
    assert _dom(u("show me"), a("```python\nprint(1)\n```")) == "code"
    assert _dom(u("x"), a("import os\ndef f():\n    return 1;")) == "code"
    assert _dom(u("Compute \\frac{1}{2} + 1")) == "math"
    assert _dom(u("What is 12 + 30 and 5 * 6?")) == "math"
    assert _dom(u("今天天气怎么样？")) == "chat-zh"
    assert _dom(u("今日はいい天気ですね。")) != "chat-zh"  # kana: Japanese, not Chinese
    assert _dom(u("word " * 200)) == "long-context"
    assert _dom(u("hi"), a("hello"), u("and then?")) == "multi-turn"
    assert _dom(u("hi, how are you?")) == "chat-en"


def test_language_tags():
    assert detect_language("The weather is lovely today, shall we go for a walk?") == "en"
    assert detect_language("今天天气很好，我们去公园散步吧。") == "zh"
    assert detect_language("Heute ist das Wetter schön, wollen wir spazieren gehen?") == "de"
    assert detect_language("```python\ndef f(x):\n    return x\n```") == "und"


def _candidates(tmp_path):
    f = tmp_path / "user_prompts.jsonl"
    f.write_text("\n".join([
        json.dumps({"prompt": "Explain what a hash map is in two sentences."}),
        json.dumps({"messages": [{"role": "user", "content": "Name three primary colours, please."}]}),
        "not json",
    ]))
    got, bad = candidates_from_file(f)
    assert bad == 1 and len(got) == 2
    return candidates_from_pairs(pair_rows()) + candidates_from_sft(sft_rows()) + got


def test_pool_is_deterministic_and_reports_shortfalls(tmp_path):
    cands = _candidates(tmp_path)
    cfg = load_pool_config(write_quotas(tmp_path / "q.yaml", {"chat-en": 3, "code": 1, "chat-zh": 5, "math": 1,
                                                               "tool-call": 1, "multi-turn": 1, "long-context": 1}))
    rows1, rep1 = compose_pool(cands, cfg)
    shuffled = list(cands)
    random.Random(3).shuffle(shuffled)
    rows2, rep2 = compose_pool(shuffled, cfg)
    assert rows1 == rows2  # same config, inputs in any order → same pool
    assert rep1.dropped.get("duplicate") == 1  # the cat conversation is in pairs and in SFT

    # chat-en has 7 candidates for 3 slots: another seed draws another subset
    other = load_pool_config(write_quotas(tmp_path / "q2.yaml", dict(cfg.quotas), seed=99))
    rows3, _ = compose_pool(cands, other)
    pick = lambda rows: {r["prompt_id"] for r in rows if r["domain"] == "chat-en"}  # noqa: E731
    assert len(pick(rows1)) == len(pick(rows3)) == 3
    seeds_differ = pick(rows1) != pick(rows3)
    assert seeds_differ

    # chat-zh asks for 5 and has 1: reported, not silently shrunk
    short = {q.domain: q for q in rep1.shortfalls}
    assert set(short) == {"chat-zh"}
    assert (short["chat-zh"].quota, short["chat-zh"].available, short["chat-zh"].shortfall) == (5, 1, 4)
    zh = [r for r in rows1 if r["domain"] == "chat-zh"]
    assert zh[0]["domain_shortfall"] == 4 and zh[0]["language"] == "zh"
    assert all(len(r["prompt_id"]) == 32 and r["config_hash"] == cfg.config_hash for r in rows1)
    langs = {r["language"] for r in rows1}
    assert "en" in langs
    tool = [r for r in rows1 if r["domain"] == "tool-call"][0]
    assert json.loads(tool["messages"])[-1]["tool_calls"][0]["function"]["name"] == "bash"


def test_length_filter_and_unassigned():
    cfg = PoolConfig(quotas={"chat-en": 10}, min_chars=20, max_chars=60)
    cands = [
        Candidate([{"role": "user", "content": "hi"}], "t"),
        Candidate([{"role": "user", "content": "x" * 100}], "t"),
        Candidate([{"role": "user", "content": "How long is a piece of string?"}], "t"),
        Candidate([{"role": "user", "content": "What is 1 + 1 and 2 * 3 here?"}], "t"),
    ]
    rows, rep = compose_pool(cands, cfg)
    assert rep.dropped == {"too_short": 1, "too_long": 1}
    assert rep.unassigned == {"math": 1}
    assert [r["domain"] for r in rows] == ["chat-en"]


# ------------------------------------------------------------------ near duplicates, language detectors
# (issue 16 point 6)

def _conv(text, answer="Sure, here is how to do that."):
    return Candidate([{"role": "user", "content": text}, {"role": "assistant", "content": answer}], "file")


def test_near_duplicates_are_removed_with_the_threshold_of_the_quotas_file(tmp_path):
    base = ("Please explain how Python's garbage collector handles reference cycles, and when "
            "gc.collect() should be called explicitly in a long-running web service that keeps "
            "large caches of parsed documents in memory between requests and sees its resident "
            "memory grow slowly over a few days of traffic.")
    cands = [_conv(base), _conv(base.replace("Please explain", "Please, explain")),  # one comma apart
             _conv(base + " Thanks!"), _conv("What is the capital of France, and why is it Paris?")]
    path = write_quotas(tmp_path / "q.yaml", {"chat-en": 10})
    cfg = load_pool_config(path)
    assert cfg.near_duplicate_threshold == 0.85 and cfg.language_detector == "lingua"
    rows, report = compose_pool(cands, cfg)
    assert len(rows) == 2 and report.dropped["near_duplicate"] == 2
    kept = {r["prompt_id"] for r in rows}
    assert set(report.near_duplicates.values()) <= kept
    # exact dedup alone (threshold 0 in the file) keeps all four
    raw = path.read_text() + "\ndedup:\n  near_duplicate_threshold: 0\n"
    (tmp_path / "off.yaml").write_text(raw)
    rows, report = compose_pool(cands, load_pool_config(tmp_path / "off.yaml"))
    assert len(rows) == 4 and "near_duplicate" not in report.dropped
    # the same inputs in another order: the same pool
    rows2, _ = compose_pool(list(reversed(cands)), cfg)
    assert sorted(r["prompt_id"] for r in rows2) == sorted(kept)


def test_language_detector_is_pluggable(tmp_path):
    from assets.capture.pool import LANGUAGE_DETECTORS, register_language_detector

    @register_language_detector("always-de")
    def always_de(text, languages):
        return "de"

    try:
        path = write_quotas(tmp_path / "q.yaml", {"chat-en": 10})
        (tmp_path / "de.yaml").write_text(path.read_text() + "\nlanguage_detector: always-de\n")
        rows, report = compose_pool([_conv("What is the capital of France, and why is it Paris?")],
                                    load_pool_config(tmp_path / "de.yaml"))
        assert [r["language"] for r in rows] == ["de"] and report.languages == {"de": 1}
    finally:
        LANGUAGE_DETECTORS.pop("always-de")
    (tmp_path / "bad.yaml").write_text(path.read_text() + "\nlanguage_detector: nope\n")
    import pytest

    with pytest.raises(ValueError, match="unknown language_detector"):
        load_pool_config(tmp_path / "bad.yaml")


def test_default_pair_recipe_keeps_the_languages_the_pool_asks_for():
    """The pool asks for chat-zh (and lists zh, de, ...): the pair recipe must not drop them."""
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2] / "recipes"
    pool = load_pool_config(root / "capture_quotas.yaml")
    assert pool.quotas.get("chat-zh", 0) > 0
    for name in ("default", "with_disagreement_filter"):
        recipe = yaml.safe_load((root / "replaysim" / f"{name}.yaml").read_text())
        lid = next(args for item in recipe["process"] for op, args in item.items()
                   if op == "offline_language_id_filter")
        assert set(pool.languages) <= set(lid["keep"]), name
        assert set(pool.languages) <= set(lid["languages"]), name
