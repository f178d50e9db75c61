"""normalized_pairs refreshes only the sessions that changed, and ends where a full rebuild ends."""

from __future__ import annotations

import pytest

from assets.pairs.normalize import load_recipe
from assets.pairs.refresh import refresh_normalized_pairs
from assets.pairs.tables import NORMALIZED_PAIRS, PAIR_REJECTIONS, PREFERENCE_PAIRS
from resources.changes import REFRESH_STATE
from resources.lake import DeltaLake
from tests.pairs.data import pair_row

DAY = "2026-11-01"


def put_session(lake: DeltaLake, spec, key: str, rows: list[dict]) -> None:
    """(Re)write one session's rows the way the ingest job does, whatever the partition layout."""
    if spec.partition_by == ("session_key",):
        lake.replace_partitions(spec, rows, [key])
    else:  # day partitions with the session key a column
        from resources.lake import SessionScope

        for r in rows:
            r["day"] = DAY
        lake.replace_sessions(spec, rows, SessionScope.of([key], [DAY]))


def session_pairs(n: int, version: int = 0) -> list[dict]:
    key = f"s{n:02d}"
    return [pair_row(n * 100 + i, f"Fixed utils.py: case {n}.{i} v{version}, the test passes now.",
                     f"I could not find the file {n}.{i}.",
                     prompt=[{"role": "user", "content": f"Fix failing test number {n}.{i}"}],
                     session_key=key) for i in range(4)]


def _state(lake):
    return {(r["dataset"], r["input"]): r["version"] for r in lake.read(REFRESH_STATE).to_pylist()}


def _ids(lake, spec):
    return sorted(lake.read(spec, columns=["pair_id"]).column("pair_id").to_pylist())


@pytest.fixture()
def recipe():
    return load_recipe("default")


def test_refresh_reads_only_changed_sessions(tmp_path, recipe, tiny_overrides):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    for n in range(30):
        put_session(lake, PREFERENCE_PAIRS, f"s{n:02d}", session_pairs(n))
    dup = session_pairs(0)  # session 29 replays session 0's work: exact duplicates, other ids
    for r in dup:
        r["pair_id"] = "dup-" + r["pair_id"]
        r["session_key"] = "s29"
        r["step_id"] = "s29:" + r["step_id"]
    put_session(lake, PREFERENCE_PAIRS, "s29", dup)

    first = refresh_normalized_pairs(lake, recipe, overrides=tiny_overrides, group_rows=40)
    assert first.mode == "full" and first.reason == "first refresh"
    assert first.rows_in == 120 and first.groups >= 3  # bounded groups, not one pass over everything
    assert first.kept + first.dropped == 120
    assert {"dup-p0", "dup-p1", "dup-p2", "dup-p3"} <= set(_ids(lake, PAIR_REJECTIONS))
    assert _state(lake)[(NORMALIZED_PAIRS.path, PREFERENCE_PAIRS.path)] == lake.version(PREFERENCE_PAIRS)

    # nothing changed: nothing is read
    idle = refresh_normalized_pairs(lake, recipe, overrides=tiny_overrides)
    assert idle.mode == "incremental" and idle.sessions == 0 and idle.rows_in == 0

    # one session grew/changed, one was deleted, one is new
    put_session(lake, PREFERENCE_PAIRS, "s05", session_pairs(5, version=1))
    put_session(lake, PREFERENCE_PAIRS, "s07", [])
    put_session(lake, PREFERENCE_PAIRS, "s30", session_pairs(30))
    before = lake.read(NORMALIZED_PAIRS).num_rows
    inc = refresh_normalized_pairs(lake, recipe, overrides=tiny_overrides)
    assert inc.mode == "incremental" and inc.sessions == 3 and inc.rows_in == 8
    assert inc.kept == 8 and lake.read(NORMALIZED_PAIRS).num_rows == before - 8 + 8  # s05, s07 out; s05, s30 in
    inc_kept, inc_dropped = _ids(lake, NORMALIZED_PAIRS), _ids(lake, PAIR_REJECTIONS)
    assert not any(pid.startswith("p7") and len(pid) == 4 for pid in inc_kept + inc_dropped)  # s07's rows are gone

    # the same lake rebuilt in full ends with the same rows
    full = refresh_normalized_pairs(lake, recipe, overrides=tiny_overrides, full=True)
    assert full.mode == "full" and full.rows_in == 120  # 31 sessions, s07 empty
    assert _ids(lake, NORMALIZED_PAIRS) == inc_kept and _ids(lake, PAIR_REJECTIONS) == inc_dropped

    # a duplicate arriving later (in a new session) is dropped against the pair kept earlier
    late = session_pairs(1)
    for r in late:
        r["pair_id"], r["session_key"], r["step_id"] = "late-" + r["pair_id"], "s31", "s31:" + r["step_id"]
    put_session(lake, PREFERENCE_PAIRS, "s31", late)
    again = refresh_normalized_pairs(lake, recipe, overrides=tiny_overrides)
    assert again.sessions == 1 and again.cross_duplicates == 4 and again.kept == 0
    rej = {r["pair_id"]: r for r in lake.read(PAIR_REJECTIONS).to_pylist()}
    assert rej["late-p100"]["reason"].startswith("duplicate of pair p100")
