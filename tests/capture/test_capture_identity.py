"""Capture isolation and honest post-filter statistics (issue 16 point 4): the verifier is
identified by its model id + a fingerprint of weights and config, checked as a table
property; post-filter rules say what they measured; fp16 overflow is clamped and counted."""

import json

import dagster as dg
import numpy as np
import pytest

from assets.capture.assets import capture_shards, prompt_pool
from assets.capture.capture import CaptureSettings, PromptIn, capture_prompts, forward_capture
from assets.capture.postfilter import PostFilterConfig, evaluate
from assets.capture.shards import CHECKED_PROPS, capture_properties
from assets.capture.tables import CAPTURE_REJECTIONS, capture_spec
from resources.lake import DeltaLake
from testsupport.models import build_tiny_llama
from resources.verifier import LoadedVerifier, VerifierResource, verifier_fingerprint, verifier_model_id
from tests.capture.capture_fixtures import write_inputs, write_quotas


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two fine-tuning runs whose checkpoints share a directory name and a config."""
    root = tmp_path_factory.mktemp("ckpt")
    return build_tiny_llama(root / "run1" / "final", seed=1), build_tiny_llama(root / "run2" / "final", seed=2)


def _capture(lake, verifier, tmp_path, instance):
    write_inputs(lake)
    quotas = write_quotas(tmp_path / "q.yaml", {"chat-en": 2})
    return dg.materialize(
        [prompt_pool, capture_shards], resources={"lake": lake, "verifier": verifier}, instance=instance,
        run_config={"ops": {"gold__prompt_pool": {"config": {"quotas_path": str(quotas)}},
                            "gold__capture_shards": {"config": {"max_prompts": 2}}}},
        raise_on_error=False)


def test_two_checkpoints_named_final_never_share_a_table(tmp_path, two_runs):
    run1, run2 = two_runs
    v1 = VerifierResource(verifier=str(run1), top_k=4, batch_tokens=512, max_length=256)
    v2 = VerifierResource(verifier=str(run2), top_k=4, batch_tokens=512, max_length=256)
    assert v1.model_id() == v2.model_id() == "final"
    assert v1.fingerprint() != v2.fingerprint() and len(v1.fingerprint()) == 16
    assert v1.identity()[0] != v2.identity()[0]
    assert capture_spec(*v1.identity()).name != capture_spec(*v2.identity()).name

    lake, instance = DeltaLake(root=str(tmp_path / "lake")), dg.DagsterInstance.ephemeral()
    assert _capture(lake, v1, tmp_path, instance).success
    props = capture_properties(lake.table(capture_spec(*v1.identity())))
    assert "verifier_fingerprint" in CHECKED_PROPS
    assert props["verifier_fingerprint"] == v1.fingerprint() and props["verifier_model"] == "final"

    # the same table name forced on the other checkpoint: refused by the fingerprint property
    forced1 = VerifierResource(verifier=str(run1), verifier_id="final", top_k=4, batch_tokens=512, max_length=256)
    forced2 = VerifierResource(verifier=str(run2), verifier_id="final", top_k=4, batch_tokens=512, max_length=256)
    assert _capture(lake, forced1, tmp_path, instance).success
    res = _capture(lake, forced2, tmp_path, instance)
    assert not res.success
    err = str(res.get_step_failure_events()[0].event_specific_data.error)
    assert "verifier_fingerprint" in err and v2.fingerprint() in err


def test_model_id_is_org_name_where_known(tmp_path, two_runs):
    assert verifier_model_id("smollm2-135m") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    d = build_tiny_llama(tmp_path / "mine", seed=1)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps(cfg | {"_name_or_path": "acme/tiny-chat"}))
    assert verifier_model_id(str(d)) == "acme/tiny-chat"
    # naming keys are not part of the fingerprint; weights are
    assert verifier_fingerprint(str(d)) == verifier_fingerprint(str(two_runs[0]))


# ------------------------------------------------------------------ post-filter

CFG = PostFilterConfig(low_confidence_threshold=0.3, repetition_ngram=3, repetition_threshold=0.5)


def test_read_only_capture_scores_answer_tokens_only():
    p = np.full(20, 0.1)  # unsure about the prompt...
    p[11:19] = 0.9  # ...sure about the answer tokens 12..19
    reasons, st = evaluate(np.arange(20), p, 20, False, None, CFG, answer_start=12)
    assert reasons == [] and st["mean_top1"] == 0.9 and st["n_answer_tokens"] == 8
    assert st["measured"]["low_confidence"].startswith("answer tokens")
    assert st["measured"]["eos_failure"] == "off: nothing generated"
    # no answer tokens: confidence is not measured (before: the prompt's mean 0.1 flagged it)
    reasons, st = evaluate(np.arange(20), np.full(20, 0.1), 20, False, None, CFG)
    assert reasons == [] and st["mean_top1"] is None
    assert st["measured"]["low_confidence"] == "off: no answer tokens"


def test_answer_region_of_a_real_template(tiny_dir):
    from resources.models import load_causal_lm

    tok, model = load_causal_lm(str(tiny_dir), device="cpu", dtype="float32")
    v = LoadedVerifier(tok, model, "tiny", "float32", "cpu", str(tiny_dir))
    user = {"role": "user", "content": "What is the capital of France?"}
    ans = {"role": "assistant", "content": "The capital of France is Paris."}
    caps = capture_prompts(v, [PromptIn("a", [user, ans]), PromptIn("b", [user])],
                           CaptureSettings(top_k=4, max_length=256))
    with_answer, without = caps
    head = tok.apply_chat_template([user], add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
    assert with_answer.answer_start == len(head) < with_answer.n_tokens
    assert tok.decode(with_answer.token_ids[with_answer.answer_start:]).startswith("The capital")
    assert without.answer_start is None


def test_fp16_overflow_is_clamped_and_counted(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_dir), torch_dtype="float32").eval()
    model.get_input_embeddings().weight.data *= 1e7  # embeddings (hidden_states[0]) beyond fp16
    v = LoadedVerifier(tok, model, "tiny", "float32", "cpu", str(tiny_dir))
    seq = np.asarray(tok("hello world, the capital of France is Paris")["input_ids"], dtype=np.int64)
    [(ids, probs, top1, hidden, clamped)] = forward_capture(v, [seq], CaptureSettings(top_k=4, hidden_layer=0))
    assert hidden.dtype == np.float16 and np.isfinite(hidden).all()
    assert clamped > 0 and np.abs(hidden).max() == np.float16(65504)
    # a normal layer: nothing to clamp
    [(_, _, _, hidden_last, clamped_last)] = forward_capture(v, [seq], CaptureSettings(top_k=4, hidden_layer=-1))
    assert clamped_last == 0 and np.isfinite(hidden_last).all()


def test_capture_metadata_reports_what_was_measured(tmp_path, tiny_gpu):
    lake, instance = DeltaLake(root=str(tmp_path / "lake")), dg.DagsterInstance.ephemeral()
    res = _capture(lake, tiny_gpu, tmp_path, instance)
    assert res.success
    md = res.asset_materializations_for_node("gold__capture_shards")[0].metadata
    assert "low_confidence: answer tokens (trailing assistant turn)" in md["postfilter_measured"].value
    assert "eos_failure: off: nothing generated" in md["postfilter_measured"].value
    assert md["answer_tokens_scored"].value > 0 and md["hidden_values_clamped_fp16"].value == 0
    assert md["verifier_fingerprint"].value == tiny_gpu.fingerprint()
    assert md["preview"].value.startswith("| prompt_id | domain |")
    pool_md = res.asset_materializations_for_node("gold__prompt_pool")[0].metadata
    assert pool_md["preview"].value.startswith("| domain | language | conversation |")
    for r in lake.read(CAPTURE_REJECTIONS).to_pylist() if lake.exists(CAPTURE_REJECTIONS) else []:
        assert "measured" in json.loads(r["stats"])
