"""Preference datasets: one pair per record (JSONL, or a JSON array document).

Read shapes:

* ShareGPT (LLaMA-Factory ``dpo_*.json``): ``{"conversations": [{from, value}...],
  "chosen": {from, value}, "rejected": {from, value}, "system"?, "tools"?}``;
* TRL, explicit prompt: ``{"prompt", "chosen", "rejected"}``, each a string (standard)
  or a list of messages (conversational);
* TRL, implicit prompt: ``{"chosen": [...], "rejected": [...]}`` holding the whole
  conversation; the prompt is their common prefix (strings: up to the last
  ``Assistant:`` turn marker they share).

Each record becomes one conversation (``session_id = <key>#L<line>[.<index>]``): a
``meta``/``conversation`` header (the record's other fields, e.g. ``tools``, a score),
the prompt turns, the **chosen** answer as an ordinary assistant turn (so it is a step
whose context is the prompt) and the **rejected** answer as an assistant turn of kind
``rejected`` with the same parent (not a step); its ``extra.chosen_turn_id`` names the
chosen turn. :mod:`assets.pairs.imported` turns these into ``preference_pairs`` rows
(strategy ``imported``). A record missing a part is kept as ``meta``/``unknown`` with
the reason.
"""

from __future__ import annotations

from typing import Any

from assets.traces.formats import _common as shared
from assets.traces.formats.openai_messages import conversation_id

FORMAT = "preference"
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
          "system": "system", "developer": "system", "observation": "tool", "tool": "tool", "function": "tool"}


def _msg(m: Any, default_role: str = "assistant") -> dict | None:
    if isinstance(m, str):
        return {"role": default_role, "content": m}
    if not isinstance(m, dict):
        return None
    role = _ROLES.get(str(m.get("role", m.get("from", default_role))).lower(), default_role)
    out = {"role": role, "content": shared.text_of(m.get("content", m.get("value")))}
    calls = [shared.tool_call(str(c.get("id") or f"call_{k}"), str((c.get("function") or c).get("name") or ""),
                              (c.get("function") or c).get("arguments"))
             for k, c in enumerate(m.get("tool_calls") or []) if isinstance(c, dict)]
    if calls:
        out["tool_calls"] = calls
    return out


def _msgs(v: Any, default_role: str) -> list[dict]:
    if isinstance(v, list):
        return [m for m in (_msg(x, default_role) for x in v) if m is not None]
    m = _msg(v, default_role)
    return [m] if m else []


def _split_record(obj: dict) -> tuple[list[dict], dict | None, dict | None, str]:
    """(prompt messages, chosen answer, rejected answer, dataset shape)."""
    if isinstance(obj.get("conversations"), list):
        prompt = _msgs(obj["conversations"], "user")
        if isinstance(obj.get("system"), str) and obj["system"]:
            prompt.insert(0, {"role": "system", "content": obj["system"]})
        return prompt, _msg(obj.get("chosen")), _msg(obj.get("rejected")), "sharegpt"
    ch, rj = obj.get("chosen"), obj.get("rejected")
    if "prompt" in obj:
        prompt = _msgs(obj["prompt"], "user")
        c, r = _msgs(ch, "assistant"), _msgs(rj, "assistant")
        return prompt, (c[0] if c else None), (r[0] if r else None), "trl_explicit"
    if isinstance(ch, list) and isinstance(rj, list):
        c, r = _msgs(ch, "user"), _msgs(rj, "user")
        k = 0
        while k < min(len(c), len(r)) and c[k] == r[k]:
            k += 1
        ca = next((m for m in c[k:] if m["role"] == "assistant"), None)
        ra = next((m for m in r[k:] if m["role"] == "assistant"), None)
        return c[:k], ca, ra, "trl_implicit"
    if isinstance(ch, str) and isinstance(rj, str):
        k = 0
        while k < min(len(ch), len(rj)) and ch[k] == rj[k]:
            k += 1
        cut = ch.rfind("Assistant:", 0, k)
        if cut < 0:
            return [], None, None, "trl_implicit_text"
        cut += len("Assistant:")
        prompt = [{"role": "user", "content": ch[:cut].strip()}]
        return prompt, {"role": "assistant", "content": ch[cut:].strip()}, \
            {"role": "assistant", "content": rj[cut:].strip()}, "trl_implicit_text"
    return [], None, None, "unknown"


def parse(raw_rows: list[dict], session_key: str) -> list[dict]:
    ids = shared.TurnIds(session_key)
    rows: list[dict] = []
    for line_no, obj, _ in shared.iter_records(raw_rows):
        conv = conversation_id(line_no, obj)
        sid = f"{session_key}#{conv}"
        obj = {k: v for k, v in obj.items() if k != "__index__"}
        prompt, chosen, rejected, shape = _split_record(obj)
        if not prompt or chosen is None or rejected is None:
            rows.append(shared.unknown_row(session_key, FORMAT, ids, line_no,
                                           "not a preference record (needs a prompt, a chosen and a rejected answer)",
                                           obj, session_id=sid))
            continue
        common = dict(session_id=sid, source_lines=[line_no], record_type="preference")
        meta = {k: v for k, v in obj.items() if k not in ("conversations", "prompt", "chosen", "rejected", "system")}
        meta["dataset_format"] = shape
        rows.append(shared.new_turn(session_key, FORMAT, ids.make(f"{conv}:h", line_no), "meta", "conversation",
                                    extra=shared.dumps(meta), **common))
        parent = None
        for i, m in enumerate(prompt):
            role = m["role"]
            if role == "tool":
                role = "user"  # a dataset's observation turns carry no call ids: kept as text
            r = shared.new_turn(session_key, FORMAT, ids.make(f"{conv}:{i}", line_no), role,
                                "message" if role != "assistant" else "context", content=m["content"],
                                tool_calls=shared.dumps(m["tool_calls"]) if m.get("tool_calls") else None,
                                parent_turn_id=parent, **common)
            rows.append(r)
            parent = r["turn_id"]
        c = shared.new_turn(session_key, FORMAT, ids.make(f"{conv}:chosen", line_no), "assistant", "message",
                            content=chosen["content"] or None,
                            tool_calls=shared.dumps(chosen["tool_calls"]) if chosen.get("tool_calls") else None,
                            parent_turn_id=parent, model=obj.get("chosen_model") if isinstance(obj.get("chosen_model"), str)
                            else None, extra=shared.extra_json({"preference": "chosen"}), **common)
        rows.append(c)
        rows.append(shared.new_turn(session_key, FORMAT, ids.make(f"{conv}:rejected", line_no), "assistant", "rejected",
                                    content=rejected["content"] or None,
                                    tool_calls=shared.dumps(rejected["tool_calls"]) if rejected.get("tool_calls") else None,
                                    parent_turn_id=parent,
                                    model=obj.get("rejected_model") if isinstance(obj.get("rejected_model"), str) else None,
                                    extra=shared.extra_json({"preference": "rejected", "chosen_turn_id": c["turn_id"]}), **common))
    return shared.finalize(rows, list(range(len(rows))))
