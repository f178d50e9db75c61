"""Which agent steps the teachers are asked about (pure, Dagster-free).

Every answer costs a call, so a pool can narrow what it asks (``ask_steps``) and cap how many
steps of a session it asks (``max_steps_per_session``). Steps are ranked by what their
answers are worth, read through the failure policy (``recipes/failures.yaml``,
:mod:`assets.traces.failures`):

0. ``mistake``      the step's own call failed and the policy calls it a mistake: the rejected
                    side of an error-site pair, a teacher's different action is the chosen side;
1. ``failed_call``  the step's own call failed otherwise (informative or external): no
                    error-site pair can be built from it;
2. ``recovery``     the turn right after a failed tool result (SDPO site, consensus pairs);
3. ``other``        any other step.

``ask_steps``: ``all`` asks every step (ranked under a cap), ``failed_calls`` only steps whose
own call failed, ``mistakes`` only the mistakes (the steps that can give error-site pairs).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal, Optional

from assets.traces.failures import FailurePolicy, load_failure_policy, step_verdict

AskSteps = Literal["all", "failed_calls", "mistakes"]
ASK_STEPS = ("all", "failed_calls", "mistakes")
CLASSES = ("mistake", "failed_call", "recovery", "other")
# AGENT_STEPS columns the selection reads
STEP_COLUMNS = ["session_key", "step_id", "step_index", "messages", "tools", "caused_error",
                "caused_error_kind", "response", "is_error_site"]


def step_class(row: Mapping, policy: FailurePolicy) -> str:
    """One of :data:`CLASSES` for an AGENT_STEPS row."""
    verdict = step_verdict(row, policy)
    if verdict is not None:
        return "mistake" if verdict.is_mistake else "failed_call"
    return "recovery" if row.get("is_error_site") else "other"


def step_priority(row: Mapping, policy: FailurePolicy | None = None) -> int:
    """The rank of a step (0 first): the index of its :func:`step_class`."""
    return CLASSES.index(step_class(row, policy or load_failure_policy()))


def select_steps(rows: Iterable[Mapping], max_steps_per_session: Optional[int] = None,
                 ask_steps: AskSteps = "all", policy: FailurePolicy | None = None) -> list[dict]:
    """The steps to ask about, in session order (session key, step index, step id): only the
    classes ``ask_steps`` keeps; under a cap, each session's best-ranked steps (then the
    earliest)."""
    if ask_steps not in ASK_STEPS:
        raise ValueError(f"ask_steps must be one of {ASK_STEPS}, not {ask_steps!r}")
    policy = policy or load_failure_policy()
    keep = {"all": CLASSES, "failed_calls": CLASSES[:2], "mistakes": CLASSES[:1]}[ask_steps]
    order = lambda r: (r["session_key"], r["step_index"], r["step_id"])  # noqa: E731
    ranked = [(CLASSES.index(c), dict(r)) for r in rows if (c := step_class(r, policy)) in keep]
    if max_steps_per_session is not None:
        by_session: dict[str, list] = collections.defaultdict(list)
        for rank, r in ranked:
            by_session[r["session_key"]].append((rank, r))
        ranked = [x for steps in by_session.values()
                  for x in sorted(steps, key=lambda x: (x[0], *order(x[1])))[:max_steps_per_session]]
    return sorted((r for _, r in ranked), key=order)


def count_classes(rows: Sequence[Mapping], policy: FailurePolicy | None = None) -> dict[str, int]:
    """Steps per class (for a run's metadata)."""
    policy = policy or load_failure_policy()
    c = collections.Counter(step_class(r, policy) for r in rows)
    return {k: c[k] for k in CLASSES if c[k]}
