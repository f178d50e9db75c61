"""The pair judge: any configured model, asked through the one model client, scores answers.

:class:`PairJudge` is the resource the ``preference_pairs`` asset reads. It is off by
default. Turn it on with either

* ``model`` (+ ``base_url``, ``api_key_env``: the NAME of the variable holding the key;
  ``provider: local`` for a local transformers model), or
* ``teacher``: the name of a teacher of the pool (``pool_file``, or the teachers resource's
  default pool), judged greedily with the judge's own instructions.

With a judge configured:

* the ``judge`` strategy scores every answer of a step; best vs worst, if they differ by more
  than ``min_margin``;
* pairs of the strategies in ``confirm`` (``error_site`` and ``consensus`` by default) are
  kept only when the judge scores ``chosen`` above ``rejected`` by at least ``confirm_margin``
  (:func:`confirm_pairs`); the others are marked with the rule that drops them
  (``invalid_rule`` = ``judge_disagrees`` or ``judge_unscored``, ``invalid_reason`` with the
  scores), so the recipe's ``pair_validity_filter`` puts them in ``pair_rejections`` like every
  other invalid candidate; the asset's metadata counts them.

The judge sees the latest turns of the conversation and one candidate at a time, and answers
``Score: N`` (1-10). Calls run concurrently (``max_concurrency``); identical questions are asked
once per run. A judge that cannot answer at all (every call failed) is an error, not a silent
"no pairs".
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
import dagster as dg
from pydantic import Field

from assets.pairs.messages import content_hash, dumps, loads, message_text
from resources.model_client import ModelClient, ModelSpec, make_client

_SCORE = re.compile(r"(?i)score\s*[:=]\s*(-?\d+(?:\.\d+)?)")
_NUM = re.compile(r"-?\d+(?:\.\d+)?")

JUDGE_SYSTEM = (
    "You grade one candidate reply of an AI coding agent. Given the conversation so far and "
    "the candidate's next message (text and tool calls), rate how correct, useful and safe it "
    "is as the next step, from 1 (bad) to 10 (excellent). Answer with 'Score: N' only."
)
DEFAULT_CONFIRM = ("error_site", "consensus")


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
        raise ValueError(f"judge answer has no score: {(text or '')[:200]!r}")
    return float(m.group(1) if m.re is _SCORE else m.group(0))


@dataclass
class JudgeStats:
    calls: int = 0
    cached: int = 0
    errors: Counter = field(default_factory=Counter)
    unparsed: int = 0

    def as_dict(self) -> dict:
        return {"calls": self.calls, "cached": self.cached, "errors": dict(self.errors), "unparsed": self.unparsed}


class PairJudge(dg.ConfigurableResource):
    """A judge over any configured model (off unless ``model`` or ``teacher`` is set)."""

    model: str = Field(default="", description="Judge model id (remote), or a local model path.")
    provider: str = Field(default="openai_compatible", description="openai_compatible | local")
    base_url: str = Field(default="", description="OpenAI-compatible base URL of the judge.")
    api_key_env: str = Field(default="", description="NAME of the env var holding the judge's key.")
    teacher: str = Field(default="", description="Judge with this teacher of the pool instead.")
    pool_file: str = Field(default="", description="Teacher pool file for `teacher` (empty: the default).")
    max_tokens: int = Field(default=16, description="Tokens the judge may write ('Score: N').")
    max_concurrency: int = Field(default=4)
    timeout: float = Field(default=60.0)
    max_attempts: int = Field(default=3)
    min_margin: float = Field(default=1.0, description="judge strategy: best - worst must exceed this")
    confirm: list[str] = Field(default_factory=lambda: list(DEFAULT_CONFIRM),
                               description="strategies whose pairs the judge must confirm")
    confirm_margin: float = Field(default=1.0, description="confirmed: score(chosen) - score(rejected) >= this")

    @property
    def enabled(self) -> bool:
        return bool(self.model or self.teacher)

    def spec(self) -> ModelSpec:
        if self.model:
            return ModelSpec(name="judge", provider=self.provider, base_url=self.base_url, model=self.model,
                             api_key_env=self.api_key_env or None, max_tokens=self.max_tokens, temperature=0.0,
                             max_concurrency=self.max_concurrency, timeout=self.timeout,
                             max_attempts=self.max_attempts)
        if self.teacher:
            from assets.teachers.pool import TeacherPool

            t = TeacherPool(config_file=self.pool_file).pool_spec().teacher(self.teacher)
            data = t.model_dump()
            data.update(name=f"judge:{t.name}", temperature=0.0, max_tokens=self.max_tokens,
                        system_prompt=None, seed=None)
            return ModelSpec.model_validate(data)
        raise ValueError("the pair judge is off: set `model` (and base_url) or `teacher`")

    def describe(self) -> str:
        if not self.enabled:
            return "off"
        s = self.spec()
        return dumps({"model": s.model_id, "provider": s.provider, "base_url": s.base_url or None,
                      "teacher": self.teacher or None, "min_margin": self.min_margin,
                      "confirm": self.confirm, "confirm_margin": self.confirm_margin})

    def scorer(self) -> "JudgeScorer":
        return JudgeScorer(make_client(self.spec()))

    def score(self, prompt: list[dict], answers: Sequence[dict]) -> list[float]:
        return self.scorer().score(prompt, answers)


class JudgeScorer:
    """Scores answers with a judge client; each distinct question is asked once."""

    def __init__(self, client: ModelClient) -> None:
        self.client = client
        self.stats = JudgeStats()
        self._memo: dict[str, float] = {}

    def score_many(self, items: Sequence[tuple[list[dict], dict]]) -> list[float]:
        """(prompt, answer) pairs -> scores (NaN when the judge gave none), asked concurrently."""
        convs = [judge_messages(p, a) for p, a in items]
        keys = [content_hash(c) for c in convs]
        todo = {k: c for k, c in zip(keys, convs) if k not in self._memo}
        self.stats.cached += len(keys) - len(todo)
        if todo:
            outs = self.client.chat_many(list(todo.values()))
            self.stats.calls += len(outs)
            for k, out in zip(todo, outs):
                if not out.ok:
                    self.stats.errors[out.error_kind or "unknown"] += 1
                    self._memo[k] = math.nan
                    continue
                try:
                    self._memo[k] = parse_score(out.text or "")
                except ValueError:
                    self.stats.unparsed += 1
                    self._memo[k] = math.nan
        return [self._memo[k] for k in keys]

    def score(self, prompt: list[dict], answers: Sequence[dict]) -> list[float]:
        return self.score_many([(prompt, a) for a in answers])

    @property
    def usage(self) -> dict:
        return self.client.usage.as_dict()


@dataclass
class ConfirmReport:
    checked: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)  # rule -> count
    examples: list[dict] = field(default_factory=list)  # a few dropped pairs with their scores

    def as_dict(self) -> dict:
        return {"checked": self.checked, "kept": self.kept, "dropped": dict(self.dropped)}


def confirm_pairs(rows: Iterable[dict], scorer: JudgeScorer, strategies: Iterable[str] = DEFAULT_CONFIRM,
                  margin: float = 1.0, n_examples: int = 3) -> tuple[list[dict], list[dict], ConfirmReport]:
    """Keep the pairs of ``strategies`` the judge confirms (chosen scores ``margin`` above rejected).

    Returns (kept rows, dropped rows, report): a dropped row is the pair row with
    ``invalid_rule`` (``judge_disagrees`` | ``judge_unscored``) and ``invalid_reason`` (the
    scores) set. Rows of other strategies pass unchanged. Raises when the judge answered none
    of its questions."""
    rows = list(rows)
    strategies = set(strategies)
    todo = [r for r in rows if r["strategy"] in strategies]
    report = ConfirmReport(checked=len(todo))
    if not todo:
        return rows, [], report
    items = []
    for r in todo:
        prompt = loads(r["prompt"], [])
        items += [(prompt, loads(r["chosen"], [{}])[0]), (prompt, loads(r["rejected"], [{}])[0])]
    scores = scorer.score_many(items)
    if all(math.isnan(s) for s in scores):
        raise RuntimeError(f"the pair judge answered none of {len(scores)} questions: {scorer.stats.as_dict()}")
    dropped: list[dict] = []
    drop_ids = set()
    for i, r in enumerate(todo):
        sc, sr = scores[2 * i], scores[2 * i + 1]
        rule = None
        if math.isnan(sc) or math.isnan(sr):
            rule = "judge_unscored"
        elif sc - sr < margin:
            rule = "judge_disagrees"
        if rule is None:
            report.kept += 1
            continue
        report.dropped[rule] += 1
        drop_ids.add(r["pair_id"])
        reason = (f"the judge scored chosen {sc:g} and rejected {sr:g} (needs chosen >= rejected + {margin:g})"
                   if rule == "judge_disagrees" else "the judge gave no score to chosen or rejected")
        dropped.append({**r, "invalid_rule": rule, "invalid_reason": reason})
        if len(report.examples) < n_examples:
            report.examples.append({"pair_id": r["pair_id"], "strategy": r["strategy"], "rule": rule,
                                    "chosen": message_text(loads(r["chosen"], [{}])[0])[:200],
                                    "rejected": message_text(loads(r["rejected"], [{}])[0])[:200],
                                    "score_chosen": sc, "score_rejected": sr})
    return [r for r in rows if r["pair_id"] not in drop_ids], dropped, report

