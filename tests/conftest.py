"""Fixtures shared by every test package: a real lake in tmp_path, a real Dagster instance
in tmp_path, a tiny Llama built once per session."""

from pathlib import Path

import dagster as dg
import pytest

from resources.lake import DeltaLake
from testsupport.models import build_tiny_llama


@pytest.fixture
def lake(tmp_path) -> DeltaLake:
    return DeltaLake(root=str(tmp_path / "lake"))


@pytest.fixture
def instance(tmp_path):
    # a persistent instance in tmp (instance_for_test leaves global state behind that breaks
    # later DagsterInstance.ephemeral() users in the same process)
    (tmp_path / "dagster_home").mkdir()
    inst = dg.DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_home"))
    yield inst
    inst.dispose()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")
