"""Run artifacts next to the tables: a local lake and an S3 lake (moto_server on 127.0.0.1)."""

import pytest

from assets.student.artifacts import artifact_uri, download_dir, upload_dir
from resources.lake import DeltaLake


def _files(d):
    (d / "sub").mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(b"\x00\x01" * 1000)
    (d / "sub" / "config.json").write_text('{"r": 8}')


def test_local_roundtrip(tmp_path):
    lake = DeltaLake(root=str(tmp_path / "lake"))
    src = tmp_path / "src"
    _files(src)
    uri = artifact_uri(lake, "runs", "r1")
    assert uri == f"{tmp_path / 'lake'}/artifacts/student/runs/r1"
    assert upload_dir(lake, src, uri) == 2000 + len('{"r": 8}')
    back = download_dir(lake, uri, tmp_path / "unused")
    assert (back / "sub" / "config.json").read_text() == '{"r": 8}'
    assert (back / "adapter_model.safetensors").read_bytes() == b"\x00\x01" * 1000


@pytest.mark.s3
def test_s3_roundtrip(tmp_path):
    """Single-request uploads (files below pyarrow's 10 MB part size, like adapters and draft
    heads). Multipart uploads are not exercised: pyarrow 26's S3 client refuses moto_server's
    CompleteMultipartUpload answer ("error embedded in a 200 OK")."""
    from tests.s3 import moto_server

    src = tmp_path / "src"
    _files(src)
    with moto_server() as (bucket, opts):
        lake = DeltaLake(root=f"{bucket}/lake", storage_options=opts)
        uri = artifact_uri(lake, "runs", "r1")
        assert uri == f"{bucket}/lake/artifacts/student/runs/r1"
        upload_dir(lake, src, uri)
        back = download_dir(lake, uri, tmp_path / "down")
        assert back == tmp_path / "down"
        assert (back / "sub" / "config.json").read_text() == '{"r": 8}'
        assert (back / "adapter_model.safetensors").read_bytes() == b"\x00\x01" * 1000
        # a real adapter-sized file (a few MB) takes the same single-request path
        big = tmp_path / "big"
        big.mkdir()
        (big / "adapter_model.safetensors").write_bytes(bytes(range(256)) * 12_000)  # ~3 MB
        assert upload_dir(lake, big, uri + "_big") == 256 * 12_000
        back = download_dir(lake, uri + "_big", tmp_path / "down_big")
        assert (back / "adapter_model.safetensors").read_bytes() == bytes(range(256)) * 12_000
