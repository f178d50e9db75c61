"""The Delta storage layer: partition-exact overwrites, upserts, appends, concurrency."""

import multiprocessing as mp
from dataclasses import replace

import pyarrow as pa
import pytest
from deltalake import ColumnProperties

from resources.lake import DeltaLake, TableSpec, in_predicate, process_bytes_read

SPEC = TableSpec(
    layer="bronze",
    name="t",
    partition_by=("session_key",),
    merge_keys=("id",),
    schema=pa.schema([
        pa.field("session_key", pa.string(), nullable=False),
        pa.field("id", pa.string(), nullable=False),
        pa.field("v", pa.int64()),
    ]),
)


def rows(key, n, v=0):
    return [{"session_key": key, "id": f"{key}-{i}", "v": v} for i in range(n)]


def by_key(lake, spec=SPEC):
    t = lake.read(spec).to_pylist()
    out = {}
    for r in t:
        out.setdefault(r["session_key"], []).append(r)
    return out



def test_read_of_missing_table_is_empty_with_schema(lake):
    t = lake.read(SPEC)
    assert t.num_rows == 0 and t.schema == SPEC.schema


def test_multi_partition_backfill_keeps_other_partitions(lake):
    lake.replace_partitions(SPEC, rows("a", 3) + rows("b", 2) + rows("c", 4), ["a", "b", "c"])
    # a single-run backfill over two keys rewrites exactly those two
    res = lake.replace_partitions(SPEC, rows("a", 1, v=7) + rows("c", 2, v=7), ["a", "c"])
    got = by_key(lake)
    assert len(got["a"]) == 1 and len(got["c"]) == 2
    assert {r["v"] for r in got["a"] + got["c"]} == {7}
    assert len(got["b"]) == 2 and {r["v"] for r in got["b"]} == {0}
    assert res.rows_written == 3 and res.table_rows == 5 and res.partitions == ["a", "c"]


def test_rerun_of_one_partition_replaces_only_it(lake):
    lake.replace_partitions(SPEC, rows("a", 3) + rows("b", 2), ["a", "b"])
    v0 = lake.version(SPEC)
    res = lake.replace_partitions(SPEC, rows("b", 5, v=1), ["b"])
    got = by_key(lake)
    assert len(got["a"]) == 3 and len(got["b"]) == 5
    assert res.version > v0


def test_key_with_no_rows_becomes_empty_and_quotes_are_safe(lake):
    lake.replace_partitions(SPEC, rows("it's", 2) + rows("b", 1), ["it's", "b"])
    lake.replace_partitions(SPEC, [], ["it's"])
    assert set(by_key(lake)) == {"b"}


def test_rows_outside_the_run_are_refused(lake):
    with pytest.raises(ValueError, match="outside this run"):
        lake.replace_partitions(SPEC, rows("a", 1) + rows("z", 1), ["a"])


def test_merge_upserts(lake):
    spec = replace(SPEC, partition_by=())
    lake.merge(spec, rows("a", 3))
    lake.merge(spec, [{"session_key": "a", "id": "a-0", "v": 9}, {"session_key": "a", "id": "a-9", "v": 9}])
    t = {r["id"]: r["v"] for r in lake.read(spec).to_pylist()}
    assert t == {"a-0": 9, "a-1": 0, "a-2": 0, "a-9": 9}
    lake.merge(spec, [{"session_key": "x", "id": "a-1", "v": 5}], update_columns=["v"])
    t = {r["id"]: (r["session_key"], r["v"]) for r in lake.read(spec).to_pylist()}
    assert t["a-1"] == ("a", 5)


def test_additive_schema_evolution(lake):
    lake.append(SPEC, rows("a", 2))
    wider = replace(SPEC, schema=SPEC.schema.append(pa.field("note", pa.string())))
    lake.append(wider, [{"session_key": "a", "id": "n", "v": 1, "note": "hi"}])
    t = lake.read(wider).to_pylist()
    assert len(t) == 3 and sorted(r["note"] or "" for r in t) == ["", "", "hi"]


def test_conform_rejects_unknown_columns_and_null_required(lake):
    with pytest.raises(ValueError, match="not in the table spec"):
        lake.append(SPEC, [{"session_key": "a", "id": "1", "bogus": 1}])
    with pytest.raises(Exception):
        lake.append(SPEC, [{"session_key": "a", "id": None}])


def _writer(root, key, n):
    lake = DeltaLake(root=root)
    for i in range(n):
        lake.append(SPEC, [{"session_key": key, "id": f"{key}-{i}", "v": i}])


def test_two_writer_processes_both_land(tmp_path):
    root = str(tmp_path / "lake")
    ctx = mp.get_context("spawn")
    ps = [ctx.Process(target=_writer, args=(root, k, 8)) for k in ("p", "q")]
    for p in ps:
        p.start()
    for p in ps:
        p.join(120)
        assert p.exitcode == 0
    got = by_key(DeltaLake(root=root))
    assert len(got["p"]) == 8 and len(got["q"]) == 8


def test_in_predicate_quotes():
    assert in_predicate("k", ["b", "a'x"]) == "k IN ('a''x', 'b')"


def test_filtered_read_after_merge(lake):
    """delta-rs merges write string_view columns; filtered reads must still work."""
    import pyarrow.compute as pc

    spec = replace(SPEC, partition_by=(), name="merged")
    lake.merge(spec, rows("a", 3))
    lake.merge(spec, rows("a", 5, v=1))
    got = lake.read(spec, columns=["id", "v"], filter=pc.field("id").isin(["a-1", "a-4"]))
    assert sorted(got.to_pylist(), key=lambda r: r["id"]) == [{"id": "a-1", "v": 1}, {"id": "a-4", "v": 1}]


BLOBS = TableSpec(
    layer="gold",
    name="blobs",
    schema=pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("body", pa.string())]),
    # the layout of replay_corpus: small pages, no per-page min/max of the big column
    writer={"compression": "ZSTD", "write_batch_size": 8, "data_page_size_limit": 4096,
            "column_properties": {"body": ColumnProperties(statistics_enabled="CHUNK", dictionary_enabled=False)}},
)


def _bytes_read() -> int:
    n = process_bytes_read()
    if n is None:
        pytest.skip("/proc/self/io is not available on this system")
    return n


def test_read_keys_reads_only_the_pages_of_the_chosen_rows(lake):
    """1% of the rows by key: the rows are exact and only a small share of the bytes is read
    (the filtered scan, measured the same way, reads the whole table)."""
    import os
    import random

    import pyarrow.compute as pc

    rnd = random.Random(0)
    n = 12_000
    table = pa.table({"id": pa.array(range(n), pa.int64()),
                      "body": [os.urandom(500).hex() for _ in range(n)]})
    lake.append(BLOBS, table.slice(0, 5000))
    lake.append(BLOBS, table.slice(5000, 5000))
    lake.merge(BLOBS, table.slice(10_000), keys=["id"])  # delta-rs merge: string_view file
    on_disk = sum(os.path.getsize(u.removeprefix("file://")) for u in lake.table(BLOBS).file_uris())

    keys = rnd.sample(range(n), 120) + [n + 5, -1]  # two keys that match nothing
    want = sorted(table.take(pa.array(keys[:120])).to_pylist(), key=lambda r: r["id"])

    before = _bytes_read()
    got = lake.read_keys(BLOBS, "id", pa.array(keys, pa.int64()))
    fast = _bytes_read() - before
    assert sorted(got.to_pylist(), key=lambda r: r["id"]) == want
    assert got.schema.field("body").type == pa.string()

    before = _bytes_read()
    scan = lake.read(BLOBS, filter=pc.field("id").isin(keys))
    full = _bytes_read() - before
    assert scan.num_rows == 120
    assert full > 0.9 * on_disk, (full, on_disk)
    assert fast < 0.25 * on_disk, (fast, on_disk)


def test_read_keys_on_a_partitioned_table_takes_the_filtered_scan(lake):
    lake.replace_partitions(SPEC, rows("a", 4) + rows("b", 3), ["a", "b"])
    got = lake.read_keys(SPEC, "id", pa.array(["a-1", "b-2", "zz"]), columns=["id", "session_key"])
    assert sorted(got.to_pylist(), key=lambda r: r["id"]) == [
        {"id": "a-1", "session_key": "a"}, {"id": "b-2", "session_key": "b"}]
    assert lake.read_keys(SPEC, "id", pa.array([], pa.string())).num_rows == 0
