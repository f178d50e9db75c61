"""The bronze reader: one row per physical line, nothing lost, quarantine reasons."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import orjson
import pytest

from assets.traces.formats import parse_turns
from assets.traces.raw import detect_format, read_raw_lines
from assets.traces.tables import RAW_TRACES
from tests.traces.conftest import write_lines

USER = {"type": "user", "uuid": "u1", "parentUuid": None, "sessionId": "s", "timestamp": "2026-01-01T00:00:00Z",
        "message": {"role": "user", "content": "hi"}}


def _asst(uuid, parent, text):
    return {"type": "assistant", "uuid": uuid, "parentUuid": parent, "sessionId": "s",
            "timestamp": "2026-01-01T00:00:01Z",
            "message": {"id": f"msg_{uuid}", "role": "assistant", "model": "m", "content": [{"type": "text", "text": text}]}}


def test_quarantine_reasons_and_nothing_lost(tmp_path):
    secret = "sk-ant-api03-" + "Q" * 30 + "1234567890"
    lines = [
        USER,                                                   # 1 ok
        b"",                                                    # 2 blank
        b"   \t",                                               # 3 blank (whitespace)
        '{"type": "user", "message": {"content": "cut here',   # 4 invalid json (not last)
        b'{"type":"user","x":"a\x00b"}',                        # 5 binary (NUL byte)
        b'{"type":"user","message":{"content":"caf\xe9 ' + secret.encode() + b'"}}',  # 6 invalid utf-8
        "42",                                                   # 7 JSON but not an object
        json.dumps({"type": "user", "blob": "x" * 600}),        # 8 oversized (limit below)
        _asst("a1", "u1", f"the key is {secret}"),              # 9 ok, holds a secret
        '{"type": "assistant", "message": {"id": "m2", "conte',  # 10 last line, no newline: truncated
    ]
    p = write_lines(tmp_path, "s.jsonl", lines, trailing_newline=False)
    now = datetime(2026, 1, 2, tzinfo=timezone.utc)
    rows, stats = read_raw_lines(p, "k", max_line_bytes=400, now=now)
    RAW_TRACES.conform(rows)
    data = p.read_bytes()
    assert len(rows) == 10 == stats["lines"]
    assert sum(r["byte_len"] for r in rows) == len(data) == stats["bytes"]
    for r in rows:  # byte ranges tile the file; raw is the line (scrubbed) without its newline
        chunk = data[r["byte_offset"]: r["byte_offset"] + r["byte_len"]]
        assert chunk.rstrip(b"\n") == (r["raw_bytes"] or r["raw"].encode()) \
            or r["secrets_scrubbed"] or r["personal_data_replaced"]
    reasons = [r["quarantine_reason"] for r in rows]
    assert reasons[0] is None and reasons[8] is None
    assert reasons[1] == reasons[2] == "blank"
    assert reasons[3].startswith("invalid_json: ")
    assert reasons[4] == "binary"
    assert reasons[5] == "invalid_utf8"
    assert reasons[6] == "not_object"
    assert reasons[7] == "oversized"
    assert reasons[9] == "truncated"
    assert stats["quarantined"] == {"blank": 2, "invalid_json": 1, "binary": 1, "invalid_utf8": 1,
                                    "not_object": 1, "oversized": 1, "truncated": 1}
    assert sum(stats["quarantined"].values()) == sum(r["quarantined"] for r in rows)
    # invalid UTF-8: text backslash-escaped, original bytes kept -- both scrubbed
    bad = rows[5]
    assert "\\xe9" in bad["raw"] and secret not in bad["raw"]
    assert bad["raw_bytes"].startswith(b'{"type":"user","message":{"content":"caf\xe9 [REDACTED:anthropic_key]')
    assert rows[8]["secrets_scrubbed"] == 1 and secret not in rows[8]["raw"]
    assert stats["secrets"] == {"anthropic_key": 2}
    assert rows[7]["raw"] == lines[7]  # oversized: content kept
    assert all(r["ingested_at"] == now for r in rows)
    assert stats["source_format"] == "claude_code"
    assert [r["record_type"] for r in rows if not r["quarantined"]] == ["user", "assistant"]
    # only the two good lines become turns
    turns = parse_turns(rows, "k")
    assert [(t["role"], t["source_lines"]) for t in turns] == [("user", [1]), ("assistant", [9])]
    assert "[REDACTED:anthropic_key]" in turns[1]["content"]


def test_a_lines_secrets_and_personal_data_are_counted_apart(tmp_path):
    key = "sk-ant-api03-" + "Qz7" * 14
    p = write_lines(tmp_path, "s.jsonl", [
        {"type": "user", "c": f"my key is {key}, mail me at marta.kowalczyk@example-corp.io"},
        {"type": "user", "c": "reach me at marta.kowalczyk@example-corp.io"},
        {"type": "user", "c": "nothing here"}])
    rows, stats = read_raw_lines(p, "k")
    RAW_TRACES.conform(rows)
    assert [(r["secrets_scrubbed"], r["personal_data_replaced"]) for r in rows] == [(1, 1), (0, 1), (0, 0)]
    assert sum(stats["secrets"].values()) == 1 and sum(stats["personal_data"].values()) == 2
    assert key not in rows[0]["raw"] and "kowalczyk" not in rows[0]["raw"] + rows[1]["raw"]


def test_truncated_tail_becomes_complete_on_regrowth(tmp_path):
    full = json.dumps(_asst("a1", "u1", "done"))
    p = write_lines(tmp_path, "live.jsonl", [USER, full[:40]], trailing_newline=False)
    rows, _ = read_raw_lines(p, "k")
    assert rows[-1]["quarantine_reason"] == "truncated"
    assert len(parse_turns(rows, "k")) == 1
    p.write_text(json.dumps(USER) + "\n" + full + "\n")  # the client finished writing the line
    rows2, stats = read_raw_lines(p, "k")
    assert stats["quarantined"] == {}
    turns = parse_turns(rows2, "k")
    assert [t["role"] for t in turns] == ["user", "assistant"]
    assert turns[0]["turn_id"] == parse_turns(rows, "k")[0]["turn_id"]  # ids stable across re-ingest


def test_complete_last_line_without_newline_is_fine(tmp_path):
    p = write_lines(tmp_path, "s.jsonl", [USER, _asst("a1", "u1", "x")], trailing_newline=False)
    rows, stats = read_raw_lines(p, "k")
    assert stats["quarantined"] == {} and rows[-1]["byte_len"] == len(orjson.dumps(_asst("a1", "u1", "x")))


def test_crlf_and_empty_file(tmp_path):
    p = tmp_path / "crlf.jsonl"
    p.write_bytes(json.dumps(USER).encode() + b"\r\n" + json.dumps(_asst("a1", "u1", "x")).encode() + b"\r\n")
    rows, stats = read_raw_lines(p, "k")
    assert len(rows) == 2 and stats["quarantined"] == {} and rows[0]["raw"].endswith("\r")
    assert sum(r["byte_len"] for r in rows) == p.stat().st_size
    assert len(parse_turns(rows, "k")) == 2
    e = tmp_path / "empty.jsonl"
    e.write_bytes(b"")
    rows, stats = read_raw_lines(e, "k")
    assert rows == [] and stats["lines"] == 0 and stats["bytes"] == 0
    assert parse_turns(rows, "k") == []


def test_detect_format():
    assert detect_format([{"type": "session_meta", "payload": {"id": "x"}}]) == "codex"
    assert detect_format([{"type": "message", "role": "user", "content": []}]) == "codex"  # legacy rollout
    assert detect_format([{"messages": [{"role": "user", "content": "hi"}]}]) == "openai_messages"
    assert detect_format([{"conversations": [{"from": "human", "value": "hi"}]}]) == "sharegpt"
    assert detect_format([USER]) == "claude_code"
    assert detect_format([{"type": "file-history-snapshot", "messageId": "m", "snapshot": {}}]) == "claude_code"
    assert detect_format([{"foo": 1}]) == "unknown"
    assert detect_format([], "/x/rollout-2026-01-01.jsonl") == "codex"


def test_json_array_export(tmp_path):
    """A .json ShareGPT export, pretty-printed over many lines, is one document."""
    doc = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]},
           {"conversations": [{"from": "human", "value": "key sk-ant-api03-" + "Z" * 40 + "9"},
                              {"from": "gpt", "value": "don't paste keys"}]}]
    p = tmp_path / "export.json"
    p.write_text(json.dumps(doc, indent=2))
    rows, stats = read_raw_lines(p, "k")
    assert len(rows) == len(p.read_text().splitlines()) and stats["quarantined"] == {}
    assert stats["source_format"] == "sharegpt" and stats["secrets"] == {"anthropic_key": 1}
    assert {r["record_type"] for r in rows} == {"json_fragment"}
    turns = parse_turns(rows, "k")
    assert [(t["role"], t["content"]) for t in turns if t["role"] != "meta"] == [
        ("user", "hi"), ("assistant", "hello"),
        ("user", "key [REDACTED:anthropic_key]"), ("assistant", "don't paste keys")]
    assert len({t["session_id"] for t in turns}) == 2


def test_single_line_json_array(tmp_path):
    doc = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}] * 2
    p = tmp_path / "one.jsonl"
    p.write_text(json.dumps(doc) + "\n")
    rows, stats = read_raw_lines(p, "k")
    assert rows[0]["record_type"] == "json_array" and stats["source_format"] == "openai_messages"
    turns = parse_turns(rows, "k")
    assert sum(t["role"] == "assistant" for t in turns) == 2 and len({t["turn_id"] for t in turns}) == len(turns)


def test_scrub_never_breaks_json(tmp_path):
    """Many secret shapes at string edges, escaped once or twice: every line stays valid JSON."""
    secrets = ["sk-ant-api03-" + "a1" * 20, "AKIAIOSFODNN7EXAMPLE", "ghp_" + "b2" * 18, "hf_" + "c3" * 17,
               "-----BEGIN PRIVATE KEY-----\nQUJD\n-----END PRIVATE KEY-----",
               "-----BEGIN PRIVATE KEY-----\nQUJD", "Authorization: Bearer abcdefgh12345678"]
    lines = []
    for s in secrets:
        for wrap in (s, f"\n{s}\n", f'"{s}"', f"'{s}'", f"\\{s}\\", f"x={s}\\n"):
            lines.append({"type": "user", "c": wrap})
            lines.append({"type": "user", "c": orjson.dumps({"inner": wrap}).decode()})
    p = write_lines(tmp_path, "s.jsonl", lines)
    rows, stats = read_raw_lines(p, "k")
    assert stats["quarantined"] == {}
    assert all(orjson.loads(r["raw"]) for r in rows)
    assert all(r["secrets_scrubbed"] >= 1 for r in rows)
    lines.append({"type": "user", "c": "\nAPI_KEY=v4lue\n"})  # env lines need a line start
    rows, stats = read_raw_lines(write_lines(tmp_path, "t.jsonl", lines), "k")
    assert stats["quarantined"] == {} and rows[-1]["secrets_scrubbed"] == 1
    assert orjson.loads(rows[-1]["raw"])["c"] == "\nAPI_KEY=[REDACTED:env_secret]\n"


def test_rule_that_breaks_json_falls_back_to_object_scrubbing(tmp_path):
    """A (user-registered) rule that eats a quote would break the line; the reader then
    scrubs the parsed object instead and stores its re-serialization."""
    from resources.privacy import secrets

    rule = secrets.register("greedy", ["zzsecret"], r'zzsecret[^,]*')
    try:
        p = write_lines(tmp_path, "s.jsonl", [{"type": "user", "a": "x zzsecret", "b": 1}])
        rows, stats = read_raw_lines(p, "k")
        assert stats["quarantined"] == {}
        assert orjson.loads(rows[0]["raw"]) == {"type": "user", "a": "x [REDACTED:greedy]", "b": 1}
        assert rows[0]["secrets_scrubbed"] == 1
    finally:
        secrets.unregister(rule)


@pytest.mark.parametrize("encoding,bom", [("utf-16-le", b"\xff\xfe"), ("utf-16-le", b""), ("utf-16-be", b"\xfe\xff")])
def test_utf16_files_are_decoded_scrubbed_and_offsets_match_the_file(tmp_path, encoding, bom):
    """Windows shells write redirected output as UTF-16: such a session is ingested like any
    other, secrets included, with byte offsets into the original file."""
    import json as _json

    lines = [_json.dumps({"type": "user", "uuid": "u1", "sessionId": "s", "message": {
                 "role": "user", "content": "token hf_abcdefghijklmnopqrstuvwxyz0123456789 here"}}),
             _json.dumps({"type": "assistant", "uuid": "u2", "sessionId": "s", "message": {
                 "id": "m", "role": "assistant", "content": [{"type": "text", "text": "hi"}]}})]
    data = bom + ("\n".join(lines) + "\n").encode(encoding)
    p = tmp_path / "w.jsonl"
    p.write_bytes(data)
    rows, stats = read_raw_lines(p, "k")
    assert [r["quarantine_reason"] for r in rows] == [None, None]
    assert [r["record_type"] for r in rows] == ["user", "assistant"]
    assert sum(r["byte_len"] for r in rows) == len(data) and rows[1]["byte_offset"] == rows[0]["byte_len"]
    assert "hf_abcdefghij" not in str(rows) and stats["secrets"] == {"hf_token": 1}


def test_a_file_of_json_scalars_is_bad_lines_not_a_broken_document(tmp_path):
    # Valid JSON that is not an object must not make the reader take the file for a
    # pretty-printed document (whose lines do not parse by themselves).
    p = tmp_path / "not-objects.jsonl"
    p.write_text('1\n"a string"\n[1, 2]\nnull\ntrue\n{"unterminated": \n')
    rows, stats = read_raw_lines(p, "k")
    reasons = [r["quarantine_reason"] for r in rows]
    assert reasons[:5] == ["not_object"] * 5 and reasons[5].startswith("invalid_json")
