"""Streaming checks: the flags each answer gets as it arrives."""

from __future__ import annotations

from assets.teachers.flags import answer_flags, tool_call_flags


def call(name: str, args) -> dict:
    return {"id": "c", "type": "function", "function": {"name": name, "arguments": args}}


def test_text_flags():
    assert answer_flags("Run `pytest -x` to see the failure.", "stop") == []
    assert answer_flags("", "stop") == ["empty"]
    assert answer_flags("   \n", None) == ["empty"]
    assert answer_flags("I’m sorry, but I can’t help with that.", "stop") == ["refusal"]
    assert answer_flags("I cannot assist with this request.", "stop") == ["refusal"]
    assert answer_flags("As an AI, I think the bug is in parse().", "stop") == ["hedge"]
    assert answer_flags("I'm not sure, but try restarting.", "stop") == ["hedge"]
    assert answer_flags("def f():\n    return", "length") == ["truncated"]
    assert answer_flags("x", "content_filter") == ["content_filter"]
    assert answer_flags("ok", "stop", extra=["usage_estimated"]) == ["usage_estimated"]
    # a refusal far into a long answer is not the answer's stance
    assert answer_flags("Here is the fix. " * 40 + "I can't help with the rest.", "stop") == []


def test_tool_call_flags():
    assert answer_flags(None, "tool_calls", [call("bash", '{"cmd": "ls"}')], ["bash"]) == []
    assert tool_call_flags([call("bash", '{"cmd": "ls"')], ["bash"]) == ["invalid_tool_json"]
    assert tool_call_flags([call("bash", '"just a string"')], ["bash"]) == ["invalid_tool_json"]
    assert tool_call_flags([call("bash", {"cmd": "ls"})], ["bash"]) == []
    assert tool_call_flags([call("bash", "")], ["bash"]) == []  # no arguments
    assert tool_call_flags([call("rm_rf", "{}")], ["bash"]) == ["unknown_tool"]
    assert tool_call_flags([{"function": {"arguments": "{}"}}], []) == ["invalid_tool_json"]
    assert tool_call_flags("not a list", []) == ["invalid_tool_json"]
