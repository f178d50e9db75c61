"""Which steps teachers are asked about: ranked by the failure policy, narrowed by ask_steps,
capped per session (issue 16 point 7)."""

import orjson
import pytest

from assets.teachers.pool import load_pool_spec
from assets.teachers.select import count_classes, select_steps, step_class
from assets.traces.failures import load_failure_policy


def _step(session, i, kind=None, site=False, tool="Read", args=None):
    """A step; ``kind``: the error kind of its own failed call (None: the call did not fail)."""
    call = {"id": f"c{i}", "type": "function",
            "function": {"name": tool, "arguments": orjson.dumps(args or {"file_path": f"/x/{i}.py"}).decode()}}
    return {"session_key": session, "step_id": f"{session}:{i}", "step_index": i,
            "caused_error": kind is not None, "caused_error_kind": kind, "is_error_site": site,
            "response": orjson.dumps({"role": "assistant", "content": None, "tool_calls": [call]}).decode()}


def _rows():
    rows = [_step("a", i) for i in range(10)]
    rows[3] = _step("a", 3, "test_failure", tool="Bash", args={"command": "pytest -q"})  # informative
    rows[4] = _step("a", 4, site=True)  # the recovery turn after it
    rows[7] = _step("a", 7, "file_not_found")  # a mistake: wrong path
    rows[8] = _step("a", 8, site=True)
    rows[9] = _step("a", 9, "edit_mismatch", tool="Edit", args={"file_path": "/x.py", "old_string": "a",
                                                                 "new_string": "b"})
    rows += [_step("b", i) for i in range(3)]
    return rows


def test_mistakes_are_asked_first_under_a_cap_then_other_failed_calls_then_recovery_turns():
    rows = _rows()
    policy = load_failure_policy()
    assert [step_class(r, policy) for r in rows[3:10]] == [
        "failed_call", "recovery", "other", "other", "mistake", "recovery", "mistake"]
    got = select_steps(list(reversed(rows)), 3)
    assert [r["step_id"] for r in got] == ["a:3", "a:7", "a:9", "b:0", "b:1", "b:2"]
    got = select_steps(rows, 4)
    assert [r["step_id"] for r in got] == ["a:3", "a:4", "a:7", "a:9", "b:0", "b:1", "b:2"]
    got = select_steps(rows, 2)
    assert [r["step_id"] for r in got] == ["a:7", "a:9", "b:0", "b:1"]
    assert len(select_steps(rows, None)) == len(rows)


def test_ask_steps_narrows_to_failed_calls_or_mistakes():
    rows = _rows()
    assert [r["step_id"] for r in select_steps(rows, None, "mistakes")] == ["a:7", "a:9"]
    assert [r["step_id"] for r in select_steps(rows, None, "failed_calls")] == ["a:3", "a:7", "a:9"]
    assert [r["step_id"] for r in select_steps(rows, 1, "mistakes")] == ["a:7"]
    assert count_classes(rows) == {"mistake": 2, "failed_call": 1, "recovery": 2, "other": 8}
    with pytest.raises(ValueError, match="ask_steps"):
        select_steps(rows, None, "errors")


def test_the_embedded_pool_asks_only_about_mistakes():
    pool = load_pool_spec()
    assert pool.ask_steps == "mistakes"
    assert load_pool_spec(text="teachers: [{name: t, provider: local, model: smollm2-135m}]").ask_steps == "all"
