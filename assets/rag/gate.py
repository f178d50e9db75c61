"""The deterministic validation gate: plain code over the answer, never a model."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, asdict
from typing import Sequence

from assets.rag.text import CHECK_VERBS, token_set

# Words any answer says; sharing only these is no evidence of covering a checklist.
GENERIC = frozenset({"test", "tests", "run", "runs", "running", "pass", "passes", "passed", "file", "files",
                     "code", "work", "works", "command", "commands", "output", "result", "results", "answer",
                     "step", "steps", "use", "using", "new", "one", "two", "first", "next", "fix", "fixed"})

REFUSAL_PATTERNS = (
    r"\bI(?:'m| am) sorry\b",
    r"\bI (?:can(?:no|')t|cannot|am unable to|'m unable to|won't be able to)\b",
    r"\bas an AI\b",
    r"\bI(?:'m| am) (?:not able|unable) to (?:help|assist)\b",
    r"\bunable to (?:help|assist|comply)\b",
)
HEDGE_PATTERNS = (
    r"\bI(?:'m| am) not (?:sure|certain)\b",
    r"\bI don't know\b",
    r"\bI do not know\b",
    r"\bI don't have (?:access|enough information)\b",
    r"\bI do not have (?:access|enough information)\b",
    r"\bit(?:'s| is) (?:hard|difficult|impossible) to say\b",
    r"\bwithout more (?:context|information)\b",
)

RULES = ("empty", "too_short", "refusal", "hedge", "no_checklist_overlap", "missed_required_check")


@dataclass(frozen=True)
class GateConfig:
    min_chars: int = 80
    min_checklist_overlap: int = 1  # content tokens shared with the checklist (0 disables)
    refusal_patterns: tuple[str, ...] = REFUSAL_PATTERNS
    hedge_patterns: tuple[str, ...] = HEDGE_PATTERNS


@dataclass
class GateResult:
    passed: bool
    failed_rules: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _first_match(patterns: Sequence[str], text: str) -> str | None:
    for p in patterns:
        m = re.search(p, text, re.IGNORECASE)
        if m:
            return m.group(0)
    return None


def checklist_tokens(checklist: Sequence[str]) -> frozenset[str]:
    toks: set[str] = set()
    for line in checklist:
        toks |= token_set(line)
    return frozenset(toks - CHECK_VERBS - GENERIC)


def validate(response: str | None, checklist: Sequence[str] = (), cfg: GateConfig = GateConfig(),
             required: Sequence[str] = ()) -> GateResult:
    """Run every rule; the answer passes when none fails. Each failure is named.

    ``checklist``: the validation steps the bundle extracted; the answer must share at
    least ``min_checklist_overlap`` content tokens with them, taken together.
    ``required``: checks the caller requires (e.g. a task file's ``checks``); the answer must
    cover EACH of them (``min_checklist_overlap`` of its content tokens, or all if fewer).
    """
    text = (response or "").strip()
    failed: list[str] = []
    details: dict = {"chars": len(text), "min_chars": cfg.min_chars}
    if not text:
        failed.append("empty")
    elif len(text) < cfg.min_chars:
        failed.append("too_short")
    refusal = _first_match(cfg.refusal_patterns, text)
    if refusal:
        failed.append("refusal")
        details["refusal"] = refusal
    hedge = _first_match(cfg.hedge_patterns, text)
    if hedge:
        failed.append("hedge")
        details["hedge"] = hedge
    if checklist and cfg.min_checklist_overlap > 0:
        want = checklist_tokens(checklist)
        shared = sorted(token_set(text) & want)
        details["checklist"] = list(checklist)
        details["checklist_overlap"] = shared[:20]
        if want and len(shared) < cfg.min_checklist_overlap:
            failed.append("no_checklist_overlap")
    if required and cfg.min_checklist_overlap > 0:
        have = token_set(text)
        missed = []
        for line in required:
            want = checklist_tokens([line])
            if want and len(have & want) < min(cfg.min_checklist_overlap, len(want)):
                missed.append(line)
        details["required"] = list(required)
        if missed:
            failed.append("missed_required_check")
            details["missed_required"] = missed
    return GateResult(passed=not failed, failed_rules=failed, details=details)
