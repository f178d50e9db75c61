"""Held-out split → TRL training (LoRA) → base-vs-trained evaluation, as Dagster assets on a
real lake with a tiny Llama built on the fly."""

import json
from pathlib import Path

import dagster as dg

from assets.student.assets import session_split, student_evals, student_runs
from assets.student.split import EVAL
from assets.student.tables import SESSION_SPLIT, STUDENT_EVALS, STUDENT_RUNS
from tests.student.conftest import SESSIONS, write_training_tables


def test_definitions_wire_the_family_manual_and_in_the_gpu_pool():
    from dagster_project.definitions import DATASETS_JOB, defs

    keys = defs.resolve_asset_graph().get_all_asset_keys()
    assert {SESSION_SPLIT.asset_key, STUDENT_RUNS.asset_key, STUDENT_EVALS.asset_key} <= keys
    datasets = defs.resolve_job_def(DATASETS_JOB).asset_layer.selected_asset_keys
    assert SESSION_SPLIT.asset_key in datasets  # cheap: refreshed with the datasets
    assert STUDENT_RUNS.asset_key not in datasets and STUDENT_EVALS.asset_key not in datasets
    assert student_runs.op.pool == "gpu" and student_evals.op.pool == "gpu"
    assert "dagster-k8s/config" in student_runs.op.tags
    assert defs.resolve_job_def("student") is not None


def test_split_train_eval(lake, tiny_dir, tiny_verifier):
    write_training_tables(lake)
    ops = {
        "gold__session_split": {"config": {"eval_share": 0.34, "seed": "t"}},
        "gold__student_runs": {"config": {
            "base_model": str(tiny_dir), "seed": 1, "stages": ["sft", "dpo", "kto"], "sft_max_steps": 8,
            "dpo_max_steps": 3, "kto_max_steps": 2, "sft_lr": 5e-3, "dpo_lr": 5e-3, "max_prompt_tokens": 48,
            "max_answer_tokens": 24, "min_pairs": 4, "dpo_sft_weight": 0.5, "sft_on_chosen": True}},
        "gold__student_evals": {"config": {"max_rag_tasks": 1, "max_tool_prompts": 2}},
    }
    res = dg.materialize([session_split, student_runs, student_evals], run_config={"ops": ops},
                         resources={"lake": lake, "verifier": tiny_verifier},
                         instance=dg.DagsterInstance.ephemeral())
    assert res.success

    split = lake.read(SESSION_SPLIT).to_pylist()
    assert sorted(r["session_key"] for r in split) == sorted(SESSIONS)
    eval_sessions = {r["session_key"] for r in split if r["split"] == EVAL}
    assert 0 < len(eval_sessions) < len(SESSIONS)

    run = lake.read(STUDENT_RUNS).to_pylist()[0]
    n_train = len(SESSIONS) - len(eval_sessions)
    assert run["n_train_sessions"] == n_train and run["n_sft_rows"] == 4 * n_train  # no eval-session row
    assert run["n_kto_rows"] == 4 * n_train
    art = Path(run["artifact_uri"])
    assert art.is_relative_to(Path(lake.root).resolve()) and (art / "adapter_model.safetensors").is_file()
    assert (art / "tokenizer.json").is_file() and (art / "adapter_config.json").is_file()
    meta = json.loads((art / "tracelake_student.json").read_text())
    assert meta["hyperparameters"]["seed"] == 1 and meta["device"] == "cpu"
    metrics = json.loads(run["metrics"])
    assert metrics["stages"]["sft"]["steps"] == 8 and metrics["stages"]["dpo"]["steps"] == 3
    assert metrics["stages"]["sft"]["rows"] == 5 * n_train  # + the chosen answer of each train session's real pair
    assert metrics["stages"]["kto"]["steps"] == 2
    assert metrics["stages"]["sft"]["loss_last"] < metrics["stages"]["sft"]["loss_first"]
    assert json.loads(run["data_versions"])["gold/sft_examples"] is not None
    # DPO's reference (the SFT model) is kept beside the adapter: the SFT weights, not the final ones
    from safetensors.numpy import load_file

    assert metrics["reference"] == "reference" and (art / "reference" / "adapter_config.json").is_file()
    sft_w, final_w = load_file(art / "reference" / "adapter_model.safetensors"), load_file(art / "adapter_model.safetensors")
    assert sft_w.keys() == final_w.keys() and any((sft_w[k] != final_w[k]).any() for k in sft_w)
    assert not set(metrics["train_sessions"]) & eval_sessions and len(metrics["train_sessions"]) == n_train

    ev = lake.read(STUDENT_EVALS).to_pylist()[0]
    assert ev["run_id"] == run["run_id"] and ev["n_eval_sessions"] == len(eval_sessions)
    assert ev["n_answers"] > 0 and ev["n_pairs"] > 0
    # the answers follow the training sessions' patterns: the trained student fits them better
    assert ev["ll_trained"] > ev["ll_base"] and abs(ev["ll_gain"] - (ev["ll_trained"] - ev["ll_base"])) < 1e-9
    for k in ("pair_acc_base", "pair_acc_trained", "reward_acc", "tool_valid_base", "tool_valid_trained",
              "rag_pass_base", "rag_pass_trained"):
        assert 0.0 <= ev[k] <= 1.0, k
    assert ev["n_tool_prompts"] == 2 and ev["n_rag_tasks"] == 1
    details = json.loads(ev["details"])
    # the implicit reward is measured against the DPO reference (the SFT model), and against the base
    assert details["reward_reference"] == "sft" and 0.0 <= details["reward_acc_vs_base"] <= 1.0
    # pair accuracy per kind of pair covers every held-out pair
    by_kind = details["pair_acc_by_kind"]
    assert sum(k["n"] for k in by_kind.values()) == ev["n_pairs"]
    assert all(0.0 <= k[m] <= 1.0 for k in by_kind.values() for m in ("base", "trained"))
    assert len(details["tool_reasons_trained"]) == 2 and details["rag_trained"][0]["task"]
    md = res.asset_materializations_for_node("gold__student_evals")[0].metadata
    assert "implicit-reward accuracy (ref = sft)" in md["this_run"].value
    assert "chosen-answer log-likelihood" in md["this_run"].value and run["run_id"][:12] in md["over_runs"].value
    assert "plot" in md or "plot_vega_lite" in md
