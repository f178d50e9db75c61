"""The optional judge for the ``judge`` pair strategy.

The strategy only needs a *scorer*: ``(prompt messages, answers) -> scores``. This module
turns any chat-completion callable (``messages -> text``) into one, and offers
:class:`PairJudge`, the resource the ``preference_pairs`` asset reads. It is off by
default (``teacher=""``). To judge with a teacher of the pool, subclass it and implement
``complete`` (keeps this family independent of the pool's internals)::

    class PoolJudge(PairJudge):
        teachers: TeacherPool              # the pool resource, nested
        def complete(self, messages):
            return self.teachers.<chat call>(self.teacher, messages)

and pass ``pair_judge=PoolJudge(teacher="big-model", teachers=pool)`` in the resources.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import dagster as dg

from assets.pairs.messages import dumps, message_text

_SCORE = re.compile(r"(?i)score\s*[:=]\s*(-?\d+(?:\.\d+)?)")
_NUM = re.compile(r"-?\d+(?:\.\d+)?")

JUDGE_SYSTEM = (
    "You grade one candidate reply of an AI coding agent. Given the conversation so far and "
    "the candidate's next message (text and tool calls), rate how correct, useful and safe it "
    "is as the next step, from 1 (bad) to 10 (excellent). Answer with 'Score: N' only."
)


def judge_messages(prompt: list[dict], answer: dict, max_chars: int = 6000) -> list[dict]:
    tail = prompt[-6:]  # recent context is what the step answers
    convo = "\n\n".join(f"[{m['role']}] {message_text(m)}" for m in tail)[-max_chars:]
    return [
        {"role": "system", "content": JUDGE_SYSTEM},
        {"role": "user", "content": f"Conversation (latest turns):\n{convo}\n\n"
                                    f"Candidate next message:\n{message_text(answer)[:max_chars]}"},
    ]


def parse_score(text: str) -> float:
    m = _SCORE.search(text or "") or _NUM.search(text or "")
    if not m:
        raise ValueError(f"judge answer has no score: {text[:200]!r}")
    return float(m.group(1) if m.re is _SCORE else m.group(0))


def llm_scorer(complete: Callable[[list[dict]], str]) -> Callable[[list[dict], list[dict]], list[float]]:
    """A scorer that asks a chat model for a 1-10 score per answer."""

    def score(prompt: list[dict], answers: Sequence[dict]) -> list[float]:
        return [parse_score(complete(judge_messages(prompt, a))) for a in answers]

    return score


class PairJudge(dg.ConfigurableResource):
    """Judge for the ``judge`` strategy; off unless ``teacher`` is set and ``complete`` works."""

    teacher: str = ""
    min_margin: float = 1.0

    @property
    def enabled(self) -> bool:
        return bool(self.teacher)

    def complete(self, messages: list[dict]) -> str:  # pragma: no cover - wiring point
        raise NotImplementedError(
            "PairJudge.complete is not wired to a teacher: subclass PairJudge (see assets/pairs/judge.py)")

    def score(self, prompt: list[dict], answers: Sequence[dict]) -> list[float]:
        return llm_scorer(self.complete)(prompt, answers)

    def describe(self) -> str:
        return dumps({"teacher": self.teacher, "min_margin": self.min_margin})
