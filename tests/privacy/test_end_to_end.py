"""Planted secrets and personal data, end to end: the session sensor -> every table of the
ingest job (with the teacher asked over real HTTP), the audit checks, the event log and
compute logs, run metadata, the teacher request bodies, exports -- 0 leaks. Then a secret
written behind the scrubber's back makes the audit check and ``tracelake audit`` fail,
with counts only."""

from __future__ import annotations

import contextvars
import json
from pathlib import Path

import dagster as dg
import orjson
import pytest

from assets.traces.tables import RAW_TRACES
from dagster_project.audit import CHECK_NAME, audit_lake
from dagster_project.cli_audit import main as audit_main
from dagster_project.definitions import INGEST_JOB, TABLES, build_definitions
from resources import privacy
from resources.lake import DeltaLake
from resources.privacy import PiiPolicy, Privacy
from resources.sessions import SessionSource
from tests.privacy.planted import planted
from tests.teachers.conftest import http_teacher, pool_yaml
from testsupport.fake_openai import FakeOpenAI
from tests.sessions import put_sessions

PII = {"home": "Jane_Smith", "email": "jane.smith@acme-corp.com", "phone": "+44 20 7946 0958",
       "card": "4539 1488 0343 6467"}


def _session_lines(items) -> list[str]:
    lines, prev = [], None
    for i, (kind, text, _) in enumerate(items):
        u = f"u-{i}"
        lines.append(json.dumps({
            "parentUuid": prev, "isSidechain": False, "type": "user", "sessionId": "s-1", "uuid": u,
            "cwd": f"/Users/{PII['home']}/src/app", "timestamp": f"2026-01-15T10:{i // 60:02d}:{i % 60:02d}.000Z",
            "message": {"role": "user", "content": f"({kind}) please use this: {text}\n"
                        f"mail {PII['email']} / {PII['phone']} / card {PII['card']}"}}))
        a = f"a-{i}"
        lines.append(json.dumps({
            "parentUuid": u, "isSidechain": False, "type": "assistant", "sessionId": "s-1", "uuid": a,
            "cwd": f"/Users/{PII['home']}/src/app", "timestamp": f"2026-01-15T10:{i // 60:02d}:{i % 60:02d}.500Z",
            "message": {"role": "assistant", "model": "claude-sonnet-4-5", "content": [
                {"type": "text", "text": f"I will not repeat it. Working in /Users/{PII['home']}/src/app."}]}}))
        prev = a
    return lines


def test_planted_secrets_end_to_end(tmp_path, instance, capfd, monkeypatch):
    items = planted()[:24]  # one session's worth; every kind is covered by test_secret_corpus
    needles = [n for _, _, n in items] + list(PII.values())
    sessions = tmp_path / "sessions"
    (sessions / "proj").mkdir(parents=True)
    lines = _session_lines(items)
    lines.insert(3, '{"type": "user", "message": {"content": "mail ' + PII["email"])  # cut short: quarantined
    (sessions / "proj" / "s-1.jsonl").write_text("\n".join(lines) + "\n")
    lake = DeltaLake(root=str(tmp_path / "lake"))
    privacy.configure(Privacy(PiiPolicy(), b"e2e-salt"))
    try:
        with FakeOpenAI(keep_bodies=True) as srv:
            monkeypatch.setenv("TL_E2E_KEY", "sk-e2e-not-a-real-key-000")
            pool = pool_yaml([http_teacher(srv.url, "remote", api_key_env="TL_E2E_KEY")])
            d = build_definitions(lake=lake, sessions=SessionSource(root=str(sessions)))
            defs = dg.Definitions(assets=d.assets, asset_checks=d.asset_checks, jobs=d.jobs, sensors=d.sensors,
                                  resources={**d.resources, "teachers": _pool(pool)})
            sensor = defs.resolve_sensor_def("session_files")  # the project's own session sensor

            def evaluate():
                ctx = dg.build_sensor_context(instance_ref=instance.get_ref(), definitions=defs,
                                              resources={"sessions": defs.resources["sessions"], "lake": lake})
                return sensor.evaluate_tick(ctx)

            data = contextvars.copy_context().run(evaluate)
            assert len(data.run_requests) == 1
            req = data.run_requests[0]
            job = defs.resolve_job_def(INGEST_JOB)
            res = job.execute_in_process(instance=instance, run_config=req.run_config, tags=req.tags,
                                         partition_key=req.partition_key, raise_on_error=True)
            assert res.success
            bodies = json.dumps(srv.bodies)
        assert srv.calls > 0  # the teacher really was asked
        # every audit check ran and passed
        checks = [e for e in res.get_asset_check_evaluations() if e.check_name == CHECK_NAME]
        assert len(checks) >= 4 and all(e.passed for e in checks), [(e.asset_key, e.metadata) for e in checks]
        # the scrubber reported what it removed, by kind, in the run metadata
        raw_md = next(m for m in res.get_asset_materialization_events()
                      if m.asset_key == RAW_TRACES.asset_key).materialization.metadata
        assert raw_md["secrets_scrubbed"].value >= len(items) and raw_md["personal_data_replaced"].value >= 4
        # the cut line is kept, quarantined with its reason, and the run says so in its log
        assert raw_md["lines_quarantined"].value == 1
        assert any("1 line(s) quarantined in bronze/raw_traces: invalid_json 1" in (r.user_message or "")
                   for r in instance.all_logs(res.run_id))
        # exports
        from dagster_project.export import export_atif, export_table

        out = tmp_path / "export"
        export_atif(lake, out)
        for table in ("sft_examples", "preference_pairs"):
            if lake.exists(__import__("dagster_project.export", fromlist=["TABLES"]).TABLES[table]):
                export_table(lake, table, "jsonl", out)
        # look everywhere: every file under the lake, the instance (event log, compute logs),
        # the exports, the teacher request bodies, the event records, stdout/stderr
        stdout, stderr = capfd.readouterr()
        events = "\n".join(str(r) for r in instance.all_logs(res.run_id))
        places = {"teacher bodies": bodies, "event records": events, "stdout": stdout + stderr}
        for root in (tmp_path / "lake", tmp_path / "dagster_home", out):
            for p in root.rglob("*"):
                if p.is_file():
                    places[str(p.relative_to(tmp_path))] = p.read_bytes().decode("utf-8", "replace")
        for table in audit_lake(lake, TABLES):
            pytest.fail(f"audit found secrets in {table}")
        decoded = {spec_path: json.dumps(lake.read(spec).to_pylist(), default=str)
                   for spec_path, spec in _present(lake)}
        places.update(decoded)
        leaks = [(where, n[:12]) for where, text in places.items() for n in needles if n in text]
        assert leaks == [], leaks
        assert any(p.endswith(".atif.json") for p in places)
    finally:
        privacy.configure(None)


def _pool(pool_text: str):
    from assets.teachers.pool import TeacherPool

    return TeacherPool(config_yaml=pool_text)


def _present(lake):
    from dagster_project.definitions import TABLES

    return [(s.path, s) for s in TABLES if lake.exists(s)]


def _raw_row(raw: str, **over) -> dict:
    """A bronze/raw_traces row as a test writes it straight to the table (behind the scrubber)."""
    from datetime import datetime, timezone

    return {"session_key": "s", "source_file": "f", "source_format": "claude_code", "line_no": 1,
            "byte_offset": 0, "byte_len": 10, "record_type": "user", "raw": raw, "quarantined": False,
            "secrets_scrubbed": 0, "ingested_at": datetime.now(timezone.utc), **over}


def _audit_check_runner(lake, tmp_path, instance):
    """Runs raw_traces' audit check alone; returns (its evaluation, the run)."""
    defs = build_definitions(lake=lake, sessions=SessionSource(root=str(tmp_path)))
    check_key = dg.AssetCheckKey(RAW_TRACES.asset_key, CHECK_NAME)
    check = next(c for c in defs.asset_checks if check_key in c.check_keys)

    def run_check():
        r = dg.materialize([check], resources={"lake": lake}, instance=instance, raise_on_error=False,
                           selection=dg.AssetSelection.checks(check_key))
        return [e for e in r.get_asset_check_evaluations() if e.check_name == CHECK_NAME][0], r

    return run_check


def test_audit_check_fails_on_a_secret_written_behind_the_scrubbers_back(tmp_path, instance, capsys):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    secret = "ghp_" + "Zq8Xw7Cv6Bn5Mm4Ll3Kk2Jj1Hh0Gg9Ff8Ee7D"
    clean = _raw_row('{"type":"user"}')
    put_sessions(lake, RAW_TRACES, [clean])
    run_check = _audit_check_runner(lake, tmp_path, instance)
    ev, _ = run_check()
    assert ev.passed and ev.metadata["findings"].value == 0
    # behind the scrubber's back: a row written straight to the table
    bad = dict(clean, line_no=2, raw=orjson.dumps({"type": "user", "content": f"token {secret}"}).decode())
    put_sessions(lake, RAW_TRACES, [clean, bad])
    ev, r = run_check()
    assert not ev.passed and ev.metadata["findings"].value == 1
    assert ev.metadata["findings_by_rule"].value == {"github-pat": 1}
    assert secret not in str(ev.metadata) and secret not in "\n".join(str(x) for x in instance.all_logs(r.run_id))
    # the CLI says the same: counts by table and rule, exit 1, never the text
    assert audit_main(["--lake", str(tmp_path / "lake")]) == 1
    printed = capsys.readouterr().out
    assert "bronze/raw_traces" in printed and "github-pat" in printed and secret not in printed
    assert Path(tmp_path / "lake").exists()


def test_audit_of_a_table_starts_the_engine_once_for_all_its_columns(tmp_path, monkeypatch):
    """A gitleaks start costs ~0.4 s of CPU: a table's check scans all of its text columns in
    one run of the engine (it ran once per column), and still counts what every column holds."""
    from dagster_project.audit import audit_table, text_columns
    from resources.privacy.audit import Auditor

    lake = DeltaLake(root=str(tmp_path / "lake"))
    secret = "ghp_" + "Zq8Xw7Cv6Bn5Mm4Ll3Kk2Jj1Hh0Gg9Ff8Ee7D"
    row = _raw_row(orjson.dumps({"type": "user", "content": f"token {secret}"}).decode(), source_file=f"f-{secret}")
    put_sessions(lake, RAW_TRACES, [row])
    assert len(text_columns(RAW_TRACES)) >= 4
    starts = []
    real_run = Auditor._run
    monkeypatch.setattr(Auditor, "_run", lambda self, lines: starts.append(len(lines)) or real_run(self, lines))
    assert audit_table(lake, RAW_TRACES) == {"github-pat": 2}
    assert len(starts) == 1


def test_audit_check_fails_on_personal_data_written_behind_the_scrubbers_back(tmp_path, instance, capsys):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    privacy.configure(Privacy(PiiPolicy(), b"e2e-salt"))
    try:
        clean = _raw_row(orjson.dumps({"type": "user", "cwd": "/Users/user_3f9a2c1b/app",
                                       "content": "mail email_5d1e07aa@example.invalid"}).decode())
        put_sessions(lake, RAW_TRACES, [clean])
        run_check = _audit_check_runner(lake, tmp_path, instance)
        ev, _ = run_check()
        assert ev.passed and ev.metadata["personal_data_found"].value == 0
        # behind the scrubber's back: an address, a phone number and a user's home folder
        text = f"write to {PII['email']} or call {PII['phone']}; files in /Users/{PII['home']}/src"
        bad = dict(clean, line_no=2, raw=orjson.dumps({"type": "user", "content": text}).decode())
        put_sessions(lake, RAW_TRACES, [clean, bad])
        ev, r = run_check()
        assert not ev.passed and ev.metadata["findings"].value == 0  # no secret: personal data only
        assert ev.metadata["personal_data_by_kind"].value == {"email": 1, "phone": 1, "home_user": 1}
        logs = "\n".join(str(x) for x in instance.all_logs(r.run_id))
        for v in PII.values():
            assert v not in str(ev.metadata) and v not in logs
        assert audit_main(["--lake", str(tmp_path / "lake")]) == 1
        printed = capsys.readouterr().out
        assert "personal_data:email" in printed and "personal_data:home_user" in printed
        assert not any(v in printed for v in PII.values())
    finally:
        privacy.configure(None)
