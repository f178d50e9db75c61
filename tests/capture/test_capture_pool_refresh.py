"""prompt_pool refreshes from the current pool plus what changed upstream, and draws the
same pool as a full rebuild."""

from __future__ import annotations

import json

import dagster as dg

from assets.capture.assets import prompt_pool
from assets.capture.tables import PROMPT_POOL
from assets.pairs.tables import NORMALIZED_PAIRS
from tests.capture.capture_fixtures import NOW, _a, _u, write_inputs, write_quotas

QUOTAS = {"chat-en": 4, "chat-zh": 3, "code": 2, "math": 1, "tool-call": 1, "multi-turn": 1, "long-context": 1}


def _pool(lake, quotas, full=False):
    res = dg.materialize([prompt_pool], resources={"lake": lake}, instance=dg.DagsterInstance.ephemeral(),
                         run_config={"ops": {"gold__prompt_pool": {"config": {
                             "quotas_path": str(quotas), "full_refresh": full}}}})
    assert res.success
    md = res.asset_materializations_for_node("gold__prompt_pool")[0].metadata
    rows = lake.read(PROMPT_POOL, columns=["prompt_id", "domain", "selection_rank"]).to_pylist()
    return md, sorted((r["domain"], r["selection_rank"], r["prompt_id"]) for r in rows)


def test_pool_refresh_reads_only_new_rows(tmp_path, lake):
    write_inputs(lake)
    quotas = write_quotas(tmp_path / "q.yaml", QUOTAS)
    md, first = _pool(lake, quotas)
    assert md["refresh_mode"].value == "full"

    new = [{"pair_id": f"new-{i}", "session_key": "s9", "step_id": f"new-{i}",
            "prompt": json.dumps([_u(f"What is a good name for pet number {i} of mine?")]),
            "chosen": json.dumps([_a(f"Call pet number {i} Biscuit or Pepper.")]),
            "rejected": json.dumps([_a("I don't know.")]), "strategy": "judge", "created_at": NOW}
           for i in range(3)]
    lake.merge(NORMALIZED_PAIRS, new, keys=["pair_id"])
    md, inc = _pool(lake, quotas)
    assert md["refresh_mode"].value == "incremental"
    by_source = md["candidates_by_source"].value
    assert "| normalized_pairs | 3 |" in by_source and "current pool" in by_source
    assert "sft_examples" not in by_source  # unchanged: not read
    assert inc != first  # the new chat-en prompts competed for the quota

    md, full = _pool(lake, quotas, full=True)
    assert md["refresh_mode"].value == "full"
    assert full == inc
