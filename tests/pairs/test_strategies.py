"""Pair strategies on plain rows (no Dagster, no data-juicer)."""

import json

import numpy as np
import pytest

from assets.pairs.strategies import (
    STRATEGIES,
    Candidate,
    ConsensusStrategy,
    ErrorSiteStrategy,
    JudgeStrategy,
    Pair,
    Step,
    build_pairs,
    make_strategy,
    register_strategy,
    steps_from_rows,
    text_similarity,
)
from tests.pairs.data import asst, call, session


@pytest.fixture(scope="module")
def steps():
    rows, teachers = session("s1")
    return {s.step_id: s for s in steps_from_rows(rows, teachers)}


def _cand(source, content="", *calls, flags=(), failed=False):
    from assets.pairs.messages import assistant_message

    return Candidate(source, "m", assistant_message(asst(content, *calls)), tuple(flags), failed)


def _step(original, *teachers, caused_error=False):
    return Step("s", "s:0", [{"role": "user", "content": "fix it"}], None, original, tuple(teachers),
                caused_error=caused_error)


def test_steps_from_rows_keeps_only_ok_teachers_and_normalizes(steps):
    s2 = steps["s1:2"]
    assert [t.source for t in s2.teachers] == ["smol-a"]  # smol-b had status=error
    s1 = steps["s1:1"]
    assert s1.caused_error and s1.original.failed
    assert s1.prompt[0]["role"] == "system" and s1.prompt[-1]["role"] == "tool"
    tc = s1.original.message["tool_calls"][0]
    assert isinstance(tc["function"]["arguments"], str)  # TRL keeps arguments as a JSON string
    assert json.loads(tc["function"]["arguments"]) == {"file_path": "/repo/src/utils.py", "offset": -5}
    assert {t.source: t.flags for t in s1.teachers}["smol-c"] == ("refusal",)


def test_error_site_rejects_the_failed_call_and_chooses_a_different_clean_action(steps):
    pairs = ErrorSiteStrategy().pairs(steps["s1:1"])
    assert len(pairs) == 1
    p = pairs[0]
    assert p.rejected.source == "original" and p.chosen.source == "smol-a"
    # smol-b repeats the failing call and smol-c refuses: neither may be chosen
    assert p.chosen.signature != p.rejected.signature
    assert ErrorSiteStrategy().pairs(steps["s1:0"]) == []  # no error there


def test_error_site_needs_a_teacher_doing_something_else():
    orig = _cand("original", "", call("a", "Bash", command="rm -rf build"), failed=True)
    same = _cand("t1", "", call("b", "Bash", command="rm -rf build"))
    refusal = _cand("t2", "I cannot do that.", flags=["refusal"])
    assert ErrorSiteStrategy().pairs(_step(orig, same, refusal, caused_error=True)) == []
    hedge = _cand("t3", "Maybe clean first.", call("c", "Bash", command="make clean"), flags=["hedge"])
    clean = _cand("t4", "Clean first.", call("d", "Bash", command="make clean"))
    p = ErrorSiteStrategy().pairs(_step(orig, hedge, clean, caused_error=True))
    assert [x.chosen.source for x in p] == ["t4"]  # a clean answer is preferred to a flagged one
    p = ErrorSiteStrategy(max_pairs_per_step=2).pairs(_step(orig, hedge, clean, caused_error=True))
    assert [x.chosen.source for x in p] == ["t4", "t3"]


def test_consensus_majority_is_chosen_and_the_outlier_rejected(steps):
    p = ConsensusStrategy().pairs(steps["s1:0"])
    assert len(p) == 1
    assert p[0].rejected.source == "smol-c"  # the looping answer nobody agrees with
    assert p[0].chosen.source == "original"  # clean, and the centre of the majority
    assert p[0].score_chosen == 0.75
    # four answers split 2/2, or fewer than three answers: no pair
    assert ConsensusStrategy().pairs(steps["s1:1"]) == []
    assert ConsensusStrategy().pairs(steps["s1:2"]) == []


def test_consensus_never_chooses_a_failed_original_and_threshold_is_configurable():
    orig = _cand("original", "Run the tests now.", failed=True)
    a = _cand("a", "Run the tests now.")
    b = _cand("b", "Delete the repository and start over from scratch.")
    p = ConsensusStrategy().pairs(_step(orig, a, b))
    assert p[0].chosen.source == "a" and p[0].rejected.source == "b"
    near = _cand("c", "Run the test suite now.")
    # with a strict threshold the paraphrase no longer agrees: three singletons, no pair
    assert ConsensusStrategy(threshold=0.99).pairs(_step(_cand("original", "Run the tests now."), near, b)) == []
    assert ConsensusStrategy(threshold=0.7).pairs(_step(_cand("original", "Run the tests now."), near, b))


def test_consensus_by_embedding_uses_the_given_embedder():
    vecs = {"yes, do it": [1, 0], "sure, go ahead": [0.99, 0.14], "absolutely not": [0, 1]}

    def embed(texts):
        v = np.array([vecs[t] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    s = ConsensusStrategy(similarity="embedding", threshold=0.9, embed=embed)
    step = _step(_cand("original", "yes, do it"), _cand("a", "sure, go ahead"), _cand("b", "absolutely not"))
    s.prepare([step])
    p = s.pairs(step)
    assert (p[0].chosen.source, p[0].rejected.source) == ("original", "b")
    assert text_similarity("yes, do it", "sure, go ahead") < 0.9  # text alone would not agree


def test_judge_best_vs_worst_with_a_deterministic_scorer():
    def scorer(prompt, answers):  # longer is better, deterministic
        assert prompt[-1]["content"] == "fix it"
        return [len(a["content"]) for a in answers]

    step = _step(_cand("original", "ok"), _cand("a", "I will fix the bug in utils.py"), _cand("b", "fixing"))
    p = JudgeStrategy(scorer).pairs(step)
    assert (p[0].chosen.source, p[0].rejected.source, p[0].score_chosen, p[0].score_rejected) == ("a", "original", 30, 2)
    assert JudgeStrategy(scorer, min_margin=100).pairs(step) == []
    with pytest.raises(ValueError):
        JudgeStrategy(lambda p, a: [1.0]).pairs(step)


def test_build_pairs_runs_strategies_by_priority_and_merges_duplicates(steps):
    orig = _cand("original", "", call("a", "Bash", command="rm -rf /"), failed=True)
    t = [_cand("a", "Run make clean."), _cand("b", "Run make clean."), _cand("c", "Run make clean.")]
    step = _step(orig, *t, caused_error=True)
    rows, rep = build_pairs([step], [make_strategy("error_site"), make_strategy("consensus")])
    # both strategies produce a > original: kept once, under error_site
    assert len(rows) == 1 and rows[0]["strategy"] == "error_site" and rep.merged_duplicates == 1
    rows, rep = build_pairs(list(steps.values()), [make_strategy("error_site"), make_strategy("consensus")])
    assert dict(rep.by_strategy) == {"error_site": 1, "consensus": 2}
    assert len({r["pair_id"] for r in rows}) == len(rows)
    r = next(r for r in rows if r["strategy"] == "error_site")
    assert json.loads(r["chosen"])[0]["role"] == "assistant" and json.loads(r["prompt"])[0]["role"] == "system"
    assert r["chosen_model"] == "smollm2-135m" and r["rejected_source"] == "original"


def test_registry_accepts_a_new_strategy():
    @register_strategy("always_first_teacher")
    class First:
        def __init__(self, **kw):
            pass

        def prepare(self, steps):
            pass

        def pairs(self, step):
            return [Pair(step, step.teachers[0], step.original, self.name)]

    try:
        s = make_strategy("always_first_teacher", blocking_flags=())
        rows, _ = build_pairs([_step(_cand("original", "x"), _cand("a", "y"))], [s])
        assert rows[0]["strategy"] == "always_first_teacher"
    finally:
        STRATEGIES.pop("always_first_teacher")
    with pytest.raises(KeyError):
        make_strategy("nope")


def test_recovery_pairs_the_mistake_with_the_agents_own_next_action(steps):
    """s1:1 reads with a negative offset (a mistake); the agent's next turn s1:2 reads the
    whole file. The recovery strategy needs no teacher answer."""
    from assets.pairs.strategies import RecoveryStrategy, recovery_turn

    rows, teachers = session("s1")
    bare = steps_from_rows(rows, [])  # no teacher answered anything
    by_id = {s.step_id: s for s in bare}
    assert recovery_turn(by_id["s1:1"], bare).step_id == "s1:2"
    assert recovery_turn(by_id["s1:0"], bare) is None  # s1:1 follows a successful call
    out, rep = build_pairs(bare, [make_strategy("recovery")])
    assert dict(rep.by_strategy) == {"recovery": 1} and rep.removed_by_rule == {}
    (r,) = out
    assert (r["step_id"], r["chosen_source"], r["rejected_source"]) == ("s1:1", "recovery", "original")
    assert r["rejected_failure"].startswith("mistake:")
    chosen, rejected = json.loads(r["chosen"])[0], json.loads(r["rejected"])[0]
    assert json.loads(chosen["tool_calls"][0]["function"]["arguments"]) == {"file_path": "/repo/src/utils.py"}
    assert json.loads(rejected["tool_calls"][0]["function"]["arguments"])["offset"] == -5
    assert json.loads(r["prompt"]) == by_id["s1:1"].prompt  # the failing step's context, not the recovery's
    # a recovery turn that failed as well, or that repeats the failed call, is no chosen answer
    failed_again = [s if s.step_id != "s1:2" else Step(**{**s.__dict__, "original": Candidate(
        "original", "m", s.original.message, failed=True)}) for s in bare]
    assert RecoveryStrategy().pairs(by_id["s1:1"]) == []  # not prepared: no recovery turn known
    st = RecoveryStrategy()
    st.prepare(failed_again)
    assert st.pairs(by_id["s1:1"]) == []


def test_recovery_after_an_informative_failure_is_marked_by_the_validity_rule():
    from assets.pairs.validity import check_pair

    prompt = [{"role": "user", "content": "does INV-0042 exist?"}]
    v = check_pair(prompt, asst("There is no invoice INV-0042; ids look like INV-1042."),
                   asst("", call("a", "lookup_invoice", invoice_id="INV-0042")), None,
                   strategy="recovery", rejected_failure="informative:lookup_no_match")
    assert v is not None and v.rule == "rejected_not_a_mistake"
