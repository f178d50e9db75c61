"""Rendering of training rows, mined pairs and tool-call validity (pure)."""

import json

from assets.student.data import (RenderSettings, fit_answer, fit_prompt, mined_pairs, pair_example, pair_kind, sft_example,
                                 tool_names)
from assets.student.evaluate import tool_call_valid
from tests.student.conftest import TOOLS


def count(text: str) -> int:  # one token a word: enough to check budgets
    return len(text.split())


def test_prompt_keeps_its_end_within_budget_and_announces_tools():
    msgs = [{"role": "system", "content": "long agent rules " * 50},
            {"role": "user", "content": " ".join(f"w{i}" for i in range(200))},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "Bash", "arguments": "{\"command\": \"ls\"}"}}]},
            {"role": "tool", "content": "file_a file_b"}]
    out = fit_prompt(msgs, TOOLS, count, RenderSettings(max_prompt_tokens=60))
    assert out[0]["role"] == "system" and "Bash(command)" in out[0]["content"]
    assert out[-1] == {"role": "tool", "content": "file_a file_b"}
    assert "<tool_call>" in out[-2]["content"] and "Bash" in out[-2]["content"]
    assert out[-3]["role"] == "user" and out[-3]["content"].endswith("w199") and "w0 " not in out[-3]["content"]
    assert sum(count(m["content"]) + 4 for m in out) <= 60 + 8
    assert "long agent rules" not in json.dumps(out)


def test_sft_and_pair_rows_and_mined_pairs():
    s = RenderSettings(max_prompt_tokens=40, max_answer_tokens=5)
    row = {"example_id": "e1", "session_key": "s", "messages": json.dumps([
        {"role": "user", "content": "fix it"}, {"role": "assistant", "content": "one two three four five six seven"}]),
        "tools": None}
    ex = sft_example(row, count, s)
    assert ex["prompt"] == [{"role": "user", "content": "fix it"}]
    assert ex["completion"] == [{"role": "assistant", "content": "one two three four five"}]
    assert sft_example({**row, "messages": "[]"}, count, s) is None
    same = {"pair_id": "p", "prompt": json.dumps([{"role": "user", "content": "q"}]),
            "chosen": json.dumps([{"role": "assistant", "content": "a"}]),
            "rejected": json.dumps([{"role": "assistant", "content": "a"}])}
    assert pair_example(same, count, s) is None  # chosen == rejected is no preference
    rec = pair_example({**same, "chosen": json.dumps([{"role": "assistant", "content": "b"}]),
                        "chosen_source": "recovery"}, count, s)
    assert rec["chosen_source"] == "recovery" and pair_kind(rec) == "recovery"
    exs = [{**ex, "id": f"e{i}", "completion": [{"role": "assistant", "content": f"answer {i % 3}"}]} for i in range(6)]
    pairs = mined_pairs(exs)
    assert len(pairs) == 6 and pairs == mined_pairs(list(reversed(exs)))
    assert all(p["chosen"] != p["rejected"] and p["pair_source"] == "mined:context_mismatch" for p in pairs)
    assert len(mined_pairs(exs, limit=2)) == 2


def test_tool_call_validity():
    offered = tool_names(TOOLS)
    assert offered == {"Bash"}
    assert tool_call_valid('<tool_call>{"name": "Bash", "arguments": {"command": "ls"}}</tool_call>', offered) == (True, "ok")
    assert tool_call_valid("I would run ls.", offered) == (False, "no_tool_call")
    assert tool_call_valid('<tool_call>{"name": "Rm", "arguments": {}}</tool_call>', offered)[1] == "unknown_tool"
    assert tool_call_valid('<tool_call>{"name": "Bash", "arguments": [1]}</tool_call>', offered)[1] == "arguments_not_object"


def test_tool_call_answers_stay_whole_within_the_budget():
    path = "/home/user/project/" + "/".join(f"dir{i}" for i in range(40)) + "/module.py"
    msg = {"role": "assistant", "content": " ".join(f"p{i}" for i in range(30)),
           "tool_calls": [{"id": "1", "type": "function",
                           "function": {"name": "Read", "arguments": json.dumps({"file_path": path, "limit": 20})}}]}

    def chars(text: str) -> int:  # a token every 4 characters
        return (len(text) + 3) // 4

    s = RenderSettings(max_answer_tokens=48)
    out = fit_answer(msg, chars, s)[0]["content"]
    assert chars(out) <= 48 and out.startswith("p0 p1") and out.endswith("</tool_call>")
    assert tool_call_valid(out, {"Read"}) == (True, "ok")
    call = json.loads(out.split("<tool_call>")[1].split("</tool_call>")[0])
    assert list(call) == ["name", "arguments"] and call["arguments"]["limit"] == 20
    assert path.startswith(call["arguments"]["file_path"]) and len(call["arguments"]["file_path"]) > 10
    # a short answer is kept as it is; an answer without calls keeps its start
    short = {**msg, "content": "", "tool_calls": [{"function": {"name": "Read", "arguments": '{"file_path": "a.py"}'}}]}
    assert fit_answer(short, chars, s)[0]["content"] == '<tool_call>\n{"name": "Read", "arguments": {"file_path": "a.py"}}\n</tool_call>'
    assert fit_answer({"role": "assistant", "content": "x" * 400}, chars, s)[0]["content"] == "x" * 192


def test_pair_kind_says_what_the_chosen_side_is():
    real = {"pair_source": "normalized_pairs"}
    assert pair_kind({**real, "chosen_source": "recovery"}) == "recovery"
    assert pair_kind({**real, "chosen_source": "smol-greedy"}) == "teacher"
    assert pair_kind({**real, "chosen_source": "original"}) == pair_kind(real) == "original"
    assert pair_kind({"pair_source": "mined:context_mismatch", "chosen_source": "recovery"}) == "mined"
