"""Shared, expensive set-up of the pairs tests, built once per session."""

import pytest

from resources.models import build_tiny_llama


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> str:
    """A tiny Llama (ChatML template) built on the fly: the verifier tokenizer of the tests."""
    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_overrides(tiny_tokenizer) -> dict:
    return {"chat_template_validation_filter": {"tokenizer": tiny_tokenizer}}
