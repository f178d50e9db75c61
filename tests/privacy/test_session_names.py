"""User names in session paths: Claude Code names its project folders after the working
directory (``-Users-jane-proj``), so a session's path names its user. The key, the
registry's path, run config and tags, logs and every table carry the pseudonymized name
(the one ``/Users/jane`` gets in the text), and re-ingest stays idempotent."""

from __future__ import annotations

import contextvars
import json
from pathlib import Path

import dagster as dg

from assets.traces.tables import RAW_TRACES, SESSION_FILES, TRACE_TURNS
from dagster_project.definitions import INGEST_JOB, build_definitions
from resources import privacy
from resources.lake import DeltaLake
from resources.privacy import PiiPolicy, Privacy
from resources.sessions import SessionNames, SessionSource
from tests.teachers.conftest import http_teacher, pool_yaml
from testsupport.fake_openai import FakeOpenAI

SALT = b"names-salt"
# one plain user name, one whose folder name cannot tell where the name ends (Maria_Quint
# is written Maria-Quint), one Linux home
USERS = {"-Users-jdoe4821-shop": "/Users/jdoe4821/shop", "-Users-Maria-Quint-acme-api": "/Users/Maria_Quint/acme-api",
         "-home-zed77x-tools": "/home/zed77x/tools"}
NEEDLES = ("jdoe4821", "Maria", "Quint", "zed77x")


def _lines(cwd: str, folder: str, n: int, start: int = 0) -> list[str]:
    out = []
    for i in range(start, start + n):
        out.append(json.dumps({
            "parentUuid": None if i == 0 else f"a-{i - 1}", "isSidechain": False, "type": "user", "sessionId": "s",
            "uuid": f"u-{i}", "cwd": cwd, "timestamp": f"2026-01-15T10:00:{i:02d}.000Z",
            "message": {"role": "user", "content": f"step {i}: output saved to {cwd}/.claude/projects/{folder}/x.txt"}}))
        out.append(json.dumps({
            "parentUuid": f"u-{i}", "isSidechain": False, "type": "assistant", "sessionId": "s", "uuid": f"a-{i}",
            "cwd": cwd, "timestamp": f"2026-01-15T10:00:{i:02d}.500Z",
            "message": {"role": "assistant", "model": "claude-sonnet-4-5",
                        "content": [{"type": "text", "text": f"Done with step {i}."}]}}))
    return out


def _sessions(root: Path) -> dict[str, Path]:
    files = {}
    for folder, cwd in USERS.items():
        (root / folder).mkdir(parents=True)
        p = root / folder / "0b9e2c4d-1111-4222-8333-944455556666.jsonl"
        p.write_text("\n".join(_lines(cwd, folder, 3)) + "\n")
        files[folder] = p
    return files


def test_stored_names_use_the_text_pseudonym_and_resolve_back(tmp_path):
    _sessions(tmp_path)
    p = Privacy(PiiPolicy(), SALT)
    names = SessionNames(tmp_path, p.pii)
    for folder, cwd in USERS.items():
        rel = f"{folder}/0b9e2c4d-1111-4222-8333-944455556666.jsonl"
        stored = names.stored(rel)
        assert not any(n in stored for n in NEEDLES), stored
        # the same pseudonym the home-directory rule gives in the text
        user = p.scrub_text(cwd)[0].split("/")[2]
        assert stored.startswith(folder.split("-")[0] + "-" + folder.split("-")[1] + "-" + user + "-"), (stored, user)
        assert names.stored(rel) == stored  # deterministic
        assert SessionNames(tmp_path, Privacy(PiiPolicy(), SALT).pii).stored(rel) == stored  # across processes
        assert names.real(stored) == rel
        assert names.key(rel) == stored.replace("/", "~")
    assert names.real("-Users-user_00000000-shop/x.jsonl") is None
    # Windows folders and plain folders
    assert p.pii.dashed_home("C--Users-jdoe4821-src").startswith("C--Users-user_")
    assert names.stored("proj/a.jsonl") == "proj/a.jsonl"
    # the policy can turn the kind off: then paths stay as they are
    off = SessionNames(tmp_path, Privacy(PiiPolicy(home_user=False), SALT).pii)
    assert off.stored("-Users-jdoe4821-shop/a.jsonl") == "-Users-jdoe4821-shop/a.jsonl"


def test_dashed_folder_names_in_text_are_pseudonymized():
    p = Privacy(PiiPolicy(), SALT)
    out, counts = p.scrub_text('{"x": "saved to /Users/Maria_Quint/.claude/projects/-Users-Maria-Quint-acme/y"}')
    assert "Maria" not in out and "Quint" not in out and counts == {"home_user": 2}
    user = out.split("/Users/")[1].split("/")[0]
    assert f"-Users-{user}-acme" in out
    for keep in ("take-home-pay", "the -home-user-x folder", "-Users-user_3f9a2c1b-proj"):
        assert p.scrub_text(keep) == (keep, {})


def test_user_names_reach_no_table_run_or_log_and_reingest_is_idempotent(tmp_path, instance, capfd, monkeypatch):
    sessions = tmp_path / "sessions"
    files = _sessions(sessions)
    lake = DeltaLake(root=str(tmp_path / "lake"))
    privacy.configure(Privacy(PiiPolicy(), SALT))
    try:
        with FakeOpenAI() as srv:
            monkeypatch.setenv("TL_NAMES_KEY", "sk-names-not-a-real-key-000")
            pool = pool_yaml([http_teacher(srv.url, "remote", api_key_env="TL_NAMES_KEY")])
            d = build_definitions(lake=lake, sessions=SessionSource(root=str(sessions)))
            from assets.teachers.pool import TeacherPool

            defs = dg.Definitions(assets=d.assets, asset_checks=d.asset_checks, jobs=d.jobs, sensors=d.sensors,
                                  resources={**d.resources, "teachers": TeacherPool(config_yaml=pool)})
            sensor = defs.resolve_sensor_def("session_files")
            job = defs.resolve_job_def(INGEST_JOB)
            cursor = None
            run_ids = []

            def tick_and_run():
                nonlocal cursor
                ctx = dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs, cursor=cursor,
                                              resources={"sessions": defs.resources["sessions"], "lake": lake})
                data = contextvars.copy_context().run(lambda: sensor.evaluate_tick(ctx))
                cursor = data.cursor
                assert len(data.run_requests) == 1, data.skip_message
                req = data.run_requests[0]
                res = job.execute_in_process(instance=instance, run_config=req.run_config, tags=req.tags,
                                             partition_key=req.partition_key, raise_on_error=True)
                assert res.success
                run_ids.append(res.run_id)
                return req, res

            req, _ = tick_and_run()
            keys1 = sorted(lake.read(SESSION_FILES, columns=["session_key"])["session_key"].to_pylist())
            assert len(keys1) == 3
            raw1 = lake.read(RAW_TRACES, columns=["session_key"]).num_rows
            assert raw1 == 3 * 6

            # the file grows (appended) and another is rewritten: same keys, rows replaced, none twice
            shop = files["-Users-jdoe4821-shop"]
            with shop.open("a") as f:
                f.write("\n".join(_lines(USERS["-Users-jdoe4821-shop"], "-Users-jdoe4821-shop", 2, start=3)) + "\n")
            tools = files["-home-zed77x-tools"]
            tools.write_text("\n".join(_lines(USERS["-home-zed77x-tools"], "-home-zed77x-tools", 1)) + "\n")
            req2, res2 = tick_and_run()
            changes = req2.run_config["ops"]["read_session_files"]["config"]["changes"]
            assert sorted(c["change"] for c in changes) == ["appended", "rewritten"]
            keys2 = sorted(lake.read(SESSION_FILES, columns=["session_key"])["session_key"].to_pylist())
            assert keys2 == keys1
            raw = lake.read(RAW_TRACES, columns=["session_key", "line_no"])
            pairs = list(zip(raw["session_key"].to_pylist(), raw["line_no"].to_pylist()))
            assert len(pairs) == len(set(pairs)) == 10 + 6 + 2  # shop grew 6 -> 10 lines, tools 6 -> 2
            # a third tick with nothing changed: no run
            ctx = dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs, cursor=cursor,
                                          resources={"sessions": defs.resources["sessions"], "lake": lake})
            assert not contextvars.copy_context().run(lambda: sensor.evaluate_tick(ctx)).run_requests

        # look everywhere: every lake file (incl. the Delta logs), the instance's storage
        # (runs, tags, config, event log, ticks, compute logs), the event records, stdout/stderr
        stdout, stderr = capfd.readouterr()
        places = {"stdout": stdout + stderr}
        for rid in run_ids:
            run = instance.get_run_by_id(rid)
            places[f"run {rid} config"] = json.dumps(run.run_config)
            places[f"run {rid} tags"] = json.dumps(run.tags)
            places[f"run {rid} events"] = "\n".join(str(r) for r in instance.all_logs(rid))
        for root in (tmp_path / "lake", tmp_path / "dagster_home"):
            for f in root.rglob("*"):
                if f.is_file() and "_private" not in f.parts:
                    places[str(f.relative_to(tmp_path))] = f.read_bytes().decode("utf-8", "replace")
        from dagster_project.definitions import TABLES

        for spec in TABLES:
            if lake.exists(spec):
                places[spec.path] = json.dumps(lake.read(spec).to_pylist(), default=str)
        leaks = sorted({(where, n) for where, text in places.items() for n in NEEDLES if n in text})
        assert leaks == [], leaks

        # the key carries the pseudonym the text carries
        assert lake.read(TRACE_TURNS).num_rows
        user = privacy.active().scrub_text("/Users/jdoe4821/")[0].split("/")[2]
        assert any(k.startswith(f"-Users-{user}-shop~") for k in keys1), keys1
    finally:
        privacy.configure(None)


def test_an_older_lake_with_user_names_in_its_keys_is_migrated(tmp_path, instance):
    """A lake written before keys were pseudonymized (here: with the home_user kind off, the
    same keys): `tracelake migrate` drops those sessions everywhere, the next run reads the
    files again under pseudonymized keys; no name is left on disk, no row lost."""
    from dagster_project.migrate import migrate_lake

    sessions = tmp_path / "sessions"
    _sessions(sessions)
    lake = DeltaLake(root=str(tmp_path / "lake"))

    def ingest(policy):
        privacy.configure(Privacy(policy, SALT))
        with FakeOpenAI() as srv:
            pool = pool_yaml([http_teacher(srv.url, "remote", api_key_env="TL_NAMES_KEY")])
            d = build_definitions(lake=lake, sessions=SessionSource(root=str(sessions)))
            from assets.teachers.pool import TeacherPool

            defs = dg.Definitions(assets=d.assets, asset_checks=d.asset_checks, jobs=d.jobs, sensors=d.sensors,
                                  resources={**d.resources, "teachers": TeacherPool(config_yaml=pool)})
            ctx = dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs,
                                          resources={"sessions": defs.resources["sessions"], "lake": lake})
            data = contextvars.copy_context().run(lambda: defs.resolve_sensor_def("session_files").evaluate_tick(ctx))
            for req in data.run_requests:
                res = defs.resolve_job_def(INGEST_JOB).execute_in_process(
                    instance=instance, run_config=req.run_config, tags=req.tags, partition_key=req.partition_key)
                assert res.success

    def on_disk(needle):
        return sorted(str(f.relative_to(tmp_path)) for f in (tmp_path / "lake").rglob("*")
                      if f.is_file() and needle.encode() in f.read_bytes())

    try:
        import os

        os.environ["TL_NAMES_KEY"] = "sk-names-not-a-real-key-000"
        ingest(PiiPolicy(home_user=False))
        keys_before = sorted(lake.read(SESSION_FILES, columns=["session_key"])["session_key"].to_pylist())
        rows_before = lake.read(RAW_TRACES, columns=["session_key"]).num_rows
        assert any("jdoe4821" in k for k in keys_before) and on_disk("jdoe4821")  # the old layout
        privacy.configure(Privacy(PiiPolicy(), SALT))
        done = migrate_lake(lake, sessions)
        assert any("sessions keyed with a user name removed" in m.action for m in done), done
        assert migrate_lake(lake, sessions) == []  # once
        ingest(PiiPolicy())
        keys = sorted(lake.read(SESSION_FILES, columns=["session_key"])["session_key"].to_pylist())
        assert len(keys) == len(keys_before) and lake.read(RAW_TRACES, columns=["session_key"]).num_rows == rows_before
        for n in NEEDLES:
            assert not any(n in k for k in keys) and on_disk(n) == [], (n, on_disk(n))
    finally:
        os.environ.pop("TL_NAMES_KEY", None)
        privacy.configure(None)
