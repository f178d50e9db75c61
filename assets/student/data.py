"""Training and evaluation rows for the student, from the lake's training tables (pure).

Every row is rendered the same way for training and for evaluation:

* tool calls become ``<tool_call>{"name": …, "arguments": {…}}</tool_call>`` text (the name
  first, the form the tools message announces) and tool results ``tool`` turns, so any chat
  template takes them;
* offered tools are announced in a leading system message (name + JSON parameters), because
  small chat templates (SmolLM2's) do not render a ``tools`` argument;
* the context keeps its END within ``max_prompt_tokens`` (the question or the tool output the
  answer reacts to), the answer keeps its START within ``max_answer_tokens``; an answer that
  calls tools keeps every call whole (name, valid JSON arguments, closing tag): its prose is
  cut first, then long string argument values are shortened.

``mined_pairs`` builds preference pairs when the lake holds too few: for a step, the answer
given in that context (chosen) against the answer of another step of the same split
(rejected, a context mismatch). They are labelled ``mined:context_mismatch`` wherever used.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from assets.pairs.strategies import ORIGINAL, RECOVERY
from resources.tool_text import call_name_arguments, chat_messages, hermes_call_text, message_content


Tokens = Callable[[str], int]  # text → token count


@dataclass(frozen=True)
class RenderSettings:
    max_prompt_tokens: int = 64
    max_answer_tokens: int = 64
    max_tool_chars: int = 600  # the tools system message


def _loads(v: Any, default: Any = None) -> Any:
    if v is None:
        return default
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return default
    return v


def tools_message(tools: Any, max_chars: int = 600) -> dict | None:
    tools = _loads(tools, None)
    if not tools:
        return None
    parts = []
    for t in tools:
        fn = t.get("function", t) if isinstance(t, Mapping) else {}
        name = fn.get("name")
        if not name:
            continue
        props = sorted(((fn.get("parameters") or {}).get("properties") or {}).keys())
        parts.append(f"{name}({', '.join(props)})")
    if not parts:
        return None
    text = ("Tools you can call: " + "; ".join(parts))[:max_chars]
    text += '\nTo call a tool answer <tool_call>{"name": ..., "arguments": {...}}</tool_call>.'
    return {"role": "system", "content": text}


def tool_names(tools: Any) -> set[str]:
    out = set()
    for t in _loads(tools, None) or []:
        fn = t.get("function", t) if isinstance(t, Mapping) else {}
        if fn.get("name"):
            out.add(fn["name"])
    return out


def _longest_string(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return max((_longest_string(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((_longest_string(v) for v in value), default=0)
    return 0


def _cut_tail(text: str, n_tokens: int, count: Tokens) -> str:
    """The end of ``text`` holding about ``n_tokens`` tokens."""
    if count(text) <= n_tokens:
        return text
    lo, hi = 0, len(text)  # smallest start whose tail fits
    while lo < hi:
        mid = (lo + hi) // 2
        if count(text[mid:]) <= n_tokens:
            hi = mid
        else:
            lo = mid + 1
    return text[lo:]


def _cut_head(text: str, n_tokens: int, count: Tokens) -> str:
    if count(text) <= n_tokens:
        return text
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(text[:mid]) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip()


def fit_prompt(messages: Sequence[Mapping], tools: Any, count: Tokens, s: RenderSettings) -> list[dict]:
    """Rendered context: the tools message, then the last turns within the token budget."""
    msgs = [m for m in chat_messages(messages) if m["role"] != "assistant" or m["content"]]
    head = tools_message(tools, s.max_tool_chars)
    budget = s.max_prompt_tokens - (count(head["content"]) + 4 if head else 0)
    kept: list[dict] = []
    for m in reversed(msgs):
        if m["role"] == "system":
            continue  # long agent system prompts would eat the budget; the tools message stays
        need = count(m["content"]) + 4
        if need <= budget:
            kept.append(m)
            budget -= need
            continue
        if budget > 16:
            kept.append({"role": m["role"], "content": _cut_tail(m["content"], budget - 4, count)})
        break
    kept.reverse()
    while kept and kept[0]["role"] == "assistant":  # a context starts with a user/tool turn
        kept.pop(0)
    if not kept and msgs:
        last = [m for m in msgs if m["role"] != "system"][-1:]
        kept = [{"role": m["role"], "content": _cut_tail(m["content"], max(8, budget - 4), count)} for m in last]
    return ([head] if head else []) + kept


def fit_answer(message: Mapping, count: Tokens, s: RenderSettings) -> list[dict]:
    """The answer within ``max_answer_tokens``: its start, except that tool calls stay whole
    (see the module doc); only when even the first call with empty strings does not fit is
    the text cut like prose."""
    text = chat_messages([message])[0]["content"]
    calls = list(message.get("tool_calls") or [])
    budget = s.max_answer_tokens
    if count(text) <= budget or not calls:
        return [{"role": "assistant", "content": _cut_head(text, budget, count)}]
    prose = message_content(message).strip()

    def calls_text(n: int | None, k: int) -> str:
        return "\n".join(hermes_call_text(tc, n) for tc in calls[:k])

    k = len(calls)  # calls that fit at all (with every string value emptied)
    while k > 1 and count(calls_text(0, k)) > budget:
        k -= 1
    if count(calls_text(0, k)) > budget:
        return [{"role": "assistant", "content": _cut_head(text, budget, count)}]
    room = budget - min(count(prose), budget // 4) - (1 if prose else 0)  # some prose stays
    lo, hi = 0, max(_longest_string(call_name_arguments(tc)[1]) for tc in calls[:k])
    while lo < hi:  # the longest string values that still fit
        mid = (lo + hi + 1) // 2
        if count(calls_text(mid, k)) <= room:
            lo = mid
        else:
            hi = mid - 1
    body = calls_text(lo, k)
    left = budget - count(body) - 1
    head = _cut_head(prose, left, count) if prose and left > 0 else ""
    return [{"role": "assistant", "content": f"{head}\n{body}" if head else body}]


def _answer_text(answers: Sequence[Mapping]) -> str:
    return "".join(a.get("content") or "" for a in answers)


def sft_example(row: Mapping, count: Tokens, s: RenderSettings) -> dict | None:
    """sft_examples row → {"prompt", "completion", ...} (TRL conversational prompt-completion)."""
    msgs = _loads(row.get("messages"), [])
    if not msgs or msgs[-1].get("role") != "assistant":
        return None
    prompt = fit_prompt(msgs[:-1], row.get("tools"), count, s)
    completion = fit_answer(msgs[-1], count, s)
    if not prompt or not _answer_text(completion).strip():
        return None
    return {"id": row.get("example_id"), "session_key": row.get("session_key"), "step_id": row.get("step_id"),
            "prompt": prompt, "completion": completion, "tools": row.get("tools"),
            "has_tool_call": bool(msgs[-1].get("tool_calls"))}


def pair_example(row: Mapping, count: Tokens, s: RenderSettings, source: str = "normalized_pairs") -> dict | None:
    """normalized_pairs row → {"prompt", "chosen", "rejected"} (TRL conversational preference)."""
    prompt_msgs = _loads(row.get("prompt"), [])
    chosen, rejected = _loads(row.get("chosen"), []), _loads(row.get("rejected"), [])
    if not prompt_msgs or not chosen or not rejected:
        return None
    out = {"id": row.get("pair_id"), "session_key": row.get("session_key"), "step_id": row.get("step_id"),
           "prompt": fit_prompt(prompt_msgs, row.get("tools"), count, s),
           "chosen": fit_answer(chosen[-1], count, s), "rejected": fit_answer(rejected[-1], count, s),
           "tools": row.get("tools"), "pair_source": source, "chosen_source": row.get("chosen_source")}
    if _answer_text(out["chosen"]) == _answer_text(out["rejected"]) or not _answer_text(out["chosen"]).strip():
        return None
    return out


def kto_example(row: Mapping, count: Tokens, s: RenderSettings) -> dict | None:
    prompt_msgs, completion = _loads(row.get("prompt"), []), _loads(row.get("completion"), [])
    if not prompt_msgs or not completion:
        return None
    out = {"id": row.get("example_id"), "session_key": row.get("session_key"),
           "prompt": fit_prompt(prompt_msgs, row.get("tools"), count, s),
           "completion": fit_answer(completion[-1], count, s), "label": bool(row.get("label"))}
    return out if _answer_text(out["completion"]).strip() else None


MINED = "mined:"  # pair_source prefix of pairs mined here (not the lake's own)


def is_mined(pair: Mapping) -> bool:
    """A pair :func:`mined_pairs` made (not one of the lake's preference pairs)."""
    return str(pair.get("pair_source", "")).startswith(MINED)


def pair_kind(pair: Mapping) -> str:
    """What the chosen side of a pair is: ``recovery`` (the agent's own next action after the
    mistake), ``teacher`` (a teacher's answer), ``original`` (the step's own answer) or
    ``mined`` (a context-mismatch pair of :func:`mined_pairs`)."""
    if is_mined(pair):
        return "mined"
    src = pair.get("chosen_source") or ORIGINAL
    return src if src in (RECOVERY, ORIGINAL) else "teacher"


def mined_pairs(examples: Sequence[Mapping], limit: int | None = None) -> list[dict]:
    """Context-mismatch pairs from prompt-completion examples (see the module doc).

    For each example (in a deterministic order), the rejected answer is the answer of the next
    example in that order whose text differs. Deterministic; never crosses the given rows."""
    ex = sorted((e for e in examples if _answer_text(e["completion"]).strip()),
                key=lambda e: hashlib.sha256(str(e.get("id")).encode()).hexdigest())
    out = []
    for i, e in enumerate(ex):
        for j in range(1, len(ex)):
            other = ex[(i + j) % len(ex)]
            if _answer_text(other["completion"]) != _answer_text(e["completion"]):
                out.append({"id": f"mined:{e.get('id')}:{other.get('id')}", "session_key": e.get("session_key"),
                            "step_id": e.get("step_id"), "prompt": e["prompt"], "chosen": e["completion"],
                            "rejected": other["completion"], "tools": e.get("tools"),
                            "pair_source": MINED + "context_mismatch"})
                break
        if limit is not None and len(out) >= limit:
            break
    return out


def build_rows(rows: Iterable[Mapping], fn, count: Tokens, s: RenderSettings, **kw) -> tuple[list[dict], int]:
    out, dropped = [], 0
    for r in rows:
        e = fn(r, count, s, **kw)
        if e is None:
            dropped += 1
        else:
            out.append(e)
    return out, dropped


def token_counter(tokenizer) -> Tokens:
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return count
