"""The held-out split: deterministic, stable as sessions arrive, never leaks."""

import pytest

from assets.student.split import EVAL, TRAIN, bucket, check_no_leak, partition_rows, split_sessions


def test_deterministic_share_and_stable_as_sessions_arrive():
    keys = [f"session-{i}" for i in range(2000)]
    a = split_sessions(keys, 0.25, "s")
    assert a == split_sessions(list(reversed(keys)), 0.25, "s")
    share = sum(r["split"] == EVAL for r in a) / len(a)
    assert 0.22 < share < 0.28
    # a session keeps its side when the lake grows
    grown = {r["session_key"]: r["split"] for r in split_sessions(keys + [f"new-{i}" for i in range(500)], 0.25, "s")}
    assert all(grown[r["session_key"]] == r["split"] for r in a)
    # another seed is another split
    other = {r["session_key"]: r["split"] for r in split_sessions(keys, 0.25, "t")}
    assert sum(other[r["session_key"]] != r["split"] for r in a) > 100
    assert all(0 <= r["bucket"] < 1 and r["bucket"] == bucket(r["session_key"], "s") for r in a[:10])


def test_neither_side_empty_and_bad_share():
    rows = split_sessions(["a", "b"], 0.01, "x")
    assert {r["split"] for r in rows} == {TRAIN, EVAL} and sum(r["forced"] for r in rows) == 1
    rows = split_sessions(["a", "b"], 0.99, "x")
    assert {r["split"] for r in rows} == {TRAIN, EVAL}
    with pytest.raises(ValueError, match="eval_share"):
        split_sessions(["a"], 1.5)


def test_partition_rows_never_trains_on_eval_or_unknown_sessions():
    split = split_sessions([f"s{i}" for i in range(20)], 0.3, "x")
    rows = [{"session_key": f"s{i % 25}", "v": i} for i in range(100)]
    train, evals, unknown = partition_rows(rows, split)
    ev = {r["session_key"] for r in split if r["split"] == EVAL}
    assert train and evals and unknown
    assert not {r["session_key"] for r in train} & ev
    assert {r["session_key"] for r in evals} <= ev
    assert {r["session_key"] for r in unknown} == {f"s{i}" for i in range(20, 25)}
    assert len(train) + len(evals) + len(unknown) == len(rows)


def test_evaluation_refuses_sessions_the_run_trained_on():
    split = split_sessions([f"s{i}" for i in range(10)], 0.3, "x")
    train = [r["session_key"] for r in split if r["split"] == TRAIN]
    check_no_leak(train, split)  # the split it trained with: fine
    other = split_sessions([f"s{i}" for i in range(10)], 0.3, "another seed")
    if {r["session_key"] for r in other if r["split"] == EVAL} & set(train):
        with pytest.raises(ValueError, match="training sessions of this run"):
            check_no_leak(train, other)
    with pytest.raises(ValueError, match="training sessions"):
        check_no_leak(["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"], split)
