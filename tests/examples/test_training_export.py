"""SFT / KTO / SDPO rows from plain steps, and exports that `datasets` loads unchanged."""

import json

import pyarrow as pa
import pytest

from dagster_project.export import export_table, main, trl_rows, write_rows
from assets.pairs.strategies import build_pairs, make_strategy, steps_from_rows
from assets.pairs.tables import PREFERENCE_PAIRS
from assets.examples.tables import KTO_EXAMPLES, SDPO_EXAMPLES, SFT_EXAMPLES
from assets.examples.training import (
    HINT_GENERATORS,
    HintInput,
    kto_rows,
    make_hint,
    register_hint_generator,
    sdpo_rows,
    sft_rows,
)
from resources.lake import DeltaLake
from tests.pairs.data import TS, asst, call, session, step, tool
from tests.sessions import put_sessions


@pytest.fixture(scope="module")
def rows():
    steps, teachers = session("s1")
    pairs, _ = build_pairs(steps_from_rows(steps, teachers),
                           [make_strategy("error_site"), make_strategy("consensus")], TS)
    return {
        "steps": steps,
        "pairs": pairs,
        "sft": sft_rows(steps, TS),
        "kto": kto_rows(steps, pairs, TS),
        "sdpo": sdpo_rows(steps, TS),
    }


def test_sft_skips_error_steps_and_keeps_tool_calls(rows):
    sft, skipped = rows["sft"]
    assert [r["step_id"] for r in sft] == ["s1:0", "s1:2", "s1:3"]
    assert skipped == {"mistake (invalid_arguments)": 1}
    msgs = json.loads(sft[0]["messages"])
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[-1]["tool_calls"][0]["function"] == {"name": "Bash",
                                                     "arguments": '{"command": "pytest tests/test_utils.py -q"}'}
    last = json.loads(sft[2]["messages"])
    assert [m["role"] for m in last][-3:] == ["assistant", "tool", "assistant"]
    assert json.loads(sft[0]["tools"])[0]["function"]["name"] == "Bash"
    SFT_EXAMPLES.conform(sft)


def test_kto_labels_originals_and_adds_chosen_teacher_answers(rows):
    kto, counts = rows["kto"]
    by = {(r["step_id"], r["source"]): r for r in kto}
    assert by[("s1:1", "original")]["label"] is False  # caused an error
    assert by[("s1:0", "original")]["label"] is True
    assert by[("s1:1", "smol-a")]["label"] is True  # the chosen teacher answer of the error-site pair
    assert counts == {"desirable": 4, "undesirable": 1}
    KTO_EXAMPLES.conform(kto)


def test_sdpo_recovery_turn_is_the_default_site(rows):
    """The assistant turn right after the failed tool result, hint = the error excerpt."""
    sdpo, counts = rows["sdpo"]
    assert len(sdpo) == 1 and counts == {"with_error_text": 1}
    r = sdpo[0]
    assert (r["step_id"], r["site"], r["error_kind"]) == ("s1:2", "recovery", "invalid_tool_input")
    assert r["failure_class"] == "mistake" and r["trace_id"] == "s1" and r["hint_generator"] == "template"
    prompt, hinted = json.loads(r["prompt"]), json.loads(r["hinted_prompt"])
    assert prompt[-1]["role"] == "tool" and "InputValidationError" in prompt[-1]["content"]
    assert hinted[:-1] == prompt and hinted[-1]["role"] == "user"
    assert hinted[-1]["content"].startswith("Hint: Read failed with invalid_tool_input: InputValidationError: "
                                            "offset must be a non-negative number")
    assert "follow the tool's schema" in hinted[-1]["content"]
    # the recovery turn itself: read the whole file
    assert json.loads(r["completion"])[0]["tool_calls"][0]["function"]["arguments"] == \
        '{"file_path": "/repo/src/utils.py"}'
    # the session ends on an edit whose result never came: unresolved
    assert r["final_reward"] == 0.0
    SDPO_EXAMPLES.conform(sdpo)


def test_sdpo_final_reward_rule_and_pluggable_hints():
    steps, _ = session("s2")
    done = steps[-1] | {}
    ctx = json.loads(done["messages"]) + [json.loads(done["response"]), tool("s2c3", "Edit", "updated")]
    steps.append(step("s2", 4, ctx, asst("Fixed: slugify strips the trailing dash; the test passes now.")))
    rows, _ = sdpo_rows(steps, TS)
    assert [r["final_reward"] for r in rows] == [1.0]  # resolved, no mistake after the recovery
    steps2 = steps[:3] + [steps[3] | {"caused_error": True, "caused_error_kind": "edit_mismatch"}] + steps[4:]
    rows2, _ = sdpo_rows(steps2, TS)
    assert [r["final_reward"] for r in rows2] == [0.5]  # one more mistake before the end

    @register_hint_generator("shout")
    def shout(h: HintInput) -> str:
        return f"HINT {h.kind} {h.failure_class} {h.site}"

    try:
        rows3, _ = sdpo_rows(steps, TS, hint_generator_name="shout")
        assert rows3[0]["hint"] == "HINT invalid_tool_input mistake recovery"
        assert rows3[0]["hint_generator"] == "shout"
    finally:
        HINT_GENERATORS.pop("shout")
    with pytest.raises(KeyError, match="unknown hint generator"):
        sdpo_rows(steps, TS, hint_generator_name="nope")


def test_informative_failures_stay_sft_and_desirable_kto():
    """`pytest -q` run to see what fails (exit code 1) is the right action, not a negative."""
    u = {"role": "user", "content": "test_totals is failing, fix it"}
    run = asst("I'll run the tests.", call("c0", "Bash", command="pytest -q"))
    s0 = step("s3", 0, [u], run, caused_error=True, caused_error_kind="test_failure")
    fail = "Exit code 1\nFAILED tests/test_totals.py::test_x - AssertionError\n1 failed, 11 passed"
    s1 = step("s3", 1, [u, run, tool("c0", "Bash", fail)], asst("", call("c1", "Read", file_path="/r/totals.py")),
              is_error_site=True, error_kind="test_failure", error_text=fail)
    sft, skipped = sft_rows([s0, s1], TS)
    assert [r["step_id"] for r in sft] == ["s3:0", "s3:1"] and not skipped
    kto, counts = kto_rows([s0, s1], [], TS)
    assert all(r["label"] for r in kto) and counts == {"desirable": 2}
    sdpo, _ = sdpo_rows([s0, s1], TS)
    assert [(r["step_id"], r["failure_class"]) for r in sdpo] == [("s3:1", "informative")]
    assert sdpo_rows([s0, s1], TS, site_classes=("mistake",))[0] == []


def test_sdpo_failing_turn_variant(rows):
    sdpo, counts = sdpo_rows(rows["steps"], TS, site="failing_turn")
    assert len(sdpo) == 1 and counts == {"with_error_text": 1}
    r = sdpo[0]
    assert r["step_id"] == "s1:1" and r["error_kind"] == "invalid_tool_input" and r["site"] == "failing_turn"
    prompt, hinted = json.loads(r["prompt"]), json.loads(r["hinted_prompt"])
    assert hinted[:-1] == prompt and hinted[-1]["role"] == "user"
    assert hinted[-1]["content"].startswith("Hint: the previous attempt at this step failed with invalid_tool_input: "
                                            "InputValidationError: offset must be a non-negative number")
    assert json.loads(r["completion"])[0]["tool_calls"][0]["function"]["name"] == "Read"
    assert make_hint("timeout", "x" * 2000, max_chars=10).endswith("xxxxxxxxxx… Do not repeat it; take a "
                                                                    "different approach.")
    assert make_hint(None, None) == "Hint: the previous attempt at this step failed with an error. " \
                                    "Do not repeat it; take a different approach."
    SDPO_EXAMPLES.conform(sdpo)


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_exports_load_with_datasets_unchanged(tmp_path, rows, fmt):
    import datasets

    lake = DeltaLake(root=str(tmp_path / "lake"))
    put_sessions(lake, SFT_EXAMPLES, rows["sft"][0], keys=["s1"])
    put_sessions(lake, KTO_EXAMPLES, rows["kto"][0], keys=["s1"])
    put_sessions(lake, SDPO_EXAMPLES, rows["sdpo"][0], keys=["s1"])
    put_sessions(lake, PREFERENCE_PAIRS, rows["pairs"], keys=["s1"])
    out = tmp_path / "out"
    loaded = {}
    for table in ("sft_examples", "kto_examples", "sdpo_examples", "preference_pairs"):
        path, n = export_table(lake, table, fmt, out)
        builder = "json" if fmt == "jsonl" else "parquet"
        ds = datasets.load_dataset(builder, data_files=str(path), split="train")
        assert len(ds) == n > 0
        loaded[table] = ds
    sft = loaded["sft_examples"][0]
    assert set(loaded["sft_examples"].column_names) == {"example_id", "messages", "tools"}
    assert isinstance(sft["messages"], list) and sft["messages"][-1]["role"] == "assistant"
    call = sft["messages"][-1]["tool_calls"][0]
    assert isinstance(call["function"]["arguments"], str)  # TRL: arguments stay a JSON string
    assert json.loads(call["function"]["arguments"]) == {"command": "pytest tests/test_utils.py -q"}
    assert isinstance(sft["tools"], list) and sft["tools"][0]["function"]["name"] == "Bash"
    kto = loaded["kto_examples"]
    assert set(kto.column_names) >= {"prompt", "completion", "label"} and set(kto["label"]) == {True, False}
    assert kto[0]["completion"][0]["role"] == "assistant"
    dpo = loaded["preference_pairs"][0]
    assert dpo["prompt"][0]["role"] == "system"
    assert len(dpo["chosen"]) == len(dpo["rejected"]) == 1 and dpo["chosen"] != dpo["rejected"]
    sdpo = loaded["sdpo_examples"][0]
    assert sdpo["hinted_prompt"][-1]["content"].startswith("Hint:")


def test_heterogeneous_tool_schemas_fall_back_to_json_strings(tmp_path):
    t1 = [{"type": "function", "function": {"name": "a", "parameters": {"properties": {"x": {"default": 1}}}}}]
    t2 = [{"type": "function", "function": {"name": "b", "parameters": {"properties": {"x": {"default": "s"}}}}}]
    table_rows = [{"example_id": str(i), "messages": json.dumps([{"role": "user", "content": "hi"}]),
                   "tools": json.dumps(t)} for i, t in enumerate((t1, t2))]
    auto = trl_rows("sft_examples", table_rows)
    assert isinstance(auto[0]["tools"], str) and json.loads(auto[1]["tools"]) == t2
    assert isinstance(auto[0]["messages"], list)
    with pytest.raises((pa.ArrowInvalid, pa.ArrowTypeError)):
        write_rows(trl_rows("sft_examples", table_rows, tools_format="objects"), "parquet", tmp_path / "x.parquet")


def test_cli_writes_the_export(tmp_path, rows, capsys):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    put_sessions(lake, SFT_EXAMPLES, rows["sft"][0], keys=["s1"])
    assert main(["--table", "sft_examples", "--format", "jsonl", "--out", str(tmp_path / "o"),
                 "--lake-root", str(tmp_path / "lake"), "--all-columns"]) == 0
    lines = (tmp_path / "o" / "sft_examples.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 3 and first["session_key"] == "s1" and isinstance(first["messages"], list)
    assert "wrote 3 rows" in capsys.readouterr().out


def test_replay_sample_exports_as_messages_and_preference_datasets(tmp_path):
    """The replay sample splits into the two TRL shapes, in rank order, with replay: ids."""
    import datasets

    from assets.corpus.store import draw_sample, write_sample
    from assets.corpus.tables import REPLAY_CORPUS, REPLAY_SAMPLE
    from tests.corpus.conftest import T0, corpus_row

    lake = DeltaLake(root=str(tmp_path / "lake"))
    lake.append(REPLAY_CORPUS, [corpus_row(i, age_days=i % 5, kind="preference" if i % 3 == 0 else "instruction")
                                for i in range(30)])
    write_sample(lake, draw_sample(lake, k=20, seed=4, reference_time=T0))
    sample = lake.read(REPLAY_SAMPLE).to_pylist()
    n_pref = sum(r["section_type"] == "preference" for r in sample)
    assert 0 < n_pref < len(sample) == 20

    msgs_path, n_msgs = export_table(lake, "replay_messages", "jsonl", tmp_path / "out")
    pref_path, n_pref_out = export_table(lake, "replay_preference", "jsonl", tmp_path / "out")
    assert (n_msgs, n_pref_out) == (20 - n_pref, n_pref)
    msgs = datasets.load_dataset("json", data_files=str(msgs_path), split="train")
    pref = datasets.load_dataset("json", data_files=str(pref_path), split="train")
    assert set(msgs.column_names) == {"id", "messages", "tools"}
    assert set(pref.column_names) == {"id", "prompt", "chosen", "rejected", "tools"}
    assert msgs[0]["messages"][-1]["role"] == "assistant" and pref[0]["chosen"][0]["role"] == "assistant"
    by_rank = [r["id"] for r in sorted(sample, key=lambda r: r["rank"])]
    msg_ids, pref_ids = list(msgs["id"]), list(pref["id"])
    assert [i for i in by_rank if i in set(msg_ids)] == msg_ids  # rank order
    assert [i for i in by_rank if i in set(pref_ids)] == pref_ids
    assert all(i.startswith("replay:") for i in msg_ids + pref_ids)
