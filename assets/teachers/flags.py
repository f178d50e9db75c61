"""Streaming checks on a teacher answer, run as each answer arrives (pure functions).

Flags go to ``teacher_responses.flags`` for the pairs builder:

- ``empty``: no text and no tool call
- ``refusal``: the answer declines ("I can't help with that", ...)
- ``hedge``: the answer hedges instead of acting ("As an AI ...", "I'm not sure ...")
- ``truncated``: stopped at max_tokens (finish_reason ``length``)
- ``content_filter``: stopped by the provider's filter
- ``invalid_tool_json``: a tool call whose arguments are not a JSON object
- ``unknown_tool``: a tool call naming a tool the step did not offer
- ``context_truncated`` / ``usage_estimated``: set by the client (left-cut context, no usage)
"""

from __future__ import annotations

import re
from typing import Any, Iterable

import orjson

REFUSAL_PATTERNS = (
    r"\bi(?:'m| am)? ?(?:sorry|afraid),? but i (?:can(?:no|')t|won't|am unable|'m unable)",
    r"\bi (?:can(?:no|')t|won't|will not) (?:help|assist|comply|fulfil|fulfill|do that|provide)",
    r"\bi(?:'m| am) (?:unable|not able) to (?:help|assist|comply|fulfil|fulfill|provide)",
    r"\bi must (?:decline|refuse)",
    r"\bas an ai(?: language model)?,? i (?:can(?:no|')t|am not able|am unable)",
)
HEDGE_PATTERNS = (
    r"\bas an ai\b",
    r"\bi(?:'m| am) not (?:sure|certain)\b",
    r"\bi (?:don't|do not) have (?:access|the ability)\b",
    r"\bi can(?:no|')t (?:browse|access the internet|be certain)\b",
    r"\bit(?:'s| is) (?:hard|difficult) to say\b",
    r"\bconsult (?:a|an) (?:professional|expert)\b",
)
_REFUSAL = re.compile("|".join(REFUSAL_PATTERNS), re.IGNORECASE)
_HEDGE = re.compile("|".join(HEDGE_PATTERNS), re.IGNORECASE)
_HEAD = 400  # refusals and hedges show in the opening of an answer


def _norm(text: str) -> str:
    return text[:_HEAD].replace("\u2019", "'")


def tool_call_flags(tool_calls: Any, offered: Iterable[str] = ()) -> list[str]:
    flags: set[str] = set()
    offered = {t for t in offered if t}
    if not isinstance(tool_calls, list):
        return ["invalid_tool_json"] if tool_calls else []
    for call in tool_calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not fn.get("name"):
            flags.add("invalid_tool_json")
            continue
        args = fn.get("arguments")
        if isinstance(args, str):
            try:
                parsed = orjson.loads(args) if args.strip() else {}
            except orjson.JSONDecodeError:
                parsed = None
        else:
            parsed = args
        if not isinstance(parsed, dict):
            flags.add("invalid_tool_json")
        if offered and fn["name"] not in offered:
            flags.add("unknown_tool")
    return sorted(flags)


def answer_flags(text: str | None, finish_reason: str | None, tool_calls: Any = None,
                 offered_tools: Iterable[str] = (), extra: Iterable[str] = ()) -> list[str]:
    """All flags of one answer, sorted and unique."""
    flags = set(extra)
    text = text or ""
    if not text.strip() and not tool_calls:
        flags.add("empty")
    if text:
        head = _norm(text)
        if _REFUSAL.search(head):
            flags.add("refusal")
        elif _HEDGE.search(head):
            flags.add("hedge")
    if finish_reason == "length":
        flags.add("truncated")
    elif finish_reason == "content_filter":
        flags.add("content_filter")
    if tool_calls:
        flags.update(tool_call_flags(tool_calls, offered_tools))
    return sorted(flags)
