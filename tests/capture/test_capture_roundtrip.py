"""Capture → Delta → load_batch equals a direct forward pass of the model (tiny Llama)."""

import numpy as np
import pytest
import torch

from assets.capture.capture import CaptureSettings, PromptIn, build_shard_table, capture_prompts
from assets.capture.reader import load_batch
from assets.capture.shards import (
    CaptureTableMismatch,
    SchemaVersionMismatch,
    append_shard,
    ensure_shard_table,
    table_properties,
)
from assets.capture.tables import capture_spec

K = 4


def _prompts():
    texts = ["hello world", "The capital of France is Paris. " * 3, "def main(): return 0", "2 + 2 = 4. Hallo Welt."]
    return [PromptIn(f"p{i}", [{"role": "user", "content": t}, {"role": "assistant", "content": "user assistant"}],
                     domain="chat-en", language="en") for i, t in enumerate(texts)]


def _write(lake, verifier, caps, block_size=4, top_k=K):
    spec = capture_spec(verifier.verifier_id, verifier.dtype)
    props = table_properties(verifier_id=verifier.verifier_id, dtype=verifier.dtype, top_k=top_k,
                             hidden_size=verifier.hidden_size, hidden_layer=-1, block_size=block_size)
    ensure_shard_table(lake, spec, props)
    res = append_shard(lake, spec, build_shard_table(caps, [None] * len(caps), block_size), props)
    return spec, res


def _direct(model, ids):
    with torch.inference_mode():
        out = model(input_ids=torch.as_tensor(np.asarray(ids, dtype=np.int64))[None], output_hidden_states=True)
    probs = torch.softmax(out.logits[0].float(), dim=-1)
    top_p, top_i = probs.topk(K, dim=-1)
    return out.hidden_states[-1][0].to(torch.float16), top_i, top_p


@pytest.mark.parametrize("max_new_tokens", [0, 6])
def test_reader_equals_direct_forward(lake, tiny_gpu, max_new_tokens):
    v = tiny_gpu.load()
    # batch_tokens=1: every sequence alone in its forward batch (no padding) → bit-exact
    settings = CaptureSettings(top_k=K, batch_tokens=1, max_length=256, max_new_tokens=max_new_tokens, block_size=4)
    caps = capture_prompts(v, _prompts(), settings)
    spec, res = _write(lake, v, caps)
    assert res.rows == sum(c.n_tokens for c in caps) and res.bytes_added > 0

    batch = load_batch(lake, v.verifier_id, v.dtype)
    offsets = batch["sequence_offsets"].tolist()
    assert len(offsets) == len(caps) + 1 and offsets[-1] == batch["token_id"].shape[0]
    assert batch["hidden_state"].dtype == torch.float16 and batch["hidden_state"].shape[1] == v.hidden_size
    for s, cap in enumerate(sorted(caps, key=lambda c: c.prompt.prompt_id)):
        a, b = offsets[s], offsets[s + 1]
        ids = batch["token_id"][a:b]
        assert ids.tolist() == cap.token_ids.tolist()
        if max_new_tokens:  # the continuation is the model's own greedy answer
            with torch.inference_mode():
                g = v.model.generate(input_ids=torch.as_tensor(cap.token_ids[: cap.n_prompt_tokens],
                                                               dtype=torch.long)[None],
                                     max_new_tokens=max_new_tokens, do_sample=False)
            assert g[0].tolist()[: b - a] == ids.tolist()
            assert batch["is_generated"][a:b].sum().item() == cap.n_tokens - cap.n_prompt_tokens > 0
        else:
            assert not batch["is_generated"][a:b].any()
        hidden, top_i, top_p = _direct(v.model, ids.numpy())
        assert torch.equal(batch["hidden_state"][a:b], hidden)  # fp16, bit-exact
        assert torch.equal(batch["top_token_ids"][a:b], top_i)
        assert torch.allclose(batch["top_probs"][a:b].float(), top_p, atol=1e-3, rtol=1e-3)
        assert torch.allclose(batch["verifier_top1_prob"][a:b], top_p[:, 0], atol=1e-6)
        pos = batch["position_in_sequence"][a:b]
        assert pos.tolist() == list(range(b - a))
        assert torch.equal(batch["block_index"][a:b], pos // 4)
        assert torch.equal(batch["position_in_block"][a:b], pos % 4)
        assert torch.equal(batch["cache_logical_size"][a:b], pos)
        assert (batch["sequence_id"][a:b] == s).all()

    one = load_batch(lake, v.verifier_id, v.dtype, prompt_ids=["p2"])
    assert one["token_id"].tolist() == [c for c in caps if c.prompt.prompt_id == "p2"][0].token_ids.tolist()


def test_padded_batches_stay_within_one_fp16_ulp(tiny_gpu):
    v = tiny_gpu.load()
    alone = capture_prompts(v, _prompts(), CaptureSettings(top_k=K, batch_tokens=1))
    batched = capture_prompts(v, _prompts(), CaptureSettings(top_k=K, batch_tokens=4096))
    for a, b in zip(alone, batched):
        assert np.array_equal(a.top_ids, b.top_ids)
        diff = np.abs(a.hidden.astype(np.float32) - b.hidden.astype(np.float32))
        assert diff.max() <= np.spacing(np.abs(a.hidden).astype(np.float16)).astype(np.float32).max()


def test_schema_version_mismatch_refuses(lake, tiny_gpu):
    v = tiny_gpu.load()
    caps = capture_prompts(v, _prompts()[:1], CaptureSettings(top_k=K, batch_tokens=1))
    spec, _ = _write(lake, v, caps)
    assert load_batch(lake, v.verifier_id, v.dtype)["token_id"].numel() == caps[0].n_tokens

    lake.table(spec).alter.set_table_properties({"tracelake.capture.schema_version": "2"}, raise_if_not_exists=False)
    with pytest.raises(SchemaVersionMismatch, match="version '2'.*reads v1"):
        load_batch(lake, v.verifier_id, v.dtype)
    # appending with this code refuses as well
    with pytest.raises(SchemaVersionMismatch):
        _write(lake, v, caps)

    # only an older-version table exists for this verifier: refuse, naming it
    old = capture_spec("old-verifier", "float32", schema_version=0)
    lake.ensure(old)
    with pytest.raises(SchemaVersionMismatch, match="schema v0"):
        load_batch(lake, "old-verifier", "float32")


def test_append_with_other_top_k_refuses(lake, tiny_gpu):
    v = tiny_gpu.load()
    caps = capture_prompts(v, _prompts()[:1], CaptureSettings(top_k=K, batch_tokens=1))
    _write(lake, v, caps)
    with pytest.raises(CaptureTableMismatch, match="top_k: table=4 run=8"):
        _write(lake, v, caps, top_k=8)
