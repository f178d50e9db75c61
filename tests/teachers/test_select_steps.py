"""Which steps teachers are asked about under a per-session cap (issue 16 point 7)."""

from assets.teachers.assets import select_steps


def _step(session, i, caused=False, site=False):
    return {"session_key": session, "step_id": f"{session}:{i}", "step_index": i,
            "caused_error": caused, "is_error_site": site}


def test_error_sites_are_asked_first_under_a_cap():
    rows = [_step("a", i) for i in range(10)]
    rows[7] = _step("a", 7, caused=True)  # its call failed: the rejected side of an error-site pair
    rows[8] = _step("a", 8, site=True)  # the recovery turn
    rows[9] = _step("a", 9, caused=True)
    rows += [_step("b", i) for i in range(3)]
    got = select_steps(list(reversed(rows)), 3)
    assert [r["step_id"] for r in got] == ["a:7", "a:8", "a:9", "b:0", "b:1", "b:2"]
    got = select_steps(rows, 2)
    assert [r["step_id"] for r in got] == ["a:7", "a:9", "b:0", "b:1"]
    assert len(select_steps(rows, None)) == len(rows)
