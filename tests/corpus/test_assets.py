"""replay_corpus -> replay_sample through Dagster, on upstream tables written by the test."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg

from assets.pairs.tables import NORMALIZED_PAIRS

from assets.examples.tables import KTO_EXAMPLES, SFT_EXAMPLES
from assets.corpus.assets import defs, replay_corpus, replay_sample
from assets.corpus.assets import replay_corpus_ids_unique, replay_sample_ids_prefixed
from assets.corpus.tables import REPLAY_CORPUS, REPLAY_SAMPLE
from resources.lake import DeltaLake

from .conftest import kto_row, pair_row, sft_row
from tests.sessions import put_sessions


def _run(lake, corpus_cfg, sample_cfg=None):
    assets = [replay_corpus] + ([replay_sample] if sample_cfg is not None else [])
    ops = {"gold__replay_corpus": {"config": corpus_cfg}}
    if sample_cfg is not None:
        ops["gold__replay_sample"] = {"config": sample_cfg}
    res = dg.materialize(assets, resources={"lake": lake}, run_config={"ops": ops},
                         instance=dg.DagsterInstance.ephemeral())
    assert res.success
    mats = [e.event_specific_data.materialization for e in res.get_asset_materialization_events()]
    return {m.asset_key.path[-1]: m.metadata for m in mats}


def test_materialize_corpus_and_sample(tmp_path):
    lake = DeltaLake(root=str(tmp_path))
    lake.merge(NORMALIZED_PAIRS, [pair_row(i) for i in range(6)], keys=["pair_id"])
    put_sessions(lake, SFT_EXAMPLES, [sft_row(i, session="s1") for i in range(5)] +
                            [sft_row(9, session="s2", user=False)], keys=["s1", "s2"])
    put_sessions(lake, KTO_EXAMPLES, [kto_row(1, True), kto_row(2, False)], keys=["s1"])

    md = _run(lake, {"as_of": "2026-11-01T00:00:00Z"},
              {"k": 5, "seed": 3, "reference_time": "2026-11-02T00:00:00Z"})
    c = md["replay_corpus"]
    assert c["added"].value == 13 and c["refreshed"].value == 0 and c["table_rows"].value == 13
    assert c["section_types"].value == {"prose": 1, "instruction": 6, "preference": 6}
    assert c["dropped_by_reason"].value == {"kto_undesirable": 1}
    s = md["replay_sample"]
    assert s["dagster/row_count"].value == 5 and sum(s["composition"].value.values()) == 5
    assert s["preview"].value.startswith("| id | type |") and c["preview"].value.startswith("| type |")
    sample = lake.read(REPLAY_SAMPLE)
    assert all(i.startswith("replay:") for i in sample.column("id").to_pylist())

    # a second sighting a week later: upstream lost 3 pairs, gained one; budget of 11 rows
    lake.overwrite(NORMALIZED_PAIRS, [pair_row(i) for i in range(3, 7)])
    md = _run(lake, {"as_of": "2026-11-08T00:00:00Z", "max_rows": 11})
    c = md["replay_corpus"]
    # only what changed upstream is read: the rewritten pairs table (4 rows), not sft/kto
    assert c["input_rows_read"].value == 4
    assert c["refresh_mode"].value == {"gold/normalized_pairs": "incremental", "gold/sft_examples": "incremental",
                                       "gold/kto_examples": "incremental"}
    assert c["added"].value == 1 and c["refreshed"].value == 3
    assert c["evicted"].value == 3 and c["within_budget"].value and c["eviction_mode"].value == "range"
    corpus = lake.read(REPLAY_CORPUS).to_pylist()
    assert len(corpus) == 11
    gone = {r["source_id"] for r in corpus if r["source"] == "gold/normalized_pairs"}
    assert gone == {"p3", "p4", "p5", "p6"}  # p0..p2 (no longer upstream) were evicted, sft/kto kept
    assert len(c["evicted_ids_sample"].value) == 3

    # a full refresh, on request, reads every input row again (and changes nothing here)
    md = _run(lake, {"as_of": "2026-11-08T00:00:00Z", "max_rows": 11, "full_refresh": True})
    c = md["replay_corpus"]
    assert c["input_rows_read"].value == 4 + 6 + 2 and c["added"].value == 0 and c["evicted"].value == 0
    assert set(c["refresh_mode"].value.values()) == {"full"}

    # the asset checks pass on what was written
    checks = dg.materialize([replay_corpus, replay_sample, replay_corpus_ids_unique, replay_sample_ids_prefixed],
                            resources={"lake": lake},
                            selection=dg.AssetSelection.checks_for_assets(replay_corpus, replay_sample),
                            instance=dg.DagsterInstance.ephemeral())
    evals = checks.get_asset_check_evaluations()
    assert len(evals) == 2 and all(e.passed for e in evals)


def test_defs_load_with_lake(tmp_path):
    full = dg.Definitions.merge(defs, dg.Definitions(resources={"lake": DeltaLake(root=str(tmp_path))}))
    keys = full.resolve_asset_graph().get_all_asset_keys()
    assert REPLAY_CORPUS.asset_key in keys and REPLAY_SAMPLE.asset_key in keys


def test_budget_smaller_than_the_live_set_is_met(tmp_path):
    """Issue 16 point 5: only rows added by this materialization are protected."""
    lake = DeltaLake(root=str(tmp_path))
    lake.merge(NORMALIZED_PAIRS, [pair_row(i) for i in range(6)], keys=["pair_id"])
    md = _run(lake, {"as_of": "2026-11-01T00:00:00Z"})
    assert md["replay_corpus"]["table_rows"].value == 6
    # a week later every pair is still upstream, one is new; the budget is 4 rows
    lake.merge(NORMALIZED_PAIRS, [pair_row(6)], keys=["pair_id"])
    c = _run(lake, {"as_of": "2026-11-08T00:00:00Z", "max_rows": 4})["replay_corpus"]
    assert c["within_budget"].value is True and c["table_rows"].value == 4
    assert c["protected_rows"].value == 1 and c["evicted"].value == 3
    ids = {r["source_id"] for r in lake.read(REPLAY_CORPUS).to_pylist()}
    assert "p6" in ids and len(ids) == 4  # the new row stays; the oldest sightings went first


def test_preference_sampling_without_auto_mined_pairs(tmp_path):
    from assets.corpus.policy import make_snapshot
    from assets.corpus.store import upsert_snapshots
    from assets.corpus.policy import Snapshots

    lake = DeltaLake(root=str(tmp_path))
    lake.merge(NORMALIZED_PAIRS, [pair_row(i) for i in range(4)], keys=["pair_id"])
    _run(lake, {"as_of": "2026-11-01T00:00:00Z"})
    # two imported preference pairs (not mined by the pipeline)
    snaps = Snapshots()
    for i in range(2):
        snaps.rows.append(make_snapshot(
            "preference", {"prompt": [{"role": "user", "content": f"imported {i}"}],
                           "chosen": [{"role": "assistant", "content": "yes"}],
                           "rejected": [{"role": "assistant", "content": "no"}]},
            now=datetime(2026, 11, 1, tzinfo=timezone.utc), source="import/hh-rlhf", source_id=f"h{i}",
            auto_mined=False))
    upsert_snapshots(lake, snaps)
    cfg = {"k": 10, "seed": 1, "preference_only": True, "reference_time": "2026-11-02T00:00:00Z"}
    res = dg.materialize([replay_sample], resources={"lake": lake}, instance=dg.DagsterInstance.ephemeral(),
                         run_config={"ops": {"gold__replay_sample": {"config": cfg | {"include_auto_mined": False}}}})
    assert res.success
    assert set(lake.read(REPLAY_SAMPLE).column("source").to_pylist()) == {"import/hh-rlhf"}
    assert lake.read(REPLAY_SAMPLE).num_rows == 2
    dg.materialize([replay_sample], resources={"lake": lake}, instance=dg.DagsterInstance.ephemeral(),
                   run_config={"ops": {"gold__replay_sample": {"config": cfg}}})
    assert lake.read(REPLAY_SAMPLE).num_rows == 6
