"""The session sensor through a real Dagster instance and a real lake, and the runs it asks for.

Each tick asks for at most ONE run (over the days of the changed files, carrying the files
in its config); the runs here execute the real trace chain in process, as the daemon would.
"""

import contextvars
import json
import os
import time
from pathlib import Path

import dagster as dg

from assets.traces.assets import ASSETS as TRACE_ASSETS
from assets.traces.assets import CHECKS as TRACE_CHECKS
from assets.traces.tables import AGENT_STEPS, RAW_TRACES, SESSION_FILES, TRACE_TURNS
from resources.lake import DeltaLake
from resources.sessions import SessionSource, session_key_for
from assets.traces.scan import ScanState, scan
from sensors.sessions import READ_OP, build_session_sensor

SAMPLES = Path(__file__).resolve().parents[2] / "assets" / "traces" / "samples"
TABLES = (RAW_TRACES, TRACE_TURNS, AGENT_STEPS)


def claude_line(i, role="user", text="hello", session="s1", ts="2026-11-01T10:00:00Z"):
    rec = {"type": role, "uuid": f"{session}-u{i}", "parentUuid": f"{session}-u{i-1}" if i else None,
           "sessionId": session, "timestamp": ts,
           "message": {"role": role, "content": text if role == "user" else
                       [{"type": "text", "text": text}], **({"id": f"m{i}", "model": "claude-x"} if role == "assistant" else {})}}
    return json.dumps(rec) + "\n"


def session_text(session, ts, n=4):
    return "".join(claude_line(i, "user" if i % 2 == 0 else "assistant", f"{session} line {i}", session, ts)
                   for i in range(n))


class Env:
    def __init__(self, tmp_path, instance, **source_kw):
        self.root = tmp_path / "sessions"
        self.root.mkdir(parents=True, exist_ok=True)
        self.lake = DeltaLake(root=str(tmp_path / "lake"))
        self.instance = instance
        self.job = dg.define_asset_job("ingest_sessions", selection=dg.AssetSelection.assets(*TRACE_ASSETS),
                                       executor_def=dg.in_process_executor)
        self.sensor = build_session_sensor(self.job)
        self.source = SessionSource(root=str(self.root), **source_kw)
        self.defs = dg.Definitions(assets=TRACE_ASSETS, asset_checks=TRACE_CHECKS, jobs=[self.job],
                                   sensors=[self.sensor], resources={"lake": self.lake, "sessions": self.source})
        self.cursor = None

    def tick(self):
        def evaluate():
            ctx = dg.build_sensor_context(instance_ref=self.instance.get_ref(), cursor=self.cursor,
                                          definitions=self.defs,
                                          resources={"sessions": self.source, "lake": self.lake})
            return self.sensor.evaluate_tick(ctx)

        # the sensor context leaves a partition-loading context variable pointing at its own
        # instance; evaluate in a copied context so it cannot leak into later tests
        data = contextvars.copy_context().run(evaluate)
        self.cursor = data.cursor
        return data

    def run(self, req):
        job = self.defs.resolve_job_def("ingest_sessions")
        res = job.execute_in_process(instance=self.instance, run_config=req.run_config, tags=req.tags,
                                     partition_key=req.partition_key, raise_on_error=False)
        assert res.success
        return res

    def tick_and_run(self):
        data = self.tick()
        assert len(data.run_requests) <= 1  # one run per tick
        for r in data.run_requests:
            self.run(r)
        return data

    def settle(self, max_ticks=5):
        """Tick and run until a tick asks for nothing (a tick's run covers one window of days)."""
        for _ in range(max_ticks):
            if not self.tick_and_run().run_requests:
                return
        raise AssertionError("the sensor kept asking for runs")

    def rows(self, spec, **kw):
        return self.lake.read(spec, **kw).to_pylist()

    def by_session(self, spec):
        out = {}
        for r in self.rows(spec):
            out.setdefault((r["day"], r["session_key"]), []).append(r)
        return {k: sorted(v, key=lambda r: json.dumps(r, default=str, sort_keys=True)) for k, v in out.items()}

    def registry(self):
        return {r["session_key"]: r for r in self.rows(SESSION_FILES)}


def changes_of(req):
    return req.run_config["ops"][READ_OP]["config"]["changes"]


def bump(path: Path, ns: int = 1_000_000):
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + ns))


def test_new_files_one_run_over_their_days(tmp_path, instance):
    env = Env(tmp_path, instance)
    (env.root / "proj-a" / "s1" / "subagents").mkdir(parents=True)
    (env.root / "proj-a" / "one.jsonl").write_text(session_text("one", "2026-11-01T10:00:00Z"))
    (env.root / "proj-a" / "s1" / "subagents" / "agent-x.jsonl").write_text(session_text("ag", "2026-11-03T23:59:00Z"))
    (env.root / "notes.txt").write_text("not a session")
    data = env.tick()
    assert len(data.run_requests) == 1
    req = data.run_requests[0]
    assert req.tags["dagster/asset_partition_range_start"] == "2026-11-01"
    assert req.tags["dagster/asset_partition_range_end"] == "2026-11-03"
    assert sorted(c["key"] for c in changes_of(req)) == ["proj-a~one.jsonl", "proj-a~s1~subagents~agent-x.jsonl"]
    assert {c["change"] for c in changes_of(req)} == {"new"}
    assert not data.dynamic_partitions_requests  # days, not a partition per file
    env.run(req)
    reg = env.registry()
    assert {k: r["day"] for k, r in reg.items()} == {"proj-a~one.jsonl": "2026-11-01",
                                                     "proj-a~s1~subagents~agent-x.jsonl": "2026-11-03"}
    assert {r["status"] for r in reg.values()} == {"ingested"}
    assert {(r["day"], r["session_key"]) for r in env.rows(TRACE_TURNS)} == {
        ("2026-11-01", "proj-a~one.jsonl"), ("2026-11-03", "proj-a~s1~subagents~agent-x.jsonl")}
    # Delta tables are physically partitioned by day
    assert env.lake.table(RAW_TRACES).metadata().partition_columns == ["day"]
    # nothing changed: no run, and the cursor stays small
    again = env.tick()
    assert not again.run_requests and again.skip_message
    assert len(again.cursor) < 500


def test_grown_file_rewrites_only_itself(tmp_path, instance):
    env = Env(tmp_path, instance)
    live, other = env.root / "live.jsonl", env.root / "other.jsonl"
    live.write_text(session_text("live", "2026-11-05T08:00:00Z", 2))
    other.write_text(session_text("other", "2026-11-05T09:00:00Z", 4))
    env.tick_and_run()
    before = env.by_session(TRACE_TURNS)
    raw_other = env.by_session(RAW_TRACES)[("2026-11-05", "other.jsonl")]
    with live.open("a") as fh:
        fh.write(claude_line(2, "user", "more", "live", "2026-11-05T08:05:00Z"))
        fh.write(claude_line(3, "assistant", "done", "live", "2026-11-05T08:06:00Z"))
    bump(live)
    data = env.tick_and_run()
    (req,) = data.run_requests
    assert [(c["key"], c["change"]) for c in changes_of(req)] == [("live.jsonl", "appended")]
    assert req.partition_key == "2026-11-05"
    after = env.by_session(TRACE_TURNS)
    assert len(after[("2026-11-05", "live.jsonl")]) == 4
    # the other session of the same day: untouched, byte for byte (ingested_at included)
    assert after[("2026-11-05", "other.jsonl")] == before[("2026-11-05", "other.jsonl")]
    assert env.by_session(RAW_TRACES)[("2026-11-05", "other.jsonl")] == raw_other
    assert env.registry()["live.jsonl"]["change"] == "appended"


def test_replaced_file_moves_to_its_new_day(tmp_path, instance):
    """A file replaced by a different session under the same name (Gemini CLI rewrites its
    document; a user copies another session over it): rewritten, its old day cleared."""
    env = Env(tmp_path, instance)
    f = env.root / "chat.jsonl"
    f.write_text(session_text("first", "2026-10-01T10:00:00Z", 4))
    (env.root / "stay.jsonl").write_text(session_text("stay", "2026-10-01T11:00:00Z", 2))
    env.tick_and_run()
    f.write_text(session_text("second", "2026-10-07T10:00:00Z", 2))
    bump(f)
    (req,) = env.tick_and_run().run_requests
    (c,) = changes_of(req)
    assert (c["change"], c["day"], c["prev_day"]) == ("rewritten", "2026-10-07", "2026-10-01")
    got = env.by_session(TRACE_TURNS)
    assert ("2026-10-01", "chat.jsonl") not in got
    assert [t["content"] for t in got[("2026-10-07", "chat.jsonl")]] and all(
        "second" in (t["content"] or "") for t in got[("2026-10-07", "chat.jsonl")])
    assert ("2026-10-01", "stay.jsonl") in got
    reg = env.registry()["chat.jsonl"]
    assert (reg["day"], reg["prev_day"], reg["change"]) == ("2026-10-07", "2026-10-01", "rewritten")


def test_deleted_file_rows_removed_and_reported(tmp_path, instance):
    env = Env(tmp_path, instance)
    gone, stay = env.root / "gone.jsonl", env.root / "stay.jsonl"
    gone.write_text(session_text("gone", "2026-11-02T10:00:00Z"))
    stay.write_text(session_text("stay", "2026-11-02T10:30:00Z"))
    env.tick_and_run()
    keep = {s.path: env.by_session(s)[("2026-11-02", "stay.jsonl")] for s in TABLES}
    gone.unlink()
    data = env.tick()
    (req,) = data.run_requests
    assert [(c["key"], c["change"]) for c in changes_of(req)] == [("gone.jsonl", "deleted")]
    res = env.run(req)
    for spec in TABLES:
        rows = env.by_session(spec)
        assert ("2026-11-02", "gone.jsonl") not in rows, spec.path
        assert rows[("2026-11-02", "stay.jsonl")] == keep[spec.path], spec.path
    assert env.registry()["gone.jsonl"]["status"] == "deleted"
    mats = [e for e in res.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
            and e.asset_key == SESSION_FILES.asset_key]
    assert mats and mats[0].materialization.metadata["deleted_files"].value == 1
    assert not env.tick().run_requests  # the deletion is recorded: not asked again


def test_tick_bounded_by_count_and_bytes(tmp_path, instance):
    env = Env(tmp_path, instance, max_files_per_tick=3, max_bytes_per_tick=10**9)
    for i in range(7):
        (env.root / f"f{i}.jsonl").write_text(session_text(f"f{i}", "2026-11-01T10:00:00Z", 2))
    seen = []
    for _ in range(3):
        d = env.tick_and_run()
        for r in d.run_requests:
            assert len(changes_of(r)) <= 3
            seen += [c["key"] for c in changes_of(r)]
    assert sorted(seen) == [f"f{i}.jsonl" for i in range(7)]
    assert not env.tick().run_requests
    # by bytes: one file per tick when each exceeds the budget alone
    env2 = Env(tmp_path / "b", instance, max_files_per_tick=100, max_bytes_per_tick=10)
    for i in range(2):
        (env2.root / f"g{i}.jsonl").write_text(session_text(f"g{i}", "2026-11-01T10:00:00Z", 2))
    assert [len(changes_of(r)) for r in env2.tick().run_requests] == [1]


def test_symlinks_outside_the_root_and_loops_are_ignored(tmp_path, instance):
    env = Env(tmp_path, instance)
    outside = tmp_path / "secret.jsonl"
    outside.write_text(claude_line(0))
    (env.root / "escape.jsonl").symlink_to(outside)
    (env.root / "dir-escape").symlink_to(tmp_path)
    (env.root / "loop-a.jsonl").symlink_to(env.root / "loop-b.jsonl")
    (env.root / "loop-b.jsonl").symlink_to(env.root / "loop-a.jsonl")
    (env.root / "ok.jsonl").write_text(claude_line(0))
    st = ScanState()
    res = scan(env.root, st, {})
    assert [c.key for c in res.batch] == ["ok.jsonl"]
    assert {p for p, _ in res.problems} == {"loop-a.jsonl", "loop-b.jsonl"}
    (req,) = env.tick().run_requests
    assert [c["key"] for c in changes_of(req)] == ["ok.jsonl"]


def test_bad_input_is_reported_and_nothing_is_lost(tmp_path, instance):
    """Not a session, an unreadable file, a file deleted between the tick and its run."""
    env = Env(tmp_path, instance)
    (env.root / "good.jsonl").write_text(session_text("good", "2026-11-04T10:00:00Z"))
    (env.root / "config.json").write_text('{"theme": "dark", "fontSize": 12}\n')
    (env.root / "vanish.jsonl").write_text(session_text("vanish", "2026-11-04T11:00:00Z"))
    env.settle()  # config.json has no timestamp: filed under its mtime's day, in a second tick
    before = env.by_session(TRACE_TURNS)
    assert ("2026-11-04", "vanish.jsonl") in before
    reg = env.registry()
    assert reg["config.json"]["status"] == "not_session" and "format" in reg["config.json"]["reason"]
    # lossless bronze: the non-session's line is kept
    assert any(r["session_key"] == "config.json" for r in env.rows(RAW_TRACES))

    # grows, then vanishes before its run reads it: its rows stay, the run reports it
    with (env.root / "vanish.jsonl").open("a") as fh:
        fh.write(claude_line(9, "user", "late", "vanish", "2026-11-04T11:10:00Z"))
    bump(env.root / "vanish.jsonl")
    unreadable = env.root / "locked.jsonl"
    unreadable.write_text(session_text("locked", "2026-11-04T12:00:00Z"))
    unreadable.chmod(0)
    (req,) = env.tick().run_requests
    (env.root / "vanish.jsonl").unlink()
    res = env.run(req)
    after = env.by_session(TRACE_TURNS)
    assert after[("2026-11-04", "vanish.jsonl")] == before[("2026-11-04", "vanish.jsonl")]
    assert after[("2026-11-04", "good.jsonl")] == before[("2026-11-04", "good.jsonl")]
    reg = env.registry()
    assert reg["vanish.jsonl"]["status"] == "vanished"
    if os.geteuid() != 0:  # root reads a mode-000 file anyway
        assert reg["locked.jsonl"]["status"] == "unreadable"
        assert not any(r["session_key"] == "locked.jsonl" for r in env.rows(RAW_TRACES))
    md = next(e for e in res.all_events if e.event_type_value == "ASSET_MATERIALIZATION"
              and e.asset_key == SESSION_FILES.asset_key).materialization.metadata
    assert "vanish.jsonl" in md["problems"].value
    # the next tick sees it gone: rows removed then
    (req,) = env.tick().run_requests
    assert ("vanish.jsonl", "deleted") in [(c["key"], c["change"]) for c in changes_of(req)]
    env.run(req)
    assert ("2026-11-04", "vanish.jsonl") not in env.by_session(TRACE_TURNS)
    unreadable.chmod(0o644)


def test_burst_of_files_is_taken_in_bounded_ticks(tmp_path, instance):
    """10,000 files appearing at once: each tick hands at most max_files_per_tick over."""
    env = Env(tmp_path, instance, max_files_per_tick=4000)
    d = env.root / "burst"
    d.mkdir()
    line = claude_line(0)
    for i in range(10_000):
        (d / f"{i:05d}.jsonl").write_text(line)
    t0 = time.perf_counter()
    data = env.tick()
    assert time.perf_counter() - t0 < 30
    (req,) = data.run_requests
    assert len(changes_of(req)) == 4000 and req.tags["tracelake/waiting"] == "6000"
    data = env.tick()  # the first run has not recorded anything yet: the next 4000, no repeats
    (req2,) = data.run_requests
    assert not {c["key"] for c in changes_of(req)} & {c["key"] for c in changes_of(req2)}


def test_tick_over_an_unchanged_archive_stats_directories_only(tmp_path):
    """20 directories x 1,000 cold files: once registered, a tick lists no directory and
    stats only its sweep slice (bench_live.py measures 100,000)."""
    root = tmp_path / "archive"
    old = time.time_ns() - 3 * 86400 * 10**9
    for d in range(20):
        (root / f"p{d:02d}").mkdir(parents=True)
        for i in range(1000):
            p = root / f"p{d:02d}" / f"{i:04d}.jsonl"
            p.touch()
            os.utime(p, ns=(old, old))
    first = scan(root, ScanState(), {}, max_files=10**6)
    assert len(first.batch) == 20_000
    registry = {c.key: {"path": c.path, "size": c.size, "mtime_ns": c.mtime_ns, "head_len": 0, "head_fp": "",
                        "day": c.day, "status": "empty"} for c in first.batch}
    keys = sorted(registry)
    state = first.state
    t0 = time.perf_counter()
    res = scan(root, state, registry, registry_keys=keys, sweep_files=2000)
    took = time.perf_counter() - t0
    assert not res.batch and res.stats["dirs_listed"] == 0 and res.stats["files_statted"] == 2000
    assert took < 1.0
    assert len(json.dumps(res.state.to_json())) < 2000
    # an in-place edit of a cold file is found by the sweep within a full round
    victim = root / "p07" / "0500.jsonl"
    victim.write_text(claude_line(0))
    os.utime(victim, ns=(old + 5, old + 5))
    found = []
    for _ in range(len(keys) // 2000 + 1):
        res = scan(root, res.state, registry, registry_keys=keys, sweep_files=2000)
        found += [c.key for c in res.batch]
        if found:
            break
    assert found == [session_key_for("p07/0500.jsonl")]


def test_backfill_over_days_reads_exactly_their_files(tmp_path, instance):
    """A run over a date range without a file list re-reads the registry's files of those days."""
    env = Env(tmp_path, instance)
    for day in ("2026-09-01", "2026-09-02", "2026-09-03", "2026-09-04"):
        for s in ("a", "b"):
            (env.root / f"{day}-{s}.jsonl").write_text(session_text(f"{day}{s}", f"{day}T10:00:00Z"))
    env.tick_and_run()
    before = {spec.path: env.by_session(spec) for spec in TABLES}
    reg_before = env.registry()
    # an edit the sensor has not seen yet, inside the range: the backfill takes it
    edited = env.root / "2026-09-02-a.jsonl"
    with edited.open("a") as fh:
        fh.write(claude_line(7, "user", "edited", "2026-09-02a", "2026-09-02T10:09:00Z"))
    job = env.defs.resolve_job_def("ingest_sessions")
    res = job.execute_in_process(instance=instance, tags={
        "dagster/asset_partition_range_start": "2026-09-02", "dagster/asset_partition_range_end": "2026-09-03"})
    assert res.success
    reg = env.registry()
    reread = {k for k in reg if reg[k]["run_id"] == res.run_id}
    assert reread == {"2026-09-02-a.jsonl", "2026-09-02-b.jsonl", "2026-09-03-a.jsonl", "2026-09-03-b.jsonl"}
    for spec in TABLES:
        after = env.by_session(spec)
        for (day, key), rows in before[spec.path].items():
            if day in ("2026-09-01", "2026-09-04"):
                assert after[(day, key)] == rows, (spec.path, key)  # untouched, byte for byte
    assert len(env.by_session(RAW_TRACES)[("2026-09-02", "2026-09-02-a.jsonl")]) == 5
    assert reg["2026-09-01-a.jsonl"]["run_id"] == reg_before["2026-09-01-a.jsonl"]["run_id"]
    # the run materialized exactly those two days of every asset
    mats = instance.get_materialized_partitions(RAW_TRACES.asset_key)
    assert {"2026-09-02", "2026-09-03"} <= mats


def test_session_key_is_stable_and_readable():
    assert session_key_for("proj/abc.jsonl") == "proj~abc.jsonl"


def test_a_day_launched_before_any_tick_reads_that_days_files(tmp_path, instance):
    """A launch from the UI for one day on a fresh instance: the files of that day (found on
    disk, the registry knows nothing yet) and only those."""
    env = Env(tmp_path, instance)
    (env.root / "mon.jsonl").write_text(session_text("mon", "2026-08-03T10:00:00Z"))
    (env.root / "tue.jsonl").write_text(session_text("tue", "2026-08-04T10:00:00Z"))
    job = env.defs.resolve_job_def("ingest_sessions")
    assert job.execute_in_process(instance=instance, partition_key="2026-08-04").success
    assert {k: r["day"] for k, r in env.registry().items()} == {"tue.jsonl": "2026-08-04"}
    assert {r["session_key"] for r in env.rows(TRACE_TURNS)} == {"tue.jsonl"}
    # the sensor then takes the other one only
    (req,) = env.tick().run_requests
    assert [c["key"] for c in changes_of(req)] == ["mon.jsonl"]


def test_a_watched_folder_that_does_not_exist_is_a_skip_that_says_what_to_do(tmp_path, instance):
    env = Env(tmp_path, instance)
    env.root.rmdir()
    data = env.tick()
    assert not data.run_requests
    assert "is not a directory" in data.skip_message and "TRACELAKE_SESSIONS_DIR" in data.skip_message
    env.root.mkdir()
    (env.root / "s1.jsonl").write_text(session_text("s1", "2026-11-01T10:00:00Z"))
    assert len(env.tick().run_requests) == 1  # created later: picked up on the next tick
