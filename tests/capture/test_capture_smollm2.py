"""The embedded verifier: real SmolLM2-135M (GGUF) on CPU, two short prompts."""

import numpy as np
import pytest
import torch

from assets.capture.capture import CaptureSettings, PromptIn, build_shard_table, capture_prompts
from assets.capture.reader import load_batch
from assets.capture.shards import append_shard, ensure_shard_table, table_properties
from assets.capture.tables import capture_spec
from resources.verifier import VerifierResource


@pytest.mark.slow
def test_smollm2_capture_equals_direct_forward(lake):
    gpu = VerifierResource(device="cpu", top_k=8, batch_tokens=1, max_length=128, cpu_threads=1)  # embedded smollm2-135m
    v = gpu.load()  # first load on a machine converts the GGUF once (~30-50 s), later ~1 s
    assert (v.model_id, v.dtype, v.hidden_size) == ("HuggingFaceTB/SmolLM2-135M-Instruct", "float32", 576)
    assert v.verifier_id == f"HuggingFaceTB/SmolLM2-135M-Instruct@{v.fingerprint[:8]}"
    prompts = [
        PromptIn("france", [{"role": "user", "content": "What is the capital of France?"}]),
        PromptIn("hello", [{"role": "user", "content": "Say hello."}, {"role": "assistant", "content": "Hello!"}]),
    ]
    caps = capture_prompts(v, prompts, CaptureSettings(top_k=8, batch_tokens=1, max_length=128, max_new_tokens=8))
    spec = capture_spec(v.verifier_id, v.dtype)
    assert spec.path == f"gold/capture_shards__huggingfacetb-smollm2-135m-instruct-{v.fingerprint[:8]}__float32__v1"
    props = table_properties(verifier_id=v.verifier_id, dtype=v.dtype, top_k=8, hidden_size=576,
                             hidden_layer=-1, block_size=16)
    ensure_shard_table(lake, spec, props)
    append_shard(lake, spec, build_shard_table(caps, [None, None], 16), props)

    batch = load_batch(lake, v.verifier_id, "float32", prompt_ids=["france"])
    france = caps[0]
    text = v.tokenizer.decode(france.token_ids[france.n_prompt_tokens:])
    assert "Paris" in text
    ids = torch.as_tensor(france.token_ids.astype(np.int64))[None]
    with torch.inference_mode():
        out = v.model(input_ids=ids, output_hidden_states=True)
    probs = torch.softmax(out.logits[0].float(), dim=-1).topk(8, dim=-1)
    assert batch["token_id"].tolist() == france.token_ids.tolist()
    assert torch.equal(batch["hidden_state"], out.hidden_states[-1][0].to(torch.float16))
    assert torch.equal(batch["top_token_ids"], probs.indices)
    assert torch.allclose(batch["top_probs"].float(), probs.values, atol=1e-3)
    assert batch["is_generated"].sum().item() == france.n_tokens - france.n_prompt_tokens
