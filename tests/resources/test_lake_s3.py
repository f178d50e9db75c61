"""The storage layer against a real S3-compatible endpoint (moto_server on 127.0.0.1)."""

import pytest

from resources.lake import DeltaLake
from tests.resources.test_lake import SPEC, by_key, rows
from tests.s3 import moto_server


@pytest.fixture(scope="module")
def s3():
    with moto_server() as (bucket, opts):
        yield bucket, opts


def test_partition_replace_and_merge_on_s3(s3):
    bucket, opts = s3
    lake = DeltaLake(root=f"{bucket}/lake", storage_options=opts)
    lake.replace_partitions(SPEC, rows("a", 3) + rows("b", 2) + rows("c", 1), ["a", "b", "c"])
    res = lake.replace_partitions(SPEC, rows("a", 1, v=5) + rows("c", 2, v=5), ["a", "c"])
    got = by_key(lake)
    assert {k: len(v) for k, v in got.items()} == {"a": 1, "b": 2, "c": 2}
    assert res.uri.startswith("s3://") and "testing" not in str(res.metadata())
    assert lake.read(SPEC, partitions=["b"]).num_rows == 2


def test_read_keys_on_s3_takes_the_filtered_scan(s3):
    """Object stores are not on the DataFusion fast path: the same rows by a filtered scan."""
    from dataclasses import replace

    import pyarrow as pa

    bucket, opts = s3
    lake = DeltaLake(root=f"{bucket}/keys", storage_options=opts)
    spec = replace(SPEC, partition_by=(), name="flat")
    lake.append(spec, rows("a", 5))
    lake.merge(spec, rows("b", 3), keys=["id"])  # a string_view file
    got = lake.read_keys(spec, "id", pa.array(["a-1", "b-2", "nope"]), columns=["id", "v"])
    assert sorted(got.to_pylist(), key=lambda r: r["id"]) == [{"id": "a-1", "v": 0}, {"id": "b-2", "v": 0}]
