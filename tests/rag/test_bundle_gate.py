"""Context bundle extraction, prompt assembly and the deterministic gate rules."""

from assets.rag.bundle import BundleConfig, assemble_prompt, build_bundle, extract_validation_steps
from assets.rag.gate import GateConfig, validate


def test_validation_steps_after_list_markers():
    text = """Did the thing.
- Verify: pytest -q passes
1. check the Delta history
  2) Confirm the partition count
* [ ] Ensure no secrets are logged
- [x] ASSERT rows == 3
**Verify** the UI shows the run
> verify quoted line
Verification is done elsewhere
checkout the branch
we should verify later
- verify: pytest -q passes
"""
    assert extract_validation_steps(text) == [
        "Verify: pytest -q passes",
        "check the Delta history",
        "Confirm the partition count",
        "Ensure no secrets are logged",
        "ASSERT rows == 3",
        "Verify the UI shows the run",
        "verify quoted line",
    ]


def _rec(i, label, content="", steps=None):
    return {"playbook_id": f"p{i}", "title": f"t{i}", "task": f"task {i}", "content": content, "label": label,
            "success_score": 0.9, "validation_steps": steps or []}


def test_bundle_takes_top_accepted_and_partial_and_skips_rejected():
    ranked = [
        (_rec(0, "rejected", "Verify: never shown"), 0.99),
        (_rec(1, "accepted", "did a\nVerify: a works"), 0.9),
        (_rec(2, "partially_accepted", "Steps...\nErrors: 1 unresolved\n- pytest failed"), 0.8),
        (_rec(3, "accepted", "did b", ["Check: b is there"]), 0.7),
        (_rec(4, "accepted", "did c\n- ensure c"), 0.6),
        (_rec(5, "accepted", "did d\nconfirm d"), 0.5),
        (_rec(6, "partially_accepted", "x"), 0.4),
        (_rec(7, "partially_accepted", "y"), 0.3),
    ]
    b = build_bundle("the task", ranked)
    assert [e["id"] for e in b.exemplars] == ["p1", "p3", "p4"]
    assert [f["id"] for f in b.failure_patterns] == ["p2", "p6"]
    assert b.failure_patterns[0]["content"].startswith("Errors:")  # the failure, not the steps
    assert b.validation_steps == ["Verify: a works", "Check: b is there", "ensure c"]
    assert b.token_estimate > 0
    msgs = assemble_prompt("the task", b)
    assert [m["role"] for m in msgs] == ["system", "user"] and msgs[1]["content"] == "the task"
    sys_msg = msgs[0]["content"]
    assert "Playbooks that worked" in sys_msg and "Failure patterns to avoid" in sys_msg
    assert "Validation checklist" in sys_msg and "never shown" not in sys_msg


def test_bundle_budget_drops_lowest_ranked_items():
    big = "x " * 2000
    ranked = [(_rec(i, "accepted", big + f"\nVerify: item {i}"), 1 - i / 10) for i in range(3)]
    ranked.append((_rec(9, "partially_accepted", big), 0.1))
    b = build_bundle("t", ranked, BundleConfig(max_exemplar_chars=100000, max_bundle_tokens=1200))
    assert b.failure_patterns == [] and len(b.exemplars) == 1 and b.dropped_for_budget == 3
    assert b.validation_steps == ["Verify: item 0"]


def test_baseline_prompt_has_no_playbooks():
    msgs = assemble_prompt("do it", None)
    assert "Playbooks" not in msgs[0]["content"] and msgs[1] == {"role": "user", "content": "do it"}


def test_gate_rules_each_named():
    cfg = GateConfig(min_chars=20)
    assert validate("", [], cfg).failed_rules == ["empty"]
    assert validate("   ", [], cfg).failed_rules == ["empty"]
    assert validate("too short", [], cfg).failed_rules == ["too_short"]
    r = validate("I'm sorry, but I cannot help with that request at all.", [], cfg)
    assert r.failed_rules == ["refusal"] and not r.passed
    assert validate("I'm not sure, it is hard to say what the fix would be.", [], cfg).failed_rules == ["hedge"]
    both = validate("I'm sorry. I don't know.", [], GateConfig(min_chars=40))
    assert both.failed_rules == ["too_short", "refusal", "hedge"]
    ok = validate("Run pytest -q tests/pairs and fix build_pairs.", [], cfg)
    assert ok.passed and ok.failed_rules == []


SHORT = GateConfig(min_chars=20)  # the rules below on short answers


def test_gate_minimum_length_is_80_characters_by_default():
    assert GateConfig().min_chars == 80
    answer = "Run pytest -q tests/pairs and fix build_pairs in assets/pairs/builder.py."  # 74 chars
    assert validate(answer, []).failed_rules == ["too_short"]
    assert validate(answer + " Then commit.", []).passed


def test_gate_checklist_overlap_ignores_generic_words():
    checklist = ["Verify: `pytest -q tests/pairs/test_builder.py` passes"]
    assert validate("Run pytest on the builder module, then commit.", checklist, SHORT).passed
    r = validate("Run the tests and check that the result passes.", checklist, SHORT)
    assert r.failed_rules == ["no_checklist_overlap"] and r.details["checklist_overlap"] == []
    # no checklist, or the rule disabled: no overlap needed
    assert validate("Run the tests and check that it passes.", [], SHORT).passed
    assert validate("Run the tests and check that it passes.", checklist, GateConfig(min_chars=20, min_checklist_overlap=0)).passed


def test_gate_required_checks_are_each_covered():
    required = ["Verify: replace_partitions with a session_key IN predicate", "Check: SESSION_BACKFILL"]
    ok = validate("Use DeltaLake.replace_partitions and SESSION_BACKFILL on the asset.", [], SHORT,
                  required)
    assert ok.passed
    r = validate("Use DeltaLake.replace_partitions with a predicate.", [], SHORT, required)
    assert r.failed_rules == ["missed_required_check"] and r.details["missed_required"] == ["Check: SESSION_BACKFILL"]
    # the bundle's checklist (any overlap) and the required checks (each) are separate rules
    both = validate("Run it and see what happens now.", ["Verify: pytest -q passes"], SHORT, required)
    assert both.failed_rules == ["no_checklist_overlap", "missed_required_check"]
