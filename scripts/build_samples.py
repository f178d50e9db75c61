"""Writes the sample sessions of this folder (deterministic; re-run after editing).

    python scripts/build_samples.py

The samples are invented (a developer fixing bugs in a small ``invoicer`` package);
they are not copied from any real transcript. They carry on purpose: multi-line
assistant messages, tool errors of several kinds, an inline sidechain (Task tool), a
separate agent file, a compaction, a ``<synthetic>`` API-error message, unknown record
types, one malformed line, and planted FAKE secrets (so the demo shows scrubbing).
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "assets" / "traces" / "samples"  # where main() writes (tests point it elsewhere)
SEED = 20260115
RNG = random.Random(SEED)
B62 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def rid(prefix: str, n: int = 24) -> str:
    return prefix + "".join(RNG.choice(B62) for _ in range(n))


def ruuid() -> str:
    return str(uuid.UUID(int=RNG.getrandbits(128), version=4))


def dump(obj) -> str:
    # Claude Code writes compact JSON with non-ASCII kept as is
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# --------------------------------------------------------------------------- Claude Code
class CC:
    def __init__(self, session_id: str, cwd: str, version: str, start: datetime, *, agent_id: str | None = None,
                 model: str = "claude-sonnet-4-5-20250929", branch: str = "main"):
        self.sid, self.cwd, self.version, self.t = session_id, cwd, version, start
        self.agent_id, self.model, self.branch = agent_id, model, branch
        self.lines: list[str] = []
        self.parent: str | None = None
        self.side = agent_id is not None

    def _ts(self, secs: float = 2.0) -> str:
        self.t += timedelta(seconds=secs)
        return self.t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.t.microsecond // 1000:03d}Z"

    def _env(self, **kw) -> dict:
        d = {"parentUuid": self.parent, "isSidechain": self.side, "userType": "external", "cwd": self.cwd,
             "sessionId": self.sid, "version": self.version, "gitBranch": self.branch}
        if self.agent_id:
            d["agentId"] = self.agent_id
        d.update(kw)
        return d

    def emit(self, rec: dict) -> None:
        self.lines.append(dump(rec))

    def user(self, content, *, secs: float = 8.0, **extra) -> str:
        u = ruuid()
        self.emit({**self._env(type="user", message={"role": "user", "content": content}, uuid=u,
                               timestamp=self._ts(secs)), **extra})
        self.parent = u
        return u

    def assistant(self, *, thinking: str | None = None, text: str | None = None, tools=(), stop: str | None = None,
                  model: str | None = None, usage_in: int = 6, cache_read: int = 15000, out: int = 120,
                  **extra) -> list[str]:
        """One API message written one content block per line (sharing message.id)."""
        mid, req = rid("msg_01", 22), rid("req_011C", 20)
        blocks = []
        if thinking:
            blocks.append({"type": "thinking", "thinking": thinking, "signature": rid("Eq", 60)})
        if text:
            blocks.append({"type": "text", "text": text})
        ids = []
        for name, inp in tools:
            tid = rid("toolu_01", 22)
            ids.append(tid)
            blocks.append({"type": "tool_use", "id": tid, "name": name, "input": inp})
        if stop is None:
            stop = "tool_use" if tools else "end_turn"
        for k, b in enumerate(blocks):
            last = k == len(blocks) - 1
            u = ruuid()
            msg = {"model": model or self.model, "id": mid, "type": "message", "role": "assistant", "content": [b],
                   "stop_reason": stop if last else None, "stop_sequence": None,
                   "usage": {"input_tokens": usage_in, "cache_creation_input_tokens": 240 if last else 0,
                             "cache_read_input_tokens": cache_read, "output_tokens": out if last else 1,
                             "service_tier": "standard"}}
            self.emit({**self._env(message=msg, requestId=req, type="assistant", uuid=u,
                                   timestamp=self._ts(1.5 if k else 3.0)), **extra})
            self.parent = u
        return ids

    def result(self, tool_id: str, content, *, error: bool = False, tur=None, secs: float = 1.0) -> str:
        block = {"tool_use_id": tool_id, "type": "tool_result", "content": content}
        if error:
            block["is_error"] = True
        rec = self._env(type="user", message={"role": "user", "content": [block]}, uuid=ruuid(),
                        timestamp=self._ts(secs))
        if tur is not None:
            rec["toolUseResult"] = tur
        self.emit(rec)
        self.parent = rec["uuid"]
        return rec["uuid"]

    def edit_not_found(self, tool_id: str, old: str) -> str:
        """Claude Code's answer to an Edit whose old string is not in the file."""
        return self.result(tool_id, f"<tool_use_error>String to replace not found in file.\nString: {old}</tool_use_error>",
                           error=True, tur="Error: String to replace not found in file.")

    def command_not_found(self, tool_id: str, program: str) -> str:
        """A Bash call whose program does not exist (a typo): exit code 127."""
        out = f"Exit code 127\n/bin/bash: line 1: {program}: command not found"
        return self.result(tool_id, out, error=True, tur=f"Error: {out}")

    def file_not_found(self, tool_id: str) -> str:
        """A Read (or Edit) of a path that does not exist."""
        return self.result(tool_id, f"<tool_use_error>File does not exist. Current working directory: {self.cwd}"
                                    "</tool_use_error>", error=True, tur="Error: File does not exist.")

    def file_not_read(self, tool_id: str) -> str:
        """An Edit of a file the session has not read yet."""
        msg = "File has not been read yet. Read it first before writing to it."
        return self.result(tool_id, f"<tool_use_error>{msg}</tool_use_error>", error=True, tur=f"Error: {msg}")

    def unexpected_param(self, tool_id: str, tool: str, param: str) -> str:
        """A call with a parameter the tool does not have (e.g. Grep's `output` for `output_mode`)."""
        return self.result(tool_id, f"<tool_use_error>InputValidationError: {tool} failed due to the following "
                                    f"issue:\nAn unexpected parameter `{param}` was provided</tool_use_error>",
                           error=True,
                           tur=f"InputValidationError: [{{\"code\": \"unrecognized_keys\", \"keys\": [\"{param}\"]}}]")

    def wrong_type(self, tool_id: str, tool: str, param: str, expected: str, given: str = "string") -> str:
        """A call whose parameter has the wrong type (e.g. a number given as a string)."""
        return self.result(tool_id, f"<tool_use_error>InputValidationError: {tool} failed due to the following "
                                    f"issue:\nThe parameter `{param}` type is expected as `{expected}` but provided "
                                    f"as `{given}`</tool_use_error>", error=True,
                           tur=f"InputValidationError: [{{\"expected\": \"{expected}\", \"path\": [\"{param}\"]}}]")

    def cat_missing(self, tool_id: str, path: str, stdout: str = "") -> str:
        """A `cat` of a file that is not there (after printing the files that are, if any)."""
        out = f"Exit code 1\n{stdout}cat: {path}: No such file or directory"
        return self.result(tool_id, out, error=True, tur=f"Error: {out}")

    def no_tests(self, tool_id: str, path: str) -> str:
        """pytest given a test file that does not exist: exit code 4."""
        out = f"Exit code 4\nERROR: file or directory not found: {path}\n\n\nno tests ran in 0.01s"
        return self.result(tool_id, out, error=True, tur=f"Error: {out}")

    def updated(self, tool_id: str, path: str) -> str:
        """A successful Edit (or Write over an existing file)."""
        return self.result(tool_id, f"The file {path} has been updated.")

    def system(self, subtype: str, **kw) -> str:
        u = ruuid()
        self.emit(self._env(type="system", subtype=subtype, uuid=u, timestamp=self._ts(0.3), **kw))
        self.parent = u
        return u

    def snapshot(self, message_id: str, files: dict) -> None:
        self.emit({"type": "file-history-snapshot", "messageId": message_id,
                   "snapshot": {"messageId": message_id, "trackedFileBackups": files, "timestamp": self._ts(0.1)},
                   "isSnapshotUpdate": False})

    def raw(self, text: str) -> None:
        self.lines.append(text)

    def write(self, rel: str) -> None:
        p = HERE / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("\n".join(self.lines) + "\n", encoding="utf-8")


def cat_n(text: str, first: int = 1, count: int | None = None) -> str:
    """`text` as Read shows it: numbered lines, from line `first` on (`count` of them, or all)."""
    lines = text.split("\n")[first - 1:]
    if count is not None:
        lines = lines[:count]
    return "\n".join(f"{i:>6}→{line}" for i, line in enumerate(lines, first))


def pytest_passed(n: int, secs: str) -> str:
    """What `pytest -q` prints when all its n tests pass."""
    return f"{'.' * min(n, 72):<73}[100%]\n{n} passed in {secs}s"


TOTALS_PY = '''from decimal import Decimal

CENT = Decimal("0.01")


def line_total(qty, unit_price, discount="0"):
    gross = Decimal(qty) * Decimal(unit_price)
    return gross - gross * Decimal(discount)


def invoice_total(lines, tax_rate):
    subtotal = sum((line_total(**line) for line in lines), Decimal("0"))
    tax = subtotal * Decimal(tax_rate)
    return (subtotal + tax).quantize(CENT)
'''

PARSE_PY = '''import csv
import io


def parse_csv(text):
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    return [dict(zip(header, row)) for row in rows[1:] if row]
'''

PYTEST_FAIL = '''Exit code 1
F...........                                                             [100%]
=================================== FAILURES ===================================
__________________________ test_total_rounds_half_up ___________________________

    def test_total_rounds_half_up():
        lines = [{"qty": 1, "unit_price": "10.25"}]
>       assert invoice_total(lines, "0.06") == Decimal("10.87")
E       AssertionError: assert Decimal('10.86') == Decimal('10.87')
E        +  where Decimal('10.86') = invoice_total([{'qty': 1, 'unit_price': '10.25'}], '0.06')

tests/test_totals.py:14: AssertionError
=========================== short test summary info ============================
FAILED tests/test_totals.py::test_total_rounds_half_up - AssertionError: assert Decimal('10.86') == Decimal('10.87')
1 failed, 11 passed in 0.09s'''

# FAKE credentials, planted so the demo shows scrubbing. None of them is real.
FAKE_ANTHROPIC = "sk-ant-api03-DEMO0nlyFAKEkey" + "x7Qp2Lm9Rt4Vw8Yz3Bn6Cd1Fg5Hj0Kl2Mn4Pq7Rs9Tu3Vw6Xy8Za1Bc4De7Fg0Hi2Jk5Lm8No-DEMO0AA"
FAKE_AWS_ID = "AKIAIOSFODNN7EXAMPLE"
FAKE_AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def session_main() -> None:
    """Bug fixing with test failure, edit mismatch, missing file, secret, compaction."""
    s = CC("5b1e9f2a-7c3d-4e8f-9a0b-1c2d3e4f5a6b", "/home/dev/invoicer", "2.0.31",
           datetime(2026, 1, 14, 9, 2, 11, 250000, tzinfo=timezone.utc))
    s.emit({"type": "queue-operation", "operation": "enqueue", "timestamp": "2026-01-14T09:02:11.100Z",
            "content": "test_totals is failing on main, can you fix it?", "sessionId": s.sid})
    u1 = s.user("test_totals is failing on main, can you fix it?")
    s.snapshot(u1, {})
    [t] = s.assistant(thinking="Let me run the test suite first to see the actual failure.",
                      text="I'll run the tests to see what's failing.",
                      tools=[("Bash", {"command": "pytest -q", "description": "Run the test suite"})])
    s.result(t, PYTEST_FAIL, error=True, tur="Error: " + PYTEST_FAIL, secs=3.2)
    [t] = s.assistant(thinking="The total is rounded half-even (Decimal's default); the test expects half-up. "
                               "Let me look at totals.py.",
                      tools=[("Read", {"file_path": "/home/dev/invoicer/totals.py"})])
    s.file_not_found(t)
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/totals.py"})])
    s.result(t, cat_n(TOTALS_PY), tur={"type": "text", "file": {"filePath": "/home/dev/invoicer/invoicer/totals.py",
                                                                  "numLines": 14, "startLine": 1, "totalLines": 14}})
    [t] = s.assistant(text="`quantize` uses ROUND_HALF_EVEN by default, so 10.865 becomes 10.86. "
                           "I'll switch it to ROUND_HALF_UP.",
                      tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/totals.py",
                                       "old_string": "    return round(subtotal + tax, 2)",
                                       "new_string": "    return (subtotal + tax).quantize(CENT, rounding=ROUND_HALF_UP)"})])
    s.edit_not_found(t, "    return round(subtotal + tax, 2)")
    [t1, t2] = s.assistant(
        thinking="I misremembered the line; the file uses quantize(CENT). Edit that line and the import.",
        tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/totals.py",
                         "old_string": "    return (subtotal + tax).quantize(CENT)",
                         "new_string": "    return (subtotal + tax).quantize(CENT, rounding=ROUND_HALF_UP)"}),
               ("Edit", {"file_path": "/home/dev/invoicer/invoicer/totals.py",
                         "old_string": "from decimal import Decimal\n",
                         "new_string": "from decimal import ROUND_HALF_UP, Decimal\n"})])
    s.result(t1, "The file /home/dev/invoicer/invoicer/totals.py has been updated. Here's the result of running "
                 "`cat -n` on a snippet of the edited file:\n    13→    tax = subtotal * Decimal(tax_rate)\n"
                 "    14→    return (subtotal + tax).quantize(CENT, rounding=ROUND_HALF_UP)")
    s.result(t2, "The file /home/dev/invoicer/invoicer/totals.py has been updated. Here's the result of running "
                 "`cat -n` on a snippet of the edited file:\n     1→from decimal import ROUND_HALF_UP, Decimal\n     2→")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q", "description": "Re-run the test suite"})])
    # a progress record the client was writing when it crashed: one malformed line
    s.raw('{"type":"progress","data":{"type":"bash_progress","output":"............","elapsedTimeSeconds":0.4},'
          '"toolUseID":"' + t + '","parentToolUseID":"' + t + '","uuid":"' + ruuid() + '","timest')
    s.result(t, pytest_passed(12, "0.08"),
             tur={"stdout": "12 passed in 0.08s", "stderr": "", "interrupted": False, "isImage": False}, secs=2.4)
    s.assistant(text="Fixed. `invoice_total` now rounds half-up (`ROUND_HALF_UP`), which is what the test and "
                     "normal invoicing expect: 10.865 → 10.87. All 12 tests pass.")
    s.system("stop_hook_summary", hookCount=1, hookInfos=[{"command": "ruff check --quiet"}], hookErrors=[],
             preventedContinuation=False, stopReason="", hasOutput=False, level="suggestion")

    u2 = s.user("Another one: `invoicer import empty.csv` crashes with an IndexError. Can you look?", secs=40)
    s.snapshot(u2, {"invoicer/totals.py": {"backupFileName": "3c1f0a9e2b7d4c55@v2", "version": 2,
                                           "backupTime": "2026-01-14T09:03:40.000Z"}})
    [t] = s.assistant(tools=[("Grep", {"pattern": "def parse_csv", "path": "/home/dev/invoicer", "output": "content"})])
    s.unexpected_param(t, "Grep", "output")
    [t] = s.assistant(tools=[("Grep", {"pattern": "def parse_csv", "path": "/home/dev/invoicer", "output_mode": "content",
                                       "-n": True})])
    s.result(t, "/home/dev/invoicer/invoicer/parse.py:5:def parse_csv(text):")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/parsing.py"})])
    s.result(t, "<tool_use_error>File does not exist. Did you mean parse.py?</tool_use_error>", error=True,
             tur="Error: File does not exist. Did you mean parse.py?")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/parse.py"})])
    s.result(t, cat_n(PARSE_PY))
    [t] = s.assistant(text="`rows[0]` fails when the file is empty. I'll guard it.",
                      tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/parse.py",
                                       "old_string": "    header = next(reader)",
                                       "new_string": "    header = next(reader, None)\n    if header is None:\n"
                                                     "        return []"})])
    s.edit_not_found(t, "    header = next(reader)")
    [t] = s.assistant(text="`rows[0]` fails when the file is empty. I'll return an empty list for empty input.",
                      tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/parse.py",
                                       "old_string": "    rows = list(csv.reader(io.StringIO(text)))\n    header = rows[0]",
                                       "new_string": "    rows = list(csv.reader(io.StringIO(text)))\n    if not rows:\n"
                                                     "        return []\n    header = rows[0]"})])
    s.updated(t, "/home/dev/invoicer/invoicer/parse.py")
    [t] = s.assistant(tools=[("Bash", {"command": "printf '' > /tmp/empty.csv && python -m invoicer import /tmp/empty.csv",
                                       "description": "Reproduce with an empty CSV"})])
    s.result(t, "Imported 0 invoices.")
    s.assistant(text="Fixed: `parse_csv` now returns `[]` for empty input, and `invoicer import` on an empty file "
                     "reports 0 invoices instead of crashing.")

    s.user("Before you commit: check that the app picks up the API key from .env", secs=65)
    [t] = s.assistant(tools=[("Bash", {"command": "cat .env.local", "description": "Show the env file"})])
    s.cat_missing(t, ".env.local")
    [t] = s.assistant(tools=[("Bash", {"command": "cat .env", "description": "Show the env file"})])
    s.result(t, f"INVOICER_ENV=dev\nANTHROPIC_API_KEY={FAKE_ANTHROPIC}\nAWS_ACCESS_KEY_ID={FAKE_AWS_ID}\n"
                f"AWS_SECRET_ACCESS_KEY={FAKE_AWS_SECRET}\nINVOICER_DB_PASSWORD=hunter2-but-longer\n")
    [t] = s.assistant(text="The key is there (`ANTHROPIC_API_KEY`). Since `.env` holds live credentials, let me make "
                           "sure git ignores it.",
                      tools=[("Bash", {"command": "git check-ignore -v .env", "description": "Is .env ignored?"})])
    s.result(t, ".gitignore:3:.env\t.env")
    s.assistant(text="`.env` is ignored by `.gitignore` (line 3), so the key will not be committed. The app loads it "
                     "through `python-dotenv` at startup.")
    s.emit({"type": "ai-title", "sessionId": s.sid, "title": "Fix rounding and empty CSV import"})
    s.emit({"type": "x-telemetry-flush", "sessionId": s.sid, "events": 14})  # a record type nobody knows yet

    # manual compaction
    before = s.parent
    s.parent = None
    s.system("compact_boundary", content="Conversation compacted", isMeta=False, level="info",
             logicalParentUuid=before, compactMetadata={"trigger": "manual", "preTokens": 23817})
    s.user("This session is being continued from a previous conversation that ran out of context. The conversation "
           "is summarized below:\nSummary:\n1. Fixed invoice_total rounding: quantize now uses ROUND_HALF_UP "
           "(test_total_rounds_half_up passes).\n2. Fixed parse_csv crashing on empty input (returns []).\n3. Checked "
           ".env is git-ignored.\nPending: run the full suite and commit.", isCompactSummary=True,
           isVisibleInTranscriptOnly=True, secs=1)
    s.user("<command-name>/compact</command-name>\n<command-message>compact</command-message>\n<command-args></command-args>",
           secs=0.1)
    s.user("Now run the whole suite once more and commit.", secs=20)
    s.assistant(text="API Error: 529 {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}",
                model="<synthetic>", usage_in=0, cache_read=0, out=0, isApiErrorMessage=True)
    s.user("continue", secs=30)
    [t] = s.assistant(tools=[("Bash", {"command": "pyest -q", "description": "Run the full suite"})])
    s.command_not_found(t, "pyest")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q", "description": "Run the full suite"})])
    s.result(t, pytest_passed(18, "0.11"))
    [t] = s.assistant(tools=[("Bash", {"command": "git add invoicer/totals.py invoicer/parse.py && git commit -m "
                                                  "\"Round totals half-up; accept empty CSV\"",
                                       "description": "Commit the fixes"})])
    s.result(t, "[main 4e1c2ab] Round totals half-up; accept empty CSV\n 2 files changed, 4 insertions(+), 2 deletions(-)")
    s.assistant(text="Committed as 4e1c2ab: rounding fix and empty-CSV fix, 18 tests passing.")
    s.write("claude-code/-home-dev-invoicer/5b1e9f2a-7c3d-4e8f-9a0b-1c2d3e4f5a6b.jsonl")


def session_sidechain() -> None:
    """1.0.x style: an inline Task sidechain, a rejected edit, a timeout."""
    s = CC("c0ffee00-1d2e-4f3a-8b9c-0d1e2f3a4b5c", "/home/dev/invoicer", "1.0.98",
           datetime(2026, 1, 12, 16, 40, 3, 500000, tzinfo=timezone.utc), model="claude-sonnet-4-20250514")
    s.user("Where do we round money values? I want them all to go through one helper.")
    prompt = ("Find every place in /home/dev/invoicer that rounds or quantizes money values (round(, quantize(, "
              "format(..., '.2f')). Report file:line and what each does. Do not edit anything.")
    [task] = s.assistant(text="I'll have an agent search the codebase for rounding sites.",
                         tools=[("Task", {"description": "Find money rounding sites", "prompt": prompt,
                                          "subagent_type": "general-purpose"})])
    main_parent = s.parent
    # --- inline sidechain: written into the same file, its own chain
    s.side, s.parent = True, None
    s.user(prompt, secs=1)
    [g] = s.assistant(tools=[("Grep", {"pattern": "round\\(|quantize\\(|:\\.2f", "path": "/home/dev/invoicer",
                                       "output_mode": "content", "-n": True})])
    s.result(g, "/home/dev/invoicer/invoicer/totals.py:14:    return (subtotal + tax).quantize(CENT, "
                "rounding=ROUND_HALF_UP)\n/home/dev/invoicer/invoicer/report.py:22:    return f\"{amount:.2f}\"\n"
                "/home/dev/invoicer/invoicer/export.py:31:        row[\"total\"] = round(float(inv.total), 2)")
    [r] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/export.py", "offset": "25", "limit": "12"})])
    s.result(r, "<tool_use_error>InputValidationError: Read failed due to the following issues:\nThe parameter `offset` "
                "type is expected as `number` but provided as `string`\nThe parameter `limit` type is expected as "
                "`number` but provided as `string`</tool_use_error>", error=True,
             tur="InputValidationError: [{\"expected\": \"number\", \"path\": [\"offset\"]}]")
    [r] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/export.py", "offset": 25, "limit": 12})])
    s.result(r, cat_n("def to_rows(invoices):\n    out = []\n    for inv in invoices:\n        row = {\"id\": inv.id}\n"
                      "        row[\"customer\"] = inv.customer\n        row[\"total\"] = round(float(inv.total), 2)\n"
                      "        out.append(row)\n    return out"))
    summary = ("Three rounding sites:\n1. invoicer/totals.py:14 — quantize(CENT, ROUND_HALF_UP) on Decimal (correct).\n"
               "2. invoicer/report.py:22 — f\"{amount:.2f}\" for display only.\n3. invoicer/export.py:31 — "
               "round(float(inv.total), 2): converts to float and rounds half-even; can disagree with totals.py.")
    s.assistant(text=summary)
    # --- back to the main chain
    s.side, s.parent = False, main_parent
    s.result(task, [{"type": "text", "text": summary}],
             tur={"content": [{"type": "text", "text": summary}], "totalDurationMs": 14211, "totalTokens": 9120,
                  "totalToolUseCount": 2})
    [e] = s.assistant(text="I'll add a `money()` helper in totals.py and use it in report.py and export.py.",
                      tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/report.py",
                                       "old_string": "    return f\"{amount:.2f}\"",
                                       "new_string": "    return f\"{money(amount)}\""})])
    s.result(e, "The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if it was a file "
                "edit, the new_string was NOT written to the file). STOP what you are doing and wait for the user to "
                "tell you how to proceed.", error=True, tur="Error: The user doesn't want to proceed with this tool use.")
    s.user([{"type": "text", "text": "[Request interrupted by user for tool use]"}], secs=0.5)
    s.user("Leave report.py alone, it only formats for display. Fix export.py only.", secs=25)
    [e] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/export.py",
                                       "old_string": "        row[\"total\"] = round(float(inv.total), 2)",
                                       "new_string": "        row[\"total\"] = str(inv.total)"})])
    s.file_not_read(e)
    [r] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/export.py"})])
    s.result(r, cat_n("import csv\n\nfrom invoicer.totals import CENT\n\n\ndef to_rows(invoices):\n    ..."))
    [e] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/export.py",
                                       "old_string": "        row[\"total\"] = round(float(inv.total), 2)",
                                       "new_string": "        row[\"total\"] = str(inv.total.quantize(CENT, "
                                                     "rounding=ROUND_HALF_UP))"})])
    s.updated(e, "/home/dev/invoicer/invoicer/export.py")
    [b] = s.assistant(tools=[("Bash", {"command": "python -m pytest -q tests/", "description": "Run tests",
                                       "timeout": 120000})])
    s.result(b, "Command timed out after 2m 0.0s\n..........", error=True, tur="Error: Command timed out after 2m 0.0s",
             secs=120)
    [b] = s.assistant(thinking="Probably the network-marked test hitting the exchange-rate API. Skip network tests.",
                      tools=[("Bash", {"command": "python -m pytest -q -m 'not network' tests/",
                                       "description": "Run tests without network"})])
    s.result(b, "...................                                                      [100%]\n"
                "19 passed, 1 deselected in 0.14s")
    s.assistant(text="export.py now writes totals as Decimal strings rounded half-up, like totals.py. report.py is "
                     "unchanged. 19 tests pass (the network test was deselected; it timed out against the live API).")
    s.write("claude-code/-home-dev-invoicer/c0ffee00-1d2e-4f3a-8b9c-0d1e2f3a4b5c.jsonl")


PYPROJECT = """[project]
name = "invoicer"
version = "0.4.1"
requires-python = ">=3.10"
dependencies = ["python-dotenv>=1.0"]
"""

CURRENCY_PY = """from decimal import Decimal

SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£"}


def fmt(amount, currency="EUR"):
    return f"{SYMBOLS[currency]}{Decimal(amount):.2f}"
"""


def session_release() -> None:
    """A release chore on its own day: a wrong path, a typo'd program, an edit whose target
    is not in the file, an unexpected tool parameter, a file edited before it was read."""
    s = CC("7e57a11e-0b3d-4c2a-9e8f-1a2b3c4d5e6f", "/home/dev/invoicer", "2.0.31",
           datetime(2026, 1, 13, 15, 20, 5, 120000, tzinfo=timezone.utc))
    s.user("Cut release 0.4.2: bump the version, add a changelog entry for the rounding and CSV fixes, tag it.")
    [t] = s.assistant(text="I'll start from the changelog.",
                      tools=[("Read", {"file_path": "/home/dev/invoicer/CHANGELOG"})])
    s.result(t, "<tool_use_error>File does not exist. Did you mean CHANGELOG.md?</tool_use_error>", error=True,
             tur="Error: File does not exist.")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/CHANGELOG.md"})])
    s.result(t, cat_n("# Changelog\n\n## 0.4.1 (2026-01-05)\n\n- `invoicer export --format csv`.\n"))
    [t] = s.assistant(tools=[("Bash", {"command": "git tag -l | sort -V | tial -1", "description": "Latest tag"})])
    s.command_not_found(t, "tial")
    [t] = s.assistant(tools=[("Bash", {"command": "git tag -l | sort -V | tail -1", "description": "Latest tag"})])
    s.result(t, "v0.4.1")
    [t] = s.assistant(text="Bumping the version in pyproject.toml.",
                      tools=[("Edit", {"file_path": "/home/dev/invoicer/pyproject.toml",
                                       "old_string": "version = \"0.4.1\"",
                                       "new_string": "version = \"0.4.2\""})])
    s.file_not_read(t)
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/pyproject.toml"})])
    s.result(t, cat_n(PYPROJECT))
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/pyproject.toml",
                                       "old_string": "version = '0.4.1'", "new_string": "version = '0.4.2'"})])
    s.edit_not_found(t, "version = '0.4.1'")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/pyproject.toml",
                                       "old_string": "version = \"0.4.1\"", "new_string": "version = \"0.4.2\""})])
    s.updated(t, "/home/dev/invoicer/pyproject.toml")
    [t] = s.assistant(tools=[("Glob", {"pattern": "**/__init__.py", "recursive": True})])
    s.unexpected_param(t, "Glob", "recursive")
    [t] = s.assistant(tools=[("Grep", {"pattern": "__version__", "path": "/home/dev/invoicer/invoicer",
                                       "output_mode": "content", "-n": True})])
    s.result(t, "No matches found")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/CHANGELOG.md",
                                       "old_string": "# Changelog\n",
                                       "new_string": "# Changelog\n\n## 0.4.2 (2026-01-13)\n\n- Totals round half-up.\n"
                                                     "- `invoicer import` accepts an empty CSV.\n"})])
    s.updated(t, "/home/dev/invoicer/CHANGELOG.md")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q", "description": "Run the suite before tagging"})])
    s.result(t, pytest_passed(18, "0.12"))
    [t] = s.assistant(tools=[("Bash", {"command": "git commit -am \"Release 0.4.2\" && git tag v0.4.2",
                                       "description": "Commit and tag"})])
    s.result(t, "[main 9b2d7e1] Release 0.4.2\n 2 files changed, 6 insertions(+), 1 deletion(-)")
    s.assistant(text="Released 0.4.2: version bumped in pyproject.toml, changelog entry added, tagged v0.4.2. "
                     "The package has no `__version__` attribute to update.")
    s.write("claude-code/-home-dev-invoicer/7e57a11e-0b3d-4c2a-9e8f-1a2b3c4d5e6f.jsonl")


def session_currency() -> None:
    """A feature on the last day: a module that is not where the agent thinks, a number given
    as a string, a misspelled interpreter, a stale edit target, a folder that does not exist,
    a tool the agent does not have."""
    s = CC("c0de1c0d-2e3f-4a5b-8c7d-6e5f4a3b2c1d", "/home/dev/invoicer", "2.0.31",
           datetime(2026, 1, 16, 14, 2, 40, 500000, tzinfo=timezone.utc))
    s.user("Invoices in GBP print a euro sign. Make `invoicer show` use the invoice's currency.")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/money.py"})])
    s.file_not_found(t)
    [t] = s.assistant(tools=[("Grep", {"pattern": "SYMBOLS|def fmt", "path": "/home/dev/invoicer/invoicer",
                                       "output_mode": "content", "-C": "2"})])
    s.wrong_type(t, "Grep", "-C", "number")
    [t] = s.assistant(tools=[("Grep", {"pattern": "SYMBOLS|def fmt", "path": "/home/dev/invoicer/invoicer",
                                       "output_mode": "content", "-n": True})])
    s.result(t, "/home/dev/invoicer/invoicer/currency.py:3:SYMBOLS = {\"EUR\": \"€\", \"USD\": \"$\", \"GBP\": \"£\"}\n"
                "/home/dev/invoicer/invoicer/currency.py:6:def fmt(amount, currency=\"EUR\"):\n"
                "/home/dev/invoicer/invoicer/show.py:14:    print(fmt(inv.total))")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/show.py"})])
    s.result(t, cat_n("from invoicer.currency import fmt\n\n\ndef show(inv):\n    print(inv.id, inv.customer)\n"
                      "    for line in inv.lines:\n        print(' ', line.description, line.total)\n\n\n\n\n\n"
                      "    print('total')\n    print(fmt(inv.total))"))
    [t] = s.assistant(text="`show` never passes the currency. Passing `inv.currency`.",
                      tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/show.py",
                                       "old_string": "    print(fmt(inv.total, 'EUR'))",
                                       "new_string": "    print(fmt(inv.total, inv.currency))"})])
    s.edit_not_found(t, "    print(fmt(inv.total, 'EUR'))")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/show.py",
                                       "old_string": "    print(fmt(inv.total))",
                                       "new_string": "    print(fmt(inv.total, inv.currency))"})])
    s.updated(t, "/home/dev/invoicer/invoicer/show.py")
    [t] = s.assistant(tools=[("Bash", {"command": "pyhton -m pytest -q tests/test_show.py",
                                       "description": "Run the show tests"})])
    s.command_not_found(t, "pyhton")
    [t] = s.assistant(tools=[("Bash", {"command": "python -m pytest -q tests/test_show.py",
                                       "description": "Run the show tests"})])
    s.result(t, pytest_passed(3, "0.03"))
    [t] = s.assistant(text="Checking for translated currency names as well.",
                      tools=[("Bash", {"command": "ls invoicer/locale/", "description": "List locale files"})])
    s.result(t, "Exit code 2\nls: cannot access 'invoicer/locale/': No such file or directory", error=True,
             tur="Error: Exit code 2\nls: cannot access 'invoicer/locale/': No such file or directory")
    [t] = s.assistant(tools=[("WebSearch", {"query": "python decimal format currency symbol locale"})])
    s.result(t, "<tool_use_error>Error: No such tool available: WebSearch</tool_use_error>", error=True,
             tur="Error: No such tool available: WebSearch")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/currency.py"})])
    s.result(t, cat_n(CURRENCY_PY))
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q", "description": "Run the whole suite"})])
    s.result(t, pytest_passed(22, "0.14"))
    s.assistant(text="`invoicer show` now formats totals in the invoice's own currency (`fmt(inv.total, "
                     "inv.currency)`), so GBP invoices print £. There are no locale files; the symbols live in "
                     "`invoicer/currency.py`. 22 tests pass.")
    s.write("claude-code/-home-dev-invoicer/c0de1c0d-2e3f-4a5b-8c7d-6e5f4a3b2c1d.jsonl")


WEBHOOKS_PY = """import hmac
from hashlib import sha256


def verify(secret, body, signature):
    expected = hmac.new(secret, body, sha256).hexdigest()
    return expected == signature
"""

TEST_WEBHOOKS_PY = """from invoicer.webhooks import verify


def test_bad_signature():
    assert not verify(b"k", b"body", "00")
"""


def session_webhook() -> None:
    """A security fix on its own day: the agent guesses paths and parameters, edits a file it
    has not read, writes where it may not, and misspells the test runner."""
    s = CC("b00b1e55-5a6b-4c7d-8e9f-0a1b2c3d4e5f", "/home/dev/invoicer", "2.0.31",
           datetime(2026, 1, 15, 16, 45, 10, 300000, tzinfo=timezone.utc))
    s.user("The webhook signature check compares strings with ==. Make it constant-time and add a test.")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/hooks.py"})])
    s.file_not_found(t)
    [t] = s.assistant(tools=[("Bash", {"command": "cat invoicer/webhook.py", "description": "Show the webhook code"})])
    s.cat_missing(t, "invoicer/webhook.py")
    [t] = s.assistant(tools=[("Grep", {"pattern": "hmac", "path": "/home/dev/invoicer", "include": "*.py"})])
    s.unexpected_param(t, "Grep", "include")
    [t] = s.assistant(tools=[("Grep", {"pattern": "hmac", "path": "/home/dev/invoicer", "glob": "*.py"})])
    s.result(t, "Found 1 file\n/home/dev/invoicer/invoicer/webhooks.py")
    [t] = s.assistant(text="Found it in webhooks.py. Switching to hmac.compare_digest.",
                      tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/webhooks.py",
                                       "old_string": "    return expected == signature",
                                       "new_string": "    return hmac.compare_digest(expected, signature)"})])
    s.file_not_read(t)
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/webhooks.py", "limit": "50"})])
    s.wrong_type(t, "Read", "limit", "number")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/webhooks.py"})])
    s.result(t, cat_n(WEBHOOKS_PY))
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/webhooks.py",
                                       "old_string": "    return signature == expected",
                                       "new_string": "    return hmac.compare_digest(expected, signature)"})])
    s.edit_not_found(t, "    return signature == expected")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/webhooks.py",
                                       "old_string": "    return expected == signature",
                                       "new_string": "    return hmac.compare_digest(expected, signature)"})])
    s.updated(t, "/home/dev/invoicer/invoicer/webhooks.py")
    [t] = s.assistant(tools=[("Write", {"file_path": "/home/dev/invoicer/tests/test_webhooks.py",
                                        "content": TEST_WEBHOOKS_PY})])
    s.result(t, "File created successfully at: /home/dev/invoicer/tests/test_webhooks.py")
    [t] = s.assistant(tools=[("Bash", {"command": "pytset -q tests/test_webhooks.py", "description": "Run the new test"})])
    s.command_not_found(t, "pytset")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q tests/test_webhooks.py", "description": "Run the new test"})])
    s.result(t, pytest_passed(1, "0.02"))
    [t] = s.assistant(text="Also documenting the shared secret in the system config.",
                      tools=[("Write", {"file_path": "/etc/invoicer/webhooks.yaml",
                                        "content": "# the shared secret lives in INVOICER_WEBHOOK_SECRET\n"})])
    s.result(t, "<tool_use_error>EACCES: permission denied, open '/etc/invoicer/webhooks.yaml'</tool_use_error>",
             error=True, tur="Error: EACCES: permission denied, open '/etc/invoicer/webhooks.yaml'")
    s.assistant(text="`verify` now uses `hmac.compare_digest` (constant time) and tests/test_webhooks.py covers a bad "
                     "signature; it passes. I could not write /etc/invoicer/webhooks.yaml (no permission): the secret "
                     "is read from INVOICER_WEBHOOK_SECRET as before.")
    s.write("claude-code/-home-dev-invoicer/b00b1e55-5a6b-4c7d-8e9f-0a1b2c3d4e5f.jsonl")


CLI_PY = """import argparse
from datetime import date, timedelta

from invoicer.store import save_invoice


def cmd_new(args):
    issued = date.today()
    due = issued + timedelta(days=30)
    save_invoice(args.customer, issued=issued, due=due)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="invoicer")
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new")
    new.add_argument("customer")
    new.set_defaults(fn=cmd_new)
    args = parser.parse_args(argv)
    return args.fn(args)
"""


def session_due_days() -> None:
    """A small option on its own day: a module path guessed from another project, an edit
    whose old string has the wrong indentation, a misspelled interpreter, a line offset given
    as a string, a Python one-liner with a syntax error, and a failing test read as information."""
    s = CC("d0e5da75-4b1c-4e2d-9f3a-7b6c5d4e3f2a", "/home/dev/invoicer", "2.0.31",
           datetime(2026, 1, 14, 9, 31, 12, 250000, tzinfo=timezone.utc))
    s.user("Add a `--due-days` option to `invoicer new` (default 30): the due date is the issue date plus that.")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/commands/new.py"})])
    s.file_not_found(t)
    [t] = s.assistant(tools=[("Glob", {"pattern": "invoicer/*.py"})])
    s.result(t, "/home/dev/invoicer/invoicer/__init__.py\n/home/dev/invoicer/invoicer/cli.py\n"
                "/home/dev/invoicer/invoicer/currency.py\n/home/dev/invoicer/invoicer/store.py\n"
                "/home/dev/invoicer/invoicer/totals.py")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/cli.py"})])
    s.result(t, cat_n(CLI_PY))
    [t] = s.assistant(text="The due date is hard-coded to 30 days in `cmd_new`. Adding the option.",
                      tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/cli.py",
                                       "old_string": "  due = issued + timedelta(days=30)",
                                       "new_string": "  due = issued + timedelta(days=args.due_days)"})])
    s.edit_not_found(t, "  due = issued + timedelta(days=30)")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/cli.py",
                                       "old_string": "    due = issued + timedelta(days=30)",
                                       "new_string": "    due = issued + timedelta(days=args.due_days)"})])
    s.updated(t, "/home/dev/invoicer/invoicer/cli.py")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/cli.py",
                                       "old_string": "    new.add_argument(\"customer\")",
                                       "new_string": "    new.add_argument(\"customer\")\n    new.add_argument("
                                                     "\"--due-days\", type=int, default=30)"})])
    s.updated(t, "/home/dev/invoicer/invoicer/cli.py")
    [t] = s.assistant(tools=[("Bash", {"command": "pyton -m pytest -q tests/test_cli.py",
                                       "description": "Run the CLI tests"})])
    s.command_not_found(t, "pyton")
    [t] = s.assistant(tools=[("Bash", {"command": "python -m pytest -q tests/test_cli.py",
                                       "description": "Run the CLI tests"})])
    s.result(t, "Exit code 1\n.F                                                                       [100%]\n"
                "FAILED tests/test_cli.py::test_new_sets_due_date - AssertionError: assert 14 == 30\n"
                "1 failed, 1 passed in 0.05s", error=True,
             tur="Error: Exit code 1\n1 failed, 1 passed in 0.05s")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/tests/test_cli.py", "offset": "1",
                                       "limit": 40})])
    s.wrong_type(t, "Read", "offset", "number")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/tests/test_cli.py"})])
    s.result(t, cat_n("from invoicer.cli import main\n\n\ndef test_new_parses(tmp_path):\n"
                      "    main([\"new\", \"Acme\"])\n\n\ndef test_new_sets_due_date(store):\n"
                      "    main([\"new\", \"Acme\", \"--due-days\", \"14\"])\n"
                      "    inv = store.last()\n    assert (inv.due - inv.issued).days == 30\n"))
    [t] = s.assistant(text="The test was written for the old behaviour: it passes 14 and expects 30. Checking the "
                           "parser by hand first.",
                      tools=[("Bash", {"command": "python -c \"from invoicer.cli import main; "
                                                  "main(['new', 'Acme', '--due-days', '14')\"",
                                       "description": "Try the option"})])
    s.result(t, "Exit code 1\n  File \"<string>\", line 1\n    from invoicer.cli import main; main(['new', 'Acme', "
                "'--due-days', '14')\n                                                                          ^\n"
                "SyntaxError: closing parenthesis ')' does not match opening parenthesis '['", error=True,
             tur="Error: Exit code 1\nSyntaxError: closing parenthesis ')' does not match opening parenthesis '['")
    [t] = s.assistant(tools=[("Bash", {"command": "python -c \"from invoicer.cli import main; main(['new', 'Acme', "
                                                  "'--due-days', '14'])\"",
                                       "description": "Try the option"})])
    s.result(t, "")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/tests/test_cli.py",
                                       "old_string": "    assert (inv.due - inv.issued).days == 30",
                                       "new_string": "    assert (inv.due - inv.issued).days == 14"})])
    s.updated(t, "/home/dev/invoicer/tests/test_cli.py")
    [t] = s.assistant(tools=[("Bash", {"command": "python -m pytest -q", "description": "Run the whole suite"})])
    s.result(t, pytest_passed(24, "0.15"))
    s.assistant(text="`invoicer new --due-days N` sets the due date N days after the issue date (default 30, as "
                     "before). The existing test asserted the old fixed 30 days while passing 14; it now expects 14. "
                     "24 tests pass.")
    s.write("claude-code/-home-dev-invoicer/d0e5da75-4b1c-4e2d-9f3a-7b6c5d4e3f2a.jsonl")


# --------------------------------------------------------------------------- 8 more sessions of the same project,
# written later: each a task of its own with the agent's recurring mistakes and their recoveries
CLI_EXPORT_PY = '''import argparse
import sys

from invoicer.export import export_csv
from invoicer.store import load_invoices


def cmd_export(args):
    export_csv(load_invoices(), sys.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="invoicer")
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export")
    exp.set_defaults(fn=cmd_export)
    args = parser.parse_args(argv)
    return args.fn(args)
'''

EXPORT_PY = '''import csv

from invoicer.currency import fmt


def export_csv(invoices, out):
    writer = csv.writer(out)
    for inv in invoices:
        writer.writerow([inv.id, inv.customer, inv.issued.isoformat(), fmt(inv.total)])
'''

# the files as the sessions before left them
EXPORT_CUR_PY = (EXPORT_PY.replace("out):", "out, currency=\"EUR\"):")  # session_export_currency
                 .replace("fmt(inv.total)", "fmt(inv.total, currency)"))
TOTALS_ROUNDED_PY = (TOTALS_PY.replace("from decimal import Decimal\n", "from decimal import ROUND_HALF_UP, Decimal\n")
                     .replace("    return gross - gross * Decimal(discount)",  # session_line_rounding
                              "    net = gross - gross * Decimal(discount)\n"
                              "    return net.quantize(CENT, rounding=ROUND_HALF_UP)"))
WEBHOOKS_FIXED_PY = WEBHOOKS_PY.replace("    return expected == signature",  # session_webhook
                                        "    return hmac.compare_digest(expected, signature)")
PYPROJECT_042 = (PYPROJECT.replace("\"0.4.1\"", "\"0.4.2\"")  # session_release, and a console script since
                 + "\n[project.scripts]\ninvoicer = \"invoicer.cli:main\"\n")
CLI_DUE_DAYS_PY = (CLI_PY.replace("days=30)", "days=args.due_days)")  # session_due_days
                   .replace("    new.add_argument(\"customer\")\n",
                            "    new.add_argument(\"customer\")\n    new.add_argument(\"--due-days\", type=int, default=30)\n"))

TEST_TOTALS_PY = '''from decimal import Decimal

from invoicer.totals import invoice_total, line_total


def test_line_total_plain():
    assert line_total(2, "5.00") == Decimal("10.00")


def test_total_with_tax():
    lines = [{"qty": 1, "unit_price": "100"}]
    assert invoice_total(lines, "0.2") == Decimal("120.00")
'''

TEST_EXPORT_PY = '''import io
from datetime import date
from decimal import Decimal

from invoicer.export import export_csv
from invoicer.store import Invoice


def test_one_row_per_invoice():
    out = io.StringIO()
    export_csv([Invoice("INV-1", "Acme", date(2026, 1, 2), Decimal("12.5"))], out)
    rows = out.getvalue().splitlines()
    assert rows[0].startswith("INV-1,")  # first row, no header
'''

TEST_PARSE_PY = '''from invoicer.parse import parse_csv


def test_header_maps_columns():
    rows = parse_csv("id,customer\\nINV-1,Acme\\n")
    assert rows == [{"id": "INV-1", "customer": "Acme"}]


def test_trailing_blank_line():
    assert len(parse_csv("id\\nINV-1\\n\\n")) == 1
'''

SHOW_PY = '''from invoicer.currency import fmt


def show(inv):
    print(inv.id, inv.customer)
    for line in inv.lines:
        print(" ", line.description, fmt(line.total))
    print("Total:", fmt(inv.total))
'''


def session_export_currency() -> None:
    """--currency for export: a path without the package folder, `output` for `output_mode`,
    an edit target misremembered, a misspelled test runner."""
    s = CC("f1ceb2dc-27bf-4aaa-8659-c7ef5fd5496c", "/home/dev/invoicer", "2.0.31",
           datetime(2026, 1, 12, 10, 14, 3, 400000, tzinfo=timezone.utc))
    s.user("Add a `--currency` option to `invoicer export` (default EUR) so the totals column is formatted in "
           "that currency.")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/cli.py"})])
    s.file_not_found(t)
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/cli.py"})])
    s.result(t, cat_n(CLI_EXPORT_PY))
    [t] = s.assistant(tools=[("Grep", {"pattern": "def export_csv", "path": "/home/dev/invoicer", "output": "content"})])
    s.unexpected_param(t, "Grep", "output")
    [t] = s.assistant(tools=[("Grep", {"pattern": "def export_csv", "path": "/home/dev/invoicer",
                                       "output_mode": "content", "-n": True})])
    s.result(t, "/home/dev/invoicer/invoicer/export.py:6:def export_csv(invoices, out):")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/export.py"})])
    s.result(t, cat_n(EXPORT_PY))
    [t] = s.assistant(text="`export_csv` always calls `fmt(inv.total)`, i.e. EUR. Threading a currency through.",
                      tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/export.py",
                                       "old_string": "def export_csv(invoices, out):",
                                       "new_string": "def export_csv(invoices, out, currency=\"EUR\"):"})])
    s.updated(t, "/home/dev/invoicer/invoicer/export.py")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/export.py",
                                       "old_string": "        writer.writerow([inv.id, inv.customer, inv.issued, "
                                                     "fmt(inv.total)])",
                                       "new_string": "        writer.writerow([inv.id, inv.customer, inv.issued, "
                                                     "fmt(inv.total, currency)])"})])
    s.edit_not_found(t, "        writer.writerow([inv.id, inv.customer, inv.issued, fmt(inv.total)])")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/export.py",
                                       "old_string": "fmt(inv.total)])", "new_string": "fmt(inv.total, currency)])"})])
    s.updated(t, "/home/dev/invoicer/invoicer/export.py")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/cli.py",
                                       "old_string": "    export_csv(load_invoices(), sys.stdout)",
                                       "new_string": "    export_csv(load_invoices(), sys.stdout, currency=args.currency)"})])
    s.updated(t, "/home/dev/invoicer/invoicer/cli.py")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/cli.py",
                                       "old_string": "    exp.set_defaults(fn=cmd_export)",
                                       "new_string": "    exp.add_argument(\"--currency\", default=\"EUR\", "
                                                     "choices=[\"EUR\", \"USD\", \"GBP\"])\n"
                                                     "    exp.set_defaults(fn=cmd_export)"})])
    s.updated(t, "/home/dev/invoicer/invoicer/cli.py")
    [t] = s.assistant(tools=[("Bash", {"command": "pytset -q tests/test_export.py tests/test_cli.py",
                                       "description": "Run the export and CLI tests"})])
    s.command_not_found(t, "pytset")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q tests/test_export.py tests/test_cli.py",
                                       "description": "Run the export and CLI tests"})])
    s.result(t, pytest_passed(5, "0.04"))
    s.assistant(text="`invoicer export --currency USD|GBP|EUR` (default EUR) now formats the totals column with "
                     "`fmt(inv.total, currency)`; `export_csv` takes a `currency` argument. The export and CLI tests "
                     "pass (5).")
    s.write("claude-code/-home-dev-invoicer/f1ceb2dc-27bf-4aaa-8659-c7ef5fd5496c.jsonl")


def session_line_rounding() -> None:
    """Round each line: a module name off by one letter, a quote style misremembered, a test
    file name misspelled, offset/limit given as strings."""
    s = CC("0da0b47f-cf11-4cfc-b063-af4338c8f067", "/home/dev/invoicer", "2.0.31",
           datetime(2026, 1, 12, 14, 31, 27, 800000, tzinfo=timezone.utc))
    s.user("Some invoice totals are a cent off: discounted line totals are not rounded before they are summed. "
           "Round each line to cents (half-up).")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/total.py"})])
    s.file_not_found(t)
    [t] = s.assistant(tools=[("Glob", {"pattern": "invoicer/tot*.py"})])
    s.result(t, "/home/dev/invoicer/invoicer/totals.py")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/totals.py"})])
    s.result(t, cat_n(TOTALS_PY))
    [t] = s.assistant(text="`line_total` returns the unrounded product; only the invoice total is quantized.",
                      tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/totals.py",
                                       "old_string": "    return gross - gross * Decimal(discount)",
                                       "new_string": "    net = gross - gross * Decimal(discount)\n"
                                                     "    return net.quantize(CENT, rounding=ROUND_HALF_UP)"})])
    s.updated(t, "/home/dev/invoicer/invoicer/totals.py")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/totals.py",
                                       "old_string": "from decimal import Decimal\n\nCENT = Decimal('0.01')",
                                       "new_string": "from decimal import ROUND_HALF_UP, Decimal\n\n"
                                                     "CENT = Decimal('0.01')"})])
    s.edit_not_found(t, "from decimal import Decimal\n\nCENT = Decimal('0.01')")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/totals.py",
                                       "old_string": "from decimal import Decimal\n",
                                       "new_string": "from decimal import ROUND_HALF_UP, Decimal\n"})])
    s.updated(t, "/home/dev/invoicer/invoicer/totals.py")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q tests/test_totls.py", "description": "Run the totals tests"})])
    s.no_tests(t, "tests/test_totls.py")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q tests/test_totals.py", "description": "Run the totals tests"})])
    s.result(t, pytest_passed(2, "0.03"))
    [t] = s.assistant(text="Passing. Adding a regression test for a discounted line.",
                      tools=[("Read", {"file_path": "/home/dev/invoicer/tests/test_totals.py", "offset": "1",
                                       "limit": "30"})])
    s.wrong_type(t, "Read", "offset", "number")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/tests/test_totals.py"})])
    s.result(t, cat_n(TEST_TOTALS_PY))
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/tests/test_totals.py",
                                       "old_string": "def test_total_with_tax():",
                                       "new_string": "def test_discounted_line_is_rounded_half_up():\n"
                                                     "    assert line_total(1, \"10.25\", \"0.1\") == Decimal(\"9.23\")\n"
                                                     "\n\ndef test_total_with_tax():"})])
    s.updated(t, "/home/dev/invoicer/tests/test_totals.py")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q", "description": "Run the whole suite"})])
    s.result(t, pytest_passed(19, "0.11"))
    s.assistant(text="`line_total` now rounds each line to cents with ROUND_HALF_UP before the lines are summed, so "
                     "discounted lines no longer carry sub-cent amounts into the total. Added "
                     "`test_discounted_line_is_rounded_half_up` (10.25 less 10% = 9.225 → 9.23); all 19 tests pass.")
    s.write("claude-code/-home-dev-invoicer/0da0b47f-cf11-4cfc-b063-af4338c8f067.jsonl")


def session_csv_header() -> None:
    """A header row for the CSV export: cat of a file that is not there, `-i` as a string, an
    edit with the wrong quotes, a misspelled interpreter."""
    s = CC("ccc8e024-0825-4b41-9085-b859cb888551", "/home/dev/invoicer", "2.0.31",
           datetime(2026, 1, 13, 9, 47, 12, 150000, tzinfo=timezone.utc))
    s.user("`invoicer export` writes the CSV without a header row, so spreadsheets take the first invoice as the "
           "column names. Write a header: id,customer,issued,total.")
    [t] = s.assistant(tools=[("Bash", {"command": "cat invoicer/exports.py", "description": "Show the export code"})])
    s.cat_missing(t, "invoicer/exports.py")
    [t] = s.assistant(tools=[("Bash", {"command": "ls invoicer/", "description": "List the package modules"})])
    s.result(t, "__init__.py\ncli.py\ncurrency.py\nexport.py\nparse.py\nshow.py\nstore.py\ntotals.py\nwebhooks.py")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/export.py"})])
    s.result(t, cat_n(EXPORT_CUR_PY))
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/export.py",
                                       "old_string": "from invoicer.currency import fmt\n",
                                       "new_string": "from invoicer.currency import fmt\n\n"
                                                     "HEADER = [\"id\", \"customer\", \"issued\", \"total\"]\n"})])
    s.updated(t, "/home/dev/invoicer/invoicer/export.py")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/export.py",
                                       "old_string": "    writer = csv.writer(out)\n",
                                       "new_string": "    writer = csv.writer(out)\n    writer.writerow(HEADER)\n"})])
    s.updated(t, "/home/dev/invoicer/invoicer/export.py")
    [t] = s.assistant(text="Now the tests that read the first row.",
                      tools=[("Grep", {"pattern": "header", "path": "/home/dev/invoicer/tests",
                                       "output_mode": "content", "-i": "yes"})])
    s.wrong_type(t, "Grep", "-i", "boolean")
    [t] = s.assistant(tools=[("Grep", {"pattern": "[Hh]eader|rows\\[0\\]", "path": "/home/dev/invoicer/tests",
                                       "output_mode": "content", "-n": True})])
    s.result(t, "/home/dev/invoicer/tests/test_export.py:13:    assert rows[0].startswith(\"INV-1,\")  # first row, "
                "no header")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/tests/test_export.py"})])
    s.result(t, cat_n(TEST_EXPORT_PY))
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/tests/test_export.py",
                                       "old_string": "    assert rows[0].startswith('INV-1,')  # first row, no header",
                                       "new_string": "    assert rows[0] == \"id,customer,issued,total\"\n"
                                                     "    assert rows[1].startswith(\"INV-1,\")"})])
    s.edit_not_found(t, "    assert rows[0].startswith('INV-1,')  # first row, no header")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/tests/test_export.py",
                                       "old_string": "    assert rows[0].startswith(\"INV-1,\")  # first row, no header",
                                       "new_string": "    assert rows[0] == \"id,customer,issued,total\"\n"
                                                     "    assert rows[1].startswith(\"INV-1,\")"})])
    s.updated(t, "/home/dev/invoicer/tests/test_export.py")
    [t] = s.assistant(tools=[("Bash", {"command": "pyhton -m pytest -q tests/test_export.py",
                                       "description": "Run the export tests"})])
    s.command_not_found(t, "pyhton")
    [t] = s.assistant(tools=[("Bash", {"command": "python -m pytest -q tests/test_export.py",
                                       "description": "Run the export tests"})])
    s.result(t, pytest_passed(1, "0.02"))
    s.assistant(text="`export_csv` now writes `id,customer,issued,total` as its first row (`HEADER` in "
                     "invoicer/export.py). tests/test_export.py checks the header and that the first invoice follows "
                     "it; the export test passes.")
    s.write("claude-code/-home-dev-invoicer/ccc8e024-0825-4b41-9085-b859cb888551.jsonl")


def session_empty_input() -> None:
    """An empty CSV: `test/` for `tests/`, a test name guessed, `include` for `glob`, `gti`;
    the user adds a second request halfway."""
    s = CC("7182db29-a841-4d2b-b0a9-d6a892250e41", "/home/dev/invoicer", "2.0.31",
           datetime(2026, 1, 13, 17, 5, 40, 600000, tzinfo=timezone.utc))
    s.user("`invoicer import` crashes with an IndexError when the CSV file is empty. It should import nothing "
           "instead.")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/parse.py"})])
    s.result(t, cat_n(PARSE_PY))
    [t] = s.assistant(text="`rows[0]` fails when the reader yields no rows. Returning early.",
                      tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/parse.py",
                                       "old_string": "    header = rows[0]",
                                       "new_string": "    if not rows:\n        return []\n    header = rows[0]"})])
    s.updated(t, "/home/dev/invoicer/invoicer/parse.py")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/test/test_parse.py"})])
    s.file_not_found(t)
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/tests/test_parse.py"})])
    s.result(t, cat_n(TEST_PARSE_PY))
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/tests/test_parse.py",
                                       "old_string": "def test_parse_header():",
                                       "new_string": "def test_empty_input():\n    assert parse_csv(\"\") == []\n\n\n"
                                                     "def test_parse_header():"})])
    s.edit_not_found(t, "def test_parse_header():")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/tests/test_parse.py",
                                       "old_string": "def test_header_maps_columns():",
                                       "new_string": "def test_empty_input():\n    assert parse_csv(\"\") == []\n\n\n"
                                                     "def test_header_maps_columns():"})])
    s.updated(t, "/home/dev/invoicer/tests/test_parse.py")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q tests/test_parse.py", "description": "Run the parser tests"})])
    s.result(t, pytest_passed(3, "0.02"))
    s.assistant(text="`parse_csv(\"\")` now returns an empty list and tests/test_parse.py covers it (3 passed).")
    s.user("Also check the command itself with an empty file on disk, not only an empty string.")
    [t] = s.assistant(tools=[("Grep", {"pattern": "def cmd_import", "path": "/home/dev/invoicer", "include": "*.py"})])
    s.unexpected_param(t, "Grep", "include")
    [t] = s.assistant(tools=[("Grep", {"pattern": "def cmd_import", "path": "/home/dev/invoicer", "glob": "*.py",
                                       "output_mode": "content", "-A": 4})])
    s.result(t, "/home/dev/invoicer/invoicer/cli.py:14:def cmd_import(args):\n"
                "/home/dev/invoicer/invoicer/cli.py-15-    with open(args.path, encoding=\"utf-8\") as f:\n"
                "/home/dev/invoicer/invoicer/cli.py-16-        invoices = parse_csv(f.read())\n"
                "/home/dev/invoicer/invoicer/cli.py-17-    save_all(invoices)\n"
                "/home/dev/invoicer/invoicer/cli.py-18-    print(f\"Imported {len(invoices)} invoices.\")")
    [t] = s.assistant(tools=[("Bash", {"command": "touch /tmp/empty.csv && python -m invoicer import /tmp/empty.csv",
                                       "description": "Import an empty file"})])
    s.result(t, "Imported 0 invoices.")
    [t] = s.assistant(tools=[("Bash", {"command": "gti diff --stat", "description": "Summarize the change"})])
    s.command_not_found(t, "gti")
    [t] = s.assistant(tools=[("Bash", {"command": "git diff --stat", "description": "Summarize the change"})])
    s.result(t, " invoicer/parse.py   | 2 ++\n tests/test_parse.py | 4 ++++\n 2 files changed, 6 insertions(+)")
    s.assistant(text="`invoicer import /tmp/empty.csv` now prints \"Imported 0 invoices.\" instead of raising: "
                     "`cmd_import` passes the file's text to `parse_csv`, which returns `[]` for empty input. "
                     "Changed: invoicer/parse.py (+2) and tests/test_parse.py (+4).")
    s.write("claude-code/-home-dev-invoicer/7182db29-a841-4d2b-b0a9-d6a892250e41.jsonl")


def session_rename_fmt() -> None:
    """Rename fmt → format_amount: `output` for `output_mode`, a limit as a string, an old
    string from memory, a test file name misspelled."""
    s = CC("032647db-590d-4bcd-aecf-5b17a01ef44f", "/home/dev/invoicer", "2.0.31",
           datetime(2026, 1, 14, 11, 22, 9, 300000, tzinfo=timezone.utc))
    s.user("Rename `currency.fmt` to `format_amount`; `fmt` is too vague. Update every caller and the tests.")
    [t] = s.assistant(tools=[("Grep", {"pattern": "\\bfmt\\b", "path": "/home/dev/invoicer", "glob": "*.py",
                                       "output": "files_with_matches"})])
    s.unexpected_param(t, "Grep", "output")
    [t] = s.assistant(tools=[("Grep", {"pattern": "\\bfmt\\b", "path": "/home/dev/invoicer", "glob": "*.py",
                                       "output_mode": "files_with_matches"})])
    s.result(t, "Found 4 files\n/home/dev/invoicer/invoicer/currency.py\n/home/dev/invoicer/invoicer/export.py\n"
                "/home/dev/invoicer/invoicer/show.py\n/home/dev/invoicer/tests/test_currency.py")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/currency.py"})])
    s.result(t, cat_n(CURRENCY_PY))
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/currency.py",
                                       "old_string": "def fmt(amount, currency=\"EUR\"):",
                                       "new_string": "def format_amount(amount, currency=\"EUR\"):"})])
    s.updated(t, "/home/dev/invoicer/invoicer/currency.py")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/export.py", "limit": "20"})])
    s.wrong_type(t, "Read", "limit", "number")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/export.py"})])
    s.result(t, cat_n(EXPORT_CUR_PY))
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/export.py", "old_string": "fmt",
                                       "new_string": "format_amount", "replace_all": True})])
    s.result(t, "The file /home/dev/invoicer/invoicer/export.py has been updated. All occurrences of 'fmt' were "
                "successfully replaced with 'format_amount'.")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/show.py"})])
    s.result(t, cat_n(SHOW_PY))
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/show.py",
                                       "old_string": "    print(fmt(inv.total, inv.currency))",
                                       "new_string": "    print(format_amount(inv.total, inv.currency))"})])
    s.edit_not_found(t, "    print(fmt(inv.total, inv.currency))")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/show.py", "old_string": "fmt",
                                       "new_string": "format_amount", "replace_all": True})])
    s.result(t, "The file /home/dev/invoicer/invoicer/show.py has been updated. All occurrences of 'fmt' were "
                "successfully replaced with 'format_amount'.")
    [t] = s.assistant(tools=[("Bash", {"command": "sed -i 's/\\bfmt\\b/format_amount/g' tests/test_currency.py",
                                       "description": "Rename in the currency tests"})])
    s.result(t, "")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q tests/test_curency.py tests/test_export.py "
                                                  "tests/test_show.py", "description": "Run the affected tests"})])
    s.no_tests(t, "tests/test_curency.py")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q tests/test_currency.py tests/test_export.py "
                                                  "tests/test_show.py", "description": "Run the affected tests"})])
    s.result(t, pytest_passed(9, "0.05"))
    s.assistant(text="Renamed `fmt` to `format_amount` in invoicer/currency.py and its callers (export.py, show.py) "
                     "and in tests/test_currency.py; no other module used it. The 9 affected tests pass.")
    s.write("claude-code/-home-dev-invoicer/032647db-590d-4bcd-aecf-5b17a01ef44f.jsonl")


def session_webhook_tests() -> None:
    """More webhook tests: the module name in the singular, an old string with the wrong
    quotes, a test file name misspelled, `gti`."""
    s = CC("6c11dd4b-7b8c-4904-8a8c-2f9d7a05963a", "/home/dev/invoicer", "2.0.31",
           datetime(2026, 1, 16, 9, 12, 31, 50000, tzinfo=timezone.utc))
    s.user("Add tests for `webhooks.verify`: a valid signature, a tampered body, and a signature of the wrong "
           "length. Commit when they pass.")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/webhook.py"})])
    s.file_not_found(t)
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/webhooks.py"})])
    s.result(t, cat_n(WEBHOOKS_FIXED_PY))
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/tests/test_webhooks.py"})])
    s.result(t, cat_n(TEST_WEBHOOKS_PY))
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/tests/test_webhooks.py",
                                       "old_string": "from invoicer.webhooks import verify\n",
                                       "new_string": "import hmac\nfrom hashlib import sha256\n\n"
                                                     "from invoicer.webhooks import verify\n\nKEY = b\"k\"\n\n\n"
                                                     "def sign(body):\n"
                                                     "    return hmac.new(KEY, body, sha256).hexdigest()\n"})])
    s.updated(t, "/home/dev/invoicer/tests/test_webhooks.py")
    new_tests = ("\n\ndef test_valid_signature():\n    assert verify(KEY, b\"body\", sign(b\"body\"))\n\n\n"
                 "def test_tampered_body():\n    assert not verify(KEY, b\"body!\", sign(b\"body\"))\n\n\n"
                 "def test_wrong_length():\n    assert not verify(KEY, b\"body\", sign(b\"body\")[:-2])\n")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/tests/test_webhooks.py",
                                       "old_string": "    assert not verify(b'k', b'body', '00')\n",
                                       "new_string": "    assert not verify(b'k', b'body', '00')\n" + new_tests})])
    s.edit_not_found(t, "    assert not verify(b'k', b'body', '00')\n")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/tests/test_webhooks.py",
                                       "old_string": "    assert not verify(b\"k\", b\"body\", \"00\")\n",
                                       "new_string": "    assert not verify(b\"k\", b\"body\", \"00\")\n" + new_tests})])
    s.updated(t, "/home/dev/invoicer/tests/test_webhooks.py")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q tests/test_webhoks.py",
                                       "description": "Run the webhook tests"})])
    s.no_tests(t, "tests/test_webhoks.py")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q tests/test_webhooks.py",
                                       "description": "Run the webhook tests"})])
    s.result(t, pytest_passed(4, "0.02"))
    [t] = s.assistant(tools=[("Bash", {"command": "gti add tests/test_webhooks.py && gti commit -m \"Test webhook "
                                                  "signature checks\"", "description": "Commit the tests"})])
    s.command_not_found(t, "gti")
    [t] = s.assistant(tools=[("Bash", {"command": "git add tests/test_webhooks.py && git commit -m \"Test webhook "
                                                  "signature checks\"", "description": "Commit the tests"})])
    s.result(t, "[main 3f6a0c2] Test webhook signature checks\n 1 file changed, 20 insertions(+)")
    s.assistant(text="tests/test_webhooks.py now covers a valid signature, a tampered body and a truncated "
                     "signature besides the bad one (a `sign` helper computes the expected HMAC). All 4 pass; "
                     "committed as 3f6a0c2.")
    s.write("claude-code/-home-dev-invoicer/6c11dd4b-7b8c-4904-8a8c-2f9d7a05963a.jsonl")


def session_version_flag() -> None:
    """0.5.0 and --version: cat of a config file the project does not have, `-n` as a string,
    an edit before the read, a misspelled interpreter."""
    s = CC("7b594c74-65d4-47ba-837b-3698306cc6f3", "/home/dev/invoicer", "2.0.31",
           datetime(2026, 1, 15, 8, 41, 16, 700000, tzinfo=timezone.utc))
    s.user("Bump the version to 0.5.0 and make `invoicer --version` print it.")
    [t] = s.assistant(tools=[("Bash", {"command": "cat pyproject.toml setup.cfg",
                                       "description": "Show the packaging files"})])
    s.cat_missing(t, "setup.cfg", stdout=PYPROJECT_042)
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/pyproject.toml"})])
    s.result(t, cat_n(PYPROJECT_042))
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/pyproject.toml",
                                       "old_string": "version = \"0.4.2\"", "new_string": "version = \"0.5.0\""})])
    s.updated(t, "/home/dev/invoicer/pyproject.toml")
    [t] = s.assistant(tools=[("Grep", {"pattern": "__version__|--version", "path": "/home/dev/invoicer/invoicer",
                                       "output_mode": "content", "-n": "true"})])
    s.wrong_type(t, "Grep", "-n", "boolean")
    [t] = s.assistant(tools=[("Grep", {"pattern": "__version__|--version", "path": "/home/dev/invoicer/invoicer",
                                       "output_mode": "content"})])
    s.result(t, "No matches found")
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/__init__.py"})])
    s.result(t, "<system-reminder>Warning: the file exists but the contents are empty.</system-reminder>")
    [t] = s.assistant(text="Nothing defines a version yet. Adding `__version__` to the package.",
                      tools=[("Write", {"file_path": "/home/dev/invoicer/invoicer/__init__.py",
                                        "content": "__version__ = \"0.5.0\"\n"})])
    s.updated(t, "/home/dev/invoicer/invoicer/__init__.py")
    version_edit = {"file_path": "/home/dev/invoicer/invoicer/cli.py",
                    "old_string": "    parser = argparse.ArgumentParser(prog=\"invoicer\")",
                    "new_string": "    parser = argparse.ArgumentParser(prog=\"invoicer\")\n"
                                  "    parser.add_argument(\"--version\", action=\"version\", "
                                  "version=f\"%(prog)s {__version__}\")"}
    [t] = s.assistant(tools=[("Edit", version_edit)])
    s.file_not_read(t)
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/cli.py"})])
    s.result(t, cat_n(CLI_DUE_DAYS_PY))
    [t] = s.assistant(tools=[("Edit", version_edit)])
    s.updated(t, "/home/dev/invoicer/invoicer/cli.py")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/invoicer/cli.py",
                                       "old_string": "from invoicer.store import save_invoice\n",
                                       "new_string": "from invoicer import __version__\n"
                                                     "from invoicer.store import save_invoice\n"})])
    s.updated(t, "/home/dev/invoicer/invoicer/cli.py")
    [t] = s.assistant(tools=[("Bash", {"command": "pyhton -m invoicer --version", "description": "Check the flag"})])
    s.command_not_found(t, "pyhton")
    [t] = s.assistant(tools=[("Bash", {"command": "python -m invoicer --version", "description": "Check the flag"})])
    s.result(t, "invoicer 0.5.0")
    s.assistant(text="Version is 0.5.0 in pyproject.toml and in `invoicer.__version__` (the package had none), and "
                     "`invoicer --version` prints `invoicer 0.5.0`. Keep the two in step on the next release.")
    s.write("claude-code/-home-dev-invoicer/7b594c74-65d4-47ba-837b-3698306cc6f3.jsonl")


def session_failing_test() -> None:
    """A test left behind by the rounding change: a failing run read as information, a test
    file name misspelled, an old string with the wrong indentation, `pytset`, `include`."""
    s = CC("72a69cc6-9491-40d6-b12f-27b15c63fa3a", "/home/dev/invoicer", "2.0.31",
           datetime(2026, 1, 16, 11, 30, 44, 900000, tzinfo=timezone.utc))
    s.user("tests/test_totals.py::test_discount_line has been failing since the rounding change. Fix it: the test or "
           "the code, whichever is wrong.")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q tests/test_totals.py", "description": "Reproduce"})])
    fail = ('Exit code 1\n...F                                                                     [100%]\n'
            '=================================== FAILURES ===================================\n'
            '______________________________ test_discount_line ______________________________\n\n'
            '    def test_discount_line():\n'
            '>       assert line_total(3, "19.99", "0.15") == Decimal("50.9745")\n'
            "E       AssertionError: assert Decimal('50.97') == Decimal('50.9745')\n\n"
            'tests/test_totals.py:20: AssertionError\n'
            '=========================== short test summary info ============================\n'
            "FAILED tests/test_totals.py::test_discount_line - AssertionError: assert Decimal('50.97') == "
            "Decimal('50.9745')\n1 failed, 3 passed in 0.05s")
    s.result(t, fail, error=True, tur="Error: " + fail)
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/tests/test_totls.py"})])
    s.file_not_found(t)
    test_src = TEST_TOTALS_PY + ('\n\ndef test_discounted_line_is_rounded_half_up():\n'
                                 '    assert line_total(1, "10.25", "0.1") == Decimal("9.23")\n'
                                 '\n\ndef test_discount_line():\n'
                                 '    assert line_total(3, "19.99", "0.15") == Decimal("50.9745")\n')
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/tests/test_totals.py", "offset": 14,
                                       "limit": 10})])
    s.result(t, cat_n(test_src, first=14, count=8))
    [t] = s.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/invoicer/totals.py"})])
    s.result(t, cat_n(TOTALS_ROUNDED_PY))
    [t] = s.assistant(text="The code is right: line totals are rounded to cents on purpose since the rounding fix. "
                           "The test still expects the unrounded 50.9745.",
                      tools=[("Edit", {"file_path": "/home/dev/invoicer/tests/test_totals.py",
                                       "old_string": "        assert line_total(3, \"19.99\", \"0.15\") == "
                                                     "Decimal(\"50.9745\")",
                                       "new_string": "        assert line_total(3, \"19.99\", \"0.15\") == "
                                                     "Decimal(\"50.97\")"})])
    s.edit_not_found(t, "        assert line_total(3, \"19.99\", \"0.15\") == Decimal(\"50.9745\")")
    [t] = s.assistant(tools=[("Edit", {"file_path": "/home/dev/invoicer/tests/test_totals.py",
                                       "old_string": "    assert line_total(3, \"19.99\", \"0.15\") == "
                                                     "Decimal(\"50.9745\")",
                                       "new_string": "    assert line_total(3, \"19.99\", \"0.15\") == "
                                                     "Decimal(\"50.97\")"})])
    s.updated(t, "/home/dev/invoicer/tests/test_totals.py")
    [t] = s.assistant(tools=[("Bash", {"command": "pytset -q tests/test_totals.py",
                                       "description": "Run the totals tests"})])
    s.command_not_found(t, "pytset")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q tests/test_totals.py",
                                       "description": "Run the totals tests"})])
    s.result(t, pytest_passed(4, "0.03"))
    [t] = s.assistant(text="Checking for other tests that expect unrounded line totals.",
                      tools=[("Grep", {"pattern": "line_total\\(", "path": "/home/dev/invoicer/tests",
                                       "include": "*.py", "output_mode": "content"})])
    s.unexpected_param(t, "Grep", "include")
    [t] = s.assistant(tools=[("Grep", {"pattern": "line_total\\(", "path": "/home/dev/invoicer/tests", "glob": "*.py",
                                       "output_mode": "content", "-n": True})])
    s.result(t, "/home/dev/invoicer/tests/test_totals.py:7:    assert line_total(2, \"5.00\") == Decimal(\"10.00\")\n"
                "/home/dev/invoicer/tests/test_totals.py:16:    assert line_total(1, \"10.25\", \"0.1\") == "
                "Decimal(\"9.23\")\n"
                "/home/dev/invoicer/tests/test_totals.py:20:    assert line_total(3, \"19.99\", \"0.15\") == "
                "Decimal(\"50.97\")")
    [t] = s.assistant(tools=[("Bash", {"command": "pytest -q", "description": "Run the whole suite"})])
    s.result(t, pytest_passed(31, "0.18"))
    s.assistant(text="The test was wrong, not the code: since the rounding change `line_total` rounds each line "
                     "half-up to cents, so 3 × 19.99 less 15% is 50.97, not 50.9745. Updated the expectation in "
                     "`test_discount_line`; no other test expects unrounded line totals. All 31 tests pass.")
    s.write("claude-code/-home-dev-invoicer/72a69cc6-9491-40d6-b12f-27b15c63fa3a.jsonl")


def session_agent_file() -> None:
    """2.0.x style: the subagent's transcript lives in agent-<id>.jsonl."""
    start = datetime(2026, 1, 15, 11, 5, 0, tzinfo=timezone.utc)
    sid, agent = "9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a", "a3f9c21"
    prompt = ("Review the tests for invoicer/parse.py (tests/test_parse.py). List which behaviours of parse_csv are "
              "covered and which are not (quoted fields, embedded commas, blank lines, BOM). Read-only.")
    summary = ("Covered: header mapping, trailing blank line, empty input. Not covered: quoted fields with "
               "embedded commas, a UTF-8 BOM before the header.")
    a = CC(sid, "/home/dev/invoicer", "2.0.31", start + timedelta(seconds=12), agent_id=agent,
           model="claude-haiku-4-5-20251001")
    a.user(prompt, secs=0)
    [g] = a.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/test/test_parse.py"})])
    a.file_not_found(g)
    [g] = a.assistant(tools=[("Glob", {"pattern": "tests/test_parse*.py"})])
    a.result(g, "/home/dev/invoicer/tests/test_parse.py")
    [r] = a.assistant(tools=[("Read", {"file_path": "/home/dev/invoicer/tests/test_parse.py"})])
    a.result(r, cat_n("from invoicer.parse import parse_csv\n\n\ndef test_header_mapping():\n"
                      "    assert parse_csv(\"id,total\\n1,9.50\\n\") == [{\"id\": \"1\", \"total\": \"9.50\"}]\n\n\n"
                      "def test_trailing_blank_line():\n    assert len(parse_csv(\"id\\n1\\n\\n\")) == 1\n\n\n"
                      "def test_empty():\n    assert parse_csv(\"\") == []"))
    [q] = a.assistant(tools=[("Grep", {"pattern": "quote|BOM", "path": "/home/dev/invoicer/tests", "-i": "yes"})])
    a.wrong_type(q, "Grep", "-i", "boolean")
    [q] = a.assistant(tools=[("Grep", {"pattern": "quote|BOM|\\\\ufeff", "path": "/home/dev/invoicer/tests"})])
    a.result(q, "No matches found")
    a.assistant(text=summary)
    a.write(f"claude-code/-home-dev-invoicer/agent-{agent}.jsonl")

    s = CC(sid, "/home/dev/invoicer", "2.0.31", start)
    s.user("Can you check how well parse.py is tested? Use a subagent so your context stays small.")
    [task] = s.assistant(tools=[("Task", {"description": "Review parse_csv tests", "prompt": prompt,
                                          "subagent_type": "Explore"})])
    s.result(task, [{"type": "text", "text": summary}], secs=30,
             tur={"status": "completed", "prompt": prompt, "agentId": agent,
                  "content": [{"type": "text", "text": summary}], "totalDurationMs": 28110, "totalTokens": 11873,
                  "totalToolUseCount": 3})
    s.assistant(text="The tests cover header mapping, a trailing blank line and empty input. Missing: quoted fields "
                     "with embedded commas and a UTF-8 BOM.")
    s.user("ok, add a test for the quoted-comma case", secs=30)
    [w] = s.assistant(tools=[("Write", {"file_path": "/home/dev/invoicer/tests/test_parse_quotes.py",
                                        "content": "from invoicer.parse import parse_csv\n\n\ndef test_quoted_comma():\n"
                                                   "    rows = parse_csv('id,customer\\n1,\"Acme, Inc.\\n')\n"
                                                   "    assert rows[0][\"customer\"] == \"Acme, Inc.\"\n"})])
    s.result(w, "File created successfully at: /home/dev/invoicer/tests/test_parse_quotes.py")
    [b] = s.assistant(tools=[("Bash", {"command": "pytest -q tests/test_parse_quote.py", "description": "Run new test"})])
    s.result(b, "Exit code 4\nERROR: file or directory not found: tests/test_parse_quote.py\n\nno tests ran in 0.01s",
             error=True, tur="Error: Exit code 4\nERROR: file or directory not found: tests/test_parse_quote.py")
    [b] = s.assistant(tools=[("Bash", {"command": "pytest -q tests/test_parse_quotes.py", "description": "Run new test"})])
    s.result(b, "Exit code 2\n\n==================================== ERRORS ====================================\n"
                "________________ ERROR collecting tests/test_parse_quotes.py _________________\n"
                "E     File \"/home/dev/invoicer/tests/test_parse_quotes.py\", line 5\n"
                "E       rows = parse_csv('id,customer\\n1,\"Acme, Inc.\\n')\n"
                "E                                                    ^\n"
                "E   SyntaxError: unterminated string literal (detected at line 5)\n"
                "=========================== short test summary info ============================\n"
                "ERROR tests/test_parse_quotes.py\n!!!!!!!!!!!!!!!!!!!! Interrupted: 1 error during collection "
                "!!!!!!!!!!!!!!!!!!!!\n1 error in 0.05s", error=True, tur="Error: Exit code 2")
    [e] = s.assistant(text="The closing quote of the CSV field got lost.",
                      tools=[("Edit", {"file_path": "/home/dev/invoicer/tests/test_parse_quotes.py",
                                       "old_string": "parse_csv(\"id,customer\\n1,\\\"Acme, Inc.\\n\")",
                                       "new_string": "parse_csv(\"id,customer\\n1,\\\"Acme, Inc.\\\"\\n\")"})])
    s.edit_not_found(e, "parse_csv(\"id,customer\\n1,\\\"Acme, Inc.\\n\")")
    [e] = s.assistant(text="The file uses single quotes. Fixing the literal.",
                      tools=[("Edit", {"file_path": "/home/dev/invoicer/tests/test_parse_quotes.py",
                                       "old_string": "'id,customer\\n1,\"Acme, Inc.\\n'",
                                       "new_string": "'id,customer\\n1,\"Acme, Inc.\"\\n'"})])
    s.updated(e, "/home/dev/invoicer/tests/test_parse_quotes.py")
    [b] = s.assistant(tools=[("Bash", {"command": "pytest -q tests/test_parse_quotes.py", "description": "Run new test"})])
    s.result(b, pytest_passed(1, "0.02"))
    s.assistant(text="Added tests/test_parse_quotes.py::test_quoted_comma; it passes (csv handles the quoted comma).")
    s.write(f"claude-code/-home-dev-invoicer/{sid}.jsonl")


# --------------------------------------------------------------------------- Codex CLI
def codex_rollout() -> None:
    sid = "0199a0f4-3b1c-7e2d-9c4b-5a6f7e8d9c0b"
    t = [datetime(2026, 1, 15, 10, 12, 3, tzinfo=timezone.utc)]
    lines: list[str] = []

    def ts(secs: float = 1.0) -> str:
        t[0] += timedelta(seconds=secs)
        return t[0].strftime("%Y-%m-%dT%H:%M:%S.") + f"{t[0].microsecond // 1000:03d}Z"

    def put(typ: str, payload: dict, secs: float = 1.0) -> None:
        lines.append(json.dumps({"timestamp": ts(secs), "type": typ, "payload": payload}, ensure_ascii=False))

    def msg(role: str, text: str, kind: str) -> None:
        put("response_item", {"type": "message", "role": role, "content": [{"type": kind, "text": text}]})

    def shell(cmd: str, out: str, code: int = 0, secs: float = 0.4) -> None:
        cid = rid("call_", 24)
        put("response_item", {"type": "function_call", "name": "shell",
                              "arguments": json.dumps({"command": ["bash", "-lc", cmd], "workdir": "/home/dev/invoicer",
                                                       "timeout_ms": 120000}), "call_id": cid})
        usage()
        put("response_item", {"type": "function_call_output", "call_id": cid,
                              "output": json.dumps({"output": out, "metadata": {"exit_code": code,
                                                                                "duration_seconds": secs}})}, secs)

    def patch(body: str, out: str, code: int = 0) -> None:
        cid = rid("call_", 24)
        put("response_item", {"type": "custom_tool_call", "status": "completed", "call_id": cid, "name": "apply_patch",
                              "input": body})
        usage()
        put("response_item", {"type": "custom_tool_call_output", "call_id": cid,
                              "output": json.dumps({"output": out, "metadata": {"exit_code": code,
                                                                                "duration_seconds": 0.0}})})

    total = [0]

    def usage(inp: int = 9000, cached: int = 7680, out: int = 180) -> None:
        total[0] += inp + out
        put("event_msg", {"type": "token_count", "info": {
            "total_token_usage": {"input_tokens": total[0], "cached_input_tokens": cached, "output_tokens": out,
                                  "reasoning_output_tokens": 64, "total_tokens": total[0]},
            "last_token_usage": {"input_tokens": inp, "cached_input_tokens": cached, "output_tokens": out,
                                 "reasoning_output_tokens": 64, "total_tokens": inp + out},
            "model_context_window": 272000}, "rate_limits": {"primary": {"used_percent": 3.0}}}, 0.1)

    def reason(text: str) -> None:
        put("response_item", {"type": "reasoning", "summary": [{"type": "summary_text", "text": text}],
                              "content": None, "encrypted_content": "gAAAAAB" + rid("", 80)})
        put("event_msg", {"type": "agent_reasoning", "text": text}, 0.1)

    put("session_meta", {"id": sid, "timestamp": ts(0), "cwd": "/home/dev/invoicer", "originator": "codex_cli_rs",
                         "cli_version": "0.46.0", "instructions": None,
                         "git": {"commit_hash": "4e1c2ab9f03d51c7a2b8e6d4f0a9c3b1e7d5f2a8", "branch": "main",
                                 "repository_url": "git@example.com:dev/invoicer.git"}}, 0)
    msg("user", "<user_instructions>\n\nRun `pytest -q` before finishing. Keep changes minimal.\n\n</user_instructions>",
        "input_text")
    msg("user", "<environment_context>\n  <cwd>/home/dev/invoicer</cwd>\n  <approval_policy>on-request</approval_policy>\n"
                "  <sandbox_mode>workspace-write</sandbox_mode>\n  <network_access>restricted</network_access>\n"
                "  <shell>bash</shell>\n</environment_context>", "input_text")
    put("turn_context", {"cwd": "/home/dev/invoicer", "approval_policy": "on-request",
                         "sandbox_policy": {"mode": "workspace-write", "network_access": False},
                         "model": "gpt-5-codex", "effort": "medium", "summary": "auto"})
    task = "`invoicer export --format json` prints Decimal('12.50') instead of 12.50. Fix it."
    msg("user", task, "input_text")
    put("event_msg", {"type": "user_message", "message": task, "kind": "plain"}, 0.1)
    reason("**Locating the JSON export path**")
    shell("rg -n \"format == .json.|json.dumps\" invoicer", "invoicer/cli.py:41:        print(json.dumps(rows, default=repr))\n")
    reason("**Inspecting the CLI export code**")
    shell("cat invoicer/export_cli.py", "cat: invoicer/export_cli.py: No such file or directory\n", code=1)
    shell("sed -n 30,50p invoicer/cli.py",
          "def export(args):\n    invoices = load(args.path)\n    rows = to_rows(invoices)\n    if args.format == \"json\":\n"
          "        print(json.dumps(rows, default=repr))\n    else:\n        write_csv(rows, sys.stdout)\n")
    patch("*** Begin Patch\n*** Update File: invoicer/cli.py\n@@\n-        print(json.dumps(rows, default=repr))\n"
          "+        print(json.dumps(rows, default=str))\n*** End Patch\n",
          "Success. Updated the following files:\nM invoicer/cli.py\n")
    shell("pytest -q", "F..................                                                      [100%]\n"
          "=================================== FAILURES ===================================\n"
          "___________________________ test_export_json_numbers ___________________________\n"
          ">       assert json.loads(out)[0][\"total\"] == 12.5\nE       AssertionError: assert '12.50' == 12.5\n\n"
          "tests/test_cli.py:27: AssertionError\n=========================== short test summary info "
          "============================\nFAILED tests/test_cli.py::test_export_json_numbers - AssertionError\n"
          "1 failed, 19 passed in 0.21s\n", code=1, secs=1.3)
    reason("**Emitting numbers, not strings**")
    patch("*** Begin Patch\n*** Update File: invoicer/cli.py\n@@\n-        print(json.dumps(rows, default=repr))\n"
          "+        print(json.dumps(rows, default=float))\n*** End Patch\n",
          "apply_patch verification failed: Failed to find expected lines in invoicer/cli.py:\n"
          "        print(json.dumps(rows, default=repr))", code=1)
    patch("*** Begin Patch\n*** Update File: invoicer/cli.py\n@@\n-        print(json.dumps(rows, default=str))\n"
          "+        print(json.dumps(rows, default=float))\n*** End Patch\n",
          "Success. Updated the following files:\nM invoicer/cli.py\n")
    shell("pytets -q", "bash: line 1: pytets: command not found\n", code=127)
    shell("pytest -q", "....................                                                     [100%]\n20 passed in 0.19s\n",
          secs=1.2)
    msg("assistant", "Fixed `invoicer/cli.py`: JSON export now serializes Decimal values as numbers "
                     "(`default=float`), so totals print as `12.5`. `pytest -q`: 20 passed.", "output_text")
    usage(out=60)
    put("event_msg", {"type": "agent_message", "message": "Fixed invoicer/cli.py: JSON export now serializes Decimal "
                                                          "values as numbers."}, 0.1)
    put("event_msg", {"type": "task_complete", "last_agent_message": "Fixed invoicer/cli.py."}, 0.1)
    p = HERE / "codex/2026/01/15/rollout-2026-01-15T10-12-03-0199a0f4-3b1c-7e2d-9c4b-5a6f7e8d9c0b.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- OpenAI messages
SUPPORT_TOOLS = [
    {"type": "function", "function": {"name": "lookup_invoice", "description": "Fetch an invoice by id.",
                                      "parameters": {"type": "object", "properties": {"invoice_id": {"type": "string"}},
                                                     "required": ["invoice_id"]}}},
    {"type": "function", "function": {"name": "refund_invoice", "description": "Refund a paid invoice, fully or partly.",
                                      "parameters": {"type": "object", "properties": {
                                          "invoice_id": {"type": "string"}, "amount": {"type": "string"}},
                                          "required": ["invoice_id"]}}},
    {"type": "function", "function": {"name": "send_email", "description": "Email the customer.",
                                      "parameters": {"type": "object", "properties": {
                                          "to": {"type": "string"}, "subject": {"type": "string"},
                                          "body": {"type": "string"}}, "required": ["to", "subject", "body"]}}},
]
SUPPORT_SYSTEM = "You are the billing assistant of Invoicer. Use the tools; never invent invoice data."


def _call(cid: str, name: str, args: dict) -> dict:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def openai_file() -> None:
    inv42 = json.dumps({"id": "INV-1042", "customer": "Acme, Inc.", "status": "paid", "total": "240.00",
                        "paid_at": "2026-01-09"})
    convs = [
        [{"role": "system", "content": SUPPORT_SYSTEM},
         {"role": "user", "content": "What's the status of invoice INV-1042?"},
         {"role": "assistant", "content": None, "tool_calls": [_call("call_a1", "lookup_invoice", {"invoice_id": "INV-1042"})]},
         {"role": "tool", "tool_call_id": "call_a1", "content": inv42},
         {"role": "assistant", "content": "INV-1042 (Acme, Inc.) was paid in full on 2026-01-09: 240.00."}],
        [{"role": "system", "content": SUPPORT_SYSTEM},
         {"role": "user", "content": "Please refund 40 on INV-1042, the customer was overcharged."},
         {"role": "assistant", "content": "Let me check the invoice first.",
          "tool_calls": [_call("call_b1", "lookup_invoice", {"invoice_id": "INV-1042"})]},
         {"role": "tool", "tool_call_id": "call_b1", "content": inv42},
         {"role": "assistant", "content": None,
          "tool_calls": [_call("call_b0", "refund_invoice", {"amount": "40.00"})]},
         {"role": "tool", "tool_call_id": "call_b0", "content": "Error: missing required parameter 'invoice_id'"},
         {"role": "assistant", "content": None,
          "tool_calls": [_call("call_b2", "refund_invoice", {"invoice_id": "INV-1042", "amount": "40.00"})]},
         {"role": "tool", "tool_call_id": "call_b2", "content": json.dumps({"refund_id": "RF-311", "amount": "40.00"})},
         {"role": "assistant", "content": "Refunded 40.00 on INV-1042 (refund RF-311)."}],
        [{"role": "system", "content": SUPPORT_SYSTEM},
         {"role": "user", "content": "Look up INV-0042 for me"},
         {"role": "assistant", "content": None, "tool_calls": [_call("call_c1", "lookup_invoice", {"invoice_id": "INV-0042"})]},
         {"role": "tool", "tool_call_id": "call_c1", "content": json.dumps({"error": "invoice INV-0042 does not exist"})},
         {"role": "assistant", "content": "I can't find INV-0042. Invoice ids have four digits after INV-, e.g. INV-1042. "
                                          "Could you double-check the number?"}],
        [{"role": "system", "content": SUPPORT_SYSTEM},
         {"role": "user", "content": "Refund INV-1042 completely."},
         {"role": "assistant", "content": None, "tool_calls": [_call("call_d1", "refund_invoice", {"invoice_id": "INV-1042"})]},
         {"role": "tool", "tool_call_id": "call_d1",
          "content": "Error: permission denied: full refunds above 200.00 need a supervisor"},
         {"role": "assistant", "content": "I'm not allowed to issue a full refund above 200.00. I've noted the request; "
                                          "a supervisor has to approve it."}],
        [{"role": "system", "content": SUPPORT_SYSTEM},
         {"role": "user", "content": "Email Acme that their refund went through."},
         {"role": "assistant", "content": None, "tool_calls": [
             _call("call_e0", "lookup_customer", {"name": "Acme, Inc."})]},
         {"role": "tool", "tool_call_id": "call_e0", "content": "Error: unknown tool lookup_customer"},
         {"role": "assistant", "content": None, "tool_calls": [
             _call("call_e1", "send_email", {"to": "billing@acme.example", "subject": "Refund RF-311 processed",
                                             "body": "Hello, we refunded 40.00 on invoice INV-1042. Regards, Invoicer"})]},
         {"role": "tool", "tool_call_id": "call_e1", "content": "{\"queued\": true}"},
         {"role": "assistant", "content": "Done — the email to billing@acme.example is queued."}],
        [{"role": "system", "content": SUPPORT_SYSTEM},
         {"role": "user", "content": "How do I change the currency on my account?"},
         {"role": "assistant", "content": "Go to Settings → Billing → Currency. The change applies to new invoices only."}],
    ]
    out = [json.dumps({"messages": c, "tools": SUPPORT_TOOLS, "id": f"support-{i:03d}"}, ensure_ascii=False)
           for i, c in enumerate(convs, 1)]
    p = HERE / "openai/support-bot-2026-01.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(out) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- ShareGPT
def sharegpt_file() -> None:
    tools = json.dumps([t["function"] for t in SUPPORT_TOOLS[:1]])
    convs = [
        {"conversations": [
            {"from": "human", "value": "How do I round a Decimal to cents, half-up, in Python?"},
            {"from": "gpt", "value": "Use quantize with ROUND_HALF_UP:\n\n```python\nfrom decimal import Decimal, "
                                     "ROUND_HALF_UP\nDecimal('10.865').quantize(Decimal('0.01'), rounding=ROUND_HALF_UP)"
                                     "  # Decimal('10.87')\n```"},
            {"from": "human", "value": "And why does round(10.865, 2) give 10.86?"},
            {"from": "gpt", "value": "10.865 is not exactly representable as a float (it is stored as "
                                     "10.86499999...), and round() also rounds half-to-even. Use Decimal for money."}]},
        {"system": "You are a helpful assistant for the Invoicer CLI.", "tools": tools, "conversations": [
            {"from": "human", "value": "Is INV-1042 paid?"},
            {"from": "function_call", "value": json.dumps({"name": "lookup_invoice", "arguments": {"id": "INV-1042"}})},
            {"from": "observation", "value": "Error: unexpected argument 'id' (required parameter: invoice_id)"},
            {"from": "function_call", "value": json.dumps({"name": "lookup_invoice", "arguments": {"invoice_id": "INV-1042"}})},
            {"from": "observation", "value": json.dumps({"id": "INV-1042", "status": "paid", "total": "240.00"})},
            {"from": "gpt", "value": "Yes, INV-1042 is paid (240.00)."}]},
        {"system": "You are a helpful assistant for the Invoicer CLI.", "tools": tools, "conversations": [
            {"from": "human", "value": "Show me INV-77"},
            {"from": "gpt", "value": "Looking it up."},
            {"from": "function_call", "value": json.dumps({"name": "lookup_invoice", "arguments": {"invoice_id": "INV-77"}})},
            {"from": "observation", "value": "Error: invoice INV-77 not found"},
            {"from": "gpt", "value": "There is no invoice INV-77. Invoice ids look like INV-1042."}]},
        {"conversations": [
            {"from": "system", "value": "Answer briefly."},
            {"from": "human", "value": "What does `invoicer import` accept?"},
            {"from": "gpt", "value": "A CSV file with a header row: id, customer, qty, unit_price, and optional discount."}]},
        {"conversations": [
            {"from": "human", "value": "My CSV has a BOM and the first column name comes out as '\\ufeffid'."},
            {"from": "gpt", "value": "Open the file with encoding='utf-8-sig'; it strips the BOM."},
            {"from": "human", "value": "Thanks, that worked."},
            {"from": "gpt", "value": "Glad it helped!"}]},
    ]
    p = HERE / "sharegpt/invoicer-helpdesk.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(json.dumps(c, ensure_ascii=False) for c in convs) + "\n", encoding="utf-8")


def openhands_output() -> None:
    """An OpenHands run output (one JSON object per run): the agent fixes the rounding bug."""
    t0 = datetime(2026, 1, 16, 9, 0, 0, tzinfo=timezone.utc)

    def ts(sec: int) -> str:
        return (t0 + timedelta(seconds=sec)).isoformat()

    def action(eid, sec, name, fn, call_id, resp_id, args, pt, ct):
        return {"id": eid, "timestamp": ts(sec), "source": "agent", "action": name, "message": f"{name}", "args": args,
                "tool_call_metadata": {"function_name": fn, "tool_call_id": call_id,
                                       "model_response": {"id": resp_id, "model": "gpt-4o-2024-08-06",
                                                          "usage": {"prompt_tokens": pt, "completion_tokens": ct}}}}

    def obs(eid, sec, name, cause, content, exit_code=None):
        e = {"id": eid, "timestamp": ts(sec), "source": "environment", "observation": name, "cause": cause,
             "content": content, "message": content[:40], "extras": {}}
        if exit_code is not None:
            e["extras"] = {"command": "", "metadata": {"exit_code": exit_code}}
        return e

    failing = ("F.\n=================================== FAILURES ===================================\n"
               "____________________________ test_total_rounds_half_up ____________________________\n"
               "    assert invoice_total([(\"1\", \"0.125\")], \"0\") == Decimal(\"0.13\")\n"
               "E   AssertionError: assert Decimal('0.12') == Decimal('0.13')\n"
               "1 failed, 1 passed in 0.05s")
    source = ("from decimal import Decimal, ROUND_HALF_EVEN\n\n\n"
              "def invoice_total(lines, tax_rate):\n"
              "    total = sum(Decimal(q) * Decimal(p) for q, p in lines)\n"
              "    total *= 1 + Decimal(tax_rate)\n"
              "    return total.quantize(Decimal(\"0.01\"), rounding=ROUND_HALF_EVEN)\n")
    history = [
        {"id": 0, "timestamp": ts(0), "source": "agent", "action": "system", "message": "system prompt",
         "args": {"content": "You are OpenHands agent, a helpful AI assistant that can interact with a computer "
                             "to solve tasks.", "tools": []}},
        {"id": 1, "timestamp": ts(1), "source": "user", "action": "message", "message": "task",
         "args": {"content": "Invoice totals must round half up (0.125 -> 0.13). tests/test_totals.py fails. "
                             "Fix invoicer/totals.py.", "image_urls": None}},
        action(2, 3, "run", "execute_bash", "toolu_oh_01", "chatcmpl-oh-1",
               {"command": "python -m pytest -q tests/test_totals.py", "is_input": False,
                "thought": "Let me run the failing test first."}, 2210, 41),
        obs(3, 5, "run", 2, failing, exit_code=1),
        action(31, 5, "run", "execute_bash", "toolu_oh_01b", "chatcmpl-oh-1b",
               {"command": "cat /workspace/invoicer/total.py", "is_input": False,
                "thought": "Let me look at the totals module."}, 2300, 30),
        obs(32, 6, "run", 31, "cat: /workspace/invoicer/total.py: No such file or directory", exit_code=1),
        action(4, 7, "read", "str_replace_editor", "toolu_oh_02", "chatcmpl-oh-2",
               {"path": "/workspace/invoicer/totals.py", "command": "view",
                "thought": "The total rounds half to even. Let me look at the code."}, 2480, 38),
        obs(5, 7, "read", 4, source),
        action(6, 10, "edit", "str_replace_editor", "toolu_oh_03", "chatcmpl-oh-3",
               {"path": "/workspace/invoicer/totals.py", "command": "str_replace",
                "old_str": "ROUND_HALF_EVEN", "new_str": "ROUND_HALF_UP",
                "thought": "Switch both the import and the quantize call to ROUND_HALF_UP."}, 2700, 95),
        obs(7, 10, "edit", 6, "The file /workspace/invoicer/totals.py has been edited: 2 occurrences of "
                              "ROUND_HALF_EVEN replaced."),
        action(8, 12, "run", "execute_bash", "toolu_oh_04", "chatcmpl-oh-4",
               {"command": "python -m pytest -q tests/test_totals.py", "is_input": False,
                "thought": "Run the tests again."}, 2850, 30),
        obs(9, 14, "run", 8, "..\n2 passed in 0.04s", exit_code=0),
        action(10, 15, "finish", "finish", "toolu_oh_05", "chatcmpl-oh-5",
               {"final_thought": "Totals now round half up; both tests pass.", "outputs": {},
                "thought": "Done."}, 2950, 25),
    ]
    run = {
        "instance_id": "invoicer__invoicer-12",
        "instruction": "Invoice totals must round half up (0.125 -> 0.13). tests/test_totals.py fails. "
                       "Fix invoicer/totals.py.",
        "metadata": {"agent_class": "CodeActAgent", "llm_config": {"model": "gpt-4o-2024-08-06"},
                     "max_iterations": 30, "dataset": "invoicer-bugs"},
        "history": history,
        "metrics": {"accumulated_cost": 0.0421},
        "error": None,
        "test_result": {"git_patch": "diff --git a/invoicer/totals.py b/invoicer/totals.py\n"
                                     "-from decimal import Decimal, ROUND_HALF_EVEN\n"
                                     "+from decimal import Decimal, ROUND_HALF_UP\n",
                        "report": {"resolved": True, "tests_passed": 2, "tests_failed": 0}},
    }
    p = HERE / "openhands/invoicer__invoicer-12.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(run, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _attr(key: str, value) -> dict:
    if isinstance(value, bool):
        v = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    elif isinstance(value, float):
        v = {"doubleValue": value}
    else:
        v = {"stringValue": value if isinstance(value, str) else json.dumps(value)}
    return {"key": key, "value": v}


def otel_spans() -> None:
    """OTLP JSON file exporter output (one ExportTraceServiceRequest per line) of a small
    helpdesk app: one trace with OpenTelemetry GenAI attributes (two chat calls around a
    tool run), one trace instrumented with OpenInference attributes (one LLM call)."""
    t0 = 1768554000 * 10**9  # 2026-01-16T09:00:00Z in ns

    def span(trace, sid, parent, name, start_ms, end_ms, attrs, status=0):
        return {"traceId": trace, "spanId": sid, "parentSpanId": parent or "", "name": name, "kind": 1,
                "startTimeUnixNano": str(t0 + start_ms * 10**6), "endTimeUnixNano": str(t0 + end_ms * 10**6),
                "attributes": [_attr(k, v) for k, v in attrs.items()], "status": {"code": status}}

    tr1 = "5f0c1e2d3c4b5a69788796a5b4c3d2e1"
    system = [{"type": "text", "content": "You answer questions about invoices. Use lookup_invoice."}]
    user = {"role": "user", "parts": [{"type": "text", "content": "What is the total of INV-1042, tax included?"}]}
    call = {"role": "assistant", "parts": [{"type": "tool_call", "id": "call_otel_1", "name": "lookup_invoice",
                                            "arguments": {"invoice_id": "INV-1042"}}], "finish_reason": "tool_call"}
    result = {"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_otel_1",
                                         "result": {"id": "INV-1042", "subtotal": "200.00", "tax_rate": "0.20",
                                                    "total": "240.00"}}]}
    answer = {"role": "assistant", "parts": [{"type": "text", "content": "INV-1042 comes to 240.00 with 20% tax "
                                                                          "(200.00 before tax)."}],
              "finish_reason": "stop"}
    tools = [{"type": "function", "name": "lookup_invoice", "description": "Fetch an invoice by id.",
              "parameters": {"type": "object", "properties": {"invoice_id": {"type": "string"}},
                             "required": ["invoice_id"]}}]
    spans1 = [
        span(tr1, "a1b2c3d4e5f60001", None, "invoke_agent helpdesk", 0, 2400,
             {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "helpdesk"}),
        span(tr1, "a1b2c3d4e5f60002", "a1b2c3d4e5f60001", "chat gpt-4o-mini", 10, 900,
             {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
              "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.usage.input_tokens": 182,
              "gen_ai.usage.output_tokens": 19, "gen_ai.system_instructions": system,
              "gen_ai.input.messages": [user], "gen_ai.output.messages": [call],
              "gen_ai.tool.definitions": tools}),
        span(tr1, "a1b2c3d4e5f60003", "a1b2c3d4e5f60001", "execute_tool lookup_invoice", 910, 950,
             {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "lookup_invoice",
              "gen_ai.tool.call.id": "call_otel_1", "gen_ai.tool.call.arguments": {"invoice_id": "INV-1042"},
              "gen_ai.tool.call.result": result["parts"][0]["result"]}),
        span(tr1, "a1b2c3d4e5f60004", "a1b2c3d4e5f60001", "chat gpt-4o-mini", 960, 2300,
             {"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o-mini",
              "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.usage.input_tokens": 240,
              "gen_ai.usage.output_tokens": 24, "gen_ai.usage.cache_read.input_tokens": 128,
              "gen_ai.system_instructions": system, "gen_ai.input.messages": [user, call, result],
              "gen_ai.output.messages": [answer], "gen_ai.tool.definitions": tools}),
    ]
    tr2 = "6a1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f"
    oi = {"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini-2024-07-18",
          "llm.input_messages.0.message.role": "system",
          "llm.input_messages.0.message.content": "Answer briefly.",
          "llm.input_messages.1.message.role": "user",
          "llm.input_messages.1.message.content": "Can I export invoices as CSV?",
          "llm.output_messages.0.message.role": "assistant",
          "llm.output_messages.0.message.content": "Yes: `invoicer export --format csv > invoices.csv`.",
          "llm.token_count.prompt": 31, "llm.token_count.completion": 14}
    spans2 = [span(tr2, "b1b2c3d4e5f60001", None, "ChatCompletion", 5000, 5600, oi)]
    resource = {"attributes": [_attr("service.name", "invoicer-helpdesk")]}
    scope = {"name": "opentelemetry.instrumentation.openai", "version": "0.40.0"}
    lines = [{"resourceSpans": [{"resource": resource, "scopeSpans": [{"scope": scope, "spans": spans}]}]}
             for spans in (spans1, spans2)]
    p = HERE / "otel/helpdesk-spans.jsonl"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n", encoding="utf-8")


def main(out: Path | None = None) -> None:
    global HERE
    if out is not None:
        HERE = Path(out)
    RNG.seed(SEED)
    session_main()
    session_sidechain()
    session_agent_file()
    codex_rollout()
    openai_file()
    sharegpt_file()
    openhands_output()
    otel_spans()
    # added later: they draw their ids after every file above (which therefore stay as they were)
    session_release()
    session_currency()
    session_webhook()
    session_due_days()
    # added later still, after those
    session_export_currency()
    session_line_rounding()
    session_csv_header()
    session_empty_input()
    session_rename_fmt()
    session_webhook_tests()
    session_version_flag()
    session_failing_test()


if __name__ == "__main__":
    main()
