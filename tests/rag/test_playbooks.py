"""Playbook derivation from trace rows, accepted training data and accepted rag runs."""

import json
from datetime import datetime, timezone

from assets.rag.playbooks import (
    derive_from_runs,
    derive_from_training,
    derive_playbooks,
    derive_trace_playbook,
    program_key,
    reuse_embeddings,
    score_outcome,
)
from assets.rag.samples import sample_trace_rows


def _call(cid, name, **args):
    return json.dumps([{"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}])


def _turns(key, spec):
    rows = []
    for i, (role, kind, extra) in enumerate(spec):
        rows.append({"session_key": key, "turn_id": f"{key}:{i}", "turn_index": i, "role": role, "kind": kind,
                     "source_format": "claude_code", **extra})
    return rows


def test_sample_sessions_get_labels_from_outcome_signals():
    by_key = {p["session_key"]: p for p in derive_playbooks(turns=sample_trace_rows())}
    assert len(by_key) == 8
    assert by_key["s-pairs-test"]["label"] == "accepted"  # failing pytest fixed by a later passing pytest
    assert by_key["s-pairs-test"]["n_tool_errors"] == 1 and by_key["s-pairs-test"]["n_unresolved_errors"] == 0
    assert by_key["s-lake-retry"]["label"] == "partially_accepted"  # pytest failed; `git diff` fixes nothing
    assert by_key["s-lake-retry"]["n_unresolved_errors"] == 1
    assert by_key["s-deltalake-upgrade"]["label"] == "rejected"  # two unresolved errors, no final answer
    pb = by_key["s-pairs-test"]
    assert pb["task"] == "Fix the failing test in tests/pairs/test_builder.py"
    assert pb["files_edited"] == ["assets/pairs/builder.py"]
    assert pb["commands"] == ["pytest -q tests/pairs/test_builder.py"] * 2
    assert "Verify: `pytest -q tests/pairs/test_builder.py` passes" in pb["validation_steps"]
    assert "Ran `pytest -q tests/pairs/test_builder.py` → failed (tool_error)" in pb["content"]
    assert "Outcome: The pair builder" in pb["content"]
    assert pb["source_step_ids"][0] == "s-pairs-test:1" and not pb["mined"]
    assert {"bash", "edit", "read", "py", "errors-resolved"} <= set(pb["tags"])


def test_task_skips_sidechains_summaries_and_wrappers_and_uses_agent_step_ids():
    turns = _turns("k", [
        ("user", "message", {"content": "<command-name>/clear</command-name>"}),
        ("user", "message", {"content": "Summary of the earlier conversation", "is_compact_summary": True}),
        ("user", "message", {"content": "subagent prompt", "is_sidechain": True}),
        ("user", "message", {"content": "Add a README section about the CLI"}),
        ("assistant", "message", {"content": "", "tool_calls": _call("c1", "Write", file_path="README.md")}),
        ("tool", "tool_result", {"content": "ok", "tool_call_id": "c1", "tool_error": False}),
        ("assistant", "message", {"content": "Done.\n- Check: README renders"}),
    ])
    pb = derive_trace_playbook("k", turns, step_ids=["st1", "st2"])
    assert pb["task"] == "Add a README section about the CLI"
    assert pb["files_edited"] == ["README.md"] and pb["source_step_ids"] == ["st1", "st2"]
    assert pb["validation_steps"] == ["Check: README renders"] and pb["label"] == "accepted"
    assert derive_trace_playbook("k", turns[:3]) is None  # no real user request


def test_unresolved_error_is_per_tool_and_program():
    turns = _turns("k", [
        ("user", "message", {"content": "make it work"}),
        ("assistant", "message", {"tool_calls": _call("a", "Bash", command="cd repo && pytest -q")}),
        ("tool", "tool_result", {"tool_call_id": "a", "tool_error": True, "content": "1 failed"}),
        ("assistant", "message", {"tool_calls": _call("b", "Edit", file_path="x.py")}),
        ("tool", "tool_result", {"tool_call_id": "b", "tool_error": True, "content": "old_string not found"}),
        ("assistant", "message", {"tool_calls": _call("c", "Edit", file_path="x.py")}),
        ("tool", "tool_result", {"tool_call_id": "c", "tool_error": False, "content": "ok"}),
        ("assistant", "message", {"tool_calls": _call("d", "Bash", command="ls")}),
        ("tool", "tool_result", {"tool_call_id": "d", "tool_error": False, "content": "x.py"}),
        ("assistant", "message", {"content": "I think it works now."}),
    ])
    pb = derive_trace_playbook("k", turns)
    assert pb["n_tool_errors"] == 2 and pb["n_unresolved_errors"] == 1  # Edit fixed; pytest never passed
    assert pb["label"] == "partially_accepted"
    assert program_key("cd repo && uv run pytest -q") == "pytest"
    assert program_key("python -m pytest tests") == "python -m pytest"


def test_score_outcome_and_teacher_agreement():
    assert score_outcome(n_errors=0, n_unresolved=0, has_outcome=True, teacher_agreement=None)[:2] == (1.0, "accepted")
    s, label, reasons = score_outcome(n_errors=0, n_unresolved=0, has_outcome=True, teacher_agreement=0.0)
    assert (s, label) == (0.7, "partially_accepted") and "teacher_agreement=0.00" in reasons
    assert score_outcome(n_errors=3, n_unresolved=2, has_outcome=False, teacher_agreement=None)[1] == "rejected"
    # teachers preferring the original answer at the session's judged steps keeps it accepted
    pairs = [{"session_key": "s-sensor", "chosen_source": "original", "rejected_source": "t1"},
             {"session_key": "s-export-limit", "chosen_source": "t1", "rejected_source": "original"}]
    by_key = {p["session_key"]: p for p in derive_playbooks(turns=sample_trace_rows(), pairs=pairs)
              if p["source_kind"] == "trace"}
    assert by_key["s-sensor"]["teacher_agreement"] == 1.0 and by_key["s-sensor"]["label"] == "accepted"
    assert by_key["s-export-limit"]["teacher_agreement"] == 0.0
    assert by_key["s-export-limit"]["label"] == "partially_accepted"


def test_training_data_playbooks():
    prompt = [{"role": "system", "content": "sys"}, {"role": "user", "content": "Speed up the sampler"}]
    sft = [{"session_key": "s1", "step_id": "s1:3", "messages": json.dumps(prompt + [
        {"role": "assistant", "content": "Vectorized it.\nVerify: bench shows 5x",
         "tool_calls": json.loads(_call("c", "Bash", command="python bench.py"))}])}]
    pairs = [{"session_key": "s2", "step_id": "s2:1", "prompt": json.dumps(prompt),
              "chosen": json.dumps([{"role": "assistant", "content": "Use numpy argpartition."}]),
              "rejected": json.dumps([{"role": "assistant", "content": "Sort everything in Python."}]),
              "chosen_source": "teacher-a", "rejected_source": "original", "score_chosen": 0.9}]
    recs = {p["source_kind"]: p for p in derive_from_training(sft, pairs)}
    assert set(recs) == {"sft", "pair_chosen", "pair_rejected"}
    assert recs["sft"]["label"] == "accepted" and recs["sft"]["commands"] == ["python bench.py"]
    assert recs["sft"]["validation_steps"] == ["Verify: bench shows 5x"]
    assert recs["sft"]["source_step_ids"] == ["s1:3"] and recs["sft"]["task"] == "Speed up the sampler"
    assert recs["pair_rejected"]["label"] == "partially_accepted"
    assert recs["pair_rejected"]["title"].startswith("Avoid:") and "Sort everything" in recs["pair_rejected"]["content"]


def test_mined_from_accepted_runs_latest_per_task():
    t0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
    t1 = datetime(2026, 11, 2, tzinfo=timezone.utc)
    runs = [
        {"run_id": "r1", "task": "Do X", "task_hash": "h", "response": "old answer", "gate_passed": True,
         "escalated": False, "model_used": "smollm2-135m", "created_at": t0},
        {"run_id": "r2", "task": "Do X", "task_hash": "h", "response": "new answer\nVerify: X done",
         "gate_passed": True, "escalated": True, "model_used": "big", "created_at": t1},
        {"run_id": "r3", "task": "Do Y", "task_hash": "y", "response": "bad", "gate_passed": False,
         "escalated": False, "model_used": "smollm2-135m", "created_at": t1},
    ]
    mined = derive_from_runs(runs)
    assert len(mined) == 1
    m = mined[0]
    assert m["mined"] and m["source_run_id"] == "r2" and m["label"] == "accepted"
    assert m["validation_steps"] == ["Verify: X done"] and "escalated" in m["tags"]


def test_ids_are_stable_and_embeddings_reused():
    a = derive_playbooks(turns=sample_trace_rows())
    b = derive_playbooks(turns=sample_trace_rows())
    assert [p["playbook_id"] for p in a] == [p["playbook_id"] for p in b]
    prev = [{"content_hash": a[0]["content_hash"], "embedding": [0.1] * 384, "embedding_model": "m"}]
    todo = reuse_embeddings(b, prev, "m")
    assert b[0]["embedding"] == [0.1] * 384 and todo == list(range(1, len(b)))
    assert reuse_embeddings(derive_playbooks(turns=sample_trace_rows()), prev, "other") == list(range(len(b)))
