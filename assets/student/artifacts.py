"""Run artifacts (adapters, tokenizers, draft heads) under the lake root, local or object store.

``<lake root>/artifacts/student/<kind>/<run_id>/``: written and read through a pyarrow
filesystem built from the lake's own location and storage options (the same credentials
delta-rs gets; they are never recorded). On S3 the filesystem opens output streams lazily
(``allow_delayed_open``), so a small file is one PutObject; files above the client's 10 MB
part size use a multipart upload (checked against real S3 semantics only: moto_server's
CompleteMultipartUpload answer is refused by pyarrow 26's client, so the tests keep to
single-request files).
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs

from resources.lake import DeltaLake

ARTIFACTS = "artifacts/student"


def artifact_uri(lake: DeltaLake, kind: str, run_id: str) -> str:
    root = lake.root.rstrip("/")
    if "://" not in root:
        root = os.path.abspath(root)
    return f"{root}/{ARTIFACTS}/{kind}/{run_id}"


def filesystem(lake: DeltaLake, uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for an artifact URI of this lake."""
    if "://" not in uri or uri.startswith("file://"):
        return pafs.LocalFileSystem(), uri.removeprefix("file://")
    if uri.startswith("s3://"):
        o = {k.upper(): v for k, v in (lake.options() or {}).items()}
        endpoint = o.get("AWS_ENDPOINT_URL") or o.get("AWS_ENDPOINT")
        kw = {}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            kw.update(endpoint_override=host or endpoint, scheme=scheme if host else "https")
        if o.get("AWS_ACCESS_KEY_ID"):
            kw.update(access_key=o["AWS_ACCESS_KEY_ID"], secret_key=o.get("AWS_SECRET_ACCESS_KEY"),
                      session_token=o.get("AWS_SESSION_TOKEN"))
        if o.get("AWS_REGION") or o.get("AWS_DEFAULT_REGION"):
            kw["region"] = o.get("AWS_REGION") or o.get("AWS_DEFAULT_REGION")
        # delayed open: a file below the client's part size (10 MB; adapters and draft heads are a
        # few MB) goes up in one PutObject instead of a multipart upload
        return pafs.S3FileSystem(allow_delayed_open=True, **kw), uri.removeprefix("s3://")
    fs, path = pafs.FileSystem.from_uri(uri)
    return fs, path


def upload_dir(lake: DeltaLake, local_dir: str | os.PathLike, uri: str) -> int:
    """Copy every file of ``local_dir`` to ``uri``; returns the bytes copied."""
    fs, dest = filesystem(lake, uri)
    src = Path(local_dir)
    if isinstance(fs, pafs.LocalFileSystem) and Path(dest).resolve() == src.resolve():
        return sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    fs.create_dir(dest, recursive=True)
    total = 0
    for p in sorted(src.rglob("*")):
        if p.is_file():
            target = f"{dest}/{p.relative_to(src).as_posix()}"
            fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            with fs.open_output_stream(target) as out:
                out.write(p.read_bytes())
            total += p.stat().st_size
    return total


def download_dir(lake: DeltaLake, uri: str, local_dir: str | os.PathLike) -> Path:
    """A local copy of an artifact directory (the directory itself when it is local)."""
    fs, src = filesystem(lake, uri)
    if isinstance(fs, pafs.LocalFileSystem):
        return Path(src)
    out = Path(local_dir)
    for info in fs.get_file_info(pafs.FileSelector(src, recursive=True)):
        if info.type == pafs.FileType.File:
            target = out / info.path[len(src.rstrip("/")) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as f:
                target.write_bytes(f.read())
    return out
