"""Preference-pair strategies: pluggable, Dagster-free, over plain rows.

Each step has *candidates*: the original trace response plus every teacher answer with
status ``ok``. A strategy turns one step's candidates into zero or more pairs. Add a
strategy with ``@register_strategy("name")``; the asset picks them by name from config.

Built-ins:
- ``error_site``: the original step caused a failed tool result → it is ``rejected``; a
  teacher answer that does something else is ``chosen``.
- ``consensus``: with ≥ ``min_answers`` answers, the answer the majority agrees with is
  ``chosen`` and the outlier ``rejected`` (normalized-text or embedding similarity).
- ``judge``: a scoring callable rates every answer; best vs worst.
- ``recovery``: the original step made a mistake and the agent's own next turn (the
  recovery turn, right after the failed result) did something else that did not fail →
  that action is ``chosen`` (source ``recovery``), the mistake ``rejected``, in the
  failing step's context. Needs no teacher: it is what the agent did once it knew better
  (a hindsight pair), so it is a real, well-formed action of an offered tool.

Flags from the teacher (refusal, truncated, ...) make an answer less preferred as
``chosen``; ``blocking_flags`` make it never ``chosen``.

Validity (assets/pairs/validity.py): teacher tool calls written as text are parsed into
``tool_calls`` when rows become steps; the original step's failure is read through the
failure policy (assets/traces/failures.py), so an error-site pair's ``rejected`` carries
its class (``rejected_failure``); strategies prefer a ``chosen`` that passes the validity
rules, and :func:`build_pairs` stamps every candidate with the first rule it breaks
(``invalid_rule``/``invalid_reason``; the recipe's ``pair_validity_filter`` drops those).
"""

from __future__ import annotations

import datetime as dt
import math
import difflib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from assets.traces.failures import FailurePolicy, Verdict, load_failure_policy, step_verdict
from assets.pairs.messages import (
    action_signature,
    assistant_message,
    clean_messages,
    clean_tools,
    content_hash,
    dumps,
    is_empty,
    loads,
    message_text,
    normalize_text,
)
from assets.pairs.validity import ValidityConfig, Violation, check_pair
from resources.tool_text import structure_tool_calls

ORIGINAL = "original"
RECOVERY = "recovery"  # chosen_source of a recovery pair: the agent's own next turn
DEFAULT_BLOCKING_FLAGS = ("empty", "refusal", "truncated", "invalid_tool_json")


@dataclass(frozen=True)
class Candidate:
    source: str  # "original" or a teacher name
    model: str | None
    message: dict  # TRL-shaped assistant message
    flags: tuple[str, ...] = ()
    failed: bool = False  # the original step caused a failed tool result

    @property
    def text(self) -> str:
        return message_text(self.message)

    @property
    def clean(self) -> bool:
        return not self.flags

    @property
    def signature(self) -> str:
        return action_signature(self.message)


@dataclass(frozen=True)
class Step:
    session_key: str
    step_id: str
    prompt: list[dict]
    tools: list[dict] | None
    original: Candidate
    teachers: tuple[Candidate, ...]
    caused_error: bool = False
    error_kind: str | None = None
    failure: Verdict | None = None  # how the policy reads the original's failure

    @property
    def failure_label(self) -> str | None:
        return f"{self.failure.cls}:{self.failure.rule}" if self.failure is not None else None

    @property
    def answers(self) -> list[Candidate]:
        """Original + teachers, without empty answers."""
        return [c for c in (self.original, *self.teachers) if not is_empty(c.message)]


@dataclass(frozen=True)
class Pair:
    step: Step
    chosen: Candidate
    rejected: Candidate
    strategy: str
    score_chosen: float | None = None
    score_rejected: float | None = None

    @property
    def rejected_failure(self) -> str | None:
        """The policy's reading of the rejected answer's failure (the original's only)."""
        return self.step.failure_label if self.rejected.source == ORIGINAL and self.rejected.failed else None

    def violation(self, config: ValidityConfig | None = None) -> Violation | None:
        return check_pair(self.step.prompt, self.chosen.message, self.rejected.message, self.step.tools,
                          strategy=self.strategy, rejected_failure=self.rejected_failure,
                          config=config or ValidityConfig())

    def row(self, created_at: dt.datetime | None = None, violation: Violation | None = None) -> dict:
        prompt, chosen, rejected = (dumps(self.step.prompt), dumps([self.chosen.message]),
                                    dumps([self.rejected.message]))
        return {
            "pair_id": content_hash(self.step.step_id, prompt, chosen, rejected),
            "session_key": self.step.session_key,
            "step_id": self.step.step_id,
            "prompt": prompt,
            "chosen": chosen,
            "rejected": rejected,
            "tools": dumps(self.step.tools) if self.step.tools else None,
            "chosen_source": self.chosen.source,
            "rejected_source": self.rejected.source,
            "chosen_model": self.chosen.model,
            "rejected_model": self.rejected.model,
            "strategy": self.strategy,
            "score_chosen": self.score_chosen,
            "score_rejected": self.score_rejected,
            "rejected_failure": self.rejected_failure,
            "invalid_rule": violation.rule if violation else None,
            "invalid_reason": violation.reason if violation else None,
            "created_at": created_at,
        }


class PairStrategy(Protocol):
    name: str

    def prepare(self, steps: Sequence[Step]) -> None: ...

    def pairs(self, step: Step) -> list[Pair]: ...


STRATEGIES: dict[str, type] = {}


def register_strategy(name: str):
    def deco(cls):
        cls.name = name
        STRATEGIES[name] = cls
        return cls
    return deco


def make_strategy(name: str, **params: Any) -> PairStrategy:
    if name not in STRATEGIES:
        raise KeyError(f"unknown pair strategy {name!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[name](**params)


class _Base:
    name = "base"

    def __init__(self, blocking_flags: Iterable[str] = DEFAULT_BLOCKING_FLAGS,
                 validity: ValidityConfig | None = None):
        self.blocking_flags = frozenset(blocking_flags)
        self.validity = validity or ValidityConfig()

    def invalid(self, step: Step, chosen: Candidate, rejected: Candidate) -> bool:
        """True when this chosen/rejected would break a validity rule (ranked last)."""
        return Pair(step, chosen, rejected, self.name).violation(self.validity) is not None

    def prepare(self, steps: Sequence[Step]) -> None:  # optional batch hook
        return None

    def can_be_chosen(self, c: Candidate) -> bool:
        return not c.failed and not (self.blocking_flags & set(c.flags)) and not is_empty(c.message)

    @staticmethod
    def preference(c: Candidate) -> tuple:
        """Sort key, best first: clean answers before flagged ones, then fewer flags."""
        return (not c.clean, len(c.flags), c.source)


@register_strategy("error_site")
class ErrorSiteStrategy(_Base):
    """Original step failed → rejected; a teacher answer doing something else → chosen."""

    def __init__(self, max_pairs_per_step: int = 1, **kw):
        super().__init__(**kw)
        self.max_pairs_per_step = max_pairs_per_step

    def pairs(self, step: Step) -> list[Pair]:
        if not step.caused_error or is_empty(step.original.message):
            return []
        bad = step.original.signature
        options = sorted((t for t in step.teachers if self.can_be_chosen(t) and t.signature != bad),
                         key=lambda t: (self.invalid(step, t, step.original), *self.preference(t)))
        return [Pair(step, t, step.original, self.name, 1.0 if t.clean else 0.5, 0.0)
                for t in options[: self.max_pairs_per_step]]


@register_strategy("recovery")
class RecoveryStrategy(_Base):
    """Original step failed → rejected; the agent's recovery turn (its next step, whose
    context is this step's context + this call + its failed result) → chosen, when it did
    something else and did not fail itself. Teacher answers are not needed."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._next: dict[str, Step] = {}

    def prepare(self, steps: Sequence[Step]) -> None:
        by_session: dict[str, list[Step]] = {}
        for s in steps:
            by_session.setdefault(s.session_key, []).append(s)
        for group in by_session.values():
            for f in group:
                if f.caused_error and f.step_id not in self._next:
                    r = recovery_turn(f, group)
                    if r is not None:
                        self._next[f.step_id] = r

    def pairs(self, step: Step) -> list[Pair]:
        r = self._next.get(step.step_id)
        if r is None or is_empty(step.original.message):
            return []
        chosen = Candidate(RECOVERY, r.original.model, r.original.message, r.original.flags)
        if not self.can_be_chosen(chosen) or chosen.signature == step.original.signature:
            return []
        return [Pair(step, chosen, step.original, self.name, 1.0, 0.0)]


def recovery_turn(failed: Step, session_steps: Iterable[Step]) -> Step | None:
    """The step right after ``failed``'s result: its context is ``failed``'s context, then
    ``failed``'s call, then tool results only. None when there is none (the session ended,
    a user spoke next) or it failed too."""
    n = len(failed.prompt)
    sig = failed.original.signature
    best = None
    for s in session_steps:
        p = s.prompt
        if len(p) <= n + 1 or p[n].get("role") != "assistant" or action_signature(p[n]) != sig:
            continue
        if any(m.get("role") != "tool" for m in p[n + 1:]) or p[:n] != failed.prompt:
            continue
        if best is None or len(p) < len(best.prompt):
            best = s
    return None if best is None or best.original.failed else best


def text_similarity(a: str, b: str) -> float:
    """Similarity of two normalized answers in [0, 1] (1 = same text)."""
    a, b = normalize_text(a)[:4000], normalize_text(b)[:4000]
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if sm.real_quick_ratio() < 0.3:
        return sm.real_quick_ratio() if sm.quick_ratio() < 0.3 else sm.ratio()
    return sm.ratio()


Embedder = Callable[[Sequence[str]], np.ndarray]


@register_strategy("consensus")
class ConsensusStrategy(_Base):
    """The majority's answer is chosen, the answer nobody agrees with is rejected.

    Two answers *agree* when their similarity is ≥ ``threshold``: identical tool calls
    agree; otherwise normalized-text ratio (``similarity="text"``) or MiniLM cosine
    (``similarity="embedding"``; pass ``embed``, default resources.embeddings).
    """

    def __init__(self, min_answers: int = 3, threshold: float = 0.8, similarity: str = "text",
                 embed: Embedder | None = None, **kw):
        super().__init__(**kw)
        if similarity not in ("text", "embedding"):
            raise ValueError(f"similarity must be 'text' or 'embedding', not {similarity!r}")
        self.min_answers = min_answers
        self.threshold = threshold
        self.similarity = similarity
        self._embed = embed
        self._vecs: dict[str, np.ndarray] = {}

    def prepare(self, steps: Sequence[Step]) -> None:
        if self.similarity != "embedding":
            return
        texts = sorted({c.text for s in steps for c in s.answers} - set(self._vecs))
        if texts:
            embed = self._embed
            if embed is None:
                from resources.embeddings import embed_texts as embed
            for t, v in zip(texts, embed(texts)):
                self._vecs[t] = np.asarray(v, dtype=np.float32)

    def sim(self, a: Candidate, b: Candidate) -> float:
        if a.signature == b.signature:
            return 1.0
        if a.message.get("tool_calls") or b.message.get("tool_calls"):
            # tool calls that differ are different actions, whatever the prose says
            if [tc["function"]["name"] for tc in a.message.get("tool_calls") or []] != \
               [tc["function"]["name"] for tc in b.message.get("tool_calls") or []]:
                return 0.0
        if self.similarity == "embedding":
            if a.text not in self._vecs or b.text not in self._vecs:
                self.prepare([_adhoc_step(a, b)])
            return float(np.dot(self._vecs[a.text], self._vecs[b.text]))
        return text_similarity(a.text, b.text)

    def pairs(self, step: Step) -> list[Pair]:
        answers = step.answers
        n = len(answers)
        if n < self.min_answers:
            return []
        sim = np.eye(n)
        for i in range(n):
            for j in range(i + 1, n):
                sim[i, j] = sim[j, i] = self.sim(answers[i], answers[j])
        agree = sim >= self.threshold
        support = agree.sum(axis=1)  # includes itself
        # the biggest agreeing group: the answer with most support and its neighbours
        order = sorted(range(n), key=lambda i: (-support[i], not answers[i].clean, -sim[i].sum()))
        center = order[0]
        cluster = [j for j in range(n) if agree[center, j]]
        if len(cluster) * 2 <= n:  # no strict majority
            return []
        outliers = [j for j in range(n) if j not in cluster and support[j] == 1]
        if not outliers:
            return []
        choosable = [j for j in cluster if self.can_be_chosen(answers[j])]
        if not choosable:
            return []
        r = min(outliers, key=lambda j: (sim[j, cluster].mean(), answers[j].source))
        c = min(choosable, key=lambda j: (self.invalid(step, answers[j], answers[r]),
                                          self.preference(answers[j])[:2], -sim[j, cluster].mean()))
        return [Pair(step, answers[c], answers[r], self.name,
                     round(len(cluster) / n, 4), round(float(sim[r, cluster].mean()), 4))]


def _adhoc_step(*cands: Candidate) -> Step:
    return Step("", "", [], None, cands[0], tuple(cands[1:]))


Scorer = Callable[[list[dict], list[dict]], Sequence[float]]
"""(prompt messages, assistant messages) → one score per answer (higher is better)."""


@register_strategy("judge")
class JudgeStrategy(_Base):
    """A judge scores every answer of a step; the best is chosen, the worst rejected."""

    def __init__(self, scorer: Scorer, min_margin: float = 0.0, **kw):
        super().__init__(**kw)
        self.scorer = scorer
        self.min_margin = min_margin

    def pairs(self, step: Step) -> list[Pair]:
        answers = step.answers
        if len(answers) < 2:
            return []
        scores = [float(s) for s in self.scorer(step.prompt, [a.message for a in answers])]
        if len(scores) != len(answers):
            raise ValueError(f"judge returned {len(scores)} scores for {len(answers)} answers")
        idx = [i for i in range(len(answers)) if not math.isnan(scores[i])]  # NaN: the judge gave no score
        choosable = [i for i in idx if self.can_be_chosen(answers[i])]
        if not choosable:
            return []
        worst = min(idx, key=lambda i: (scores[i], answers[i].source))
        best = max(choosable, key=lambda i: (not self.invalid(step, answers[i], answers[worst]),
                                             scores[i], answers[i].clean))
        if best == worst or scores[best] - scores[worst] <= self.min_margin:
            return []
        if answers[best].signature == answers[worst].signature:
            return []
        return [Pair(step, answers[best], answers[worst], self.name, scores[best], scores[worst])]


# ------------------------------------------------------------------ rows → steps

def steps_from_rows(step_rows: Iterable[Mapping], teacher_rows: Iterable[Mapping],
                    policy: FailurePolicy | None = None) -> list[Step]:
    """Join AGENT_STEPS rows with TEACHER_RESPONSES rows (status ok only).

    Teacher tool calls written as text are parsed into ``tool_calls`` (against the step's
    tools) before anything else sees them; the original's failure is read with ``policy``
    (default ``recipes/failures.yaml``)."""
    policy = policy or load_failure_policy()
    step_rows = list(step_rows)
    tools_of = {r["step_id"]: clean_tools(r.get("tools")) for r in step_rows}
    by_step: dict[str, list[Candidate]] = {}
    for r in teacher_rows:
        if r.get("status") != "ok":
            continue
        msg = assistant_message(loads(r.get("message"), None), r.get("text"))
        msg, _fmt = structure_tool_calls(msg, tools_of.get(r["step_id"]))
        flags = tuple(sorted(set(r.get("flags") or ())))
        if is_empty(msg) and "empty" not in flags:
            flags = tuple(sorted({*flags, "empty"}))
        by_step.setdefault(r["step_id"], []).append(
            Candidate(source=r["teacher"], model=r.get("model"), message=msg, flags=flags))
    steps = []
    for r in step_rows:
        orig = assistant_message(loads(r.get("response"), None), r.get("response_text"))
        failed = bool(r.get("caused_error"))
        steps.append(Step(
            session_key=r["session_key"],
            step_id=r["step_id"],
            prompt=clean_messages(loads(r.get("messages"), [])),
            tools=clean_tools(r.get("tools")),
            original=Candidate(ORIGINAL, r.get("model"), orig, ("empty",) if is_empty(orig) else (),
                               failed=failed),
            teachers=tuple(sorted(by_step.get(r["step_id"], []), key=lambda c: c.source)),
            caused_error=failed,
            error_kind=r.get("caused_error_kind"),
            failure=step_verdict(r, policy),
        ))
    return steps


@dataclass
class PairBuildReport:
    steps: int = 0
    steps_with_teachers: int = 0
    by_strategy: Counter = field(default_factory=Counter)
    merged_duplicates: int = 0
    candidates: int = 0
    removed_by_rule: Counter = field(default_factory=Counter)  # validity rule -> candidates it removed
    failures: Counter = field(default_factory=Counter)  # "class (rule)" of the steps whose call failed

    @property
    def kept(self) -> int:
        return self.candidates - sum(self.removed_by_rule.values())


def build_pairs(steps: Sequence[Step], strategies: Sequence[PairStrategy],
                created_at: dt.datetime | None = None,
                validity: ValidityConfig | None = None) -> tuple[list[dict], PairBuildReport]:
    """Run every strategy on every step. A pair several strategies produce at one step is
    kept once, under the first strategy in ``strategies`` (so list them by priority).

    Every candidate row carries the first validity rule it breaks (``invalid_rule``, None
    when it is worth training on); ``report.removed_by_rule`` counts them."""
    report = PairBuildReport(steps=len(steps),
                             steps_with_teachers=sum(1 for s in steps if s.teachers))
    for s in steps:
        if s.failure is not None:
            report.failures[f"{s.failure.cls} ({s.failure.rule})"] += 1
    for s in strategies:
        s.prepare(steps)
    rows: dict[str, dict] = {}
    for step in steps:
        for strat in strategies:  # a strategy without the answers it needs makes no pair
            for pair in strat.pairs(step):
                v = pair.violation(validity)
                row = pair.row(created_at, v)
                if row["pair_id"] in rows:
                    report.merged_duplicates += 1
                    continue
                rows[row["pair_id"]] = row
                report.candidates += 1
                if v is None:
                    report.by_strategy[strat.name] += 1
                else:
                    report.removed_by_rule[v.rule] += 1
    return list(rows.values()), report
