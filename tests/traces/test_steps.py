"""Agent steps: context chains, compaction, sidechains, error sites, round trips, speed."""

from __future__ import annotations

import random

import orjson

from assets.traces.formats import parse_turns
from assets.traces.raw import read_raw_lines
from assets.traces.steps import ERROR_TEXT_CHARS, build_agent_steps
from assets.traces.tables import RAW_TRACES, AGENT_STEPS, TRACE_TURNS
from tests.traces.conftest import check_openai_messages, ingest, write_lines

MAIN = "claude-code/-home-dev-invoicer/5b1e9f2a-7c3d-4e8f-9a0b-1c2d3e4f5a6b.jsonl"
SIDE = "claude-code/-home-dev-invoicer/c0ffee00-1d2e-4f3a-8b9c-0d1e2f3a4b5c.jsonl"


def test_context_after_compaction_starts_at_summary(samples):
    raw, turns, steps, _ = ingest(samples / MAIN)
    by_id = {t["turn_id"]: t for t in turns}
    boundary = next(t["turn_index"] for t in turns if t["is_compaction_boundary"])
    after = [s for s in steps if by_id[s["turn_id"]]["turn_index"] > boundary]
    before = [s for s in steps if by_id[s["turn_id"]]["turn_index"] < boundary]
    assert len(after) == 4 and len(before) == 19
    for s in after:
        msgs = orjson.loads(s["messages"])
        assert msgs[0]["content"].startswith("This session is being continued")
        assert not any("API Error" in m["content"] for m in msgs)  # the <synthetic> message is not context
    # before the compaction the context grows monotonically from the first prompt
    sizes = [s["n_context_messages"] for s in before]
    assert sizes == sorted(sizes) and orjson.loads(before[0]["messages"])[0]["content"].startswith("test_totals")
    # the synthetic API error message is no step
    assert not any(by_id[s["turn_id"]]["model"] == "<synthetic>" for s in steps)


def test_sidechain_context_and_main_resumes_after_task(samples):
    raw, turns, steps, _ = ingest(samples / SIDE)
    side = [s for s in steps if s["is_sidechain"]]
    assert len(side) == 4
    for s in side:
        assert orjson.loads(s["messages"])[0]["content"].startswith("Find every place")
        assert {t["function"]["name"] for t in orjson.loads(s["tools"])} == {"Grep", "Read"}
    main = [s for s in steps if not s["is_sidechain"]]
    after_task = orjson.loads(main[1]["messages"])
    assert [m["role"] for m in after_task] == ["user", "assistant", "tool"]
    assert after_task[2]["name"] == "Task" and after_task[2]["content"].startswith("Three rounding sites")
    assert {t["function"]["name"] for t in orjson.loads(main[0]["tools"])} == {"Task", "Edit", "Read", "Bash"}


def test_error_sites_and_caused_errors(samples):
    raw, turns, steps, _ = ingest(samples / MAIN)
    sites = [s for s in steps if s["is_error_site"]]
    kinds = ["test_failure", "file_not_found", "edit_mismatch", "invalid_tool_input", "file_not_found",
             "edit_mismatch", "file_not_found", "command_not_found"]
    assert [s["error_kind"] for s in sites] == kinds
    assert sites[0]["error_text"].startswith("Exit code 1") and "1 failed" in sites[0]["error_text"]
    caused = [s["caused_error_kind"] for s in steps if s["caused_error"]]
    assert caused == kinds
    # the step right before each error site caused it
    idx = [i for i, s in enumerate(steps) if s["is_error_site"]]
    assert all(steps[i - 1]["caused_error"] for i in idx)
    resp = orjson.loads(sites[0]["response"])
    assert resp["role"] == "assistant" and resp["reasoning_content"].startswith("The total is rounded")
    assert resp["tool_calls"][0]["function"]["name"] == "Read"
    # the recovery from the wrong path
    assert orjson.loads(sites[1]["response"])["tool_calls"][0]["function"]["arguments"].endswith(
        '/invoicer/invoicer/totals.py"}')


def test_error_text_truncated(tmp_path):
    long = "Exit code 1\n" + "x" * 5000
    lines = [
        {"type": "user", "uuid": "u1", "parentUuid": None, "sessionId": "S", "message": {"role": "user", "content": "go"}},
        {"type": "assistant", "uuid": "a1", "parentUuid": "u1", "sessionId": "S",
         "message": {"id": "m1", "role": "assistant", "model": "c", "content": [
             {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "x"}}]}},
        {"type": "user", "uuid": "r1", "parentUuid": "a1", "sessionId": "S", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": long, "is_error": True}]}},
        {"type": "assistant", "uuid": "a2", "parentUuid": "r1", "sessionId": "S",
         "message": {"id": "m2", "role": "assistant", "model": "c", "content": [{"type": "text", "text": "hm"}]}},
    ]
    rows, _ = read_raw_lines(write_lines(tmp_path, "s.jsonl", lines), "k")
    steps = build_agent_steps(parse_turns(rows, "k"))
    assert steps[1]["is_error_site"] and steps[1]["error_text"] == long[:ERROR_TEXT_CHARS]
    assert steps[1]["error_kind"] == "nonzero_exit"


def test_delta_round_trip_gives_same_rows(samples):
    """Rows read back from Delta come as to_pylist() dicts, in any order."""
    raw, turns, steps, _ = ingest(samples / MAIN, "k")
    raw_back = RAW_TRACES.conform(raw).to_pylist()
    random.Random(1).shuffle(raw_back)
    turns_back = parse_turns(raw_back, "k")
    assert TRACE_TURNS.conform(turns_back).to_pylist() == TRACE_TURNS.conform(turns).to_pylist()
    tb = TRACE_TURNS.conform(turns).to_pylist()
    random.Random(2).shuffle(tb)
    assert AGENT_STEPS.conform(build_agent_steps(tb)).to_pylist() == AGENT_STEPS.conform(steps).to_pylist()


def _long_session(n_rounds: int) -> list[dict]:
    lines = [{"type": "user", "uuid": "u0", "parentUuid": None, "sessionId": "S",
              "timestamp": "2026-01-01T00:00:00Z", "message": {"role": "user", "content": "start " + "y" * 400}}]
    parent = "u0"
    for i in range(n_rounds):
        lines.append({"type": "assistant", "uuid": f"a{i}", "parentUuid": parent, "sessionId": "S",
                      "timestamp": "2026-01-01T00:00:01Z",
                      "message": {"id": f"m{i}", "role": "assistant", "model": "c", "content": [
                          {"type": "text", "text": f"step {i} " + "z" * 300},
                          {"type": "tool_use", "id": f"t{i}", "name": "Bash", "input": {"command": f"echo {i}"}}]}})
        lines.append({"type": "user", "uuid": f"r{i}", "parentUuid": f"a{i}", "sessionId": "S",
                      "timestamp": "2026-01-01T00:00:02Z", "message": {"role": "user", "content": [
                          {"type": "tool_result", "tool_use_id": f"t{i}", "content": "out " * 100,
                           "is_error": i % 7 == 0}]}})
        parent = f"r{i}"
    return lines


def test_500_turn_session_builds_full_context(tmp_path):
    """Context of the last step holds the whole chain (speed: benchmarks/bench_ingest.py)."""
    p = write_lines(tmp_path, "long.jsonl", _long_session(250))  # 501 turns, 250 steps
    rows, _ = read_raw_lines(p, "k")
    turns = parse_turns(rows, "k")
    steps = build_agent_steps(turns)
    assert len(turns) == 501 and len(steps) == 250
    assert steps[-1]["n_context_messages"] == 1 + 2 * 249
    check_openai_messages(orjson.loads(steps[-1]["messages"]))
