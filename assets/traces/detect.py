"""Which transcript format a record or a whole JSON document is, from its content only.

Used by the bronze reader (:mod:`assets.traces.raw`) for every file: a JSONL file votes
line by line (:func:`line_format`), a file that is one JSON document (pretty-printed or
not, whatever its extension) is classified as a whole (:func:`document_format`).
Nothing here imports a parser, so the parsers may import the bronze reader.
"""

from __future__ import annotations

from typing import Any

__all__ = ["line_format", "document_format", "DOCUMENT_FORMATS", "CODEX_TYPES", "CC_TYPES"]

CODEX_TYPES = {"session_meta", "turn_context", "response_item", "event_msg", "compacted"}
CODEX_ITEM_TYPES = {
    "message", "reasoning", "function_call", "function_call_output", "custom_tool_call",
    "custom_tool_call_output", "local_shell_call", "web_search_call",
}
CC_TYPES = {
    "user", "assistant", "system", "summary", "file-history-snapshot", "queue-operation",
    "progress", "last-prompt", "attachment", "pr-link", "agent-name", "custom-title",
    "permission-mode", "ai-title",
}
GEMINI_TYPES = {"user", "gemini", "info", "error", "warning"}
OPENHANDS_KEYS = ("action", "observation")

# formats whose file is one JSON document (the parser reads the whole document)
DOCUMENT_FORMATS = {"gemini_cli", "swe_agent", "mini_swe_agent", "openhands", "langfuse", "atif"}


def _is_preference(obj: dict) -> bool:
    return "chosen" in obj and "rejected" in obj and (
        "prompt" in obj or "conversations" in obj or isinstance(obj.get("chosen"), (list, str, dict)))


def _is_gemini_message(obj: dict) -> bool:
    return (obj.get("type") in GEMINI_TYPES and "id" in obj and "content" in obj
            and "uuid" not in obj and "message" not in obj and "payload" not in obj)


def _is_openhands_event(obj: dict) -> bool:
    return isinstance(obj, dict) and "source" in obj and any(k in obj for k in OPENHANDS_KEYS)


def line_format(obj: Any) -> str | None:
    """The format one JSONL record belongs to (None: no vote)."""
    if isinstance(obj, list):
        for item in obj[:5]:
            f = line_format(item)
            if f in ("openai_messages", "sharegpt", "preference"):
                return f
        return None
    if not isinstance(obj, dict):
        return None
    if _is_preference(obj):
        return "preference"
    if isinstance(obj.get("resourceSpans"), list):
        return "otel_genai"
    if isinstance(obj.get("messages"), list):
        msgs = obj["messages"]
        if isinstance(obj.get("projectHash"), str) or any(
                isinstance(m, dict) and m.get("type") == "gemini" for m in msgs[:50]):
            return "gemini_cli"
        tf = obj.get("trajectory_format")
        if isinstance(tf, str) and tf.startswith("mini-swe-agent"):
            return "mini_swe_agent"
        return "openai_messages"
    if isinstance(obj.get("conversations"), list):
        return "sharegpt"
    if isinstance(obj.get("history"), list) and ("instance_id" in obj or "instruction" in obj) and any(
            _is_openhands_event(e) for e in obj["history"][:20]):
        return "openhands"  # a line of an OpenHands evaluation output.jsonl
    if "$set" in obj and len(obj) <= 2:
        return "gemini_cli"
    t = obj.get("type")
    if t in CODEX_TYPES and "payload" in obj:
        return "codex"
    if t in CC_TYPES and ("sessionId" in obj or "uuid" in obj or "message" in obj or "leafUuid" in obj
                          or "messageId" in obj):
        return "claude_code"
    if _is_gemini_message(obj):
        return "gemini_cli"
    if "projectHash" in obj and "sessionId" in obj:  # the header line of a JSONL Gemini session
        return "gemini_cli"
    if ("record_type" in obj) or (t in CODEX_ITEM_TYPES and "message" not in obj):
        return "codex"  # legacy (pre-0.30) rollout lines are bare response items
    if "instructions" in obj and "id" in obj and "timestamp" in obj:
        return "codex"
    return None


def _fenced_bash(text: Any) -> bool:
    return isinstance(text, str) and ("```bash" in text or "```mswea_bash_command" in text or "```sh\n" in text)


def document_format(doc: Any) -> str | None:
    """The format of a whole JSON document (None: not a shape any parser claims)."""
    if isinstance(doc, dict):
        sv = doc.get("schema_version")
        if isinstance(sv, str) and sv.upper().startswith("ATIF") and isinstance(doc.get("steps"), list):
            return "atif"
        if isinstance(doc.get("observations"), list) and isinstance(doc.get("trace"), dict):
            return "langfuse"
        if isinstance(doc.get("resourceSpans"), list):
            return "otel_genai"
        hist = doc.get("history")
        if isinstance(hist, list) and hist:
            if any(_is_openhands_event(e) for e in hist[:20]):
                return "openhands"
            if any(isinstance(e, dict) and "role" in e for e in hist[:20]):
                return "swe_agent"
        if isinstance(doc.get("trajectory"), list) and any(
                isinstance(e, dict) and ("action" in e or "observation" in e) for e in doc["trajectory"][:20]):
            return "swe_agent"
        if isinstance(hist, list) and ("instance_id" in doc or "instruction" in doc):
            return "openhands"
        return line_format(doc)
    if isinstance(doc, list) and doc and all(isinstance(x, dict) for x in doc):
        if all("role" in x and "content" in x for x in doc[:20]) and any(
                x.get("role") == "assistant" and _fenced_bash(x.get("content")) for x in doc):
            return "mini_swe_agent"
        if sum(_is_openhands_event(x) for x in doc[:20]) >= 2:
            return "openhands"
        return line_format(doc)
    return None
