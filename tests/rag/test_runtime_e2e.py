"""The runtime end to end with the REAL local model (SmolLM2-135M, CPU) and a loopback
OpenAI-compatible server as the escalation target; every run must land in rag_runs with
full provenance."""

import hashlib
import json
import re

import pytest

from assets.rag.config import RagConfig
from assets.rag.runtime import RagRuntime
from assets.rag.tables import RAG_PLAYBOOKS, RAG_RUNS, RUN_SCHEMA_VERSION
from tests.rag.conftest import KEY_ENV, KEY_VALUE
from tests.rag.loopback import LoopbackLLM

pytestmark = pytest.mark.slow

PASS_TASK = "How do I run the pair builder tests with pytest?"


def _cfg(server, tmp_path, **kw) -> RagConfig:
    base = dict(max_new_tokens=14, escalation_base_url=server.base_url, escalation_model="loopback-large",
                escalation_api_key_env=KEY_ENV, max_retries=1, backoff_s=0.0, spool_dir=str(tmp_path / "spool"),
                top_k=4, n_exemplars=2, n_failures=1, max_exemplar_chars=250, max_failure_chars=150,
                max_bundle_tokens=260)
    base.update(kw)
    return RagConfig(**base)


def _row(lake, run_id) -> dict:
    rows = [r for r in lake.read(RAG_RUNS).to_pylist() if r["recorded_run_id"] == run_id]
    assert len(rows) == 1, f"run {run_id} not logged exactly once"
    return rows[0]


def _assert_provenance(row, cfg):
    assert row["schema"] == RUN_SCHEMA_VERSION == "replay_run.v1"
    assert row["task_hash"] == hashlib.sha256(row["input_task"].encode()).hexdigest()
    at_ms = int(row["recorded_at"].timestamp() * 1000)
    assert row["recorded_run_id"] == f"replay:{row['task_hash'][:16]}:{at_ms}"
    assert re.fullmatch(r"replay:[0-9a-f]{16}:\d{13}", row["recorded_run_id"])
    assert json.loads(row["prompt"])[-1]["role"] == "user"
    assert row["local_model"] == "smollm2-135m"
    assert row["duration_ms"] > 0 and row["local_ms"] > 0 and row["retrieval_ms"] >= 0
    assert json.loads(row["config"]) == cfg.public()
    assert KEY_VALUE not in json.dumps(row, default=str)  # the key is never stored
    attempts = json.loads(row["attempts"])
    assert attempts[0]["stage"] == "local" and "gate" in attempts[0]


def test_passing_run_grounded_in_playbooks(rag_lake, escalation_server, tmp_path, api_key):
    cfg = _cfg(escalation_server, tmp_path, retrieval_mode="hybrid", min_chars=20)  # a 14-token answer
    before = escalation_server.count
    out = RagRuntime(cfg, lake=rag_lake).run(PASS_TASK, allow_escalation=True)
    row = _row(rag_lake, out.run_id)
    _assert_provenance(row, cfg)
    assert row["validation_result"] == {"passed": True, "reasons": []}, (row["model_response"],
                                                                        row["validation_details"])
    assert row["escalation_path"] == ["smollm2-135m"]
    assert row["model_used"] == "smollm2-135m" and not row["escalated"] and row["model_response"]
    assert escalation_server.count == before  # the gate passed: no escalation call
    assert row["retrieval_mode"] == "hybrid" and row["playbooks_version"] == rag_lake.version(RAG_PLAYBOOKS)
    ids = row["retrieved_artifacts"]["rag_ids"]
    assert len(ids) == len(row["retrieved_scores"]) == 4
    assert row["retrieved_scores"] == sorted(row["retrieved_scores"], reverse=True)
    titles = {r["playbook_id"]: r["title"] for r in rag_lake.read(RAG_PLAYBOOKS).to_pylist()}
    assert titles[ids[0]] == "Fix the failing test in tests/pairs/test_builder.py"
    bundle = json.loads(row["context_bundle"])
    assert {e["id"] for e in bundle["exemplars"]} <= set(ids)
    assert "Verify: `pytest -q tests/pairs/test_builder.py` passes" in bundle["validation_steps"]
    assert "Playbooks that worked" in json.loads(row["prompt"])[0]["content"]
    assert json.loads(row["validation_details"])["details"]["checklist_overlap"]  # it covered the checklist
    assert row["allow_escalation"] and not row["local_only"] and not row["no_retrieval"]


def test_failing_run_escalates(rag_lake, escalation_server, tmp_path, api_key):
    cfg = _cfg(escalation_server, tmp_path, max_new_tokens=6, retrieval_mode="lexical")
    before = escalation_server.count
    out = RagRuntime(cfg, lake=rag_lake).run(
        "The pair builder test fails with KeyError 'chosen'. How do I fix it?", allow_escalation=True,
        checks=["Verify: zanzibar_quux_frobnicator is set"])  # a check the local model cannot satisfy
    row = _row(rag_lake, out.run_id)
    _assert_provenance(row, cfg)
    assert escalation_server.count == before + 1
    assert escalation_server.auth_headers[-1] == f"Bearer {KEY_VALUE}"
    assert escalation_server.requests[-1]["messages"] == json.loads(row["prompt"])
    assert row["escalation_path"] == ["smollm2-135m", "loopback-large"] and row["escalated"]
    assert row["model_used"] == "loopback-large" and row["validation_result"] == {"passed": True, "reasons": []}
    assert "zanzibar_quux_frobnicator" in row["model_response"]
    local, esc = json.loads(row["attempts"])
    assert not local["gate"]["passed"] and "missed_required_check" in local["gate"]["failed_rules"]
    assert local["response"] and local["output_tokens"] <= 6  # the local answer is kept (provenance)
    assert esc["status"] == "ok" and esc["gate"]["passed"] and row["escalation_ms"] > 0


def test_failed_escalation_is_still_logged(rag_lake, tmp_path, api_key):
    """Local model = an OpenAI-compatible endpoint by config; the escalation endpoint is down."""
    with LoopbackLLM(reply="ok", model="loopback-small") as local, LoopbackLLM() as down:
        down.mode = "fail"
        cfg = RagConfig(local_base_url=local.base_url, local_model="loopback-small", escalation_base_url=down.base_url,
                        escalation_model="down-model", max_retries=1, backoff_s=0.0, retrieval_mode="lexical",
                        spool_dir=str(tmp_path / "spool"))
        out = RagRuntime(cfg, lake=rag_lake).run("Add a --limit flag to the export command", allow_escalation=True)
        assert local.count == 1 and down.count == 2  # one try + one retry
    row = _row(rag_lake, out.run_id)
    assert not row["validation_result"]["passed"] and "too_short" in row["validation_result"]["reasons"]
    assert row["escalation_path"] == ["loopback-small", "down-model"]
    assert row["model_used"] == "loopback-small" and row["model_response"] == "ok"
    assert "escalation failed" in row["error"] and "http_500" in row["error"]
    assert json.loads(row["attempts"])[1]["status"] == "error"


def test_allowing_escalation_without_an_endpoint_is_a_clear_error(rag_lake, tmp_path):
    from assets.rag.runtime import EscalationNotConfigured

    before = rag_lake.read(RAG_RUNS).num_rows
    with LoopbackLLM(reply="ok", model="small") as local:
        cfg = RagConfig(local_base_url=local.base_url, local_model="small", retrieval_mode="lexical",
                        spool_dir=str(tmp_path / "spool"))
        with pytest.raises(EscalationNotConfigured, match="TRACELAKE_RAG_ESCALATION_BASE_URL"):
            RagRuntime(cfg, lake=rag_lake).run("Fix the pair builder test", allow_escalation=True)
        assert local.count == 0  # refused before anything ran
    assert rag_lake.read(RAG_RUNS).num_rows == before
