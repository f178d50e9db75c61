"""prompt_pool → capture_shards through Dagster with a real lake and the tiny Llama."""

import json

import dagster as dg
import pyarrow.compute as pc

from assets.capture.assets import defs
from assets.capture.assets import GPU_OP_TAGS, capture_shards, capture_shards_contract, prompt_pool
from assets.capture.reader import load_batch
from assets.capture.tables import CAPTURE_ASSET_KEY, CAPTURE_REJECTIONS, PROMPT_POOL, capture_spec
from resources.verifier import VerifierResource
from tests.capture.capture_fixtures import write_inputs, write_quotas

QUOTAS = {"chat-en": 3, "chat-zh": 3, "code": 2, "math": 1, "tool-call": 1, "multi-turn": 1, "long-context": 1}


def _md(result, node):
    return result.asset_materializations_for_node(node)[0].metadata


def _run(lake, gpu, instance, quotas_path=None, selection=None, **capture_cfg):
    ops = {"gold__capture_shards": {"config": capture_cfg}}
    if quotas_path:
        ops["gold__prompt_pool"] = {"config": {"quotas_path": str(quotas_path)}}
    if selection is not None:  # the shards and the post-filter log are written by one step
        selection = dg.AssetSelection.assets(*selection).required_multi_asset_neighbors()
    return dg.materialize([prompt_pool, capture_shards, capture_shards_contract], selection=selection,
                          resources={"lake": lake, "verifier": gpu}, run_config={"ops": ops}, instance=instance)


def test_definitions_gpu_pool_and_k8s_tags(lake):
    dg.Definitions.validate_loadable(dg.Definitions.merge(defs, dg.Definitions(resources={"lake": lake})))
    assert capture_shards.op.pool == "gpu"
    k8s = json.loads(capture_shards.op.tags["dagster-k8s/config"])
    assert k8s == GPU_OP_TAGS["dagster-k8s/config"]
    res = k8s["container_config"]["resources"]
    assert res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"] == "1"
    # one step writes the shards and the post-filter log, each an asset of its own
    assert set(capture_shards.keys) == {CAPTURE_ASSET_KEY, dg.AssetKey(["gold", "capture_rejections"])}


def test_materialize_capture_resume_and_postfilter(tmp_path, lake, tiny_gpu):
    write_inputs(lake)
    quotas = write_quotas(tmp_path / "q.yaml", QUOTAS)
    instance = dg.DagsterInstance.ephemeral()

    # 1. pool + the first 4 prompts, one commit per 2 prompts; nothing flagged
    res = _run(lake, tiny_gpu, instance, quotas, max_prompts=4, prompts_per_commit=2,
               low_confidence_threshold=0.0, repetition_threshold=1.0)
    assert res.success
    pool_md = _md(res, "gold__prompt_pool")
    assert pool_md["quota_shortfall_total"].value > 0  # chat-zh asks for 3, the inputs hold 1
    checks = {e.check_name: e for e in res.get_asset_check_evaluations()}
    assert checks["quotas_met"].passed is False
    assert checks["quotas_met"].severity == dg.AssetCheckSeverity.WARN
    assert checks["capture_shards_contract"].passed is True
    n_pool = lake.read(PROMPT_POOL).num_rows
    md = _md(res, "gold__capture_shards")
    assert md["prompts_captured"].value == 4 and md["commits"].value == 2
    assert md["prompts_already_captured"].value == 0 and md["device"].value == "cpu"
    tokens = md["tokens_captured"].value
    assert tokens > 0 and md["bytes_per_token"].value > 0
    assert "top-1 prob" in md["top1_prob_histogram"].value
    verifier_id, dtype = tiny_gpu.identity()
    spec = capture_spec(verifier_id, dtype)
    assert lake.read(spec).num_rows == tokens
    history = lake.table(spec).history()
    assert history[0]["tracelake.capture.top_k"] == "4" and history[0]["tracelake.run_id"] == res.run_id

    # 2. resume: only the prompts not yet captured; flag everything this time
    res2 = _run(lake, tiny_gpu, instance, selection=[CAPTURE_ASSET_KEY], low_confidence_threshold=1.01)
    md2 = _md(res2, "gold__capture_shards")
    assert md2["prompts_already_captured"].value == 4 and md2["resumed"].value is True
    assert md2["prompts_captured"].value == n_pool - 4
    assert md2["postfilter_flagged"].value == n_pool - 4
    table = lake.read(spec, columns=["prompt_id", "filter_reason"])
    assert pc.count_distinct(table.column("prompt_id")).as_py() == n_pool
    reasons = set(table.column("filter_reason").to_pylist())
    assert None in reasons and "low_confidence" in reasons
    # a sequence without answer tokens is not scored for confidence (the rule says so)
    for r in lake.read(CAPTURE_REJECTIONS).to_pylist():
        if "low_confidence" not in r["reason"]:
            assert json.loads(r["stats"])["measured"]["low_confidence"] == "off: no answer tokens"
    # the 12x repeated log line is in the prompt: repetition is measured over answer tokens,
    # so only a sequence without answer tokens is judged on its whole text
    assert "low_confidence;repetition" not in reasons
    rej = lake.read(CAPTURE_REJECTIONS)
    assert rej.num_rows == n_pool - 4 and set(rej.column("action").to_pylist()) == {"flagged"}
    kept = load_batch(lake, verifier_id, dtype)
    assert kept["token_id"].shape[0] == tokens  # flagged rows are not loaded by default
    assert load_batch(lake, verifier_id, dtype, include_flagged=True)["token_id"].shape[0] == table.num_rows

    # 3. nothing left: no model load, no write
    res3 = _run(lake, tiny_gpu, instance, selection=[CAPTURE_ASSET_KEY])
    assert _md(res3, "gold__capture_shards")["prompts_captured"].value == 0
    assert lake.read(spec, columns=["prompt_id"]).num_rows == table.num_rows

    # 4. another verifier id → its own table; drop mode records drops and resumes past them
    gpu2 = VerifierResource(verifier=tiny_gpu.verifier, verifier_id="tiny-drop", top_k=4, batch_tokens=512)
    res4 = _run(lake, gpu2, instance, selection=[CAPTURE_ASSET_KEY], postfilter_action="drop",
                low_confidence_threshold=1.01, max_prompts=2)
    assert _md(res4, "gold__capture_shards")["postfilter_dropped"].value == 2
    spec2 = capture_spec("tiny-drop", dtype)
    assert not lake.exists(spec2) or lake.read(spec2).num_rows == 0
    res5 = _run(lake, gpu2, instance, selection=[CAPTURE_ASSET_KEY], max_prompts=1,
                low_confidence_threshold=0.0, repetition_threshold=1.0)
    md5 = _md(res5, "gold__capture_shards")
    assert md5["prompts_already_captured"].value == 2 and md5["prompts_captured"].value == 1
