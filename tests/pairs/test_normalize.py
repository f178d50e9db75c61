"""The real data-juicer ops, offline: each recipe op drops what it should and says why."""

import json
from pathlib import Path

import pytest

from assets.pairs.dj_env import RuntimeInstallBlocked
from assets.pairs.normalize import ensure_data_juicer
from assets.pairs.normalize import (
    RECIPES_DIR,
    build_ops,
    list_recipes,
    load_recipe,
    normalize_pairs,
)
from assets.pairs.strategies import build_pairs, make_strategy, steps_from_rows
from assets.pairs.normalizer import Normalizer
from tests.pairs.data import asst, call, pair_row, session, tool

PROMPT = [{"role": "user", "content": "Please fix the failing test in utils.py"}]


@pytest.fixture(scope="module")
def default_recipe():
    return load_recipe("default")


@pytest.fixture(scope="module")
def default_ops(default_recipe, tiny_overrides):
    return build_ops(default_recipe, tiny_overrides)


def _by_pair(res):
    return {r["pair_id"]: r for r in res.rejections}, {r["pair_id"]: r for r in res.kept}


def test_runtime_installs_are_blocked():
    ensure_data_juicer()
    from data_juicer.utils.lazy_loader import LazyLoader

    with pytest.raises(RuntimeInstallBlocked):
        LazyLoader._install_package("some-package")
    lazy = LazyLoader("tracelake_no_such_module_xyz", "tracelake-no-such-dist")
    with pytest.raises(ImportError):
        _ = lazy.anything


def test_default_recipe_drops_and_records_why(default_recipe, default_ops):
    rows = [
        pair_row(0, "I'll run the failing tests first to see the error.", "ok"),
        pair_row(1, "I'll run the failing tests first to see the error.", "ok"),  # duplicate of p0
        pair_row(2, "", "something"),  # empty chosen
        pair_row(3, "fix fix fix fix fix fix fix fix fix fix fix fix fix fix fix fix fix fix fix", "x"),
        pair_row(4, "Je vais d'abord lancer les tests pour voir ce qui échoue dans le fichier.", "ok"),
        pair_row(5, "```python\ndef slugify(s):\n    return s.strip('-')\n```", "ok"),
        pair_row(6, "Done.", "Nope"),
        pair_row(7, "Same answer here, said at enough length to count.", "Same answer here, said at enough length to count."),  # same action
        pair_row(8, "Read the file and look at what slugify returns.", "bad", prompt=[{"role": "user", "content": "hi"},
                                                    tool("x", "Bash", "orphan tool result")]),
        pair_row(9, asst("Let me read it.", call("a", "Read", file_path="/r/u.py")),
                 asst("Let me read it.", call("b", "Read", file_path="/r/u.py", offset=-5))),
    ]
    res = normalize_pairs(rows, default_recipe, ops=default_ops)
    dropped, kept = _by_pair(res)
    assert len(kept) + len(dropped) == len(rows) == res.rows_in
    assert set(kept) == {"p0", "p4", "p5", "p9"}

    def stats(pid):
        return json.loads(dropped[pid]["stats"])

    assert dropped["p1"]["op"] == "document_deduplicator" and stats("p1")["duplicate_of"] == "p0"
    assert "duplicate of pair p0" in dropped["p1"]["reason"]
    assert dropped["p2"]["op"] == "pair_validity_filter" and stats("p2")["validity_rule"] == "chosen_not_substantive"
    # a loop: the validity rule (ahead of data-juicer's repetition filters in the recipe) names it
    assert dropped["p3"]["op"] == "pair_validity_filter" and stats("p3")["validity_rule"] == "chosen_repetitive"
    # French is one of the languages the prompt pool asks for: kept, tagged
    assert kept["p4"]["language"] == "fr"
    # "Done." is no action: neither a tool call nor a substantive answer
    assert dropped["p6"]["op"] == "pair_validity_filter" and stats("p6")["validity_rule"] == "chosen_not_substantive"
    assert dropped["p6"]["reason"].startswith("chosen_not_substantive: ")
    assert dropped["p7"]["op"] == "pair_validity_filter"
    assert stats("p7")["validity_rule"] == "chosen_same_action_as_rejected"
    assert dropped["p8"]["op"] == "chat_template_validation_filter"
    assert "tool message 1 does not follow an assistant tool call" in stats("p8")["ct_error"]
    for r in dropped.values():
        assert r["recipe"] == "default" and r["recipe_version"] == default_recipe.version
    assert kept["p5"]["language"] == "code"
    assert kept["p0"]["language"] == "en" and kept["p0"]["recipe_version"] == default_recipe.version
    # per-op report: rows in/out add up op by op
    n = len(rows)
    for op in res.ops:
        assert op.rows_in == n
        n -= op.dropped
    assert n == len(kept)


def test_chat_template_limits_and_tool_call_rendering(default_recipe, tiny_tokenizer):
    rows = [
        pair_row(0, "a short answer that still says something useful", "another answer"),
        pair_row(1, "a fine answer that says enough to be an answer", "x", prompt=[{"role": "user", "content": " ".join(
            f"line {i}: AssertionError in test_{i}" for i in range(60))}]),
        pair_row(2, asst("", call("a", "Read", file_path="/r/u.py")),
                 asst("", call("b", "Read", file_path="/r/u.py", offset=-5))),
    ]
    strict = build_ops(load_recipe("default"), {"chat_template_validation_filter": {
        "tokenizer": tiny_tokenizer, "max_tokens": 120, "inline_tool_calls": "never"}})
    res = normalize_pairs(rows, default_recipe, ops=strict)
    dropped, kept = _by_pair(res)
    assert set(kept) == {"p0"}
    assert "max_tokens=120" in dropped["p1"]["reason"] and json.loads(dropped["p1"]["stats"])["ct_tokens"] > 120
    # the tiny ChatML template ignores tool_calls: rendered as-is, the two calls look the same
    assert "render identically" in dropped["p2"]["reason"]


def test_disagreement_recipe_drops_false_disagreements(tiny_overrides):
    recipe = load_recipe("with_disagreement_filter")
    rows = [
        pair_row(0, "The tests pass now; I fixed slugify.", "I fixed slugify and now the tests pass."),
        pair_row(1, "I'll strip the trailing dash in slugify.", "Let me delete the whole tests folder."),
    ]
    res = normalize_pairs(rows, recipe, overrides=tiny_overrides)
    dropped, kept = _by_pair(res)
    assert set(kept) == {"p1"}
    assert dropped["p0"]["op"] == "semantic_disagreement_filter"
    cos = json.loads(dropped["p0"]["stats"])["chosen_rejected_cosine"]
    assert cos >= 0.9 and "false disagreement" in dropped["p0"]["reason"]
    assert recipe.version != load_recipe("default").version


def test_realistic_sessions_keep_pairs_and_dedup_replayed_sessions(default_recipe, default_ops):
    steps, teachers = [], []
    for key in ("sess-a", "sess-b", "sess-c"):  # the same work replayed in three session files
        s, t = session(key)
        steps += s
        teachers += t
    rows, _ = build_pairs(steps_from_rows(steps, teachers),
                            [make_strategy("error_site"), make_strategy("consensus")])
    assert len(rows) == 9
    res = normalize_pairs(rows, default_recipe, ops=default_ops)
    dropped, kept = _by_pair(res)
    assert len(kept) == 3  # one per distinct step: nothing but the replayed copies is dropped
    assert {r["op"] for r in dropped.values()} == {"document_deduplicator"}
    assert {r["strategy"] for r in kept.values()} == {"error_site", "consensus"}


def test_recipes_are_yaml_files_a_user_can_add(tmp_path, tiny_tokenizer):
    assert {"default", "with_disagreement_filter"} <= set(list_recipes())
    mine = tmp_path / "short_only.yaml"
    mine.write_text("project_name: mine\nnp: 1\nprocess:\n"
                    "  - word_repetition_filter:\n      text_key: chosen_content\n      rep_len: 2\n      max_ratio: 0.3\n")
    norm = Normalizer(recipes_dir=str(tmp_path), recipe="short_only", verifier_tokenizer=tiny_tokenizer)
    assert norm.recipes() == ["short_only"]
    rows = [pair_row(0, "run the tests run the tests run the tests", "x"), pair_row(1, "run the tests", "y")]
    res = norm.normalize(rows)
    assert [r["pair_id"] for r in res.kept] == ["p1"]
    assert res.rejections[0]["op"] == "word_repetition_filter"
    assert json.loads(res.rejections[0]["stats"])["word_rep_ratio"] > 0.3
    v1 = norm.load().version
    mine.write_text(mine.read_text().replace("0.3", "0.4"))
    assert norm.load().version != v1  # any edit is a new recipe_version


@pytest.mark.parametrize("body, error", [
    ("skip_op_error: true\nprocess:\n  - text_length_filter: {}\n", "skip_op_error"),
    ("process:\n  - text_length_filter: {skip_op_error: true}\n", "skip_op_error"),
    ("process:\n  - text_length_filter: {}\n  - text_length_filter: {text_key: chosen_text}\n", "appears 2 times"),
    ("process:\n  - no_such_op: {}\n", "unknown data-juicer op"),
    ("process:\n  - video_undistort_mapper: {}\n", "pip/mim install"),
    ("np: 1\n", "non-empty 'process'"),
])
def test_invalid_recipes_are_refused(tmp_path, body, error):
    (tmp_path / "bad.yaml").write_text(body)
    with pytest.raises((ValueError, KeyError), match=error):
        load_recipe("bad", tmp_path)


def test_op_errors_are_not_swallowed(tmp_path, tiny_tokenizer):
    (tmp_path / "broken.yaml").write_text(
        "process:\n  - chat_template_validation_filter:\n      prompt_field: no_such_field\n")
    recipe = load_recipe("broken", tmp_path)
    with pytest.raises(KeyError, match="no_such_field"):
        normalize_pairs([pair_row(0, "a b c", "d e f")], recipe,
                        overrides={"chat_template_validation_filter": {"tokenizer": tiny_tokenizer}})


def test_recipes_dir_is_the_repos():
    assert RECIPES_DIR == Path(__file__).resolve().parents[2] / "recipes" / "replaysim"
    assert Normalizer().recipes_dir == str(RECIPES_DIR)


@pytest.mark.slow  # converts the GGUF tokenizer once (~40 s on a fresh machine), then cached
def test_default_verifier_is_the_embedded_smollm2_tokenizer():
    from assets.pairs.dj_ops import ChatTemplateValidationFilter

    ensure_data_juicer()
    op = ChatTemplateValidationFilter()  # tokenizer="smollm2-135m"
    row = pair_row(0, "I'll run the tests.", asst("", call("a", "Bash", command="pytest")))
    st = op.check(row["prompt"], row["chosen"], row["rejected"], row["tools"])
    assert op.keep(st) and st["ct_tokens"] > 20 and st["ct_prefix_ok"] and st["ct_distinct"]
