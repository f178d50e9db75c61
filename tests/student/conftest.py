"""Fixtures of the student tests: a tiny Llama (built on the fly), a real lake in tmp_path
holding training tables over six sessions whose answers follow learnable patterns."""

import json
from datetime import datetime, timezone

import pytest

from assets.examples.tables import KTO_EXAMPLES, SFT_EXAMPLES
from assets.pairs.tables import NORMALIZED_PAIRS
from resources.lake import DeltaLake
from resources.verifier import VerifierResource
from tests.sessions import put_sessions

SESSIONS = [f"claude-code~proj~s{i}.jsonl" for i in range(6)]
TOOLS = json.dumps([{"type": "function", "function": {"name": "Bash", "description": "",
                     "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}}])
NOW = datetime(2026, 11, 30, tzinfo=timezone.utc)


@pytest.fixture
def tiny_verifier(tiny_dir) -> VerifierResource:
    return VerifierResource(verifier=str(tiny_dir), device="cpu", dtype="float32", top_k=4, batch_tokens=512,
                            max_length=256, cpu_threads=1)


def _msgs(i: int, j: int):
    ctx = [{"role": "user", "content": f"The test number {j} fails in module {i}. Please fix it."}]
    if j % 2:
        ans = {"role": "assistant", "content": "",
               "tool_calls": [{"id": f"c{i}{j}", "type": "function",
                               "function": {"name": "Bash", "arguments": json.dumps({"command": f"pytest -q t{j}"})}}]}
    else:
        ans = {"role": "assistant", "content": f"I ran pytest -q and fixed test {j}. All tests pass."}
    return ctx, ans


def write_training_tables(lake: DeltaLake, sessions=SESSIONS, per_session: int = 4) -> None:
    sft, kto, pairs = [], [], []
    for i, s in enumerate(sessions):
        for j in range(per_session):
            ctx, ans = _msgs(i, j)
            sft.append({"example_id": f"e{i}-{j}", "session_key": s, "step_id": f"{s}#{j}",
                        "messages": json.dumps(ctx + [ans]), "tools": TOOLS, "source": "original", "created_at": NOW})
            kto.append({"example_id": f"k{i}-{j}", "session_key": s, "step_id": f"{s}#{j}", "prompt": json.dumps(ctx),
                        "completion": json.dumps([ans]), "label": j != 3, "tools": TOOLS, "source": "original",
                        "created_at": NOW})
        ctx, ans = _msgs(i, 0)
        pairs.append({"pair_id": f"p{i}", "session_key": s, "step_id": f"{s}#0", "prompt": json.dumps(ctx),
                      "chosen": json.dumps([ans]),
                      "rejected": json.dumps([{"role": "assistant", "content": "I am sorry, I cannot help with that."}]),
                      "tools": TOOLS, "strategy": "error_site", "chosen_source": "t", "rejected_source": "original",
                      "created_at": NOW})
    put_sessions(lake, SFT_EXAMPLES, sft, keys=list(sessions))
    put_sessions(lake, KTO_EXAMPLES, kto, keys=list(sessions))
    lake.overwrite(NORMALIZED_PAIRS, pairs)
