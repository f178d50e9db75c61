"""The reduced fault suite (testsupport/faults.py, `benchmarks/fault_suite.py --quick`) as a CI test.

One run of the suite (module fixture): bad session files, planted secrets of every kind,
a teacher that fails in every way, a run killed with SIGKILL during the teacher asking
and re-run, two runs writing the same tables at once. Full suite and figures table:
``.venv/bin/python benchmarks/fault_suite.py``.
"""

from __future__ import annotations

import pytest

from testsupport.faults import print_table, run_suite

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    work = tmp_path_factory.mktemp("faults")
    f = run_suite(work, quick=True, log=print)
    print_table(f)
    return f


def test_no_crash_and_no_lost_row(figures):
    assert figures["crashes"] == 0, figures["crash_details"]
    assert figures["lost_rows"] == 0
    assert figures["extra_rows"] == 0 and figures["duplicate_rows"] == 0
    assert figures["raw_rows"] == figures["lines_in_files"]
    assert figures["sessions"] == figures["nonempty_files"]  # an empty file has no rows


def test_every_kind_of_bad_line_is_quarantined_with_its_reason(figures):
    assert {"binary", "blank", "invalid_json", "invalid_utf8", "not_object", "oversized",
            "truncated"} <= set(figures["quarantined"])


def test_teacher_faults_are_survived_and_nothing_is_paid_twice_without_cause(figures):
    st = figures["teacher_statuses"]
    assert st.get("429") and st.get("500") and st.get("dropped") and st.get("200-unusable")
    assert figures["auth_failures"] == 0
    assert figures["killed_mid_ask"], "the kill landed after the teacher asking"
    # duplicates are only (a) answers the server sent after the client timed out and
    # (b) answers received in the cache's last flush window before kill -9
    assert not figures["repeated_paid_by_cause"].get("other"), figures["repeated_paid_by_cause"]
    assert figures["repeated_paid_by_cause"].get("unflushed_before_kill", 0) <= figures["paid_before_kill"]
    errors = {k for k in figures["teacher_responses"] if k.startswith("error")}
    assert errors and figures["teacher_responses"].get("ok")


def test_no_secret_in_logs_or_teacher_requests(figures):
    assert not figures["secrets_in_logs"], figures["secrets_in_logs"]
    assert not figures["secrets_in_teacher_bodies"], figures["secrets_in_teacher_bodies"]


def test_no_secret_in_any_table(figures):
    """UTF-16 session files included: they are decoded, parsed and scrubbed like any other."""
    assert not {k: v for k, v in figures["secrets_in_tables"].items() if v}, figures["secrets_in_tables"]
