"""The draft head on capture shards (tiny Llama verifier) against the bigram baseline."""

import json
from pathlib import Path

import dagster as dg
import numpy as np

from assets.capture.capture import CaptureSettings, PromptIn, build_shard_table, capture_prompts
from assets.capture.shards import append_shard, ensure_shard_table, table_properties
from assets.capture.tables import capture_spec
from assets.student.assets import draft_heads
from assets.student.draft import Bigram, Sequences, _accept, build_head, evaluate_draft, pair_index
from assets.student.split import bucket
from assets.student.tables import DRAFT_HEADS


def test_accept_counts_leading_matches_along_the_known_path():
    top1 = np.array([[1, 2, 3, 4]] * 4)
    seq_next = np.array([[1, 2, 3, 4], [1, 2, 3, 4], [1, 9, 3, 4], [1, 2, 3, 4]])
    drafts = np.array([[1, 2, 3, 4], [1, 2, 0, 4], [1, 2, 3, 4], [0, 2, 3, 4]])
    # row 2: the captured sequence left the verifier's path after 2 tokens: unknown beyond
    assert _accept(drafts, top1, seq_next).tolist() == [4, 2, 2, 0]


def test_bigram_chains_on_its_own_drafts():
    s = Sequences(["p"], np.array([0, 4]), np.array([5, 6, 7, 5]), np.array([[6], [7], [5], [6]]),
                  np.ones((4, 1), np.float32), np.zeros((4, 2), np.float16))
    b = Bigram(s)
    assert b.draft(5, 4) == [6, 7, 5, 6] and b.next(99) in (5, 6, 7)
    assert pair_index(s, 1).tolist() == [0, 1, 2]


def _capture(lake, verifier, n=16):
    v = verifier.load()
    texts = ["hello world", "The capital of France is Paris.", "def main(): return 0", "2 + 2 = 4",
             "pytest failed: AssertionError", "import os", "Bonjour le monde", "You are a helpful assistant"]
    ids = [f"p{i}" for i in range(200)]
    ev = [i for i in ids if bucket(i, "tracelake") < 0.3][: n // 4]
    tr = [i for i in ids if bucket(i, "tracelake") >= 0.3][: n - len(ev)]
    prompts = [PromptIn(pid, [{"role": "user", "content": texts[k % len(texts)] + f" {k}"}])
               for k, pid in enumerate(ev + tr)]
    caps = capture_prompts(v, prompts, CaptureSettings(top_k=4, max_length=128, max_new_tokens=24, block_size=4))
    spec = capture_spec(v.verifier_id, v.dtype)
    props = table_properties(verifier_id=v.verifier_id, dtype=v.dtype, top_k=4, hidden_size=v.hidden_size,
                             hidden_layer=-1, block_size=4)
    ensure_shard_table(lake, spec, props)
    append_shard(lake, spec, build_shard_table(caps, [None] * len(caps), 4), props)
    return v


def test_draft_head_asset_learns_and_records_a_run(lake, tiny_verifier):
    v = _capture(lake, tiny_verifier)
    res = dg.materialize([draft_heads], resources={"lake": lake, "verifier": tiny_verifier},
                         run_config={"ops": {"gold__draft_heads": {"config": {
                             "epochs": 1, "min_steps": 60, "draft_vocab": 512, "lr": 5e-3, "unroll": 2}}}},
                         instance=dg.DagsterInstance.ephemeral())
    assert res.success
    row = lake.read(DRAFT_HEADS).to_pylist()[0]
    assert row["n_train_prompts"] == 12 and row["n_eval_prompts"] == 4 and row["n_eval_positions"] > 0
    assert 0 <= row["baseline_top1_agreement"] <= 1 and 0 <= row["accept_len"] <= row["chain"] == 4
    m = json.loads(row["metrics"])
    assert m["loss_last"] < m["loss_first"]
    assert m["steps"] >= 60 and m["epochs"] > 1  # a small table: more epochs, up to min_steps
    assert (Path(row["artifact_uri"]) / "draft_head.pt").is_file()
    # the trained head agrees with the verifier far more than an untrained one
    from assets.capture.reader import load_table
    from assets.student.draft import sequences_from_capture

    seqs = sequences_from_capture(*load_table(lake, v.verifier_id, v.dtype))
    test = seqs.select([i for i, p in enumerate(seqs.prompt_ids) if bucket(p, "tracelake") < 0.3])
    emb, lm = v.model.get_input_embeddings().weight, v.model.get_output_embeddings().weight
    untrained = build_head(v.hidden_size, emb, lm, np.arange(lm.shape[0]))
    r0 = evaluate_draft(untrained, Bigram(test), test, 4)
    assert row["top1_agreement"] > r0["top1_agreement"] + 0.1
    md = res.asset_materializations_for_node("gold__draft_heads")[0].metadata
    assert "bigram baseline" in md["this_run"].value
