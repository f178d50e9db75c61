"""Pair validity (issue 16 point 0): mistakes vs informative failures, tool calls written as
text, chosen answers that are valid actions. The two pairs `make demo` produced before are
rebuilt here from the bundled session and must be dropped, each with its rule."""

from __future__ import annotations

import json

import pytest

from assets.traces.failures import (
    EXTERNAL,
    INFORMATIVE,
    MISTAKE,
    command_programs,
    load_failure_policy,
    parse_policy,
    step_verdict,
)
from assets.pairs.validity import RULES, ValidityConfig, check_pair, check_row
from resources.tool_text import chat_messages, hermes_call_text, parse_text_tool_calls, structure_tool_calls
from tests.pairs.data import TOOLS, asst, call, step, tool

TOTALS = "/home/dev/invoicer/invoicer/totals.py"
QUOTES_TEST = "tests/test_parse_quotes.py"


@pytest.fixture(scope="module")
def policy():
    return load_failure_policy()


# ------------------------------------------------------------------ failure policy

@pytest.mark.parametrize("kind,tool_name,args,cls", [
    ("edit_mismatch", "Edit", {"file_path": TOTALS, "old_string": "x", "new_string": "y"}, MISTAKE),
    ("file_not_found", "Read", {"file_path": "/home/dev/invoicer/invoicer/parsing.py"}, MISTAKE),
    ("invalid_tool_input", "Grep", {"patern": "x"}, MISTAKE),
    ("command_not_found", "Bash", {"command": "pytset -q"}, MISTAKE),
    ("permission_denied", "Bash", {"command": "cat /etc/shadow"}, MISTAKE),
    ("syntax_error", "Bash", {"command": "python -c 'print(1'"}, MISTAKE),
    ("test_failure", "Bash", {"command": "pytest -q"}, INFORMATIVE),
    ("syntax_error", "Bash", {"command": f"pytest -q {QUOTES_TEST}"}, INFORMATIVE),
    ("nonzero_exit", "Bash", {"command": "cd /repo && grep -rn TODO src"}, INFORMATIVE),
    ("nonzero_exit", "Bash", {"command": "diff -u a.txt b.txt"}, INFORMATIVE),
    ("nonzero_exit", "Bash", {"command": "RUST_LOG=1 cargo build --release"}, INFORMATIVE),
    ("nonzero_exit", "Bash", {"command": "uv run python -m mypy src"}, INFORMATIVE),
    ("file_not_found", "Bash", {"command": "pytest tests/test_missing.py"}, MISTAKE),
    ("timeout", "Bash", {"command": "sleep 999"}, EXTERNAL),
    ("nonzero_exit", "exec_command", {"command": ["bash", "-lc", "rg -n foo"]}, INFORMATIVE),
])
def test_failure_classes(policy, kind, tool_name, args, cls):
    assert policy.classify(kind, tool_name, json.dumps(args)).cls == cls


def test_command_programs_look_through_wrappers():
    assert command_programs("cd x && FOO=1 nice -n 10 python3 -m pytest -q | tail -5") == ["pytest", "tail"]
    assert command_programs("timeout 60 npm run test -- --watch=false")[:3] == ["npm", "npm run", "npm run test"]
    assert command_programs("git diff --stat") == ["git", "git diff"]


def test_policy_is_configurable_per_kind_and_tool():
    p = parse_policy({"default": "mistake", "rules": [
        {"name": "our_grep", "tools": ["Grep"], "class": "informative"},
        {"name": "lint", "programs": ["ruff"], "kinds": ["nonzero_exit"], "class": "informative"},
    ]})
    assert p.classify("nonzero_exit", "Grep").cls == INFORMATIVE
    assert p.classify("nonzero_exit", "Bash", {"command": "ruff check ."}).cls == MISTAKE  # Bash not a shell tool here
    p2 = parse_policy({"shell_tools": ["Bash"], "rules": [
        {"name": "lint", "programs": ["ruff"], "kinds": ["nonzero_exit"], "class": "informative"}],
        "default": "mistake"})
    v = p2.classify("nonzero_exit", "Bash", {"command": "ruff check ."})
    assert (v.cls, v.rule, v.program) == (INFORMATIVE, "lint", "ruff")
    with pytest.raises(ValueError, match="class must be one of"):
        parse_policy({"rules": [{"name": "x", "class": "bad"}]})


def test_multi_call_step_is_a_mistake_only_when_every_call_is(policy):
    resp = asst("", call("a", "Edit", file_path=TOTALS, old_string="a", new_string="b"),
                call("b", "Bash", command="pytest -q"))
    row = step("s", 1, [], resp, caused_error=True, caused_error_kind="test_failure")
    assert step_verdict(row, policy).cls == INFORMATIVE
    assert step_verdict(step("s", 2, [], resp), policy) is None


# ------------------------------------------------------------------ text tool calls

@pytest.mark.parametrize("text,fmt", [
    ('<tool_call>\n{"name": "Read", "arguments": {"file_path": "/a.py"}}\n</tool_call>', "hermes"),
    ('Let me look.\n<tool_call>{"name": "Read", "arguments": {"file_path": "/a.py"}}', "hermes"),
    ("<tool_call>\n<function=Read>\n<parameter=file_path>\n/a.py\n</parameter>\n</function>\n</tool_call>", "qwen_xml"),
    ('<function=Read>{"file_path": "/a.py"}</function>', "llama_function"),
    ('<|python_tag|>{"name": "Read", "parameters": {"file_path": "/a.py"}}<|eom_id|>', "llama_python_tag"),
    ('[TOOL_CALLS] [{"name": "Read", "arguments": {"file_path": "/a.py"}}]', "mistral"),
    ('[TOOL_CALLS]Read[ARGS]{"file_path": "/a.py"}', "mistral"),
    ('<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>Read\n```json\n{"file_path": "/a.py"}\n```'
     '<｜tool▁call▁end｜><｜tool▁calls▁end｜>', "deepseek"),
    ('```json\n{"name": "Read", "arguments": {"file_path": "/a.py"}}\n```', "json"),
])
def test_text_tool_calls_are_parsed(text, fmt):
    prose, calls, got = parse_text_tool_calls(text, ["Read", "Bash"])
    assert got == fmt
    assert [c["function"]["name"] for c in calls] == ["Read"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"file_path": "/a.py"}
    assert "<" not in prose and "TOOL_CALLS" not in prose


def test_plain_json_answer_is_not_a_call():
    text = '{"name": "Alice", "arguments": "none"}'
    assert parse_text_tool_calls(text, ["Read"])[1] == []  # not an offered tool
    assert parse_text_tool_calls("Just prose.", ["Read"]) == ("Just prose.", [], None)
    m, fmt = structure_tool_calls({"role": "assistant", "content": "x", "tool_calls": [call("a", "Read")]})
    assert fmt is None and m["content"] == "x"


def test_calls_written_back_as_hermes_text_parse_to_the_same_calls():
    """What the student trains on and the verifier captures (structured calls written as
    text, the name first) is read back by the parser the model client runs on answers."""
    tc = {"id": "x", "type": "function",
          "function": {"name": "Edit", "arguments": json.dumps({"path": "a.py", "old": "x" * 50, "new": "y"})}}
    text = hermes_call_text(tc)
    assert text.index('"name"') < text.index('"arguments"')
    _, calls, fmt = parse_text_tool_calls(text, ["Edit"])
    assert fmt == "hermes" and [c["function"]["name"] for c in calls] == ["Edit"]
    assert json.loads(calls[0]["function"]["arguments"]) == json.loads(tc["function"]["arguments"])
    short = json.loads(parse_text_tool_calls(hermes_call_text(tc, 8), ["Edit"])[1][0]["function"]["arguments"])
    assert short == {"path": "a.py", "old": "x" * 8, "new": "y"}  # long values cut, JSON still valid
    rendered = chat_messages([{"role": "assistant", "content": "Fixing it.", "tool_calls": [tc]},
                              {"role": "function", "content": {"ok": True}}])
    assert rendered == [{"role": "assistant", "content": "Fixing it.\n" + text},
                        {"role": "tool", "content": '{"ok": true}'}]


# ------------------------------------------------------------------ chosen validity

def _demo_context_edit_step():
    """The main bundled session up to its failed Edit of totals.py."""
    return [
        {"role": "system", "content": "You are Claude Code."},
        {"role": "user", "content": "test_totals is failing on main, can you fix it?"},
        asst("I'll run the tests to see what's failing.", call("t1", "Bash", command="pytest -q")),
        tool("t1", "Bash", "Exit code 1\n1 failed, 11 passed in 0.09s"),
        asst("", call("t2", "Read", file_path=TOTALS)),
        tool("t2", "Read", "1→from decimal import Decimal\n..."),
    ]


def test_demo_pair_1_text_read_repeating_the_context_is_dropped(policy):
    """Original edits totals.py and the edit fails; the teacher 'answer' is the text
    `<tool_call>{"name": "Read", ...totals.py}</tool_call>` — parsed into a call, it repeats
    the read the context just showed."""
    prompt = _demo_context_edit_step()
    failed_edit = asst("I'll switch it to ROUND_HALF_UP.",
                       call("t3", "Edit", file_path=TOTALS, old_string="    return round(subtotal + tax, 2)",
                            new_string="    return (subtotal + tax).quantize(CENT, rounding=ROUND_HALF_UP)"))
    verdict = step_verdict(step("s", 3, prompt, failed_edit, caused_error=True,
                                caused_error_kind="edit_mismatch"), policy)
    assert verdict.cls == MISTAKE
    teacher = {"role": "assistant",
               "content": f'<tool_call>{{"name": "Read", "arguments": {{"file_path": "{TOTALS}"}}}}</tool_call>'}
    # as stored before: the call is text
    v = check_pair(prompt, teacher, failed_edit, TOOLS, strategy="error_site",
                   rejected_failure=f"{verdict.cls}:{verdict.rule}")
    assert v.rule == "chosen_tool_call_as_text"
    # parsed as the pairs family does now: a real call, but the one the context just answered
    structured, fmt = structure_tool_calls(teacher, TOOLS)
    assert fmt == "hermes" and structured["tool_calls"][0]["function"]["name"] == "Read"
    v = check_pair(prompt, structured, failed_edit, TOOLS, strategy="error_site",
                   rejected_failure=f"{verdict.cls}:{verdict.rule}")
    assert v.rule == "chosen_repeats_answered_call"


def test_demo_pair_2_running_a_new_failing_test_is_not_a_mistake(policy):
    """Original runs the test it just wrote; it fails (as a new test may) → not a mistake, so
    no error-site pair, whatever prose the teacher wrote instead."""
    prompt = [{"role": "user", "content": "ok, add a test for the quoted-comma case"},
              asst("", call("w", "Write", file_path=QUOTES_TEST, content="...")),
              tool("w", "Write", "File created successfully")]
    run = asst("", call("b", "Bash", command=f"pytest -q {QUOTES_TEST}", description="Run new test"))
    row = step("s", 9, prompt, run, caused_error=True, caused_error_kind="syntax_error")
    verdict = step_verdict(row, policy)
    assert verdict.cls == INFORMATIVE and verdict.program == "pytest"
    prose = asst("The tests cover header mapping, a trailing blank line and empty input; the quoted comma "
                 "case is handled by the csv module.")
    v = check_pair(prompt, prose, run, None, strategy="error_site",
                   rejected_failure=f"{verdict.cls}:{verdict.rule}")
    assert v.rule == "rejected_not_a_mistake" and "informative" in v.reason


def test_chosen_must_be_a_valid_action():
    prompt = _demo_context_edit_step()
    rejected = asst("", call("x", "Edit", file_path=TOTALS, old_string="a", new_string="b"))
    kw = dict(strategy="error_site", rejected_failure="mistake:edit_target_not_found")
    good = asst("", call("y", "Edit", file_path=TOTALS, old_string="    return (subtotal + tax).quantize(CENT)",
                         new_string="    return (subtotal + tax).quantize(CENT, rounding=ROUND_HALF_UP)"))
    assert check_pair(prompt, good, rejected, TOOLS, **kw) is None
    assert check_pair(prompt, asst("", call("y", "Write", file_path=TOTALS)), rejected, TOOLS,
                      **kw).rule == "chosen_unknown_tool"
    bad_args = asst("", {"id": "y", "type": "function", "function": {"name": "Edit", "arguments": "{file_path: x"}})
    assert check_pair(prompt, bad_args, rejected, TOOLS, **kw).rule == "chosen_invalid_arguments"
    missing = asst("", call("y", "Edit", file_path=TOTALS))
    v = check_pair(prompt, missing, rejected, TOOLS, **kw)
    assert v.rule == "chosen_invalid_arguments" and "old_string" in v.reason
    assert check_pair(prompt, asst("Sure!"), rejected, TOOLS, **kw).rule == "chosen_not_substantive"
    assert check_pair(prompt, rejected, rejected, TOOLS, **kw).rule == "chosen_same_action_as_rejected"
    # a substantive text answer is a valid action, except in place of a call that failed by a
    # mistake a corrected call fixes (the edit's target is not in the file: edit it right)
    text = asst("The file already rounds with quantize(CENT); the failing test expects ROUND_HALF_UP, so the "
                "fix is to pass rounding=ROUND_HALF_UP and import it.")
    v = check_pair(prompt, text, rejected, TOOLS, **kw)
    assert v.rule == "chosen_text_for_a_call_mistake" and "edit_target_not_found" in v.reason
    assert check_pair(prompt, text, rejected, TOOLS, strategy="error_site",
                      rejected_failure="mistake:permission_denied") is None
    # rules can be switched off in the recipe
    some = tuple(r for r in RULES if r not in ("chosen_not_substantive", "chosen_text_for_a_call_mistake"))
    assert check_pair(prompt, asst("Sure!"), rejected, TOOLS, config=ValidityConfig(rules=some), **kw) is None
    assert check_pair(prompt, text, rejected, TOOLS, config=ValidityConfig(text_fixes=("edit_target_not_found",)),
                      **kw) is None


def test_text_in_place_of_a_call_mistake_only_for_teacher_answers_at_error_sites():
    """The 135M teachers' prose at the demo's error sites (read from a demo lake) is no fix of a
    typo'd command or a wrong path; a text after a denied permission can be; the agent's own
    text after the error (a recovery pair) saw the error and stays valid."""
    prompt = _demo_context_edit_step()
    typo = asst("", call("x", "Bash", command="pytset -q tests/test_webhooks.py"))
    for text in ("You can also find the error message within Python when the tests run.",
                 "The code is in the \"invoice.py\" file, which the totals module imports."):
        v = check_pair(prompt, asst(text), typo, TOOLS, strategy="error_site", rejected_failure="mistake:unknown_command")
        assert v is not None and v.rule == "chosen_text_for_a_call_mistake", text
        assert check_pair(prompt, asst(text), typo, TOOLS, strategy="recovery",
                          rejected_failure="mistake:unknown_command") is None
    refund = asst("", call("r", "Bash", command="sudo tee /etc/invoicer/webhooks.yaml"))
    stop = asst("I cannot write /etc/invoicer/webhooks.yaml (no permission); the secret stays in the environment.")
    assert check_pair(prompt, stop, refund, TOOLS, strategy="error_site",
                      rejected_failure="mistake:permission_denied") is None
    fixed = asst("", call("y", "Bash", command="pytest -q tests/test_webhooks.py"))
    assert check_pair(prompt, fixed, typo, TOOLS, strategy="error_site", rejected_failure="mistake:unknown_command") \
        is None


def test_check_row_reads_json_columns():
    prompt = _demo_context_edit_step()
    row = {"prompt": json.dumps(prompt), "chosen": json.dumps([asst("", call("z", "Read", file_path=TOTALS))]),
           "rejected": json.dumps([asst("", call("x", "Edit", file_path=TOTALS, old_string="a", new_string="b"))]),
           "tools": json.dumps(TOOLS), "strategy": "consensus", "rejected_failure": None}
    assert check_row(row).rule == "chosen_repeats_answered_call"


@pytest.mark.parametrize("fake", [
    "<tool_use_error>File has not been read yet. Read it first before writing to it.</tool_use_error>",
    # Claude Code's answer to a rejected tool use, which the demo's local teachers copy from the context
    "The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if it was a file edit, "
    "the new_string was not written to file).",
    "File created successfully at: /home/dev/invoicer/tests/test_totals.py",
])
def test_chosen_that_imitates_a_tool_result_is_no_action(fake):
    prompt = _demo_context_edit_step()
    rejected = asst("", call("x", "Edit", file_path=TOTALS, old_string="a", new_string="b"))
    v = check_pair(prompt, asst(fake), rejected, TOOLS, strategy="error_site", rejected_failure="mistake:x")
    assert v.rule == "chosen_imitates_tool_output"


def test_pleasantries_are_not_substantive():
    prompt = _demo_context_edit_step()
    rejected = asst("", call("x", "Edit", file_path=TOTALS, old_string="a", new_string="b"))
    for text in ("I'm ready to assist you with your project. What's your project?",
                 "No issue. I'll get back to you with the details. Good luck!",
                 "I'm sorry for any confusion. I'm here to help with any kind of problem."):
        v = check_pair(prompt, asst(text), rejected, TOOLS, strategy="error_site", rejected_failure="mistake:x")
        assert v is not None and v.rule == "chosen_not_substantive", text
    ok = asst("Sorry, the line is `quantize(CENT)`, not `round(...)`; edit that line instead.")
    # (a text answer, valid where text can fix the mistake: chosen_text_for_a_call_mistake)
    assert check_pair(prompt, ok, rejected, TOOLS, strategy="error_site",
                      rejected_failure="mistake:permission_denied") is None


@pytest.mark.parametrize("text, rule", [
    # what the demo's 135M teachers answered at error sites (read from a demo lake)
    ("You are a senior software engineer acting as a coding agent. Decide the single next action and state it "
     "in one or two sentences.", "chosen_role_play"),
    ("You're an AI assistant that helps users navigate and find their way around.", "chosen_role_play"),
    ("You are the only one in a room with 1000 people. You are the only one in the room with 1000 people.",
     "chosen_role_play"),
    ("Your answer is too long.  Your answer is too long. Your answer is too long. Your answer is too long.",
     "chosen_repetitive"),
    ("The user's email is: [user_email] The user's email is: [user_email] The user's email is: [user_email]",
     "chosen_repetitive"),
    ("I think the senior senior senior senior engineer should look at it.", "chosen_repetitive"),
])
def test_role_play_and_loops_are_no_answer(text, rule):
    prompt = _demo_context_edit_step()
    rejected = asst("", call("x", "Edit", file_path=TOTALS, old_string="a", new_string="b"))
    v = check_pair(prompt, asst(text), rejected, TOOLS, strategy="error_site", rejected_failure="mistake:x")
    assert v is not None and v.rule == rule, (text, v)
    # each rule can be switched off in the recipe
    off = ValidityConfig(rules=tuple(r for r in RULES if r != rule))
    v = check_pair(prompt, asst(text), rejected, TOOLS, strategy="error_site", rejected_failure="mistake:x",
                   config=off)
    assert v is None or v.rule != rule


@pytest.mark.parametrize("text", [
    "You are right: the test expects ROUND_HALF_UP, so quantize(CENT) needs rounding=ROUND_HALF_UP.",
    "Your task list is done: totals.py rounds half up and tests/test_totals.py covers 0.005.",
    "Run `pytest -q tests/test_totals.py` again; the assertion compares Decimal('10.01') with Decimal('10.00').",
])
def test_answers_that_address_the_user_stay_valid(text):
    prompt = _demo_context_edit_step()
    rejected = asst("", call("x", "Edit", file_path=TOTALS, old_string="a", new_string="b"))
    assert check_pair(prompt, asst(text), rejected, TOOLS, strategy="error_site",
                      rejected_failure="mistake:permission_denied") is None


def test_role_play_and_loop_rules_spare_real_agents_text():
    """Every text-only step of the real transcripts, read as a chosen answer: no false positive."""
    from tests.traces.conftest import REALDATA, ingest

    if not REALDATA.is_dir():
        pytest.skip(f"real transcripts not found at {REALDATA} (they live beside the project, in shared/realdata)")
    seen = 0
    for path in sorted(p for p in REALDATA.rglob("*") if p.is_file() and p.suffix != ".md"):
        _raw, _turns, steps, _stats = ingest(path, f"real~{path.name}")
        for s in steps:
            resp = json.loads(s["response"])
            if resp.get("tool_calls") or not (resp.get("content") or "").strip():
                continue
            seen += 1
            v = check_pair(json.loads(s["messages"]), resp, None, None,
                           config=ValidityConfig(rules=("chosen_role_play", "chosen_repetitive")))
            assert v is None, (path.name, v, resp["content"][:200])
    assert seen >= 20
