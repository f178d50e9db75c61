"""Formats read as whole JSON documents, the newer Codex / Gemini records, and bad input."""

from __future__ import annotations

from collections import Counter

import orjson

from assets.traces.formats import _common
from assets.traces.ingest import SAMPLES_DIR
from assets.traces.raw import read_raw_lines
from resources.sessions import SessionSource
from tests.traces.conftest import check_openai_messages, ingest, write_lines

FAKE_KEY = "sk-ant-api03-" + "DEMO0nlyFAKEkey" * 6  # shaped like a key, planted to be scrubbed


def _mini(n_steps: int) -> list[dict]:
    msgs = [{"role": "system", "content": "You can run bash."}, {"role": "user", "content": "Fix the bug."}]
    for i in range(n_steps):
        msgs.append({"role": "assistant", "content": f"Step {i}.\n\n```bash\necho {i}\n```"})
        msgs.append({"role": "user", "content": f"<returncode>0</returncode>\n<output>\n{i}\n</output>"})
    return msgs


def test_document_detected_by_content_not_extension(tmp_path):
    """The same pretty-printed trajectory under any name is one document of the same format."""
    doc = orjson.dumps(_mini(3), option=orjson.OPT_INDENT_2)
    for name in ("a.traj.json", "b.traj", "c.txt.jsonl", "d"):
        p = tmp_path / name
        p.write_bytes(doc)
        raw, turns, steps, stats = ingest(p, name)
        assert stats["source_format"] == "mini_swe_agent", name
        assert not stats["quarantined"] and len(steps) == 3
        assert sum(r["byte_len"] for r in raw) == len(doc)  # every byte kept in bronze


def test_sensor_watches_trajectory_files(tmp_path):
    for rel in ("swe/x.traj", "mini/y.traj.json", "gemini/chats/session-1.json", "codex/rollout-1.jsonl", "z.txt"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("{}\n")
    keys = sorted(f.key for f in SessionSource(root=str(tmp_path)).scan())
    assert keys == ["codex~rollout-1.jsonl", "gemini~chats~session-1.json", "mini~y.traj.json", "swe~x.traj"]


def test_truncated_document_is_quarantined_with_reason(tmp_path):
    doc = orjson.dumps({"history": [{"role": "user", "content": "hi"}]}, option=orjson.OPT_INDENT_2)
    p = tmp_path / "cut.traj"
    p.write_bytes(doc[:-12])
    raw, turns, steps, stats = ingest(p, "cut")
    assert all(r["quarantined"] for r in raw if r["raw"].strip())
    assert {r["quarantine_reason"].split(":")[0] for r in raw} == {"truncated_document"}
    assert sum(r["byte_len"] for r in raw) == len(doc) - 12 and not steps


def test_unknown_document_shape_kept_as_unknown(tmp_path):
    p = tmp_path / "what.json"
    p.write_bytes(orjson.dumps({"foo": {"bar": [1, 2]}, "baz": "qux"}, option=orjson.OPT_INDENT_2))
    raw, turns, steps, stats = ingest(p, "what")
    assert stats["source_format"] == "unknown" and not stats["quarantined"]
    assert [t["kind"] for t in turns] == ["unknown"] and not steps
    ex = orjson.loads(turns[0]["extra"])
    assert ex["document"]["baz"] == "qux" and ex["reason"].startswith("no parser claims")  # kept, with why


def test_secrets_scrubbed_in_documents(tmp_path):
    msgs = _mini(1)
    msgs[1]["content"] = f"use ANTHROPIC_API_KEY={FAKE_KEY} please"
    p = tmp_path / "s.traj.json"
    p.write_bytes(orjson.dumps(msgs, option=orjson.OPT_INDENT_2))
    raw, turns, steps, stats = ingest(p, "s")
    assert stats["source_format"] == "mini_swe_agent" and stats["secrets"]
    assert not any(FAKE_KEY in r["raw"] for r in raw)
    assert not any(FAKE_KEY in (t["content"] or "") for t in turns)
    assert not any(FAKE_KEY in s["messages"] for s in steps)


def test_huge_trajectory_kept_unexpanded(tmp_path, monkeypatch):
    """A 50,000-step trajectory: the run succeeds, bronze keeps every byte, the document is
    one unknown row saying why it was not expanded."""
    p = tmp_path / "huge.traj.json"
    p.write_bytes(orjson.dumps(_mini(50_000)))
    raw, turns, steps, stats = ingest(p, "huge")
    assert stats["source_format"] == "mini_swe_agent"
    assert sum(r["byte_len"] for r in raw) == p.stat().st_size
    assert [t["kind"] for t in turns] == ["unknown"] and not steps
    assert orjson.loads(turns[0]["extra"])["reason"].startswith("too_many_steps: 50000")
    monkeypatch.setattr(_common, "MAX_DOCUMENT_STEPS", 2)  # the limit is a module setting
    small = tmp_path / "small.traj.json"
    small.write_bytes(orjson.dumps(_mini(3)))
    assert [t["kind"] for t in ingest(small, "small")[1]] == ["unknown"]


def test_gemini_jsonl_set_lines(tmp_path):
    header = {"sessionId": "s-1", "projectHash": "abc", "startTime": "2026-01-16T09:00:00Z"}
    u = {"id": "m1", "type": "user", "timestamp": "2026-01-16T09:00:01Z", "content": "list files"}
    g = {"id": "m2", "type": "gemini", "timestamp": "2026-01-16T09:00:02Z", "content": "", "model": "gemini-2.5-pro",
         "toolCalls": [{"id": "ls-1", "name": "list_directory", "args": {"dir_path": "."}, "status": "executing"}]}
    done = {"$set": {"id": "m2", "toolCalls": [{"id": "ls-1", "name": "list_directory", "args": {"dir_path": "."},
                                                "status": "success", "result": [{"functionResponse": {
                                                    "id": "ls-1", "name": "list_directory",
                                                    "response": {"output": "a.py\nb.py"}}}]}],
                     "tokens": {"input": 100, "output": 5, "cached": 40}}}
    g2 = {"id": "m3", "type": "gemini", "timestamp": "2026-01-16T09:00:03Z", "content": "draft"}
    g2_final = {**g2, "content": "There are two files: a.py and b.py."}
    bad = {"$set": {"id": "nope", "content": "x"}}
    fail = {"id": "m4", "type": "gemini", "content": "", "toolCalls": [
        {"id": "rf-1", "name": "read_file", "args": {"file_path": "c.py"}, "status": "error",
         "result": [{"functionResponse": {"id": "rf-1", "name": "read_file",
                                          "response": {"error": "File not found: c.py"}}}]}]}
    meta = {"$set": {"lastUpdated": "2026-01-16T09:00:09Z"}}
    p = write_lines(tmp_path, "session-1.jsonl", [header, u, g, done, g2, g2_final, bad, fail, meta])
    raw, turns, steps, stats = ingest(p, "g")
    assert stats["source_format"] == "gemini_cli" and not stats["quarantined"]
    roles = Counter(t["role"] for t in turns)
    assert roles["user"] == 1 and roles["assistant"] == 3 and roles["tool"] == 2
    asst = [t for t in turns if t["role"] == "assistant"]
    assert asst[1]["content"] == "There are two files: a.py and b.py."  # the latest line wins
    assert asst[0]["input_tokens"] == 60 and asst[0]["cache_read_tokens"] == 40
    res = [t for t in turns if t["role"] == "tool"]
    assert res[0]["content"] == "a.py\nb.py" and not res[0]["tool_error"]
    assert res[1]["tool_error"] and res[1]["error_kind"] == "file_not_found"
    unknown = [t for t in turns if t["kind"] == "unknown"]
    assert len(unknown) == 1 and "unknown message id 'nope'" in orjson.loads(unknown[0]["extra"])["reason"]
    header_row = next(t for t in turns if t["kind"] == "conversation")
    assert orjson.loads(header_row["extra"])["lastUpdated"] == "2026-01-16T09:00:09Z"
    assert len(steps) == 3 and sum(s["is_error_site"] for s in steps) == 0  # m4 is the last step
    for s in steps:
        check_openai_messages(orjson.loads(s["messages"]))


def _codex(payload_type: str, **payload) -> dict:
    return {"timestamp": "2026-05-11T08:00:00Z", "type": payload_type, "payload": payload}


def test_codex_event_only_prompts_and_exec_end(tmp_path):
    """A rollout whose prompt is only an event_msg user_message still has steps; an exit code
    known only from exec_command_end marks the output of that command failed; an output
    without its call is kept, marked orphan."""
    lines = [
        _codex("session_meta", id="sess-1", cwd="/w"),
        _codex("event_msg", type="user_message", message="run the tests"),
        _codex("response_item", type="function_call", name="exec_command", arguments='{"cmd":"pytest"}',
               call_id="c1"),
        _codex("response_item", type="function_call_output", call_id="c1",
               output="Chunk ID: 1\nWall time: 1.0 seconds\nOutput:\nE   assert 1 == 2\n1 failed in 0.1s\n"),
        _codex("event_msg", type="exec_command_end", call_id="c1", exit_code=1),
        _codex("event_msg", type="token_count", info={"last_token_usage": {"input_tokens": 10, "output_tokens": 2}}),
        _codex("response_item", type="function_call_output", call_id="ghost", output="stray output"),
        _codex("response_item", type="message", role="assistant",
               content=[{"type": "output_text", "text": "One test fails."}]),
    ]
    p = write_lines(tmp_path, "rollout-x.jsonl", lines)
    raw, turns, steps, stats = ingest(p, "c")
    assert [t["content"] for t in turns if t["role"] == "user"] == ["run the tests"]
    assert len(steps) == 2
    failed = [t for t in turns if t["tool_error"]]
    assert [t["tool_call_id"] for t in failed] == ["c1"] and failed[0]["error_kind"] == "test_failure"
    assert orjson.loads(failed[0]["extra"])["exit_code"] == 1
    ghost = next(t for t in turns if t["tool_call_id"] == "ghost")
    assert orjson.loads(ghost["extra"])["orphan"] is True
    assert steps[1]["is_error_site"] and steps[1]["error_kind"] == "test_failure"
    assert steps[0]["caused_error"]
    for s in steps:
        check_openai_messages(orjson.loads(s["messages"]))


def test_openhands_sample_session_metadata():
    p = SAMPLES_DIR / "openhands" / "invoicer__invoicer-12.json"
    raw, turns, steps, stats = ingest(p, "oh")
    header = next(t for t in turns if t["kind"] == "conversation")
    meta = orjson.loads(header["extra"])
    assert meta["instance_id"] == "invoicer__invoicer-12"
    assert meta["instruction"].startswith("Invoice totals must round half up")
    assert meta["test_result"]["report"]["resolved"] is True
    assert {t["session_id"] for t in turns} == {"invoicer__invoicer-12"}
    names = [orjson.loads(s["response"])["tool_calls"][0]["function"]["name"] for s in steps]
    assert names == ["execute_bash", "execute_bash", "str_replace_editor", "str_replace_editor", "execute_bash",
                     "finish"]
    assert steps[1]["is_error_site"] and steps[1]["error_kind"] == "test_failure"
    assert steps[2]["is_error_site"] and steps[2]["error_kind"] == "file_not_found"
    assert steps[0]["model"] == "gpt-4o-2024-08-06"


def test_otel_sample():
    raw, turns, steps, stats = ingest(SAMPLES_DIR / "otel" / "helpdesk-spans.jsonl", "ot")
    assert len({t["session_id"] for t in turns}) == 2  # one session per trace
    first, second, oi = steps
    assert orjson.loads(first["response"])["tool_calls"][0]["function"]["name"] == "lookup_invoice"
    ctx = orjson.loads(second["messages"])
    assert [m["role"] for m in ctx] == ["system", "user", "assistant", "tool"]
    assert "240.00" in ctx[-1]["content"]
    assert second["response_text"].startswith("INV-1042 comes to 240.00")
    t2 = next(t for t in turns if t["turn_id"] == second["turn_id"])
    assert (t2["input_tokens"], t2["output_tokens"], t2["cache_read_tokens"]) == (240, 24, 128)
    assert [m["role"] for m in orjson.loads(oi["messages"])] == ["system", "user"]
    assert oi["model"] == "gpt-4o-mini-2024-07-18"


def test_bronze_rows_of_a_document_tile_the_file(tmp_path):
    p = SAMPLES_DIR / "openhands" / "invoicer__invoicer-12.json"
    rows, stats = read_raw_lines(p, "k")
    assert stats["source_format"] == "openhands"
    assert sum(r["byte_len"] for r in rows) == p.stat().st_size
    assert {r["record_type"] for r in rows} == {"json_fragment"}


def test_openhands_output_jsonl_one_run_per_line(tmp_path):
    """An evaluation's output.jsonl: one run object per line, each its own session."""
    run = orjson.loads((SAMPLES_DIR / "openhands" / "invoicer__invoicer-12.json").read_bytes())
    other = {**run, "instance_id": "invoicer__invoicer-13", "test_result": {"report": {"resolved": False}}}
    p = write_lines(tmp_path, "output.jsonl", [run, other])
    raw, turns, steps, stats = ingest(p, "oh")
    assert stats["source_format"] == "openhands" and not stats["quarantined"]
    assert {t["session_id"] for t in turns} == {"invoicer__invoicer-12", "invoicer__invoicer-13"}
    assert len(steps) == 12 and len({t["turn_id"] for t in turns}) == len(turns)
    for s in steps:
        check_openai_messages(orjson.loads(s["messages"]))


def test_langfuse_observation_scores_label_their_step(tmp_path):
    """A score on one GENERATION is a label of that step; trace scores label the session."""
    gen = {"id": "g1", "type": "GENERATION", "name": "chat", "parentObservationId": None,
           "startTime": "2026-01-16T09:00:00Z", "model": "gpt-4o-mini",
           "input": [{"role": "user", "content": "2+2?"}], "output": {"role": "assistant", "content": "4"},
           "usageDetails": {"input": 5, "output": 1}, "costDetails": {"total": 0.00001}}
    doc = {"trace": {"id": "t1", "name": "calc", "scores": [
        {"name": "correct", "value": 1, "observationId": "g1", "source": "ANNOTATION"},
        {"name": "user_feedback", "stringValue": "thumbs_up", "value": 1, "observationId": None}]},
        "observations": [gen]}
    p = tmp_path / "trace.json"
    p.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    raw, turns, steps, stats = ingest(p, "lf")
    assert stats["source_format"] == "langfuse" and len(steps) == 1
    step_turn = next(t for t in turns if t["turn_id"] == steps[0]["turn_id"])
    assert orjson.loads(step_turn["extra"])["labels"] == {"correct": 1}
    header = next(t for t in turns if t["kind"] == "conversation")
    assert orjson.loads(header["extra"])["labels"] == {"correct": 1, "user_feedback": "thumbs_up"}
