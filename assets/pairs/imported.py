"""Preference pairs that arrive as data (strategy ``imported``), beside the mined ones.

A preference dataset ingested as a session file (:mod:`assets.traces.formats.preference`)
leaves, per record, a step whose response is the dataset's **chosen** answer and a
trace turn of kind ``rejected`` naming that step (``extra.chosen_turn_id``). Each such
couple becomes one PREFERENCE_PAIRS row with ``strategy = "imported"`` and
``chosen_source = rejected_source = "dataset"`` (the session key names the file it came
from), checked by the same validity rules as mined pairs, so it goes through the same
normalization recipe, rejections and replay corpus.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Iterable, Mapping

import orjson

from assets.pairs.strategies import Candidate, Pair, steps_from_rows
from assets.pairs.validity import ValidityConfig

__all__ = ["IMPORTED", "DATASET", "imported_pairs", "REJECTED_TURN_COLUMNS"]

IMPORTED = "imported"
DATASET = "dataset"
REJECTED_TURN_COLUMNS = ["session_key", "turn_id", "kind", "content", "tool_calls", "model", "extra"]


def _rejected_message(t: Mapping) -> dict:
    m: dict = {"role": "assistant", "content": t.get("content") or ""}
    calls = orjson.loads(t["tool_calls"]) if t.get("tool_calls") else []
    if calls:
        m["tool_calls"] = calls
    return m


def imported_pairs(step_rows: Iterable[Mapping], rejected_turns: Iterable[Mapping],
                   created_at: dt.datetime | None = None,
                   validity: ValidityConfig | None = None) -> tuple[list[dict], Counter]:
    """PREFERENCE_PAIRS rows of the dataset pairs among ``rejected_turns`` (TRACE_TURNS rows of
    kind ``rejected``) whose chosen step is in ``step_rows`` (AGENT_STEPS rows).
    Returns ``(rows, counts)``: counts of ``pairs``, ``invalid:<rule>``, ``no_step``."""
    steps = {r["step_id"]: r for r in step_rows}
    counts: Counter = Counter()
    rows: dict[str, dict] = {}
    for t in rejected_turns:
        if t.get("kind") != "rejected":
            continue
        ex = orjson.loads(t["extra"]) if t.get("extra") else {}
        step_row = steps.get(ex.get("chosen_turn_id"))
        if step_row is None:
            counts["no_step"] += 1  # the chosen answer made no step (e.g. empty)
            continue
        (step,) = steps_from_rows([step_row], [])
        chosen = Candidate(DATASET, step.original.model, step.original.message)
        rejected = Candidate(DATASET, t.get("model"), _rejected_message(t))
        pair = Pair(step, chosen, rejected, IMPORTED)
        v = pair.violation(validity)
        row = pair.row(created_at, v)
        rows.setdefault(row["pair_id"], row)
        counts["pairs" if v is None else f"invalid:{v.rule}"] += 1
    return list(rows.values()), counts
