"""The parsers against real Claude Code transcripts nobody on this project wrote.

Expected numbers were counted from the files with jq, independently of our code, e.g.::

    jq -r 'select(.type=="assistant") | .message.id' F | sort -u | wc -l          # assistant turns
    jq '[select(.type=="user") | .message.content | arrays | .[]
         | select(.type=="tool_result")] | length' F | paste -sd+ | bc           # tool results
    ... | select(.type=="tool_result" and .is_error==true)                      # tool errors
    jq 'select(.type=="user") | .message.content | if type=="string" then 1
        else ([.[] | select(.type!="tool_result")] | if length>0 then 1 else 0 end) end'   # user text rows
    jq -r 'select(.type!="user" and .type!="assistant") | .type+"/"+(.subtype//"")' F | sort | uniq -c
"""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from tests.traces.conftest import check_openai_messages, ingest

# file -> expected figures (see the module docstring for how each was counted)
EXPECTED = {
    "cc-2.0.76-main-compaction.jsonl": dict(
        lines=63, size=70305,
        assistant=12,  # 28 assistant lines, 12 distinct message.id
        tool=10, tool_errors=2,  # 10 tool_result blocks, 2 with is_error (cat nonexistent.txt, python: not found)
        user=9,  # 8 user text records + 1 isCompactSummary record
        meta=16,  # 10 file-history-snapshot + 5 stop_hook_summary + 1 compact_boundary
        sidechain=0, compaction=1, compact_summary=1,
        error_kinds={"file_not_found": 1, "command_not_found": 1},
        steps=12, error_sites=2, caused=2,
    ),
    "cc-1.0.108-task-multiedit.jsonl": dict(
        lines=53, size=125342,
        assistant=20,  # 28 assistant lines, 20 distinct message.id (10 of them isSidechain)
        tool=21, tool_errors=3,  # Task without prompt, lsd/tree failure, Edit before Read
        user=4,  # 2 main (command + isMeta expansion) + 2 sidechain prompts
        meta=0,
        sidechain=20,  # 10 assistant + 8 tool results + 2 prompts carry isSidechain=true
        compaction=0, compact_summary=0,
        error_kinds={"invalid_tool_input": 1, "file_not_found": 1, "file_not_read": 1},
        steps=20, error_sites=3, caused=3,
    ),
    "cc-2.0.76-subagent.jsonl": dict(
        lines=2, size=1729, assistant=1, tool=0, tool_errors=0, user=1, meta=0, sidechain=2,
        compaction=0, compact_summary=0, error_kinds={}, steps=1, error_sites=0, caused=0,
    ),
}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def parsed(request, realdata):
    path = realdata / request.param
    return request.param, path, *ingest(path, f"real~{request.param}")


def test_every_line_kept(parsed):
    name, path, raw, turns, steps, stats = parsed
    exp = EXPECTED[name]
    assert len(raw) == exp["lines"] == len(path.read_bytes().splitlines())
    assert sum(r["byte_len"] for r in raw) == exp["size"] == path.stat().st_size
    assert [r["line_no"] for r in raw] == list(range(1, exp["lines"] + 1))
    offsets = [r["byte_offset"] for r in raw]
    assert offsets == [0] + [sum(r["byte_len"] for r in raw[:i]) for i in range(1, len(raw))]
    assert not any(r["quarantined"] for r in raw)
    assert stats["source_format"] == "claude_code"
    # every source line is accounted for by exactly one turn's source_lines
    covered = Counter(ln for t in turns for ln in t["source_lines"])
    assert sorted(covered) == list(range(1, exp["lines"] + 1))
    assert set(covered.values()) == {1}


def test_turn_counts(parsed):
    name, path, raw, turns, steps, stats = parsed
    exp = EXPECTED[name]
    roles = Counter(t["role"] for t in turns)
    assert roles["assistant"] == exp["assistant"]
    assert roles["tool"] == exp["tool"]
    assert roles["user"] == exp["user"]
    assert roles["meta"] == exp["meta"]
    assert sum(t["tool_error"] is True for t in turns) == exp["tool_errors"]
    assert dict(Counter(t["error_kind"] for t in turns if t["tool_error"])) == exp["error_kinds"]
    assert sum(t["is_sidechain"] for t in turns) == exp["sidechain"]
    assert sum(t["is_compaction_boundary"] for t in turns) == exp["compaction"]
    assert sum(t["is_compact_summary"] for t in turns) == exp["compact_summary"]
    assert len({t["turn_id"] for t in turns}) == len(turns)
    assert [t["turn_index"] for t in turns] == list(range(len(turns)))


def test_tool_results_link_to_tool_uses(parsed):
    name, path, raw, turns, steps, stats = parsed
    calls = {}
    for t in turns:
        for c in orjson.loads(t["tool_calls"] or "[]"):
            calls[c["id"]] = c["function"]["name"]
            orjson.loads(c["function"]["arguments"])
    results = [t for t in turns if t["role"] == "tool"]
    assert all(r["tool_call_id"] in calls for r in results)
    assert all(r["tool_name"] == calls[r["tool_call_id"]] for r in results)
    assert len(calls) == len(results)  # every call of these sessions got its result


def test_steps(parsed):
    name, path, raw, turns, steps, stats = parsed
    exp = EXPECTED[name]
    assert len(steps) == exp["steps"]
    assert sum(s["is_error_site"] for s in steps) == exp["error_sites"]
    assert sum(s["caused_error"] for s in steps) == exp["caused"]
    for s in steps:
        msgs = orjson.loads(s["messages"])
        check_openai_messages(msgs)
        assert msgs and msgs[0]["role"] in ("user", "system")
        assert s["n_context_messages"] == len(msgs)
        resp = orjson.loads(s["response"])
        check_openai_messages([{"role": "user", "content": ""}, {k: v for k, v in resp.items()
                                                                  if k != "reasoning_content"}])


def test_multiline_message_merge(realdata):
    """Lines 36-38 of the 2.0.76 file are one message (thinking, Write, Write)."""
    raw, turns, steps, _ = ingest(realdata / "cc-2.0.76-main-compaction.jsonl")
    t = next(t for t in turns if 37 in t["source_lines"])
    assert t["source_lines"] == [36, 37, 38]
    assert t["thinking"] == orjson.loads(raw[35]["raw"])["message"]["content"][0]["thinking"]  # line 36
    assert t["content"] is None  # this message had no text block
    assert [c["function"]["name"] for c in orjson.loads(t["tool_calls"])] == ["Write", "Write"]
    assert t["message_id"].endswith("xTLt8Y") and t["model"] == "claude-haiku-4-5-20251001"
    last = orjson.loads(raw[37]["raw"])["message"]["usage"]  # usage of the last line (38)
    assert t["output_tokens"] == last["output_tokens"]
    assert t["cache_read_tokens"] == last["cache_read_input_tokens"]
    # a later line's uuid resolves to the merged turn: line 40's parent is line 38
    r = next(t for t in turns if t["source_lines"] == [40])
    assert r["parent_turn_id"] == t["turn_id"]


def test_compaction(realdata):
    raw, turns, steps, _ = ingest(realdata / "cc-2.0.76-main-compaction.jsonl")
    b = next(t for t in turns if t["is_compaction_boundary"])
    assert b["kind"] == "compaction" and b["role"] == "meta" and b["source_lines"] == [59]
    assert b["parent_turn_id"] is None and orjson.loads(b["extra"])["compact_metadata"]["trigger"] == "manual"
    s = next(t for t in turns if t["is_compact_summary"])
    assert s["kind"] == "summary" and s["role"] == "user" and s["parent_turn_id"] == b["turn_id"]
    assert s["content"].startswith("This session is being continued")


def test_inline_sidechain(realdata):
    raw, turns, steps, _ = ingest(realdata / "cc-1.0.108-task-multiedit.jsonl")
    roots = [t for t in turns if t["is_sidechain"] and t["parent_turn_id"] is None]
    assert [t["source_lines"] for t in roots] == [[16], [26]]
    by_id = {t["turn_id"]: t for t in turns}
    for root in roots:
        ex = orjson.loads(root["extra"])
        spawner = by_id[ex["spawned_by_turn_id"]]
        assert ex["spawned_by_tool_call_id"] in {c["id"] for c in orjson.loads(spawner["tool_calls"])}
        assert not spawner["is_sidechain"]
    # sidechain steps see only their own thread, starting at the Task prompt
    for s in steps:
        msgs = orjson.loads(s["messages"])
        if s["is_sidechain"]:
            assert msgs[0]["content"] in {r["content"] for r in roots}
        else:
            assert msgs[0]["content"].startswith("<command-message>orchestrator")


def test_agent_file(realdata):
    raw, turns, steps, _ = ingest(realdata / "cc-2.0.76-subagent.jsonl")
    assert {t["agent_id"] for t in turns} == {"af1ff21"}
    assert {t["parent_session_id"] for t in turns} == {"c45af7b1-cb7c-4e51-93db-8cbb250a877a"}
    assert all(t["is_sidechain"] for t in turns)
    assert turns[1]["parent_turn_id"] == turns[0]["turn_id"]
    assert turns[1]["input_tokens"] == 728 and turns[1]["output_tokens"] == 152


def test_stable_ids(realdata):
    """Re-ingesting a file gives the same ids; ids are unique across files."""
    p = realdata / "cc-1.0.108-task-multiedit.jsonl"
    a = ingest(p, "k1")
    b = ingest(p, "k1")
    assert [t["turn_id"] for t in a[1]] == [t["turn_id"] for t in b[1]]
    assert [s["step_id"] for s in a[2]] == [s["step_id"] for s in b[2]]
    c = ingest(p, "k2")
    assert not {t["turn_id"] for t in a[1]} & {t["turn_id"] for t in c[1]}
