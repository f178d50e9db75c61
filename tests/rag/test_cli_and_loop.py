"""The CLI in-process (real SmolLM2), the batch job, the run spool, and closing the loop:
accepted runs mined into playbooks, and the report with vs without retrieval."""

import json

import dagster as dg
import pytest
import yaml

from assets.rag.config import RagConfig, load_rag_config
from assets.rag.runlog import RunLog
from assets.rag.runtime import RagRuntime
from assets.rag.tables import RAG_PLAYBOOKS, RAG_REPORT, RAG_RUNS
from dagster_project.cli_rag import main
from resources.lake import DeltaLake
from tests.rag.conftest import KEY_ENV, KEY_VALUE
from tests.rag.loopback import LoopbackLLM
from tests.sessions import DAY, put_sessions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    p = tmp_path_factory.mktemp("recipe") / "rag.yaml"
    p.write_text(yaml.safe_dump({
        "local": {"model": "smollm2-135m", "threads": 1},
        "max_new_tokens": 6,
        "retrieval": {"mode": "lexical"},
        "top_k": 4, "n_exemplars": 2, "n_failures": 1, "max_exemplar_chars": 250, "max_bundle_tokens": 260,
        "max_retries": 1, "backoff_s": 0.0,
        "spool_dir": str(p.parent / "spool"),
    }))
    return str(p)


def _last_run(lake) -> dict:
    return max(lake.read(RAG_RUNS).to_pylist(), key=lambda r: r["recorded_at"])


@pytest.fixture(autouse=True)
def dagster_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    return tmp_path / "dagster_home"


def _materializations():
    inst = dg.DagsterInstance.get()
    return inst.fetch_materializations(RAG_RUNS.asset_key, limit=100).records


def test_cli_local_only_failing_run_makes_no_http_call(rag_lake, escalation_server, recipe, capsys, api_key):
    before = escalation_server.count
    code = main(["rag", "run", "--task", "The pair builder test fails with KeyError 'chosen'. How do I fix it?",
                 "--local-only", "--allow-escalation", "--check", "Verify: zanzibar_quux_frobnicator is set",
                 "--lake-root", rag_lake.root, "--recipe", recipe,
                 "--escalation-base-url", escalation_server.base_url, "--escalation-model", "loopback-large",
                 "--escalation-api-key-env", KEY_ENV])
    out = capsys.readouterr().out
    assert code == 1 and escalation_server.count == before  # gate failed, and no escalation call
    row = _last_run(rag_lake)
    assert f"recorded_run_id: {row['recorded_run_id']}" in out and "gate: FAIL (" in out
    assert "missed_required_check" in out
    assert "escalation path: smollm2-135m" in out and "model: smollm2-135m" in out
    assert row["retrieved_artifacts"]["rag_ids"][0] in out and "answer:" in out
    assert row["local_only"] and not row["allow_escalation"] and not row["escalated"]
    assert row["escalation_path"] == ["smollm2-135m"] and row["source"] == "cli"
    assert "missed_required_check" in row["validation_result"]["reasons"] and row["retrieval_mode"] == "lexical"
    # the run is a materialization of gold/rag_runs on the instance
    mats = _materializations()
    assert len(mats) == 1
    md = mats[0].asset_materialization.metadata
    assert md["recorded_run_id"].value == row["recorded_run_id"] and md["source"].value == "cli"
    assert json.loads(row["config"])["escalation_api_key_env"] == KEY_ENV and KEY_VALUE not in out


def test_cli_no_retrieval_baseline(rag_lake, recipe, capsys):
    code = main(["rag", "run", "--task", "How do I run the pair builder tests with pytest?", "--no-retrieval",
                 "--max-new-tokens", "8", "--lake-root", rag_lake.root, "--recipe", recipe])
    out = capsys.readouterr().out
    row = _last_run(rag_lake)
    assert code == (0 if row["validation_result"]["passed"] else 1)
    assert "retrieval: off" in out and row["no_retrieval"] and row["retrieval_mode"] == "none"
    assert row["retrieved_artifacts"] == {"rag_ids": []} and row["context_bundle"] is None
    assert row["playbooks_version"] is None
    assert "Playbooks" not in json.loads(row["prompt"])[0]["content"]
    assert row["model_response"] and row["escalation_path"] == ["smollm2-135m"]
    # 8 new tokens are well under the design's 80 characters: the default gate fails the answer
    assert "too_short" in row["validation_result"]["reasons"] and code == 1


def test_config_layers(tmp_path, recipe):
    env = {"TRACELAKE_RAG_ESCALATION_MODEL": "from-env", "TRACELAKE_RAG_TOP_K": "5",
           "TRACELAKE_RAG_ALLOW_ESCALATION": "true"}
    cfg = load_rag_config(recipe, env=env, top_k=3)
    assert (cfg.escalation_model, cfg.top_k, cfg.allow_escalation, cfg.retrieval_mode) == ("from-env", 3, True,
                                                                                          "lexical")
    bad = tmp_path / "bad.yaml"
    bad.write_text("escalation:\n  api_key: sk-do-not-put-keys-here\n")
    with pytest.raises(ValueError, match="unknown rag config key"):
        load_rag_config(bad, env={})


def test_unloggable_run_is_spooled_then_flushed(rag_lake, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with LoopbackLLM(reply="Run pytest -q tests/pairs/test_builder.py and fix build_pairs.", model="lb") as local:
        cfg = RagConfig(local_base_url=local.base_url, local_model="lb", retrieval_mode="lexical")
        bad = RagRuntime(cfg, lake=rag_lake, run_log=RunLog(DeltaLake(root=str(blocker / "lake")), tmp_path / "sp"))
        first = bad.run("Fix the pair builder test")
        assert not first.logged and first.log_error and len(list((tmp_path / "sp").glob("*.jsonl"))) == 1
        good = RagRuntime(cfg, lake=rag_lake, run_log=RunLog(rag_lake, tmp_path / "sp"))
        second = good.run("Fix the pair builder test")
    assert second.logged and not list((tmp_path / "sp").glob("*.jsonl"))
    ids = {r["recorded_run_id"] for r in rag_lake.read(RAG_RUNS, columns=["recorded_run_id"]).to_pylist()}
    assert {first.run_id, second.run_id} <= ids


def test_batch_job_runs_an_ab_batch(rag_lake, tmp_path):
    from assets.rag.assets import RagResource, rag_batch_job

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text('{"task": "Fix the pair builder test", "checks": ["Check: build_pairs"]}\n'
                     "How does the sessions sensor add partitions?\n")
    reply = "Edit build_pairs in assets/pairs/builder.py so it picks the chosen answer first, then run pytest."
    with LoopbackLLM(reply=reply, model="lb") as local:
        res = rag_batch_job.execute_in_process(
            run_config={"ops": {"rag_batch": {"config": {"tasks_path": str(tasks),
                                                         "variants": ["with_retrieval", "no_retrieval"]}}}},
            resources={"lake": rag_lake, "rag": RagResource(local_base_url=local.base_url, local_model="lb",
                                                            retrieval_mode="lexical",
                                                            spool_dir=str(tmp_path / "spool"))},
            instance=dg.DagsterInstance.ephemeral(),
        )
        assert res.success and local.count == 4
    rows = [r for r in rag_lake.read(RAG_RUNS).to_pylist() if r["source"] == f"batch:{res.run_id}"]
    assert len(rows) == 4 and sum(r["no_retrieval"] for r in rows) == 2
    mats = res.asset_materializations_for_node("rag_batch")
    assert mats and mats[0].asset_key == RAG_RUNS.asset_key and mats[0].metadata["runs"].value == 4
    first = [r for r in rows if r["input_task"] == "Fix the pair builder test" and not r["no_retrieval"]][0]
    assert json.loads(first["validation_details"])["details"]["required"] == ["Check: build_pairs"]
    assert first["validation_result"] == {"passed": True, "reasons": []}
    assert set(mats[0].metadata["recorded_run_ids"].value) == {r["recorded_run_id"] for r in rows}


def test_closing_the_loop_mines_accepted_runs_and_reports(rag_lake, tmp_path):
    """Runs of the tests above are in rag_runs: the next materialization mines the accepted
    ones, and the report splits pass / escalation rates by retrieval and by day.
    (On a copy of the shared lake, so the other tests keep retrieving the trace playbooks.)"""
    from assets.rag.assets import rag_playbooks, rag_report
    from assets.rag.samples import sample_trace_rows
    from assets.traces.tables import TRACE_TURNS
    from resources.embeddings import EmbeddingsResource

    runs = rag_lake.read(RAG_RUNS).to_pylist()
    passed = [r for r in runs if r["validation_result"]["passed"]]
    assert passed and len(passed) < len(runs)
    lake = DeltaLake(root=str(tmp_path / "lake"))
    rows = sample_trace_rows()
    put_sessions(lake, TRACE_TURNS, rows)
    lake.overwrite(RAG_PLAYBOOKS, rag_lake.read(RAG_PLAYBOOKS))
    lake.append(RAG_RUNS, rag_lake.read(RAG_RUNS))
    res = dg.materialize([rag_playbooks, rag_report],
                         resources={"lake": lake, "rag_embeddings": EmbeddingsResource()},
                         instance=dg.DagsterInstance.ephemeral())
    assert res.success
    rag_lake = lake
    pbs = rag_lake.read(RAG_PLAYBOOKS).to_pylist()
    mined = [p for p in pbs if p["mined"]]
    assert len(mined) == len({r["task_hash"] for r in passed})
    assert {m["source_run_id"] for m in mined} <= {r["recorded_run_id"] for r in passed}
    assert all(m["label"] == "accepted" and len(m["embedding"]) == 384 for m in mined)
    md = res.asset_materializations_for_node("gold__rag_playbooks")[0].metadata
    assert md["embeddings_reused"].value == 8 and md["embedded_new"].value == len(mined)
    report = {(r["day"], r["retrieval"]): r for r in rag_lake.read(RAG_REPORT).to_pylist()}
    both = report[("all", "with_retrieval")], report[("all", "no_retrieval")]
    assert sum(r["runs"] for r in both) == len(runs)
    assert sum(r["passed"] for r in both) == len(passed)
    assert sum(r["escalated"] for r in both) == sum(r["escalated"] for r in runs)
    day = runs[0]["recorded_at"].date().isoformat()
    assert (day, "with_retrieval") in report
    rmd = res.asset_materializations_for_node("gold__rag_report")[0].metadata
    assert "| with_retrieval |" in rmd["overall"].value and f"| {day} |" in rmd["per_day"].value

    # nothing changed: the next refresh reads no session and no run, and keeps every playbook
    res = dg.materialize([rag_playbooks], resources={"lake": lake, "rag_embeddings": EmbeddingsResource()},
                         instance=dg.DagsterInstance.ephemeral())
    md = res.asset_materializations_for_node("gold__rag_playbooks")[0].metadata
    assert md["refresh_mode"].value == "incremental"
    assert md["sessions_refreshed"].value == 0 and md["runs_mined_from"].value == 0
    assert sorted(p["playbook_id"] for p in lake.read(RAG_PLAYBOOKS).to_pylist()) == sorted(
        p["playbook_id"] for p in pbs)
    # one session's turns change: only that session is re-derived
    key = sorted({r["session_key"] for r in rows})[0]
    put_sessions(lake, TRACE_TURNS, [r for r in rows if r["session_key"] == key], keys=[key])
    res = dg.materialize([rag_playbooks], resources={"lake": lake, "rag_embeddings": EmbeddingsResource()},
                         instance=dg.DagsterInstance.ephemeral())
    md = res.asset_materializations_for_node("gold__rag_playbooks")[0].metadata
    assert md["sessions_refreshed"].value == 1 and md["embedded_new"].value == 0
    assert md["playbooks"].value == len(pbs)


def test_definitions_load():
    import assets.rag.assets as rag

    defs = dg.Definitions.merge(rag.defs, dg.Definitions(resources={"lake": DeltaLake(root="/tmp/unused")}))
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("rag_batch_job") is not None
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"gold/rag_playbooks", "gold/rag_runs", "gold/rag_report"} <= keys
