"""Shared fixtures of the rag tests: a lake holding the sample sessions and their playbooks,
and loopback OpenAI-compatible servers."""

import dagster as dg
import pytest

from assets.rag.samples import sample_trace_rows
from assets.traces.tables import TRACE_TURNS
from resources.embeddings import EmbeddingsResource
from resources.lake import DeltaLake
from tests.rag.loopback import LoopbackLLM
from tests.sessions import DAY, put_sessions

ESCALATION_REPLY = (
    "1. Open assets/pairs/builder.py and make build_pairs pick the chosen answer first.\n"
    "2. Verify: zanzibar_quux_frobnicator is set.\n"
    "3. Check: pytest -q tests/pairs/test_builder.py passes."
)
KEY_ENV = "RAG_TEST_KEY"
KEY_VALUE = "sk-rag-test-never-logged-0123456789"


@pytest.fixture(scope="session")
def rag_lake(tmp_path_factory):
    """A lake with the sample sessions' trace_turns and a materialized rag_playbooks."""
    from assets.rag.assets import rag_playbooks

    lake = DeltaLake(root=str(tmp_path_factory.mktemp("lake")))
    rows = sample_trace_rows()
    put_sessions(lake, TRACE_TURNS, rows)
    res = dg.materialize([rag_playbooks], resources={"lake": lake, "rag_embeddings": EmbeddingsResource()},
                         instance=dg.DagsterInstance.ephemeral())
    assert res.success
    return lake


@pytest.fixture(scope="session")
def escalation_server():
    with LoopbackLLM(reply=ESCALATION_REPLY, model="loopback-large") as srv:
        yield srv


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY_VALUE)
    return KEY_VALUE
