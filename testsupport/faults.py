"""End-to-end fault suite: bad inputs, a hostile teacher, kill -9, concurrent writers.

    .venv/bin/python benchmarks/fault_suite.py            # full suite (~3-5 min on 2 cores)
    .venv/bin/python benchmarks/fault_suite.py --quick    # what tests/faults runs in CI
    options: --workdir DIR (kept afterwards), --json (print the figures as JSON too)

What it builds, all on the fly in a work directory:

* a session directory: bundled samples plus generated bad files — truncated last line,
  binary (NUL bytes), a line over the 8 MiB limit, latin-1 and UTF-16 encodings, unknown
  record types, records with missing fields, non-object JSON, blank / empty files, CRLF,
  JSON nested past the parser's depth limit — and one session with a planted secret of
  every kind the scrubber knows (also planted in the latin-1, binary, huge and truncated
  lines);
* a teacher server on 127.0.0.1 (testsupport/fake_openai.py, extended to record
  every request body and every *successful* answer) that answers steps with 429 +
  Retry-After, 500, slow answers past the client timeout, dropped connections,
  malformed JSON, empty choices and hangs, configured as the only teacher of the pool
  through ``TRACELAKE_TEACHERS_FILE`` with its API key in an env var (the key is a
  secret too);
* runs of the real ``ingest_sessions`` job (testsupport/ingest_all.py = ``tracelake
  materialize`` minus the unpartitioned datasets), each a subprocess on one lake and one
  DAGSTER_HOME:

  1. ingest everything;
  2. ingest again unchanged (the teacher cache must answer: no new paid calls);
  3. new sessions arrive; the run is killed with SIGKILL while the teacher asking is in
     flight, then re-run to completion;
  4. two runs over overlapping halves of the session files write the same tables at once.

It reports lines quarantined (by reason), crashes, lost rows (physical lines in the files
vs rows in raw_traces), repeated paid calls (server side: identical request bodies that
got a successful answer more than once), and secrets found in any table (every parquet
file decoded + every _delta_log file), any log (the Dagster instance: event log DBs and
compute logs; the runs' captured stdout+stderr) or any teacher request body.
"""

from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import json
import random
import shutil
import string
import tempfile
import time
from pathlib import Path
from typing import Any

from testsupport.e2e import (
    SAMPLES, base_env, fake_teacher_pool, kill9, physical_lines, run_ingest, start_ingest, wait_for,
)
from testsupport.fake_openai import FakeOpenAI

MAX_LINE = 8 * 1024 * 1024  # raw_traces' max_line_bytes default
TEACHER_KEY_ENV = "FAULT_SUITE_TEACHER_KEY"


# --------------------------------------------------------------------------- teacher
class RecordingTeacher(FakeOpenAI):
    """FakeOpenAI that also counts successful answers per exact request body."""

    def __init__(self, **kw):
        super().__init__(keep_bodies=True, **kw)
        self.paid: collections.Counter[str] = collections.Counter()
        self.paid_by: dict[str, list[str]] = collections.defaultdict(list)  # hash -> phases that paid
        self.paid_key: dict[str, str] = {}  # hash -> last user message (what the step asked)
        self.statuses: collections.Counter[str] = collections.Counter()
        self.phase = ""

    async def handle(self, request):
        raw = await request.read()  # aiohttp caches the body: the parent reads it again
        phase = self.phase  # the phase the request was *sent* in (it may be answered after a kill)
        try:
            resp = await super().handle(request)
        except BaseException:
            self.statuses["dropped"] += 1
            raise
        ok = False
        if resp.status == 200:
            try:
                ok = bool(json.loads(resp.body).get("choices"))
            except (ValueError, TypeError, AttributeError):
                ok = False
        with self.lock:
            self.statuses[str(resp.status) if not (resp.status == 200 and not ok) else "200-unusable"] += 1
            if ok:
                h = hashlib.sha256(raw).hexdigest()
                self.paid[h] += 1
                self.paid_by[h].append(phase)
                try:
                    from testsupport.fake_openai import content_key

                    self.paid_key[h] = content_key(json.loads(raw))[:80]
                except ValueError:
                    pass
        return resp

    def repeated_paid(self) -> int:
        with self.lock:
            return sum(n - 1 for n in self.paid.values() if n > 1)

    def repeated_by_cause(self) -> dict[str, int]:
        """Duplicates explained: the client timed out on an answer the server still sent
        (a provider bills it too), or the answer arrived in the last flush window before a
        kill -9. Anything else is a bug."""
        out: collections.Counter[str] = collections.Counter()
        with self.lock:
            for h, n in self.paid.items():
                if n < 2:
                    continue
                if "[[slow" in self.paid_key.get(h, ""):
                    out["client_timeout"] += n - 1
                elif self.paid_by[h][0] == "killed":  # answered in flight or unflushed at the kill
                    out["unflushed_before_kill"] += n - 1
                else:
                    out["other"] += n - 1
                    out["other: " + "/".join(self.paid_by[h]) + " " + self.paid_key.get(h, "?")[:60]] += n - 1
        return dict(out)


# --------------------------------------------------------------------------- secrets
def _rand(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    while True:
        s = "".join(rng.choice(alphabet) for _ in range(n))
        if (any(c.isdigit() for c in s) or not any(c.isdigit() for c in alphabet)) and \
                (any(c.isalpha() for c in s) or not any(c.isalpha() for c in alphabet)):
            return s


def planted_secrets(rng: random.Random) -> list[tuple[str, str, str]]:
    """(kind, text to plant, needle to search for) for every scrubber rule."""
    up = string.ascii_uppercase + string.digits
    pem_body = [base64.b64encode(rng.randbytes(48)).decode() for _ in range(4)]
    out = [
        ("anthropic_key", None, "sk-ant-api03-" + _rand(rng, 64, string.ascii_letters + string.digits + "_-")),
        ("openrouter_key", None, "sk-or-v1-" + _rand(rng, 64, "0123456789abcdef")),
        ("openai_key", None, "sk-proj-" + _rand(rng, 48)),
        ("google_api_key", None, "AIza" + _rand(rng, 35)),
        ("aws_access_key_id", None, "AKIA" + _rand(rng, 16, up)),
        ("github_token", None, "ghp_" + _rand(rng, 36)),
        ("slack_token", None, "xoxb-" + _rand(rng, 12, string.digits) + "-" + _rand(rng, 24)),
        ("hf_token", None, "hf_" + _rand(rng, 34)),
    ]
    out = [(k, v, v) for k, _, v in out]
    aws_secret = _rand(rng, 40, string.ascii_letters + string.digits + "/+")
    out.append(("aws_secret_key", f"aws_secret_access_key = {aws_secret}", aws_secret))
    bearer = _rand(rng, 40)
    out.append(("bearer_token", f"curl -H 'Authorization: Bearer {bearer}' https://api.example.com", bearer))
    pw = "pw-" + _rand(rng, 20)
    out.append(("secret_field", f'config: {{"password": "{pw}", "user": "app"}}', pw))
    env_val = "ev-" + _rand(rng, 24)
    out.append(("env_secret", f"contents of .env:\nDB_PASSWORD={env_val}\nDEBUG=1", env_val))
    pem = "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(pem_body) + "\n-----END RSA PRIVATE KEY-----"
    out.append(("private_key", pem, pem_body[1]))
    return out


# --------------------------------------------------------------------------- corpus
def _oa_line(user: str, assistant: str = "Done.", tools: bool = False) -> str:
    rec: dict[str, Any] = {"messages": [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": user},
        {"role": "assistant", "content": assistant},
    ]}
    if tools:
        rec["tools"] = [{"type": "function", "function": {
            "name": "read_file", "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}]
    return json.dumps(rec)


def _cc_line(i: int, typ: str, content: Any, session: str = "f00d0000-0000-4000-8000-000000000001",
             **extra) -> str:
    rec = {"parentUuid": None if i == 0 else f"u-{i - 1}", "isSidechain": False, "type": typ,
           "sessionId": session, "uuid": f"u-{i}", "timestamp": f"2026-01-15T10:00:{i % 60:02d}.000Z",
           "message": {"role": "assistant" if typ == "assistant" else "user", "content": content}}
    if typ == "assistant":
        rec["message"]["model"] = "claude-sonnet-4-5"
    rec.update(extra)
    return json.dumps(rec)


def build_corpus(dest: Path, rng: random.Random, secrets: list[tuple[str, str, str]], quick: bool) -> dict:
    """Write the session files; return what was planted where."""
    dest.mkdir(parents=True, exist_ok=True)
    samples = sorted(p for p in SAMPLES.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json"))
    for p in samples[: 2 if quick else None]:
        t = dest / "samples" / p.relative_to(SAMPLES)
        t.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, t)
    bad = dest / "bad"
    bad.mkdir()
    sec = {k: text for k, text, _ in secrets}

    # every secret kind, in user turns (-> agent steps -> teacher requests) and tool output
    lines = [_oa_line(f"Please use this to connect: {text}", "I will not repeat credentials.") for _, text, _ in secrets]
    cc = [_cc_line(0, "user", "Set up the deploy script.")]
    cc.append(_cc_line(1, "assistant", [{"type": "tool_use", "id": "toolu_1", "name": "Bash",
                                         "input": {"command": "cat .env"}}]))
    cc.append(_cc_line(2, "user", [{"type": "tool_result", "tool_use_id": "toolu_1",
                                    "content": "\n".join(t for _, t, _ in secrets)}]))
    cc.append(_cc_line(3, "assistant", [{"type": "text", "text": "The .env holds credentials; I left them alone."}]))
    (bad / "secrets-openai.jsonl").write_text("\n".join(lines) + "\n")
    (bad / "secrets-claude.jsonl").write_text("\n".join(cc) + "\n")

    # truncated: a live session's last line cut mid-record (no trailing newline), with a secret
    tail = _cc_line(4, "user", f"and the key is {sec['anthropic_key']} for later")
    (bad / "truncated.jsonl").write_text("\n".join(cc[:2]) + "\n" + tail[: len(tail) - 25])
    # binary: NUL bytes, random bytes, and a secret among them
    (bad / "binary.jsonl").write_bytes(
        rng.randbytes(2048) + b"\n\x00\x00token " + sec["github_token"].encode() + b"\x00\n" + cc[0].encode() + b"\n")
    # one line over the 8 MiB limit (kept, scrubbed, quarantined), between good lines
    size = MAX_LINE + (64 * 1024 if quick else 1024 * 1024)
    filler = "x" * (size // 2) + f" {sec['openai_key']} " + "y" * (size // 2)
    huge = json.dumps({"type": "user", "sessionId": "h", "uuid": "h1", "message": {"role": "user", "content": filler}})
    (bad / "huge-line.jsonl").write_text(cc[0] + "\n" + huge + "\n" + cc[3] + "\n")
    # wrong encodings
    latin = [_oa_line("Café crème, señor — ¿qué tal? Ça coûte 5 €".replace("€", "EUR")),
             _oa_line(f"mot de passe: {sec['env_secret']} naïve")]
    (bad / "latin1.jsonl").write_bytes(("\n".join(latin) + "\n").encode("latin-1"))
    (bad / "utf16.jsonl").write_bytes(("\n".join([_oa_line("UTF-16 text ✓"), _oa_line(sec["hf_token"])]) + "\n")
                                      .encode("utf-16"))
    # unknown record types and missing fields
    unknown = [_cc_line(0, "user", "hello"),
               json.dumps({"type": "telemetry-v9", "sessionId": "f00d", "uuid": "t1", "payload": {"x": 1}}),
               json.dumps({"type": "x-future-record", "sessionId": "f00d", "uuid": "t2"}),
               _cc_line(1, "assistant", [{"type": "hologram", "data": "?"}, {"type": "text", "text": "ok"}])]
    (bad / "unknown-types.jsonl").write_text("\n".join(unknown) + "\n")
    missing = [json.dumps({"type": "assistant", "sessionId": "f00d", "uuid": "m1"}),
               json.dumps({"type": "user", "sessionId": "f00d", "uuid": "m2", "message": {}}),
               json.dumps({"type": "user", "sessionId": "f00d", "uuid": "m3", "message": {"role": "user"}}),
               json.dumps({"type": "assistant", "sessionId": "f00d", "message": {"role": "assistant", "content": None}}),
               json.dumps({"type": "assistant", "sessionId": "f00d", "uuid": "m5",
                           "message": {"role": "assistant", "content": [{"type": "tool_use"}]}}),
               json.dumps({"type": "user", "sessionId": "f00d", "uuid": "m6",
                           "message": {"role": "user", "content": [{"type": "tool_result"}]}})]
    (bad / "missing-fields.jsonl").write_text("\n".join(missing) + "\n")
    (bad / "codex-missing.jsonl").write_text("\n".join([
        json.dumps({"timestamp": "2026-01-15T10:00:00Z", "type": "session_meta", "payload": {}}),
        json.dumps({"timestamp": "2026-01-15T10:00:01Z", "type": "response_item"}),
        json.dumps({"timestamp": "2026-01-15T10:00:02Z", "type": "response_item", "payload": {"type": "function_call"}}),
        json.dumps({"timestamp": "2026-01-15T10:00:03Z", "type": "response_item",
                    "payload": {"type": "function_call_output", "call_id": "nope", "output": 7}}),
    ]) + "\n")
    (bad / "openai-missing.jsonl").write_text("\n".join([
        json.dumps({"messages": [{"content": "no role"}, {"role": "assistant"}]}),
        json.dumps({"messages": []}), json.dumps({"messages": "not a list"}),
        json.dumps({"conversations": [{"from": "human"}, {"value": "no from"}]}),
    ]) + "\n")
    (bad / "not-objects.jsonl").write_text('1\n"a string"\n[1, 2]\nnull\ntrue\n{"unterminated": \n')
    (bad / "empty.jsonl").write_bytes(b"")
    (bad / "blank.jsonl").write_bytes(b"\n\n   \n\t\n")
    (bad / "crlf.jsonl").write_bytes(("\r\n".join([_oa_line("windows line endings"), _oa_line("second")]) + "\r\n").encode())
    (bad / "deep.jsonl").write_text("[" * 5000 + "]" * 5000 + "\n" + '{"a":' * 3000 + "1" + "}" * 3000 + "\n")
    (bad / "pretty.json").write_text(json.dumps([{"conversations": [
        {"from": "human", "value": "pretty-printed export"}, {"from": "gpt", "value": "ok"}]}], indent=2))
    (bad / "not-a-session.txt").write_text("ignored: not .jsonl/.json\n")
    # the teacher fails in every way on these steps (directives read by the fake server)
    faults = ["[[429x2]]", "[[500x2]]", "[[slowx1]]", "[[dropx2]]", "[[malformed]]", "[[empty]]",
              "[[hang]]", "[[refuse]]", "[[length]]", "[[nousage]]", "[[badtool]]"]
    (bad / "teacher-faults.jsonl").write_text(
        "\n".join(_oa_line(f"Step that meets {f} at the teacher", tools="tool" in f) for f in faults) + "\n")
    return {"faults": faults}


def add_kill_phase_sessions(dest: Path, n_steps: int, tag: str) -> None:
    d = dest / "arrivals"
    d.mkdir(parents=True, exist_ok=True)
    lines = [_oa_line(f"{tag}: question {i} about invoice INV-{1000 + i}", f"answer {i}") for i in range(n_steps)]
    (d / f"{tag}.jsonl").write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------- scans
def _needles(secrets: list[tuple[str, str, str]], extra: list[str]) -> dict[str, list[bytes]]:
    out = {}
    for kind, _, needle in secrets:
        out[kind] = [needle.encode(), needle.encode("utf-16-le")]
    for i, v in enumerate(extra):
        out[f"extra_{i}"] = [v.encode(), v.encode("utf-16-le")]
    return out


def _hits_in_bytes(data: bytes, needles: dict[str, list[bytes]]) -> set[str]:
    return {k for k, vs in needles.items() if any(v in data for v in vs)}


def scan_lake(lake_root: Path, needles) -> tuple[dict[str, set[str]], int]:
    """Decode every parquet file (all columns, every value) and read every _delta_log file."""
    import pyarrow.parquet as pq

    found: dict[str, set[str]] = collections.defaultdict(set)
    files = 0
    for p in lake_root.rglob("*"):
        if not p.is_file():
            continue
        files += 1
        data = p.read_bytes()
        hits = _hits_in_bytes(data, needles)
        if p.suffix == ".parquet":
            t = pq.read_table(p)
            for col in t.columns:
                for v in col.to_pylist():
                    if v is None:
                        continue
                    if isinstance(v, bytes):
                        b = v
                    elif isinstance(v, str):
                        b = v.encode()
                    else:
                        b = json.dumps(v, default=str).encode()
                    hits |= _hits_in_bytes(b, needles)
        for h in hits:
            found[h].add(str(p.relative_to(lake_root)))
    return found, files


def scan_paths(paths: list[Path], needles) -> dict[str, set[str]]:
    found: dict[str, set[str]] = collections.defaultdict(set)
    for root in paths:
        items = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for p in items:
            for h in _hits_in_bytes(p.read_bytes(), needles):
                found[h].add(str(p))
    return found


# --------------------------------------------------------------------------- lake facts
def lake_facts(lake_root: Path, sessions: Path) -> dict[str, Any]:
    from assets.traces.tables import RAW_TRACES
    from resources.lake import DeltaLake
    from resources.sessions import SessionSource

    lake = DeltaLake(root=str(lake_root))
    raw = lake.read(RAW_TRACES, columns=["session_key", "quarantined", "quarantine_reason", "line_no"])
    expected = {f.key: physical_lines(f.path) for f in SessionSource(root=str(sessions)).scan(str(lake_root))}
    got = collections.Counter(raw["session_key"].to_pylist())
    lost = sum(max(0, n - got.get(k, 0)) for k, n in expected.items())
    extra = sum(max(0, n - expected.get(k, 0)) for k, n in got.items())
    keyset = collections.Counter(zip(raw["session_key"].to_pylist(), raw["line_no"].to_pylist()))
    dup = sum(n - 1 for n in keyset.values() if n > 1)
    reasons = collections.Counter(
        (r or "").split(":", 1)[0] for r, q in zip(raw["quarantine_reason"].to_pylist(), raw["quarantined"].to_pylist()) if q)
    return {"lines_in_files": sum(expected.values()), "raw_rows": raw.num_rows, "lost_rows": lost,
            "extra_rows": extra, "duplicate_rows": dup, "quarantined": dict(reasons),
            "files": len(expected), "nonempty_files": sum(1 for n in expected.values() if n),
            "sessions": len(got)}


def teacher_table_facts(lake_root: Path) -> dict[str, Any]:
    try:
        from assets.teachers.tables import TEACHER_RESPONSES
    except ImportError:
        return {}
    from resources.lake import DeltaLake

    t = DeltaLake(root=str(lake_root)).read(TEACHER_RESPONSES, columns=["status", "error"])
    kinds = collections.Counter()
    for s, e in zip(t["status"].to_pylist(), t["error"].to_pylist()):
        kinds[s if s != "error" else f"error:{(e or '').split(':', 1)[0][:30]}"] += 1
    return dict(kinds)


# --------------------------------------------------------------------------- the suite
def run_suite(work: Path, quick: bool = False, log=print) -> dict[str, Any]:
    t_start = time.time()
    rng = random.Random(20261122)
    secrets = planted_secrets(rng)
    teacher_key = "sk-proj-" + _rand(rng, 48)  # the teacher's API key: must never leak either
    sessions, lake, home, logs = work / "sessions", work / "lake", work / "dagster_home", work / "logs"
    for d in (home, logs):
        d.mkdir(parents=True, exist_ok=True)
    build_corpus(sessions, rng, secrets, quick)
    figures: dict[str, Any] = {"phases": {}}
    crashes: list[str] = []
    runs = 0

    with RecordingTeacher(required_key=teacher_key, retry_after="1", slow_seconds=3.0) as srv:
        pool = fake_teacher_pool(work / "teachers.yaml", srv.url, key_env=TEACHER_KEY_ENV, timeout=2.0,
                                 max_attempts=3)
        env = base_env(TRACELAKE_LAKE_ROOT=str(lake), TRACELAKE_SESSIONS_DIR=str(sessions),
                       TRACELAKE_TEACHERS_FILE=str(pool), DAGSTER_HOME=str(home),
                       **{TEACHER_KEY_ENV: teacher_key})

        def ingest(name: str, *args: str) -> dict:
            nonlocal runs
            runs += 1
            srv.phase = name
            t0 = time.time()
            rc, res, out = run_ingest(env, work, *args, timeout=600, log=logs / f"{name}.log")
            if rc != 0 or not res.get("success"):
                crashes.append(f"{name}: rc={rc} {out.strip().splitlines()[-1:] if out.strip() else ''}")
            figures["phases"][name] = {"seconds": round(time.time() - t0, 1), "rc": rc,
                                       "paid_calls": sum(srv.paid.values())}
            log(f"  {name}: rc={rc} {time.time() - t0:.1f}s, teacher requests so far {srv.calls}")
            return res

        log("1. ingest the corpus (bad files, planted secrets, teacher faults)")
        ingest("ingest")
        paid_after_1 = sum(srv.paid.values())

        if not quick:  # (quick: the re-run after the kill re-reads every partition as well)
            log("2. ingest again, unchanged: every teacher answer must come from the cache")
            ingest("reingest")
            figures["new_paid_calls_on_rerun"] = sum(srv.paid.values()) - paid_after_1
        else:
            figures["new_paid_calls_on_rerun"] = None  # not measured

        log("3. new sessions arrive; kill -9 the run during the teacher asking; run again")
        add_kill_phase_sessions(sessions, 24 if quick else 60, "arrival-1")
        srv.latency = 0.15
        before = sum(srv.paid.values())
        srv.phase = "killed"
        proc = start_ingest(env, work, log=logs / "killed.log")
        try:
            wait_for(lambda: sum(srv.paid.values()) - before >= 6 or proc.poll() is not None, 300, 0.05,
                     "the teacher asking to be in flight")
        finally:
            killed_while_running = proc.poll() is None
            kill9(proc)
        figures["killed_mid_ask"] = killed_while_running
        time.sleep(1.0)  # requests in flight at the kill are still answered (and billed)
        figures["paid_before_kill"] = sum(srv.paid.values()) - before
        srv.latency = 0.0
        ingest("after_kill")

        log("4. two runs write the same tables at once (overlapping halves of the files)")
        from resources.sessions import SessionSource

        keys = sorted(f.key for f in SessionSource(root=str(sessions)).scan(str(lake)))
        mid = len(keys) // 2
        a = start_ingest(env, work, "--keys", ",".join(keys[: mid + 1]), log=logs / "concurrent_a.log")
        b = start_ingest(env, work, "--keys", ",".join(keys[mid:]), log=logs / "concurrent_b.log")
        srv.phase = "concurrent"
        for name, p in (("concurrent_a", a), ("concurrent_b", b)):
            runs += 1
            rc = p.wait(600)
            text = (logs / f"{name}.log").read_text(errors="replace")
            ok = rc == 0 and '"success": true' in text
            if not ok:
                crashes.append(f"{name}: rc={rc} {text.strip().splitlines()[-1:] if text.strip() else ''}")
            figures["phases"][name] = {"rc": rc}

        bodies = json.dumps(srv.bodies).encode()
        figures["teacher_requests"] = srv.calls
        figures["teacher_statuses"] = dict(srv.statuses)
        figures["repeated_paid_calls"] = srv.repeated_paid()
        figures["repeated_paid_by_cause"] = srv.repeated_by_cause()
        figures["auth_failures"] = srv.auth_bad

    facts = lake_facts(lake, sessions)
    figures.update(facts)
    figures["teacher_responses"] = teacher_table_facts(lake)
    figures["runs"] = runs
    figures["crashes"] = len(crashes)
    figures["crash_details"] = crashes

    needles = _needles(secrets, [teacher_key])
    in_tables, nfiles = scan_lake(lake, needles)
    in_logs = scan_paths([home, logs], needles)
    in_bodies = {k for k, vs in needles.items() if any(v in bodies for v in vs)}
    figures["lake_files_scanned"] = nfiles
    figures["secrets_planted"] = len(secrets) + 1
    figures["secrets_in_tables"] = {k: sorted(v)[:3] for k, v in in_tables.items()}
    figures["secrets_in_logs"] = {k: sorted(v)[:3] for k, v in in_logs.items()}
    figures["secrets_in_teacher_bodies"] = sorted(in_bodies)
    figures["seconds"] = round(time.time() - t_start, 1)
    return figures


def print_table(f: dict[str, Any], log=print) -> None:
    rows = [
        ("session files / physical lines", f"{f['files']} / {f['lines_in_files']}"),
        ("lines quarantined", f"{sum(f['quarantined'].values())}  "
                              + ", ".join(f"{k}={v}" for k, v in sorted(f["quarantined"].items()))),
        ("runs / crashes", f"{f['runs']} / {f['crashes']}"),
        ("lost rows (lines in files - raw_traces rows)", f["lost_rows"]),
        ("extra or duplicate rows in raw_traces", f["extra_rows"] + f["duplicate_rows"]),
        ("teacher requests (incl. faults)", f["teacher_requests"]),
        ("teacher server statuses", ", ".join(f"{k}={v}" for k, v in sorted(f["teacher_statuses"].items()))),
        ("teacher_responses rows by status", ", ".join(f"{k}={v}" for k, v in sorted(f["teacher_responses"].items()))),
        ("new paid calls on an unchanged re-run",
         "n/a (--quick)" if f["new_paid_calls_on_rerun"] is None else f["new_paid_calls_on_rerun"]),
        ("run killed mid-ask (answers paid before kill)", f"{f['killed_mid_ask']} ({f['paid_before_kill']})"),
        ("repeated paid calls (server side)", f"{f['repeated_paid_calls']}  " + ", ".join(
            f"{k}={v}" for k, v in sorted(f["repeated_paid_by_cause"].items()) if not k.startswith("other:"))),
        ("secrets planted (kinds + teacher key)", f["secrets_planted"]),
        ("secrets found in tables (parquet + _delta_log)", len(f["secrets_in_tables"])),
        ("secrets found in logs (event log, compute logs, stdout/stderr)", len(f["secrets_in_logs"])),
        ("secrets found in teacher request bodies", len(f["secrets_in_teacher_bodies"])),
        ("wall time (s)", f["seconds"]),
    ]
    w = max(len(r[0]) for r in rows)
    log(f"{'figure':<{w}} | value")
    log(f"{'-' * w}-|-{'-' * 30}")
    for k, v in rows:
        log(f"{k:<{w}} | {v}")
    for key in ("secrets_in_tables", "secrets_in_logs"):
        for kind, where in f[key].items():
            log(f"  LEAK {key}: {kind} in {where}")
    for kind in f["secrets_in_teacher_bodies"]:
        log(f"  LEAK teacher body: {kind}")
    for c in f["crash_details"]:
        log(f"  CRASH {c}")
    for k, v in f["repeated_paid_by_cause"].items():
        if k.startswith("other:"):
            log(f"  REPEATED PAID CALL x{v} (phases that paid / step): {k[7:]}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller corpus (the CI version)")
    ap.add_argument("--workdir", help="work directory (kept); default: a temp dir, removed")
    ap.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = ap.parse_args(argv)
    if args.workdir:
        work = Path(args.workdir).resolve()
        if work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True)
        cleanup = False
    else:
        work = Path(tempfile.mkdtemp(prefix="tracelake-faults-"))
        cleanup = True
    try:
        print(f"fault suite in {work} ({'quick' if args.quick else 'full'})")
        f = run_suite(work, quick=args.quick)
        print()
        print_table(f)
        if args.json:
            print(json.dumps(f, indent=2, default=str))
        bad = (f["crashes"] or f["lost_rows"] or f["extra_rows"] or f["duplicate_rows"]
               or f["repeated_paid_by_cause"].get("other") or f["secrets_in_tables"] or f["secrets_in_logs"]
               or f["secrets_in_teacher_bodies"] or f["new_paid_calls_on_rerun"])
        return 1 if bad else 0
    finally:
        if cleanup:
            shutil.rmtree(work, ignore_errors=True)

