"""A small bundled set of sample-like trace_turns rows (eight agent sessions on this project).

Used by the tests and the benchmark, and by anyone who wants playbooks before ingesting
real sessions. The rows follow the TRACE_TURNS schema (tool calls in OpenAI format).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

# (session key, task, [steps], final answer). A step: ("bash", command, ok, output)
# or ("edit", path, ok, output) or ("read", path, ok, output).
SESSIONS = [
    ("s-pairs-test", "Fix the failing test in tests/pairs/test_builder.py",
     [("bash", "pytest -q tests/pairs/test_builder.py", False, "FAILED test_error_site_pair - KeyError: 'chosen'"),
      ("read", "assets/pairs/builder.py", True, "def build_pairs(steps, responses): ..."),
      ("edit", "assets/pairs/builder.py", True, "ok"),
      ("bash", "pytest -q tests/pairs/test_builder.py", True, "5 passed in 0.4s")],
     "The pair builder indexed teacher responses by 'chosen' before the consensus step set it. "
     "build_pairs now picks the chosen answer first.\n- Verify: pytest -q tests/pairs/test_builder.py passes"),
    ("s-export-limit", "Add a --limit flag to the tracelake export command",
     [("read", "dagster_project/export.py", True, "def add_export_commands(subparsers): ..."),
      ("edit", "dagster_project/export.py", True, "ok"),
      ("bash", "pytest -q tests/pairs/test_export.py", True, "3 passed")],
     "add_export_commands gained --limit N; export_table stops after N rows.\n"
     "Check that `tracelake export --table sft_examples --limit 5` writes 5 lines."),
    ("s-lake-retry", "Make the Delta append retry on CommitFailedError",
     [("read", "resources/lake.py", True, "class DeltaLake(dg.ConfigurableResource): ..."),
      ("edit", "resources/lake.py", True, "ok"),
      ("bash", "pytest -q tests/resources/test_lake.py", False, "FAILED test_concurrent_append - CommitFailedError"),
      ("bash", "git diff --stat", True, "1 file changed")],
     "I added a retry loop around write_deltalake, but the concurrent append test still fails."),
    ("s-sensor", "Check that the sessions sensor adds a partition per new session file",
     [("read", "sensors/sessions.py", True, "def session_sensor(context): ..."),
      ("bash", "pytest -q tests/sensors/test_sessions_sensor.py", True, "4 passed")],
     "The sensor returns SensorResult with dynamic_partitions_requests=[SESSIONS.build_add_request(keys)] "
     "and keeps a cursor of seen files.\n- Verify: pytest -q tests/sensors/test_sessions_sensor.py passes\n"
     "- Confirm a new file under TRACELAKE_SESSIONS_DIR becomes a partition on the next tick"),
    ("s-backfill", "Why does a multi-partition backfill overwrite the whole trace_turns table?",
     [],
     "dagster-deltalake's IO manager falls back to a full overwrite when a run has several partition keys. "
     "tracelake writes through DeltaLake.replace_partitions(spec, rows, partition_keys_of(context)), which "
     "overwrites with the predicate session_key IN (...) for all keys of the run; the assets use "
     "backfill_policy=SESSION_BACKFILL.\n1. Verify with a two-key run that other partitions keep their rows\n"
     "2. Check the Delta history shows one overwrite with a predicate"),
    ("s-deltalake-upgrade", "Upgrade deltalake and fix the write_deltalake predicate call",
     [("bash", "pip install -U deltalake", False, "ERROR: No matching distribution found (offline)"),
      ("edit", "resources/lake.py", True, "ok"),
      ("bash", "python -m pytest tests/resources", False, "TypeError: write_deltalake() got an unexpected keyword")],
     ""),
    ("s-dedup-recipe", "Add a data-juicer recipe that deduplicates normalized pairs",
     [("edit", "recipes/replaysim/dedup.yaml", True, "ok"),
      ("bash", "python -m assets.pairs.normalize --recipe recipes/replaysim/dedup.yaml", False,
       "ImportError: runtime install blocked: simhash"),
      ("bash", "pip install simhash-pybind", True, "Successfully installed"),
      ("bash", "python -m assets.pairs.normalize --recipe recipes/replaysim/dedup.yaml", True, "kept 120 of 134")],
     "recipes/replaysim/dedup.yaml runs document_deduplicator then document_simhash_deduplicator; "
     "pair_rejections records each drop with its op.\n- Ensure pair_rejections has op=document_deduplicator rows"),
    ("s-teacher-cache", "Cache teacher responses by request hash so reruns cost nothing",
     [("read", "resources/teachers.py", True, "class TeacherPool: ..."),
      ("edit", "assets/teachers/assets.py", True, "ok"),
      ("bash", "pytest -q tests/teachers", True, "9 passed")],
     "teacher_responses is merged on (step_id, teacher) and request_hash is the cache key; a rerun reads "
     "cached rows and sets cached=true.\n- Verify: pytest -q tests/teachers passes\n"
     "- Check the second materialization reports cost_usd 0"),
]

_TOOL = {"bash": "Bash", "edit": "Edit", "read": "Read"}


def sample_trace_rows(start: datetime | None = None) -> list[dict]:
    """TRACE_TURNS rows of the sample sessions."""
    start = start or datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc)
    rows: list[dict] = []
    for s_i, (key, task, steps, final) in enumerate(SESSIONS):
        idx = 0
        ts = start + timedelta(hours=s_i)

        def add(role, kind, **kw):
            nonlocal idx
            rows.append({"session_key": key, "session_id": key, "source_format": "claude_code",
                         "turn_id": f"{key}:{idx}", "turn_index": idx, "role": role, "kind": kind,
                         "timestamp": ts + timedelta(seconds=idx), **kw})
            idx += 1

        add("user", "message", content=task)
        for j, (kind, arg, ok, output) in enumerate(steps):
            cid = f"{key}-call{j}"
            args = {"command": arg} if kind == "bash" else {"file_path": arg}
            if kind == "edit":
                args.update(old_string="x", new_string="y")
            add("assistant", "message", content="",
                tool_calls=json.dumps([{"id": cid, "type": "function",
                                        "function": {"name": _TOOL[kind], "arguments": json.dumps(args)}}]))
            add("tool", "tool_result", content=output, tool_call_id=cid, tool_name=_TOOL[kind],
                tool_error=not ok, error_kind=None if ok else "tool_error")
        if final:
            add("assistant", "message", content=final)
    return rows
