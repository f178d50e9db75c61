"""The run log contract: replay_run.v1 records under the design's names, the exact JSONL export,
carrying a table of the earlier layout over (no row lost), escalation configured by environment
alone, and --allow-escalation without an endpoint as a clear error. Local model = a loopback
OpenAI-compatible server (no model load: fast)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import pyarrow as pa
import pytest

from assets.rag.config import load_rag_config
from assets.rag.runlog import RECORD_FIELDS, export_log, migrate_rag_runs
from assets.rag.runtime import RagRuntime
from assets.rag.tables import RAG_REPORT, RAG_RUNS
from dagster_project.cli_rag import main
from resources.lake import DeltaLake, TableSpec
from tests.rag.conftest import KEY_ENV, KEY_VALUE
from tests.rag.loopback import LoopbackLLM

LONG = ("Open assets/pairs/builder.py, make build_pairs pick the chosen answer first, then run "
        "pytest -q tests/pairs/test_builder.py and check that it passes.")

# the layout rag_runs had before the replay_run.v1 contract (tables written by earlier versions)
TS = pa.timestamp("us", tz="UTC")
LEGACY_RAG_RUNS = TableSpec(layer="gold", name="rag_runs", schema=pa.schema([
    pa.field("schema_version", pa.string(), nullable=False), pa.field("run_id", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False), pa.field("task_hash", pa.string(), nullable=False),
    pa.field("source", pa.string()), pa.field("retrieval_mode", pa.string()),
    pa.field("retrieved_ids", pa.list_(pa.string())), pa.field("retrieved_scores", pa.list_(pa.float64())),
    pa.field("playbooks_version", pa.int64()), pa.field("bundle", pa.string()), pa.field("prompt", pa.string()),
    pa.field("response", pa.string()), pa.field("model_used", pa.string()), pa.field("local_model", pa.string()),
    pa.field("escalation_model", pa.string()), pa.field("escalation_path", pa.list_(pa.string())),
    pa.field("escalated", pa.bool_(), nullable=False), pa.field("attempts", pa.string()),
    pa.field("gate_passed", pa.bool_(), nullable=False), pa.field("failed_rules", pa.list_(pa.string())),
    pa.field("validation", pa.string()), pa.field("error", pa.string()), pa.field("retrieval_ms", pa.float64()),
    pa.field("bundle_ms", pa.float64()), pa.field("local_ms", pa.float64()), pa.field("gate_ms", pa.float64()),
    pa.field("escalation_ms", pa.float64()), pa.field("total_ms", pa.float64()),
    pa.field("local_only", pa.bool_(), nullable=False), pa.field("allow_escalation", pa.bool_(), nullable=False),
    pa.field("no_retrieval", pa.bool_(), nullable=False), pa.field("config", pa.string()),
    pa.field("created_at", TS, nullable=False)]))


def legacy_row(i: int, passed: bool, escalated: bool = False) -> dict:
    t0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)
    return {"schema_version": "replay_run.v1", "run_id": f"run_{i:032x}", "task": f"Fix bug number {i}",
            "task_hash": "0123456789abcdef", "source": "cli", "retrieval_mode": "lexical",
            "retrieved_ids": [f"pb_{i}"], "retrieved_scores": [0.5], "playbooks_version": 3,
            "bundle": json.dumps({"exemplars": [{"id": f"pb_{i}"}]}), "prompt": "[]",
            "response": ("x" * 5000) if i == 0 else f"answer {i} " + LONG,
            "model_used": "big" if escalated else "smollm2-135m", "local_model": "smollm2-135m",
            "escalation_model": "big", "escalation_path": ["local:smollm2-135m"] + (["escalation:big"] if escalated else []),
            "escalated": escalated, "attempts": "[]", "gate_passed": passed,
            "failed_rules": [] if passed else ["too_short"], "validation": "{}", "error": None,
            "retrieval_ms": 1.0, "bundle_ms": 1.0, "local_ms": 100.0, "gate_ms": 0.1, "escalation_ms": None,
            "total_ms": 123.0 + i, "local_only": False, "allow_escalation": escalated, "no_retrieval": False,
            "config": "{}", "created_at": t0 + timedelta(minutes=i)}


@pytest.fixture
def local():
    with LoopbackLLM(reply=LONG, model="lb-small") as srv:
        yield srv


def _runtime(lake, local, tmp_path, **kw):
    cfg = load_rag_config(env={}, local_base_url=local.base_url, local_model="lb-small", retrieval_mode="lexical",
                          spool_dir=str(tmp_path / "spool"), max_retries=0, **kw)
    return RagRuntime(cfg, lake=lake)


def test_records_use_the_designs_names_and_export_exactly(tmp_path, local):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    rt = _runtime(lake, local, tmp_path)
    out = rt.run("  Fix   the pair builder test ", no_retrieval=True)
    assert out.logged
    row = lake.read(RAG_RUNS).to_pylist()[0]
    assert set(RECORD_FIELDS) <= set(row)
    assert row["input_task"] == "Fix the pair builder test"
    assert row["task_hash"] == hashlib.sha256(b"Fix the pair builder test").hexdigest()
    assert row["context_bundle"] is None and row["retrieved_artifacts"] == {"rag_ids": []}
    path = tmp_path / "runs.jsonl"
    assert export_log(lake, path) == 1
    rec = json.loads(path.read_text())
    assert list(rec) == list(RECORD_FIELDS)  # exactly the record, in the design's order
    at = datetime.fromisoformat(rec["recorded_at"])
    assert rec == {
        "schema": "replay_run.v1", "input_task": "Fix the pair builder test", "task_hash": row["task_hash"],
        "retrieved_artifacts": {"rag_ids": []}, "context_bundle": None, "model_response": LONG,
        "model_used": "lb-small", "escalation_path": ["lb-small"],
        "validation_result": {"passed": True, "reasons": []},
        "recorded_run_id": f"replay:{row['task_hash'][:16]}:{int(at.timestamp() * 1000)}",
        "recorded_at": rec["recorded_at"], "duration_ms": row["duration_ms"]}
    assert at.tzinfo is not None and rec["duration_ms"] > 0


def test_long_answers_are_cut_at_4000_characters_in_the_log(tmp_path):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    with LoopbackLLM(reply="word " * 1500, model="wordy") as srv:
        cfg = load_rag_config(env={}, local_base_url=srv.base_url, local_model="wordy", retrieval_mode="lexical",
                              spool_dir=str(tmp_path / "spool"))
        out = RagRuntime(cfg, lake=lake).run("Explain the sampler")
    row = lake.read(RAG_RUNS).to_pylist()[0]
    assert len(out.response) == 7499 and row["response_chars"] == 7499
    assert row["model_response"] == out.response[:4000]


def test_gate_minimum_is_80_characters_by_default_and_configurable(tmp_path):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    short = "Run pytest on tests/pairs and fix build_pairs."  # 46 characters
    with LoopbackLLM(reply=short, model="terse") as srv:
        base = dict(env={}, local_base_url=srv.base_url, local_model="terse", retrieval_mode="lexical",
                    spool_dir=str(tmp_path / "spool"))
        out = RagRuntime(load_rag_config(**base), lake=lake).run("Fix the pair builder", no_retrieval=True)
        assert out.failed_rules == ["too_short"]
        assert json.loads(out.row["validation_details"])["details"]["min_chars"] == 80
        out = RagRuntime(load_rag_config(**base, min_chars=40), lake=lake).run("Fix the pair builder",
                                                                                no_retrieval=True)
        assert out.gate_passed


def test_escalation_is_configured_by_environment_alone(tmp_path, monkeypatch, api_key):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    with LoopbackLLM(reply="ok", model="small") as small, LoopbackLLM(reply=LONG, model="big") as big:
        monkeypatch.setenv("TRACELAKE_RAG_LOCAL_BASE_URL", small.base_url)
        monkeypatch.setenv("TRACELAKE_RAG_LOCAL_MODEL", "small")
        monkeypatch.setenv("TRACELAKE_RAG_ESCALATION_BASE_URL", big.base_url)
        monkeypatch.setenv("TRACELAKE_RAG_ESCALATION_MODEL", "big-model")
        monkeypatch.setenv("TRACELAKE_RAG_ESCALATION_API_KEY_ENV", KEY_ENV)
        monkeypatch.setenv("TRACELAKE_RAG_SPOOL_DIR", str(tmp_path / "spool"))
        cfg = load_rag_config()
        assert (cfg.escalation_base_url, cfg.escalation_model, cfg.escalation_api_key_env) == (
            big.base_url, "big-model", KEY_ENV)
        out = RagRuntime(cfg, lake=lake).run("Fix the pair builder test", allow_escalation=True, no_retrieval=True)
        assert big.count == 1 and big.auth_headers[-1] == f"Bearer {KEY_VALUE}"
    assert out.row["escalation_path"] == ["small", "big-model"] and out.gate_passed
    assert KEY_VALUE not in json.dumps(out.row, default=str)


def test_cli_allow_escalation_without_an_endpoint_is_a_clear_error(tmp_path, capsys, monkeypatch, local):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    lake = DeltaLake(root=str(tmp_path / "lake"))
    recipe = tmp_path / "rag.yaml"
    recipe.write_text(json.dumps({"local": {"base_url": local.base_url, "model": "lb-small"},
                                  "spool_dir": str(tmp_path / "spool")}))
    code = main(["rag", "run", "--task", "Fix it", "--allow-escalation", "--lake-root", lake.root,
                 "--recipe", str(recipe)])
    err = capsys.readouterr().err
    assert code == 2 and "TRACELAKE_RAG_ESCALATION_BASE_URL" in err and "TRACELAKE_RAG_ESCALATION_MODEL" in err
    assert local.count == 0 and not lake.exists(RAG_RUNS)


def test_cli_run_is_a_materialization_and_export_log_writes_jsonl(tmp_path, capsys, monkeypatch, local):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    lake = DeltaLake(root=str(tmp_path / "lake"))
    recipe = tmp_path / "rag.yaml"
    recipe.write_text(json.dumps({"local": {"base_url": local.base_url, "model": "lb-small"},
                                  "retrieval": {"mode": "lexical"}, "spool_dir": str(tmp_path / "spool")}))
    for task in ("Fix the pair builder test", "Add a --limit flag"):
        assert main(["rag", "run", "--task", task, "--lake-root", lake.root, "--recipe", str(recipe)]) == 0
    inst = dg.DagsterInstance.get()
    mats = inst.fetch_materializations(RAG_RUNS.asset_key, limit=10).records
    ids = {r["recorded_run_id"] for r in lake.read(RAG_RUNS).to_pylist()}
    assert len(mats) == 2 and {m.asset_materialization.metadata["recorded_run_id"].value for m in mats} == ids
    assert sorted(m.asset_materialization.metadata["table_rows"].value for m in mats) == [1, 2]
    capsys.readouterr()
    out = tmp_path / "log.jsonl"
    assert main(["rag", "export-log", "--out", str(out), "--lake-root", lake.root]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["input_task"] for r in recs] == ["Fix the pair builder test", "Add a --limit flag"]
    assert {r["recorded_run_id"] for r in recs} == ids and all(list(r) == list(RECORD_FIELDS) for r in recs)


def test_a_table_of_the_earlier_layout_is_carried_over(tmp_path, local):
    from assets.rag.assets import rag_report

    lake = DeltaLake(root=str(tmp_path / "lake"))
    old = [legacy_row(0, True), legacy_row(1, False), legacy_row(2, True, escalated=True)]
    lake.append(LEGACY_RAG_RUNS, old)
    v_old = lake.version(RAG_RUNS)
    # a new run: the log carries the old rows over first, then appends
    out = _runtime(lake, local, tmp_path).run("A new task after the upgrade", no_retrieval=True)
    assert out.logged
    rows = {r["legacy_run_id"]: r for r in lake.read(RAG_RUNS).to_pylist()}
    assert len(rows) == 4 and None in rows
    for o in old:
        r = rows[o["run_id"]]
        assert r["schema"] == "replay_run.v1" and r["input_task"] == o["task"]
        assert r["task_hash"] == hashlib.sha256(o["task"].encode()).hexdigest()
        assert r["recorded_at"] == o["created_at"] and r["duration_ms"] == o["total_ms"]
        assert r["recorded_run_id"] == f"replay:{r['task_hash'][:16]}:{int(o['created_at'].timestamp() * 1000)}"
        assert r["validation_result"] == {"passed": o["gate_passed"], "reasons": o["failed_rules"]}
        assert r["retrieved_artifacts"] == {"rag_ids": o["retrieved_ids"]}
        assert json.loads(r["context_bundle"]) == json.loads(o["bundle"])
        assert r["model_response"] == o["response"][:4000] and r["response_chars"] == len(o["response"])
        assert r["escalation_path"] == [p.split(":", 1)[1] for p in o["escalation_path"]]
    assert rows[old[0]["run_id"]]["response_chars"] == 5000
    # the old version is still readable (time travel): nothing is lost
    assert lake.read(LEGACY_RAG_RUNS, version=v_old).num_rows == 3
    assert migrate_rag_runs(lake) is None  # done once
    # the report reads the carried-over rows
    res = dg.materialize([rag_report], resources={"lake": lake}, instance=dg.DagsterInstance.ephemeral())
    assert res.success
    rep = {r["retrieval"]: r for r in lake.read(RAG_REPORT).to_pylist() if r["day"] == "all"}
    assert rep["with_retrieval"]["runs"] == 3 and rep["with_retrieval"]["passed"] == 2
    assert rep["with_retrieval"]["escalated"] == 1 and rep["no_retrieval"]["runs"] == 1

    # one more run today: the next refresh recounts today only, and agrees with a full recount
    assert _runtime(lake, local, tmp_path).run("One more task today").logged
    res = dg.materialize([rag_report], resources={"lake": lake}, instance=dg.DagsterInstance.ephemeral())
    md = res.asset_materializations_for_node("gold__rag_report")[0].metadata
    today = datetime.now(timezone.utc).date().isoformat()
    assert md["refresh_mode"].value == "incremental" and md["days_recounted"].value == today
    assert md["runs"].value == 5
    strip = lambda rows: sorted((r["day"], r["retrieval"], r["runs"], r["passed"], r["escalated"]) for r in rows)
    incremental = strip(lake.read(RAG_REPORT).to_pylist())
    res = dg.materialize([rag_report], resources={"lake": lake}, instance=dg.DagsterInstance.ephemeral(),
                         run_config={"ops": {"gold__rag_report": {"config": {"full_refresh": True}}}})
    assert res.asset_materializations_for_node("gold__rag_report")[0].metadata["refresh_mode"].value == "full"
    assert strip(lake.read(RAG_REPORT).to_pylist()) == incremental


def test_export_log_carries_an_old_table_over_too(tmp_path):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    lake.append(LEGACY_RAG_RUNS, [legacy_row(i, i % 2 == 0) for i in range(3)])
    n = export_log(lake, tmp_path / "out.jsonl")
    recs = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert n == 3 and [r["input_task"] for r in recs] == [f"Fix bug number {i}" for i in range(3)]
    assert [r["validation_result"]["passed"] for r in recs] == [True, False, True]


def test_cli_run_the_lake_refuses_is_spooled_and_said_so(tmp_path, capsys, monkeypatch, local):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    recipe = tmp_path / "rag.yaml"
    recipe.write_text(json.dumps({"local": {"base_url": local.base_url, "model": "lb-small"},
                                  "retrieval": {"mode": "lexical"}, "spool_dir": str(tmp_path / "spool")}))
    code = main(["rag", "run", "--task", "Fix the pair builder test", "--no-retrieval",
                 "--lake-root", str(blocker / "lake"), "--recipe", str(recipe)])
    out = capsys.readouterr().out
    assert code == 0 and f"logged: SPOOLED to {tmp_path / 'spool'}" in out
    assert any((tmp_path / "spool").iterdir())  # the run waits on local disk for the next append
