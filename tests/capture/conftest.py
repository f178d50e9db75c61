"""Fixtures of the capture tests: a tiny Llama verifier (``lake`` and ``tiny_dir`` come from
tests/conftest.py)."""

import pytest

from resources.verifier import VerifierResource


@pytest.fixture
def tiny_gpu(tiny_dir) -> VerifierResource:
    return VerifierResource(verifier=str(tiny_dir), device="auto", top_k=4, batch_tokens=512, max_length=256)
