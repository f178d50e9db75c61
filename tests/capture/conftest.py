"""Fixtures of the capture tests: a tiny Llama verifier and a real lake in tmp_path."""

from pathlib import Path

import pytest

from resources.verifier import VerifierResource
from resources.lake import DeltaLake
from testsupport.models import build_tiny_llama


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture
def lake(tmp_path) -> DeltaLake:
    return DeltaLake(root=str(tmp_path / "lake"))


@pytest.fixture
def tiny_gpu(tiny_dir) -> VerifierResource:
    return VerifierResource(verifier=str(tiny_dir), device="auto", top_k=4, batch_tokens=512, max_length=256)
