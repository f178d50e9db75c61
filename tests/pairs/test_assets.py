"""preference_pairs → normalized_pairs (+ the training sets of assets/examples) through Dagster, real lake, real ops."""

import json

import dagster as dg
import pytest

from assets.examples.assets import defs as examples_defs
from assets.pairs.assets import defs as pairs_defs
from assets.pairs.assets import normalized_pairs, normalized_pairs_render, pair_drop_accounting, preference_pairs, preference_pairs_valid
from assets.examples.assets import kto_examples, sdpo_examples, sft_examples
from assets.pairs.judge import PairJudge
from assets.pairs.tables import NORMALIZED_PAIRS, PAIR_REJECTIONS
from assets.examples.tables import KTO_EXAMPLES, SDPO_EXAMPLES, SFT_EXAMPLES
from assets.teachers.tables import TEACHER_RESPONSES
from assets.traces.tables import AGENT_STEPS
from resources.lake import DeltaLake
from assets.pairs.normalizer import Normalizer
from tests.pairs.data import session
from tests.sessions import put_sessions

KEYS = ["sess-a", "sess-b"]
DAYS = {"sess-a": "2026-01-01", "sess-b": "2026-01-02"}  # each session on its own day


@pytest.fixture()
def lake(tmp_path):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    for key in KEYS:  # the same work in two session files (a replayed session)
        s, t = session(key)
        put_sessions(lake, AGENT_STEPS, s, DAYS[key])
        put_sessions(lake, TEACHER_RESPONSES, t, DAYS[key])
    return lake


def _checks(result):
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def test_pairs_to_normalized_pairs_through_dagster(lake, tiny_tokenizer):
    resources = {"lake": lake, "normalizer": Normalizer(verifier_tokenizer=tiny_tokenizer),
                 "pair_judge": PairJudge()}
    with dg.instance_for_test() as instance:
        # one run over both sessions' days, as a single-run backfill would do
        r1 = dg.materialize(
            [preference_pairs, sft_examples, kto_examples, sdpo_examples, preference_pairs_valid],
            resources=resources, instance=instance,
            tags={"dagster/asset_partition_range_start": DAYS[KEYS[0]],
                  "dagster/asset_partition_range_end": DAYS[KEYS[1]]},
        )
        assert r1.success
        assert _checks(r1)["preference_pairs_valid"].passed
        md = r1.asset_materializations_for_node("gold__preference_pairs")[0].metadata
        # per session: error_site, recovery (the agent's own next read) and two consensus pairs
        assert md["pairs"].value == 8 and "| recovery | 2 |" in md["pairs_by_strategy"].value
        # what each validity rule removed, and a preview a user reads in the UI
        assert md["candidates"].value == 8 and "| chosen_repeats_answered_call | 0 |" in md["removed_by_rule"].value
        assert "| prompt (end) | chosen | rejected | why |" in md["preview"].value
        assert "rejected failed: mistake:invalid_arguments" in md["preview"].value
        for node in ("gold__sft_examples", "gold__kto_examples", "gold__sdpo_examples"):
            assert r1.asset_materializations_for_node(node)[0].metadata["preview"].value.startswith("| ")
        assert "judge (pair_judge resource off)" in md["strategies"].value
        md = r1.asset_materializations_for_node("gold__sft_examples")[0].metadata
        sft = lake.read(SFT_EXAMPLES).to_pylist()
        sizes = sorted(len(json.loads(r["messages"])) for r in sft)
        v = md["messages_per_example"].value
        assert (v["rows"], v["min"], v["max"]) == (6, sizes[0], sizes[-1])
        assert v["min"] <= v["p50"] <= v["p95"] <= v["max"]

        r2 = dg.materialize([normalized_pairs, pair_drop_accounting, normalized_pairs_render],
                            resources=resources, instance=instance)
        assert r2.success
        checks = _checks(r2)
        assert checks["pair_drop_accounting"].passed and checks["normalized_pairs_render"].passed
        md = r2.asset_materializations_for_node("gold__normalized_pairs")[0].metadata
        assert md["recipe"].value == "default" and len(md["recipe_version"].value) == 12
        assert (md["rows_in"].value, md["rows_kept"].value, md["rows_dropped"].value) == (8, 4, 4)
        assert "| document_deduplicator | 8 | 4 |" in md["drops_by_op"].value
        assert md["preview"].value.startswith("| prompt (end) |")
        mats = [e.event_specific_data.materialization for e in r2.get_asset_materialization_events()]
        rej_md = next(m.metadata for m in mats if m.asset_key == PAIR_REJECTIONS.asset_key)
        assert "document_deduplicator: duplicate of pair" in rej_md["preview"].value

    kept = lake.read(NORMALIZED_PAIRS).to_pylist()
    dropped = lake.read(PAIR_REJECTIONS).to_pylist()
    assert len(kept) == 4 and len(dropped) == 4
    assert {r["session_key"] for r in kept} == {"sess-a"}  # the replayed copies are the duplicates
    assert all(r["op"] == "document_deduplicator" and json.loads(r["stats"])["duplicate_of"] for r in dropped)
    assert all(r["recipe"] == "default" for r in kept + dropped)
    assert lake.read(SFT_EXAMPLES).num_rows == 6
    # KTO: every original step, and the chosen of each non-original pair (the recovery read included)
    assert lake.read(KTO_EXAMPLES).num_rows == 12 and lake.read(SDPO_EXAMPLES).num_rows == 2


def test_definitions_load():
    d = dg.Definitions.merge(pairs_defs, examples_defs, dg.Definitions(resources={"lake": DeltaLake(root="unused")}))
    dg.Definitions.validate_loadable(d)
    keys = {k.to_user_string() for k in d.resolve_asset_graph().get_all_asset_keys()}
    assert {"gold/preference_pairs", "gold/normalized_pairs", "gold/sft_examples",
            "gold/kto_examples", "gold/sdpo_examples"} <= keys
