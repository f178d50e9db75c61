"""Plain helpers over OpenAI chat messages, shaped for TRL.

TRL rows need a stable shape across rows (Arrow infers one schema for a whole file):
``content`` is always a string, tool calls are ``{"id"?, "type": "function",
"function": {"name", "arguments": <JSON string>}}`` and tool results are
``{"role": "tool", "name"?, "tool_call_id"?, "content"}``. Everything here is pure.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

from resources.model_client import content_text

ROLES = ("system", "user", "assistant", "tool")
_WS = re.compile(r"\s+")


def dumps(obj: Any) -> str:
    """Compact, deterministic JSON (the form JSON columns are stored in)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def loads(text: str | None, default: Any = None) -> Any:
    if text is None or text == "":
        return default
    if not isinstance(text, str):
        return text
    return json.loads(text)


def content_hash(*parts: Any, n: int = 24) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update((p if isinstance(p, str) else dumps(p)).encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()[:n]


def flatten_content(content: Any) -> str:
    """OpenAI content (string, None, or a list of parts) → one string (the model client's rule)."""
    return content_text(content)


def clean_tool_call(tc: dict) -> dict:
    fn = tc.get("function") or {}
    name = fn.get("name") if fn else tc.get("name")
    args = fn.get("arguments") if fn else tc.get("arguments", tc.get("input"))
    if args is None:
        args = "{}"
    elif not isinstance(args, str):  # TRL rows keep arguments as a JSON string
        args = dumps(args)
    out: dict = {}
    if tc.get("id"):
        out["id"] = str(tc["id"])
    out["type"] = "function"
    out["function"] = {"name": str(name or ""), "arguments": args}
    return out


def clean_message(m: dict) -> dict:
    """Keep what a chat template reads, in the TRL shape."""
    role = m.get("role") or "user"
    if role == "developer":
        role = "system"
    out: dict = {"role": role, "content": flatten_content(m.get("content"))}
    if role == "assistant":
        calls = [clean_tool_call(tc) for tc in (m.get("tool_calls") or []) if isinstance(tc, dict)]
        if calls:
            out["tool_calls"] = calls
    elif role == "tool":
        if m.get("tool_call_id"):
            out["tool_call_id"] = str(m["tool_call_id"])
        if m.get("name"):
            out["name"] = str(m["name"])
    return out


def clean_messages(messages: Iterable[dict] | None) -> list[dict]:
    return [clean_message(m) for m in (messages or []) if isinstance(m, dict)]


def assistant_message(obj: Any, text: str | None = None) -> dict:
    """An assistant message from a stored response (JSON dict, list of messages, or text)."""
    if isinstance(obj, str):
        obj = loads(obj, None) if obj.strip().startswith(("{", "[")) else {"content": obj}
    if isinstance(obj, list):  # a list of messages: take the last assistant one
        obj = next((m for m in reversed(obj) if isinstance(m, dict)
                    and m.get("role", "assistant") == "assistant"), None)
    if not isinstance(obj, dict):
        obj = {"content": text or ""}
    m = clean_message({**obj, "role": "assistant"})
    if not m["content"] and not m.get("tool_calls") and text:
        m["content"] = text
    return m


def clean_tools(tools: Any) -> list[dict] | None:
    tools = loads(tools, None) if isinstance(tools, str) else tools
    if not tools:
        return None
    return [t for t in tools if isinstance(t, dict)] or None


def tool_call_text(tc: dict) -> str:
    fn = tc.get("function", {})
    return f"{fn.get('name', '')}({fn.get('arguments', '')})"


def message_text(m: dict) -> str:
    """Visible text of a message, tool calls rendered as ``name(arguments)``."""
    parts = [m.get("content") or ""]
    parts += [tool_call_text(tc) for tc in m.get("tool_calls") or []]
    return "\n".join(p for p in parts if p)


def is_empty(m: dict) -> bool:
    return not (m.get("content") or "").strip() and not m.get("tool_calls")


def normalize_text(text: str) -> str:
    return _WS.sub(" ", text.lower()).strip()


def action_signature(m: dict) -> str:
    """What an assistant message *does*: tool calls with canonical arguments, else its text."""
    calls = []
    for tc in m.get("tool_calls") or []:
        fn = tc.get("function", {})
        try:
            args = dumps(_sorted(json.loads(fn.get("arguments") or "{}")))
        except (ValueError, TypeError):
            args = normalize_text(str(fn.get("arguments")))
        calls.append(f"{fn.get('name')}:{args}")
    if calls:
        return "calls|" + "|".join(calls)
    return "text|" + normalize_text(m.get("content") or "")


def _sorted(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [_sorted(v) for v in obj]
    return obj


def tool_call_ids(m: dict) -> list[str]:
    return [tc["id"] for tc in m.get("tool_calls") or [] if tc.get("id")]


def last_turn_text(messages: Sequence[dict]) -> str:
    """The last non-assistant message of a prompt (what the step answers)."""
    for m in reversed(messages):
        if m.get("role") in ("user", "tool"):
            return message_text(m)
    return message_text(messages[-1]) if messages else ""
