"""Builders of upstream training rows and corpus rows for the replay tests."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone


from assets.corpus.policy import make_snapshot

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def pair_row(i: int, session: str = "s1") -> dict:
    return {
        "pair_id": f"p{i}",
        "session_key": session,
        "step_id": f"{session}:{i}",
        "prompt": json.dumps([{"role": "user", "content": f"fix bug {i}"}]),
        "chosen": json.dumps([{"role": "assistant", "content": f"good fix {i}"}]),
        "rejected": json.dumps([{"role": "assistant", "content": f"bad fix {i}"}]),
        "tools": None,
        "strategy": "error_site",
        "created_at": T0,
    }


def sft_row(i: int, session: str = "s1", source: str = "original", user: bool = True) -> dict:
    msgs = ([{"role": "user", "content": f"task {i}"}] if user else []) + [
        {"role": "assistant", "content": f"answer {i}",
         "tool_calls": [{"id": f"c{i}", "type": "function", "function": {"name": "ls", "arguments": "{}"}}]}
    ]
    return {
        "example_id": f"e{i}",
        "session_key": session,
        "step_id": f"{session}:{i}",
        "messages": json.dumps(msgs),
        "tools": json.dumps([{"type": "function", "function": {"name": "ls", "parameters": {}}}]),
        "source": source,
        "created_at": T0,
    }


def kto_row(i: int, label: bool, session: str = "s1") -> dict:
    return {
        "example_id": f"k{i}",
        "session_key": session,
        "step_id": f"{session}:{i}",
        "prompt": json.dumps([{"role": "user", "content": f"kto {i}"}]),
        "completion": json.dumps([{"role": "assistant", "content": f"kto answer {i}"}]),
        "label": label,
        "source": "original",
        "created_at": T0,
    }


def corpus_row(i: int, *, age_days: float, ref: datetime = T0, kind: str = "instruction",
               weight: float = 1.0, size: int = 0) -> dict:
    """A snapshot last seen ``age_days`` before ``ref`` (added one day before that)."""
    if kind == "preference":
        trl = {"prompt": [{"role": "user", "content": f"q{i}"}],
               "chosen": [{"role": "assistant", "content": f"a{i}"}],
               "rejected": [{"role": "assistant", "content": f"b{i}" + "x" * size}]}
    else:
        trl = {"messages": [{"role": "user", "content": f"q{i}"},
                            {"role": "assistant", "content": f"a{i}" + "x" * size}]}
    seen = ref - timedelta(days=age_days)
    row = make_snapshot(kind, trl, now=seen, source="test", source_id=str(i), weight=weight)
    row["added_at"] = seen - timedelta(days=1)
    return row


