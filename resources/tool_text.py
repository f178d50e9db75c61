"""Tool calls a model wrote as text, parsed into structured OpenAI ``tool_calls`` (and, at the
end, structured calls written back as Hermes text for chat templates without a tool field).

Many open models (and servers without a tool parser) answer a tool call as prose in the
message content. Recognized, in this order:

* Hermes / Qwen 2.5: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (one or
  more; a last unclosed tag is read to the end);
* Qwen3-Coder XML: ``<tool_call><function=NAME><parameter=KEY>VALUE</parameter>...</function></tool_call>``
  (and the same ``<function=...>`` block without the outer tag);
* Llama 3.1 custom tools: ``<function=NAME>{...}</function>``; Llama's ``<|python_tag|>{...}``;
* Mistral: ``[TOOL_CALLS] [{"name": ..., "arguments": ...}]`` and ``[TOOL_CALLS]NAME[ARGS]{...}``;
* DeepSeek V3/R1: ``<｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME`` + a JSON block;
* a content that is only a JSON object (or list of them) ``{"name", "arguments"|"parameters"}``,
  bare or in a ```json fence — only when ``NAME`` is one of the offered tools (so a JSON
  answer to a question is not mistaken for a call).

Pure (no I/O); used by the model client on every answer and by the pairs family on
stored answers, so nothing downstream sees a tool call written as text.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["parse_text_tool_calls", "structure_tool_calls", "TEXT_TOOL_FORMATS", "call_name_arguments",
           "hermes_call_text", "message_content", "chat_messages"]

TEXT_TOOL_FORMATS = ("hermes", "qwen_xml", "llama_function", "llama_python_tag", "mistral",
                     "deepseek", "json")

_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|\Z)", re.S)
_XML_FN = re.compile(r"<function=([^>\s]+)>\s*(.*?)\s*(?:</function>|\Z)", re.S)
_XML_PARAM = re.compile(r"<parameter=([^>\s]+)>\n?(.*?)\n?</parameter>", re.S)
_PY_TAG = re.compile(r"<\|python_tag\|>\s*(.*?)\s*(?:<\|eom_id\|>|<\|eot_id\|>|\Z)", re.S)
_MISTRAL = re.compile(r"\[TOOL_CALLS\]\s*(.*)\Z", re.S)
_MISTRAL_V11 = re.compile(r"([A-Za-z0-9_.\-]+)\[ARGS\]\s*(\{.*?\})(?=\s*(?:[A-Za-z0-9_.\-]+\[ARGS\]|\Z))", re.S)
_DEEPSEEK = re.compile(r"<｜tool▁call▁begin｜>\s*(?:function)?\s*<｜tool▁sep｜>\s*([^\n<]+?)\s*\n"
                       r"\s*(?:```(?:json)?\s*)?(\{.*?\})\s*(?:```)?\s*<｜tool▁call▁end｜>", re.S)
_DEEPSEEK_WRAP = re.compile(r"<｜tool▁calls▁begin｜>.*?(?:<｜tool▁calls▁end｜>|\Z)", re.S)
_FENCE = re.compile(r"\A\s*```(?:json|tool_call|tool)?\s*\n?(.*?)\n?```\s*\Z", re.S)


def _decoder_objects(text: str) -> list[Any]:
    """Every top-level JSON value in ``text`` (objects or lists), in order."""
    dec, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        j = min((k for k in (text.find("{", i), text.find("[", i)) if k >= 0), default=-1)
        if j < 0:
            break
        try:
            val, end = dec.raw_decode(text, j)
        except ValueError:
            i = j + 1
            continue
        out.append(val)
        i = end
    return out


def _call_from_obj(obj: Any) -> tuple[str, Any] | None:
    if not isinstance(obj, Mapping):
        return None
    if isinstance(obj.get("function"), Mapping):  # {"type": "function", "function": {...}}
        return _call_from_obj(obj["function"])
    name = obj.get("name") or obj.get("tool_name") or obj.get("tool")
    if not isinstance(name, str) or not name.strip():
        return None
    args = next((obj[k] for k in ("arguments", "parameters", "args", "input") if k in obj), {})
    return name.strip(), args


def _one_or_many(obj: Any) -> list[tuple[str, Any]]:
    items = obj if isinstance(obj, list) else [obj]
    calls = [_call_from_obj(x) for x in items]
    return [c for c in calls if c is not None] if all(c is not None for c in calls) else []


def _xml_params(body: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in _XML_PARAM.findall(body):
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def _parse(text: str, tool_names: frozenset[str] | None) -> tuple[str, str, list[tuple[str, Any]]] | None:
    """(format, remaining prose, [(name, arguments)]) or None when no call is written."""
    if "<tool_call>" in text:
        calls: list[tuple[str, Any]] = []
        fmt = "hermes"
        for body in _HERMES.findall(text):
            m = _XML_FN.search(body)
            if m and not body.lstrip().startswith("{"):
                calls.append((m.group(1).strip(), _xml_params(m.group(2))))
                fmt = "qwen_xml"
                continue
            objs = _decoder_objects(body)
            got = _one_or_many(objs[0]) if objs else []
            if not got:
                return None  # a tag we cannot read: leave the text alone (flagged downstream)
            calls.extend(got)
        prose = _HERMES.sub("", text).strip()
        return (fmt, prose, calls) if calls else None
    if "<function=" in text:
        calls = []
        fmt = "llama_function"
        for name, body in _XML_FN.findall(text):
            if "<parameter=" in body:
                calls.append((name.strip(), _xml_params(body)))
                fmt = "qwen_xml"
                continue
            objs = _decoder_objects(body)
            if not objs or not isinstance(objs[0], Mapping):
                return None
            calls.append((name.strip(), objs[0]))
        return (fmt, _XML_FN.sub("", text).strip(), calls) if calls else None
    m = _PY_TAG.search(text)
    if m:
        objs = _decoder_objects(m.group(1))
        got = _one_or_many(objs[0]) if objs else []
        return ("llama_python_tag", text[:m.start()].strip(), got) if got else None
    m = _MISTRAL.search(text)
    if m:
        body = m.group(1)
        v11 = _MISTRAL_V11.findall(body)
        if v11:
            calls = []
            for name, raw in v11:
                try:
                    calls.append((name, json.loads(raw)))
                except ValueError:
                    return None
            return "mistral", text[:m.start()].strip(), calls
        objs = _decoder_objects(body)
        got = _one_or_many(objs[0]) if objs else []
        return ("mistral", text[:m.start()].strip(), got) if got else None
    if "<｜tool▁call▁begin｜>" in text:
        calls = []
        for name, raw in _DEEPSEEK.findall(text):
            try:
                calls.append((name.strip(), json.loads(raw)))
            except ValueError:
                return None
        return ("deepseek", _DEEPSEEK_WRAP.sub("", text).strip(), calls) if calls else None
    # the whole content is a JSON call (bare or fenced): only for an offered tool
    if tool_names:
        body = text.strip()
        f = _FENCE.match(body)
        if f:
            body = f.group(1).strip()
        if body[:1] in ("{", "["):
            try:
                obj = json.loads(body)
            except ValueError:
                return None
            got = _one_or_many(obj)
            if got and all(n in tool_names for n, _ in got):
                return "json", "", got
    return None


def parse_text_tool_calls(text: str | None, tool_names: Iterable[str] | None = None
                          ) -> tuple[str, list[dict], str | None]:
    """``(prose left, [OpenAI tool call], format)``; no calls → ``(text, [], None)``.

    Arguments are returned as a JSON string (OpenAI's shape); call ids are derived from
    the content (stable across runs).
    """
    if not text:
        return text or "", [], None
    names = frozenset(tool_names) if tool_names is not None else None
    got = _parse(text, names)
    if got is None:
        return text, [], None
    fmt, prose, pairs = got
    calls = []
    for i, (name, args) in enumerate(pairs):
        if isinstance(args, str):
            try:
                json.loads(args)
                arg_text = args
            except ValueError:
                arg_text = json.dumps(args, ensure_ascii=False)  # not JSON: kept, fails validation later
        else:
            arg_text = json.dumps(args, ensure_ascii=False, separators=(",", ":"))
        cid = "call_" + hashlib.sha256(f"{i}\x1f{name}\x1f{arg_text}".encode()).hexdigest()[:16]
        calls.append({"id": cid, "type": "function", "function": {"name": name, "arguments": arg_text}})
    return prose, calls, fmt


def tool_names_of(tools: Any) -> list[str]:
    """Names of OpenAI function schemas (``[{"type": "function", "function": {"name"}}]``)."""
    out = []
    for t in tools or []:
        if isinstance(t, Mapping):
            fn = t.get("function") if isinstance(t.get("function"), Mapping) else t
            if isinstance(fn.get("name"), str):
                out.append(fn["name"])
    return out


def structure_tool_calls(message: Mapping[str, Any], tools: Any = None) -> tuple[dict, str | None]:
    """An assistant message with text-written tool calls moved into ``tool_calls``.

    Returns ``(message, format)``; ``format`` is None when nothing was parsed (the message
    is returned unchanged, as a new dict). A message that already has structured
    ``tool_calls`` is left alone.
    """
    m = dict(message)
    content = m.get("content")
    if m.get("tool_calls") or not isinstance(content, str) or not content.strip():
        return m, None
    prose, calls, fmt = parse_text_tool_calls(content, tool_names_of(tools) if tools else None)
    if not calls:
        return m, None
    m["content"] = prose
    m["tool_calls"] = calls
    return m, fmt


# ----------------------------------------------------------------------------- the other way
# Structured calls written back as Hermes text, for chat templates that have no tool-call
# field (the student's training rows, the verifier's captured sequences): the name first,
# as the tools system line asks and Hermes / Qwen write it.

def call_name_arguments(tc: Any) -> tuple[Any, Any]:
    """(name, arguments) of an OpenAI tool call (or a bare ``{name, arguments}``); arguments
    given as a JSON string are parsed when they parse."""
    fn = tc.get("function", tc) if isinstance(tc, Mapping) else {}
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            pass
    return fn.get("name"), args


def _shorten(value: Any, n: int) -> Any:
    if isinstance(value, str):
        return value[:n]
    if isinstance(value, Mapping):
        return {k: _shorten(v, n) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v, n) for v in value]
    return value


def hermes_call_text(tc: Any, max_value_chars: int | None = None) -> str:
    """One tool call as ``<tool_call>{"name": …, "arguments": {…}}</tool_call>``; string values
    of the arguments longer than ``max_value_chars`` are cut (the JSON stays valid)."""
    name, args = call_name_arguments(tc)
    if max_value_chars is not None:
        args = _shorten(args, max_value_chars)
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": args}, ensure_ascii=False) + "\n</tool_call>"


def message_content(m: Mapping) -> str:
    """A message's content as text (structured content as JSON)."""
    c = m.get("content") or ""
    return c if isinstance(c, str) else json.dumps(c, ensure_ascii=False)


def chat_messages(messages: Iterable[Mapping]) -> list[dict]:
    """{role, content} messages any chat template accepts: tool calls become Hermes text
    after the content (:func:`hermes_call_text`), a ``function`` role becomes ``tool``."""
    out = []
    for m in messages:
        content = message_content(m)
        if m.get("tool_calls"):
            calls = "\n".join(hermes_call_text(tc) for tc in m["tool_calls"])
            content = f"{content}\n{calls}" if content else calls
        out.append({"role": "tool" if m["role"] == "function" else m["role"], "content": content})
    return out
