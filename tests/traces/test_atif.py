"""ATIF (Harbor RFC 0001) in and out: schema validation, round trips, the export command."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from assets.traces.atif import trajectories_from_turns, validate
from assets.traces.ingest import SAMPLES_DIR, sample_files
from assets.traces.tables import TRACE_TURNS
from dagster_project.export import main as export_main
from resources.lake import DeltaLake
from tests.traces.conftest import REALDATA, ingest
from tests.sessions import DAY, put_sessions


def _shared_files() -> list[Path]:
    if not REALDATA.is_dir():
        return []
    return sorted(p for p in REALDATA.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json", ".traj"))


FILES = _shared_files() + sample_files()


def _core(traj: dict) -> list[tuple]:
    """What a round trip must keep: every step, tool call, observation and metric."""
    return [(s["source"], s["message"], s.get("reasoning_content"), s.get("model_name"), s.get("tool_calls"),
             s.get("observation"), s.get("metrics"), (s.get("extra") or {}).get("tracelake", {}).get("tool_errors"))
            for s in traj["steps"]]


def test_shared_files_are_present():
    if not REALDATA.is_dir():
        pytest.skip(f"real third-party traces not found at {REALDATA}")
    assert len(_shared_files()) >= 14


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_export_validates_and_round_trips(path, tmp_path):
    raw, turns, steps, stats = ingest(path, "src")
    trajs = trajectories_from_turns(turns)
    assert trajs
    n_calls = sum(len(orjson.loads(t["tool_calls"] or "[]")) for t in turns if t["role"] == "assistant")
    assert sum(len(s.get("tool_calls") or []) for tr in trajs for s in tr["steps"]) == n_calls
    n_results = sum(1 for t in turns if t["role"] == "tool")
    assert sum(len((s.get("observation") or {}).get("results", [])) for tr in trajs for s in tr["steps"]
               if s["source"] == "agent" or (s.get("extra") or {}).get("tracelake", {}).get("unmatched_tool_result")
               ) == n_results
    for i, traj in enumerate(trajs):
        validate(traj)
        p = tmp_path / f"t{i}.json"
        p.write_bytes(orjson.dumps(traj, option=orjson.OPT_INDENT_2))
        _, turns2, _, stats2 = ingest(p, f"atif{i}")
        assert stats2["source_format"] == "atif" and not stats2["quarantined"]
        (back,) = trajectories_from_turns(turns2)
        validate(back)
        assert _core(back) == _core(traj)
        assert back["session_id"] == traj["session_id"] and back["agent"] == traj["agent"]


RFC_LIKE = {
    "schema_version": "ATIF-v1.4",
    "session_id": "b7c1e2a4-0000-4000-8000-000000000001",
    "agent": {"name": "invoicer-agent", "version": "0.3.0", "model_name": "gpt-4o-mini", "extra": {"style": "react"}},
    "notes": "written for the tracelake tests",
    "extra": {"team": "billing"},
    "steps": [
        {"step_id": 1, "source": "system", "message": "You fix invoices."},
        {"step_id": 2, "timestamp": "2026-01-16T09:00:00Z", "source": "user", "message": "Total of INV-7?"},
        {"step_id": 3, "source": "agent", "message": "Looking it up.", "reasoning_content": "Need the invoice.",
         "tool_calls": [{"tool_call_id": "c1", "function_name": "lookup", "arguments": {"id": "INV-7"}},
                        {"tool_call_id": "c2", "function_name": "delegate", "arguments": {}}],
         "observation": {"results": [
             {"source_call_id": "c1", "content": "Error: invoice INV-7 not found"},
             {"source_call_id": "c2", "subagent_trajectory_ref": [{"session_id": "sub-1",
                                                                    "trajectory_path": "sub-1.json"}]}]},
         "metrics": {"prompt_tokens": 500, "completion_tokens": 40, "cached_tokens": 200, "cost_usd": 0.0004,
                     "logprobs": [-0.1, -0.2]},
         "extra": {"latency_ms": 812}},
        {"step_id": 4, "source": "agent", "message": "There is no INV-7.", "model_name": "gpt-4o",
         "metrics": {"prompt_tokens": 600, "completion_tokens": 12}},
    ],
    "final_metrics": {"total_prompt_tokens": 1100, "total_completion_tokens": 52, "total_steps": 4},
}


def test_hand_written_atif_in_and_out(tmp_path):
    validate(RFC_LIKE)
    p = tmp_path / "run.json"
    p.write_text(json.dumps(RFC_LIKE))
    raw, turns, steps, stats = ingest(p, "atif")
    assert stats["source_format"] == "atif"
    asst = [t for t in turns if t["role"] == "assistant"]
    assert len(asst) == 2 and len(steps) == 2
    assert (asst[0]["input_tokens"], asst[0]["cache_read_tokens"], asst[0]["output_tokens"]) == (300, 200, 40)
    assert asst[0]["model"] == "gpt-4o-mini" and asst[1]["model"] == "gpt-4o"
    res = [t for t in turns if t["role"] == "tool"]
    assert [r["tool_call_id"] for r in res] == ["c1", "c2"]
    assert res[0]["tool_error"] and res[0]["error_kind"] == "not_found"
    assert orjson.loads(res[1]["extra"])["subagent_trajectory_ref"][0]["session_id"] == "sub-1"
    assert steps[1]["is_error_site"]
    (back,) = trajectories_from_turns(turns)
    validate(back)
    assert back["agent"] == RFC_LIKE["agent"] and back["notes"] == RFC_LIKE["notes"]
    assert back["extra"]["team"] == "billing"
    for a, b in zip(RFC_LIKE["steps"], back["steps"]):
        for k in ("source", "message", "reasoning_content", "tool_calls", "observation", "metrics", "timestamp"):
            assert a.get(k) == b.get(k), (k, a.get(k), b.get(k))
        assert {k: v for k, v in (b.get("extra") or {}).items() if k != "tracelake"} == (a.get("extra") or {})


@pytest.mark.parametrize("breakage", ["bad_call_ref", "agent_field_on_user", "step_ids", "no_agent_version"])
def test_schema_rejects(breakage):
    doc = json.loads(json.dumps(RFC_LIKE))
    if breakage == "bad_call_ref":
        doc["steps"][2]["observation"]["results"][0]["source_call_id"] = "nope"
    elif breakage == "agent_field_on_user":
        doc["steps"][1]["tool_calls"] = []
    elif breakage == "step_ids":
        doc["steps"][3]["step_id"] = 7
    else:
        del doc["agent"]["version"]
    with pytest.raises(ValidationError):
        validate(doc)


def test_compaction_and_sidechains_exported(tmp_path):
    if not (REALDATA / "claude-code").is_dir():
        pytest.skip(f"real transcripts not found at {REALDATA}")
    _, turns, _, _ = ingest(REALDATA / "claude-code" / "cc-2.0.76-main-compaction.jsonl", "cc")
    (traj,) = trajectories_from_turns(turns)
    marks = [s for s in traj["steps"] if (s.get("extra") or {}).get("tracelake", {}).get("compaction_boundary")]
    assert len(marks) == 1 and marks[0]["source"] == "system"
    summary = traj["steps"][marks[0]["step_id"]]  # the step right after the boundary
    assert summary["extra"]["tracelake"]["is_compact_summary"]
    _, turns, _, _ = ingest(REALDATA / "claude-code" / "cc-1.0.108-task-multiedit.jsonl", "side")
    trajs = trajectories_from_turns(turns)
    main, subs = trajs[0], trajs[1:]
    assert len(subs) == 2
    refs = [r["subagent_trajectory_ref"][0]["session_id"] for s in main["steps"]
            for r in (s.get("observation") or {}).get("results", []) if r.get("subagent_trajectory_ref")]
    assert sorted(refs) == sorted(t["session_id"] for t in subs)


def test_export_command_writes_every_session(tmp_path):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    from resources.sessions import SessionNames

    names = SessionNames.for_lake(SAMPLES_DIR, str(tmp_path / "lake"))  # keys as the sensor makes them
    keys, rows = [], []
    for p in sample_files():
        key = names.key(p.relative_to(SAMPLES_DIR).as_posix())
        _, turns, _, _ = ingest(p, key)
        keys.append(key)
        rows += turns
    put_sessions(lake, TRACE_TURNS, rows, keys=keys)
    out = tmp_path / "atif"
    assert export_main(["--format", "atif", "--out", str(out), "--lake-root", str(tmp_path / "lake")]) == 0
    files = sorted(out.glob("*.atif.json"))
    conversations = {(r["session_key"], r["session_id"]) for r in rows}
    assert len(files) >= len(conversations)
    seen = set()
    for f in files:
        t = validate(json.loads(f.read_text()))
        seen.add((t.extra["tracelake"]["session_key"], t.extra["tracelake"].get("parent_session_id") or t.session_id))
    assert {k for k, _ in seen} == set(keys)
