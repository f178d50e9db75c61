"""Preference datasets in: ShareGPT / TRL files → trace turns → preference_pairs (strategy
'imported') → normalized_pairs, through Dagster on a real lake."""

from __future__ import annotations

import json

import dagster as dg
import orjson

from assets.pairs.assets import normalized_pairs, pair_drop_accounting, preference_pairs
from assets.pairs.imported import imported_pairs
from assets.pairs.judge import PairJudge
from assets.pairs.normalizer import Normalizer
from assets.pairs.tables import NORMALIZED_PAIRS, PAIR_REJECTIONS, PREFERENCE_PAIRS
from assets.traces.ingest import ingest_file
from assets.traces.tables import AGENT_STEPS, TRACE_TURNS
from resources.lake import DeltaLake
from tests.sessions import DAY, put_sessions

Q1 = "Which Python call reads a CSV file with a byte-order mark without keeping the BOM in the first header?"
GOOD1 = "Open it with encoding='utf-8-sig': open('data.csv', encoding='utf-8-sig') strips the BOM before csv reads it."
BAD1 = "You cannot read such files in Python; convert the file by hand in a text editor first, then try again."
Q2 = "How do I round a Decimal half up to two places in Python, as invoices usually require?"
GOOD2 = "Use value.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP) from the decimal module; 0.125 becomes 0.13."
BAD2 = "Call round(value, 2); Python always rounds halves up, so 0.125 becomes 0.13 with the built-in function."
Q3 = "What does `git stash -u` add to a plain `git stash`?"
GOOD3 = "It also stashes untracked files (not ignored ones), so the working tree is left completely clean."
BAD3 = "It uploads the stash to the remote so that colleagues can apply it on their own machines later on."

SHAREGPT = [  # LLaMA-Factory's dpo_en_demo.json shape
    {"conversations": [{"from": "human", "value": Q1}], "chosen": {"from": "gpt", "value": GOOD1},
     "rejected": {"from": "gpt", "value": BAD1}},
    {"conversations": [{"from": "human", "value": Q2}], "chosen": {"from": "gpt", "value": GOOD2},
     "rejected": {"from": "gpt", "value": BAD2}},
    {"conversations": [{"from": "human", "value": "only a prompt"}]},  # not a pair: kept as unknown
]
TRL = [
    {"prompt": [{"role": "user", "content": Q3}], "chosen": [{"role": "assistant", "content": GOOD3}],
     "rejected": [{"role": "assistant", "content": BAD3}]},  # conversational, explicit prompt
    {"prompt": Q1, "chosen": GOOD1, "rejected": BAD1},  # standard
    {"chosen": [{"role": "user", "content": Q2}, {"role": "assistant", "content": GOOD2}],  # implicit prompt
     "rejected": [{"role": "user", "content": Q2}, {"role": "assistant", "content": BAD2}]},
]


def _files(tmp_path):
    a = tmp_path / "dpo_en_demo.json"
    a.write_bytes(orjson.dumps(SHAREGPT, option=orjson.OPT_INDENT_2))
    b = tmp_path / "trl_pairs.jsonl"
    b.write_text("\n".join(json.dumps(r) for r in TRL) + "\n")
    return {"data~dpo_en_demo.json": a, "data~trl_pairs.jsonl": b}


def test_preference_files_parse(tmp_path):
    for key, path in _files(tmp_path).items():
        raw, turns, steps, stats = ingest_file(path, key)
        assert stats["source_format"] == "preference" and not stats["quarantined"]
        TRACE_TURNS.conform(turns)
        rejected = [t for t in turns if t["kind"] == "rejected"]
        assert len(rejected) == len(steps) == (2 if "dpo" in key else 3)
        for s in steps:  # the step's response is the chosen answer, its context the prompt
            assert orjson.loads(s["messages"])[-1]["role"] == "user"
            assert s["response_text"] in (GOOD1, GOOD2, GOOD3)
        rows, counts = imported_pairs(steps, rejected)
        PREFERENCE_PAIRS.conform(rows)
        assert counts["pairs"] == len(steps) and {r["strategy"] for r in rows} == {"imported"}
        assert {(r["chosen_source"], r["rejected_source"]) for r in rows} == {("dataset", "dataset")}
        assert {json.loads(r["rejected"])[0]["content"] for r in rows} <= {BAD1, BAD2, BAD3}
    _, turns, _, _ = ingest_file(tmp_path / "dpo_en_demo.json", "x")
    unknown = [t for t in turns if t["kind"] == "unknown"]
    assert len(unknown) == 1 and "not a preference record" in orjson.loads(unknown[0]["extra"])["reason"]


def test_preference_dataset_through_normalized_pairs(tmp_path, tiny_tokenizer):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    files = _files(tmp_path)
    keys = sorted(files)
    turns, steps = [], []
    for key in keys:
        _, t, s, _ = ingest_file(files[key], key)
        turns += t
        steps += s
    put_sessions(lake, TRACE_TURNS, turns, keys=keys)
    put_sessions(lake, AGENT_STEPS, steps, keys=keys)
    resources = {"lake": lake, "normalizer": Normalizer(verifier_tokenizer=tiny_tokenizer),
                 "pair_judge": PairJudge()}
    with dg.instance_for_test() as instance:
        r1 = dg.materialize([preference_pairs], resources=resources, instance=instance, partition_key=DAY)
        assert r1.success
        md = r1.asset_materializations_for_node("gold__preference_pairs")[0].metadata
        assert md["imported_from_datasets"].value == {"pairs": 5}
        pairs = lake.read(PREFERENCE_PAIRS).to_pylist()
        assert len(pairs) == 5 and {p["strategy"] for p in pairs} == {"imported"}
        assert {p["session_key"] for p in pairs} == set(keys)  # the file each pair came from
        r2 = dg.materialize([normalized_pairs, pair_drop_accounting], resources=resources, instance=instance)
        assert r2.success
        assert {e.check_name: e for e in r2.get_asset_check_evaluations()}["pair_drop_accounting"].passed
    kept = lake.read(NORMALIZED_PAIRS).to_pylist()
    dropped = lake.read(PAIR_REJECTIONS).to_pylist()
    assert len(kept) + len(dropped) == 5
    # Q1 and Q2 appear in both files with the same answers: the copies are duplicates
    assert len(kept) == 3 and all(r["op"] == "document_deduplicator" for r in dropped)
    assert {r["strategy"] for r in kept} == {"imported"}
