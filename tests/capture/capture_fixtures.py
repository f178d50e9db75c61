"""Data helpers of the capture tests: pair/SFT inputs and quota files (fixtures: conftest.py)."""

import json
from datetime import datetime, timezone
from pathlib import Path

import yaml

from assets.pairs.tables import NORMALIZED_PAIRS

from assets.examples.tables import SFT_EXAMPLES
from resources.lake import DeltaLake
from tests.sessions import put_sessions

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)


def _u(text):
    return {"role": "user", "content": text}


def _a(text, **kw):
    return {"role": "assistant", "content": text, **kw}


# (prompt messages, chosen assistant message) per domain
CONVERSATIONS = {
    "chat-en": [
        ([_u("What is a good name for a grey cat?")], _a("Smokey or Ash are good names.")),
        ([_u("Tell me one fact about Paris, please.")], _a("The capital of France is Paris.")),
        ([{"role": "system", "content": "You are terse."}, _u("Say hello to the team.")], _a("Hello, team!")),
    ],
    "chat-zh": [
        ([_u("今天天气怎么样？我们要不要去公园散步？")], _a("今天天气很好，适合去公园散步。")),
    ],
    "code": [
        ([_u("Write a function that returns zero.")], _a("```python\ndef main():\n    return 0\n```")),
        ([_u("Fix this test: pytest failed: AssertionError")], _a("import os\nprint('hello world')\nreturn 0;")),
    ],
    "math": [
        ([_u("Solve 2x + 3 = 7 for x.")], _a("2x = 4, so x = 2 because 2*2 + 3 = 7.")),
    ],
    "tool-call": [
        ([_u("List the files here.")], _a("", tool_calls=[{"id": "c1", "type": "function", "function": {
            "name": "bash", "arguments": json.dumps({"cmd": "ls"})}}])),
    ],
    "multi-turn": [
        ([_u("Hi there, who are you?"), _a("I am a helpful assistant."), _u("Can you help me plan a trip?")],
         _a("Sure, where would you like to go?")),
    ],
}


def pair_rows():
    rows = []
    for domain, convs in CONVERSATIONS.items():
        for i, (prompt, chosen) in enumerate(convs):
            rows.append({
                "pair_id": f"{domain}-{i}", "session_key": "s1", "step_id": f"{domain}-{i}",
                "prompt": json.dumps(prompt), "chosen": json.dumps([chosen]),
                "rejected": json.dumps([_a("I don't know.")]), "strategy": "judge", "created_at": NOW,
            })
    return rows


def sft_rows():
    msgs = [
        [_u("Hallo, wie geht es dir heute? Ich hoffe, alles ist gut."), _a("Mir geht es gut, danke der Nachfrage!")],
        [_u("Bonjour, peux-tu me recommander un bon livre ?"), _a("Je te recommande Le Petit Prince.")],
        # the same conversation as a pair: deduplicated by content hash
        [_u("What is a good name for a grey cat?"), _a("Smokey or Ash are good names.")],
        [_u("Summarize this log. " + "The build step compiled the project successfully. " * 12),
         _a("The build compiled successfully.")],
    ]
    return [{"example_id": f"sft-{i}", "session_key": "s2", "messages": json.dumps(m), "source": "original",
             "created_at": NOW} for i, m in enumerate(msgs)]


def write_inputs(lake: DeltaLake):
    lake.overwrite(NORMALIZED_PAIRS, pair_rows())
    put_sessions(lake, SFT_EXAMPLES, sft_rows(), keys=["s2"])


def write_quotas(path: Path, quotas: dict, seed: int = 7, files=(), **rules) -> Path:
    cfg = {
        "seed": seed,
        "quotas": quotas,
        "length": {"min_chars": 10, "max_chars": 20000},
        "rules": {"long_context_chars": 500, "multi_turn_min_user_turns": 2, "code_min_lines": 3, **rules},
        "languages": ["en", "zh", "de", "fr", "es", "ja", "ru"],
        "sources": {"normalized_pairs": True, "sft_examples": True, "files": list(files)},
    }
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    return path
