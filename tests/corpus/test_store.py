"""Upsert, eviction and sampling against real Delta tables in tmp_path."""

from __future__ import annotations

import json
from datetime import timedelta

import pyarrow.compute as pc

from assets.corpus.policy import Snapshots, snapshots_from_pairs, snapshots_from_sft
from assets.corpus.store import draw_sample, evict, upsert_snapshots, write_sample
from assets.corpus.tables import REPLAY_CORPUS, REPLAY_EVICTIONS, REPLAY_SAMPLE
from resources.lake import DeltaLake

from .conftest import T0, corpus_row, pair_row, sft_row


def _corpus(lake):
    t = lake.read(REPLAY_CORPUS)
    return {r["section_id"]: r for r in t.to_pylist()}


def test_upsert_does_not_duplicate_and_bumps_last_seen(lake):
    first = snapshots_from_pairs([pair_row(i) for i in range(3)], now=T0).extend(
        snapshots_from_sft([sft_row(i) for i in range(2)], now=T0))
    out = upsert_snapshots(lake, first)
    assert len(out.added) == 5 and out.refreshed == []
    before = _corpus(lake)

    later = T0 + timedelta(days=3)
    again = snapshots_from_pairs([pair_row(i) for i in range(1, 4)], now=later)
    out = upsert_snapshots(lake, again)
    assert len(out.added) == 1 and len(out.refreshed) == 2
    after = _corpus(lake)
    assert len(after) == 6  # 5 + 1 new, nothing duplicated
    for sid in out.refreshed:
        assert after[sid]["added_at"] == before[sid]["added_at"] == T0
        assert after[sid]["last_seen_at"] == later
        assert after[sid]["content"] == before[sid]["content"]
    untouched = set(before) - set(out.refreshed)
    assert all(after[s]["last_seen_at"] == T0 for s in untouched)
    assert after[out.added[0]]["added_at"] == later

    # an older sighting never moves last_seen_at back
    out = upsert_snapshots(lake, snapshots_from_pairs([pair_row(1)], now=T0 - timedelta(days=9)))
    assert _corpus(lake)[out.refreshed[0]]["last_seen_at"] == later


def _seed_corpus(lake, n=40):
    rows = [corpus_row(i, age_days=i, size=50) for i in range(n)]  # i days old
    lake.append(REPLAY_CORPUS, rows)
    return sorted(rows, key=lambda r: r["last_seen_at"])  # oldest first


def test_eviction_respects_budget_and_protected_ids_range_delete(lake):
    oldest_first = _seed_corpus(lake)
    protected = [oldest_first[0]["section_id"], oldest_first[3]["section_id"]]
    total = sum(r["byte_size"] for r in oldest_first)
    budget = total // 2
    out = evict(lake, max_bytes=budget, max_rows=None, protected=protected, now=T0, run_id="r1")
    assert out.mode == "range" and out.commits == 1
    left = _corpus(lake)
    assert sum(r["byte_size"] for r in left.values()) <= budget
    assert set(protected) <= set(left)
    assert out.rows_deleted == len(out.plan.ids) == len(oldest_first) - len(left)
    # exactly the oldest unprotected rows went
    unprotected = [r["section_id"] for r in oldest_first if r["section_id"] not in protected]
    assert set(out.plan.ids) == set(unprotected[: len(out.plan.ids)])
    log = lake.read(REPLAY_EVICTIONS)
    assert sorted(log.column("section_id").to_pylist()) == sorted(out.plan.ids)
    assert set(log.column("run_id").to_pylist()) == {"r1"}

    # within budget now: a second pass is a no-op
    again = evict(lake, max_bytes=budget, max_rows=None, protected=[], now=T0)
    assert again.plan.ids == [] and again.mode == "none"


def test_eviction_row_budget_chunked_in_fallback(lake):
    oldest_first = _seed_corpus(lake, n=30)
    protected = [r["section_id"] for r in oldest_first[:5]]
    # chunk_size below the protected-in-range count forces IN-chunk deletes
    out = evict(lake, max_bytes=None, max_rows=10, protected=protected, now=T0, chunk_size=4)
    assert out.mode == "in_chunks" and out.commits == 5  # 20 ids / 4
    left = _corpus(lake)
    assert len(left) == 10 and set(protected) <= set(left)
    newest = {r["section_id"] for r in oldest_first[-5:]}
    assert newest <= set(left)


def test_draw_sample_reads_content_of_chosen_rows_only(lake):
    rows = [corpus_row(i, age_days=i % 7, kind="preference" if i % 4 == 0 else "instruction") for i in range(60)]
    lake.append(REPLAY_CORPUS, rows)
    a = draw_sample(lake, k=12, seed=5, reference_time="2026-11-01T12:00:00Z")
    b = draw_sample(lake, k=12, seed=5, reference_time="2026-11-01T12:00:00+00:00")
    rows = a.table.to_pylist()
    assert rows == b.table.to_pylist() and len(rows) == 12
    assert all(r["id"] == f"replay:{r['section_id']}:{r['last_seen_at'].strftime('%Y-%m-%dT%H:%M:%S.%fZ')}"
               for r in rows)
    assert {"read_index_s", "select_s", "read_rows_s", "to_trl_s"} <= set(a.timings)
    res = write_sample(lake, a)
    t = lake.read(REPLAY_SAMPLE)
    assert res.table_rows == 12 and t.column("rank").to_pylist() == list(range(12))
    for r in t.to_pylist():
        if r["section_type"] == "preference":
            assert json.loads(r["prompt"]) and json.loads(r["chosen"]) and r["messages"] is None
        else:
            assert json.loads(r["messages"]) and r["prompt"] is None

    p = draw_sample(lake, k=100, seed=1, reference_time=T0, preference_only=True)
    assert p.table.num_rows == 15 and set(p.table.column("section_type").to_pylist()) == {"preference"}

    empty = draw_sample(lake, k=0, seed=1, reference_time=T0)
    assert empty.table.num_rows == 0 and pc.sum(pc.equal(lake.read(REPLAY_CORPUS, columns=["section_type"])
                                                .column("section_type"), "preference")).as_py() == 15


def test_snapshots_dedupe_before_merge(lake):
    s = Snapshots()
    s.extend(snapshots_from_pairs([pair_row(1), pair_row(1, session="s9")], now=T0))
    out = upsert_snapshots(lake, s)  # two identical source rows must not break the merge
    assert len(out.added) == 1 and len(_corpus(lake)) == 1


def test_draw_sample_on_rows_written_before_id_hash(lake, tmp_path):
    """A corpus written before the id_hash column existed samples the same rows."""
    from deltalake import write_deltalake

    rows = [corpus_row(i, age_days=i % 9) for i in range(50)]
    lake.append(REPLAY_CORPUS, rows)
    want = draw_sample(lake, k=10, seed=3, reference_time=T0).table

    old = DeltaLake(root=str(tmp_path / "old"))
    legacy = REPLAY_CORPUS.conform(rows).drop_columns(["id_hash"])
    write_deltalake(old.uri(REPLAY_CORPUS), legacy.slice(0, 30))
    write_deltalake(old.uri(REPLAY_CORPUS), legacy.slice(30), mode="append")
    got = draw_sample(old, k=10, seed=3, reference_time=T0).table
    assert got.drop_columns(["base_weight"]).equals(want.drop_columns(["base_weight"]))
    assert old.read(REPLAY_CORPUS, columns=["id_hash"]).column("id_hash").null_count == 50
