"""Shared, expensive set-up of the pairs tests, built once."""

import pytest

from testsupport.models import build_tiny_llama


@pytest.fixture(scope="session")
def tiny_tokenizer(request, tmp_path_factory) -> str:
    """A tiny Llama (ChatML template) built on the fly: the verifier tokenizer of the tests.

    Kept in pytest's cache dir between runs (build_tiny_llama reuses a built directory)."""
    try:
        base = request.config.cache.mkdir("tracelake-tiny-llama")
    except (AttributeError, OSError):  # -p no:cacheprovider
        base = tmp_path_factory.mktemp("tiny-llama")
    out = base / "v1"
    if (out / "config.json").exists() and (out / "tokenizer.json").exists():
        return str(out)  # build_tiny_llama would import torch just to find it built
    return str(build_tiny_llama(out))


@pytest.fixture(scope="session")
def tiny_overrides(tiny_tokenizer) -> dict:
    return {"chat_template_validation_filter": {"tokenizer": tiny_tokenizer}}
