"""Context bundle (what the local model is grounded in) and prompt assembly. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, asdict
from typing import Any, Mapping, Sequence

from assets.rag.text import clip, estimate_tokens

# list markers: "-", "*", "+", "•", "1.", "1)", "(a)", "[ ]", "[x]", "- [ ]" (any mix, repeated)
_MARKER_RE = re.compile(r"^\s*(?:(?:[-*+•>]|\d+[.)]|\(?[a-zA-Z][.)]\s|\[[ xX]\])\s*)*")
_CHECK_RE = re.compile(r"^(verify|check|assert|ensure|confirm)\b", re.IGNORECASE)
_TRAILING_MD = re.compile(r"^[*_`]+|[*_`]+$")


def extract_validation_steps(text: str | None, limit: int = 20) -> list[str]:
    """Lines that start with verify/check/assert/ensure/confirm (after list markers)."""
    out: list[str] = []
    seen: set[str] = set()
    for raw in (text or "").splitlines():
        line = _MARKER_RE.sub("", raw, count=1).strip()
        line = _TRAILING_MD.sub("", line).strip()  # "**Verify** …" → "Verify** …"
        line = line.replace("**", "").strip()
        if not _CHECK_RE.match(line):
            continue
        key = " ".join(line.lower().split())
        if key in seen:
            continue
        seen.add(key)
        out.append(line)
        if len(out) >= limit:
            break
    return out


@dataclass(frozen=True)
class BundleConfig:
    n_exemplars: int = 3
    n_failures: int = 2
    max_validation_steps: int = 8
    max_exemplar_chars: int = 700
    max_failure_chars: int = 350
    max_bundle_tokens: int = 1200  # items are dropped (lowest ranked first) beyond this


@dataclass
class ContextBundle:
    task: str
    exemplars: list[dict] = field(default_factory=list)
    failure_patterns: list[dict] = field(default_factory=list)
    validation_steps: list[str] = field(default_factory=list)
    token_estimate: int = 0
    dropped_for_budget: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def playbook_ids(self) -> list[str]:
        return [e["id"] for e in self.exemplars] + [f["id"] for f in self.failure_patterns]


def _item(rec: Mapping[str, Any], score: float, max_chars: int) -> dict:
    return {
        "id": rec.get("playbook_id"),
        "title": rec.get("title") or "",
        "task": clip(rec.get("task"), 300),
        "content": clip(rec.get("content"), max_chars),
        "label": rec.get("label"),
        "success_score": rec.get("success_score"),
        "score": round(float(score), 6),
        "mined": bool(rec.get("mined")),
    }


def _failure_view(rec: Mapping[str, Any]) -> Mapping[str, Any]:
    """What went wrong matters more than the steps: show from the errors on."""
    content = rec.get("content") or ""
    i = content.find("Errors:")
    return {**rec, "content": content[i:]} if i > 0 else rec


def build_bundle(task: str, ranked: Sequence[tuple[Mapping[str, Any], float]],
                 cfg: BundleConfig = BundleConfig()) -> ContextBundle:
    """ranked: (playbook record, retrieval score), best first.

    Accepted playbooks become exemplars (top ``n_exemplars``); partially accepted ones
    become failure patterns to avoid (top ``n_failures``); rejected ones are never shown.
    Validation steps come from the exemplars' content (and their stored checklist).
    """
    b = ContextBundle(task=task)
    exemplar_recs: list[Mapping[str, Any]] = []
    for rec, score in ranked:
        label = rec.get("label")
        if label == "accepted" and len(b.exemplars) < cfg.n_exemplars:
            b.exemplars.append(_item(rec, score, cfg.max_exemplar_chars))
            exemplar_recs.append(rec)
        elif label == "partially_accepted" and len(b.failure_patterns) < cfg.n_failures:
            b.failure_patterns.append(_item(_failure_view(rec), score, cfg.max_failure_chars))
    b.validation_steps = _checklist(exemplar_recs, cfg.max_validation_steps)
    # stay within the token budget: drop failure patterns, then exemplars, lowest ranked first
    while estimate_tokens(render_context(b)) > cfg.max_bundle_tokens and (b.failure_patterns or b.exemplars):
        if b.failure_patterns:
            b.failure_patterns.pop()
        else:
            b.exemplars.pop()
            exemplar_recs.pop()
            b.validation_steps = _checklist(exemplar_recs, cfg.max_validation_steps)
        b.dropped_for_budget += 1
    b.token_estimate = estimate_tokens(render_context(b)) + estimate_tokens(task)
    return b


def _checklist(recs: Sequence[Mapping[str, Any]], limit: int) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for rec in recs:
        for step in list(rec.get("validation_steps") or []) + extract_validation_steps(rec.get("content")):
            key = " ".join(step.lower().split())
            if key not in seen and len(out) < limit:
                seen.add(key)
                out.append(step)
    return out


SYSTEM_BASE = (
    "You are a careful software engineering assistant. Answer the task directly with concrete "
    "steps and commands."
)
SYSTEM_GROUNDED = (
    " The playbooks below come from earlier sessions of this project: reuse what worked, "
    "avoid the failure patterns, use only the names, files and commands they show when you "
    "refer to project internals, and end with how to verify the result."
)


def render_context(b: ContextBundle) -> str:
    parts: list[str] = []
    if b.exemplars:
        parts.append("## Playbooks that worked")
        for i, e in enumerate(b.exemplars, 1):
            parts.append(f"### {i}. {e['title']}\nTask: {e['task']}\n{e['content']}")
    if b.failure_patterns:
        parts.append("## Failure patterns to avoid")
        for i, f in enumerate(b.failure_patterns, 1):
            parts.append(f"### {i}. {f['title']}\n{f['content']}")
    if b.validation_steps:
        parts.append("## Validation checklist\n" + "\n".join(f"- {s}" for s in b.validation_steps))
    return "\n\n".join(parts)


def assemble_prompt(task: str, bundle: ContextBundle | None) -> list[dict]:
    """Chat messages for the model: a system message carrying the bundle, then the task."""
    ctx = render_context(bundle) if bundle is not None else ""
    system = SYSTEM_BASE + (SYSTEM_GROUNDED + "\n\n" + ctx if ctx else "")
    return [{"role": "system", "content": system}, {"role": "user", "content": task}]
