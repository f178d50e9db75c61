"""Is a candidate pair worth training on? Rules over plain JSON values (pure).

A ``chosen`` answer must be a valid *action* for the step:

* a structured call of an offered tool whose arguments parse as a JSON object and fit the
  tool's JSON schema, or a substantive text answer;
* never a repeat of the call the context just answered (the prompt's last assistant turn
  called it and its result is right there);
* no tool call left written as text (``<tool_call>...``) — those are parsed into
  ``tool_calls`` before pairs are built; what could not be parsed stays invalid;
* no imitation of a tool's output (``<tool_use_error>...``, ``Exit code 1``) instead of acting.
* a text answer is about the task: it does not hand the assistant a role (``You are a senior
  engineer…``: a system prompt echoed back), and does not loop (a word 3-gram repeated, or
  the same word four times in a row). These catch the typical failures of a small teacher;
  whether a text is about the task at all is the judge's call (assets/pairs/judge.py): a
  word-overlap test dropped real answers to short questions.
* at an error site, a corrected call where a call fixes the mistake: the rejected step's call
  failed on a wrong path, an edit target that is not in the file, invalid arguments, an
  unknown command or a syntax error, and what replaces it is another call, not prose. The
  teacher answered in the failing step's context without seeing the error; a text in place
  of the call stops the agent mid-task (a pair preferring it teaches the student not to act).
  Where saying something is a fix (a permission the agent does not have, an action the user
  rejected: ``ValidityConfig.text_fixes``) a substantive text stays valid; recovery pairs are
  not concerned (the agent's own next turn saw the error).

and an error-site or recovery pair's ``rejected`` must be a *mistake* (assets/traces/failures.py): a
failing test or a search with no match is information the agent asked for, not a thing to
push probability away from.

Each rule has a name; :func:`check_pair` returns the first that fails (``RULES`` order)
with a readable reason. The same function runs in the ``preference_pairs`` asset (its
metadata counts candidates per rule) and in the recipe's ``pair_validity_filter`` op, which
writes every dropped pair to ``gold/pair_rejections`` with the rule.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from resources.tool_text import tool_names_of

# strategies whose rejected answer is the original step whose call failed
REJECTS_THE_FAILED_STEP = ("error_site", "recovery")

RULES = (
    "rejected_not_a_mistake",
    "chosen_tool_call_as_text",
    "chosen_imitates_tool_output",
    "chosen_unknown_tool",
    "chosen_invalid_arguments",
    "chosen_repeats_answered_call",
    "chosen_not_substantive",
    "chosen_role_play",
    "chosen_repetitive",
    "chosen_text_for_a_call_mistake",
    "chosen_same_action_as_rejected",
)

_TOOL_MARKUP = re.compile(r"<tool_call>|</tool_call>|<function=[^>]+>|\[TOOL_CALLS\]|<\|python_tag\|>"
                          r"|<｜tool▁call▁begin｜>|<tool_use>|<invoke name=")
# a model that writes what a tool would answer instead of acting
_TOOL_OUTPUT = re.compile(r"<tool_use_error>|</tool_use_error>|<tool_response>|<tool_result>|<\|tool_output\|>"
                          r"|^\s*(?:Exit code \d+|Error: |The file \S+ has been (?:updated|edited)"
                          r"|File created successfully at: |The user doesn't want to proceed with this tool use)")
# pleasantries with nothing concrete in them (no code, path, name or number)
_PLEASANTRY = re.compile(r"(?i)^\W*(?:i'?m sorry|i apologi[sz]e|sorry|i'?m (?:here|ready|glad|happy|not sure)|"
                         r"i am (?:here|ready|glad|happy)|sure[,!. ]|of course|no (?:issue|problem)|good luck|"
                         r"thanks?\b|thank you|hello|hi\b|you'?re welcome)")
_CONCRETE = re.compile(r"[`/\\(){}\[\]=<>_]|\d|\w\.\w")
_FILLER = re.compile(r"(?i)^(?:ok(?:ay)?|sure|done|yes|no|thanks?(?: you)?|got it|understood|"
                     r"i(?:'ll| will) (?:do that|help|take a look|check)(?: now)?|let me (?:check|look)(?: into it)?)"
                     r"[.!…]*$")


# a text that gives the assistant a role or its instructions (a system prompt echoed back)
_ROLE_PLAY = re.compile(r"(?i)^\W*(?:(?:you are|you're) (?:a|an|the|now)\b|your (?:task|role|job|goal) is\b|"
                        r"as an? (?:ai|assistant|language model)\b|act as\b)")


def repetition(text: str) -> float:
    """How much a text loops: 1 - distinct/total word 3-grams (1.0 for the same word four
    times in a row); 0.0 for texts under eight words."""
    words = text.lower().split()
    if any(len(set(words[i:i + 4])) == 1 for i in range(len(words) - 3)):
        return 1.0
    if len(words) < 8:
        return 0.0
    grams = list(zip(words, words[1:], words[2:]))
    return 1.0 - len(set(grams)) / len(grams)


@dataclass(frozen=True)
class ValidityConfig:
    rules: tuple[str, ...] = RULES  # the rules to apply (a subset of RULES)
    min_text_chars: int = 30  # a text-only chosen answer shorter than this is not substantive
    check_schema: bool = True  # validate arguments against the tool's JSON schema
    max_repetition: float = 0.3  # chosen_repetitive: share of repeated word 3-grams above this
    # chosen_text_for_a_call_mistake: the failure rules (recipes/failures.yaml) after which a text
    # answer can be the better step than a call
    text_fixes: tuple[str, ...] = ("permission_denied", "rejected_by_user")

    def __post_init__(self):
        unknown = set(self.rules) - set(RULES)
        if unknown:
            raise ValueError(f"unknown pair validity rules {sorted(unknown)}; known: {list(RULES)}")


@dataclass(frozen=True)
class Violation:
    rule: str
    reason: str


def _args(tc: Mapping) -> tuple[Any, str | None]:
    raw = (tc.get("function") or {}).get("arguments")
    if raw is None or raw == "":
        return {}, None
    if isinstance(raw, Mapping):
        return dict(raw), None
    try:
        v = json.loads(raw)
    except (TypeError, ValueError) as exc:
        return None, f"arguments are not JSON ({exc.__class__.__name__}: {str(exc)[:80]})"
    if not isinstance(v, dict):
        return None, f"arguments are a JSON {type(v).__name__}, not an object"
    return v, None


def _canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _schemas(tools: Sequence[Mapping] | None) -> dict[str, Mapping]:
    out = {}
    for t in tools or []:
        fn = t.get("function") if isinstance(t.get("function"), Mapping) else t
        if isinstance(fn, Mapping) and isinstance(fn.get("name"), str):
            out[fn["name"]] = fn.get("parameters") or {}
    return out


def schema_errors(args: Mapping, schema: Mapping) -> list[str]:
    """JSON-schema errors of one call's arguments (jsonschema, Draft 2020-12)."""
    if not schema:
        return []
    import jsonschema

    try:
        validator = jsonschema.Draft202012Validator(schema)
        return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"[:160]
                for e in sorted(validator.iter_errors(args), key=lambda e: list(e.absolute_path))][:3]
    except jsonschema.SchemaError:
        return []  # a schema we cannot read is no reason to drop the answer


def last_answered_calls(prompt: Sequence[Mapping]) -> list[str]:
    """Canonical ``name:args`` of the calls of the prompt's last assistant turn whose
    results follow it (the calls the context just answered)."""
    for i in range(len(prompt) - 1, -1, -1):
        m = prompt[i]
        if m.get("role") == "assistant":
            answered = {t.get("tool_call_id") for t in prompt[i + 1:] if t.get("role") == "tool"}
            out = []
            for tc in m.get("tool_calls") or []:
                if tc.get("id") and tc["id"] not in answered:
                    continue
                args, err = _args(tc)
                out.append(f"{(tc.get('function') or {}).get('name')}:{_canon(args) if err is None else ''}")
            return out
        if m.get("role") == "user":
            return []
    return []


def _signature(m: Mapping) -> str:
    calls = []
    for tc in m.get("tool_calls") or []:
        args, err = _args(tc)
        calls.append(f"{(tc.get('function') or {}).get('name')}:{_canon(args) if err is None else ''}")
    if calls:
        return "calls|" + "|".join(calls)
    return "text|" + " ".join((m.get("content") or "").lower().split())


def check_pair(prompt: Sequence[Mapping], chosen: Mapping, rejected: Mapping | None,
               tools: Sequence[Mapping] | None = None, *, strategy: str | None = None,
               rejected_failure: str | None = None,
               config: ValidityConfig = ValidityConfig()) -> Violation | None:
    """The first rule this pair breaks, or None when it is worth training on.

    ``rejected_failure``: for error-site pairs, the class (and rule) of the rejected step's
    failure as ``"<class>:<rule>"`` (assets/traces/failures.py).
    """
    on = set(config.rules)
    if "rejected_not_a_mistake" in on and strategy in REJECTS_THE_FAILED_STEP:
        cls, _, rule = (rejected_failure or "unknown:").partition(":")
        if cls != "mistake":
            return Violation("rejected_not_a_mistake",
                             f"the rejected step's failure is {cls} ({rule or 'no verdict'}), not a mistake")
    content = chosen.get("content") or ""
    calls = [tc for tc in chosen.get("tool_calls") or [] if isinstance(tc, Mapping)]
    if "chosen_tool_call_as_text" in on and _TOOL_MARKUP.search(content):
        m = _TOOL_MARKUP.search(content)
        return Violation("chosen_tool_call_as_text",
                         f"chosen writes a tool call as text ({m.group(0)!r}) that does not parse into a call")
    if "chosen_imitates_tool_output" in on and not calls and _TOOL_OUTPUT.search(content):
        return Violation("chosen_imitates_tool_output",
                         f"chosen writes what a tool would answer ({_TOOL_OUTPUT.search(content).group(0).strip()!r}) "
                         "instead of an action")
    if calls:
        schemas = _schemas(tools)
        offered = set(tool_names_of(tools)) if tools else None
        for tc in calls:
            name = (tc.get("function") or {}).get("name") or ""
            if "chosen_unknown_tool" in on and (not name or (offered is not None and name not in offered)):
                return Violation("chosen_unknown_tool",
                                 f"chosen calls {name!r}, not one of the offered tools "
                                 f"({', '.join(sorted(offered or [])[:8])})")
            args, err = _args(tc)
            if "chosen_invalid_arguments" in on:
                if err:
                    return Violation("chosen_invalid_arguments", f"{name}: {err}")
                if config.check_schema:
                    errs = schema_errors(args, schemas.get(name) or {})
                    if errs:
                        return Violation("chosen_invalid_arguments", f"{name}: " + "; ".join(errs))
        if "chosen_repeats_answered_call" in on:
            just = set(last_answered_calls(prompt))
            for tc in calls:
                args, err = _args(tc)
                sig = f"{(tc.get('function') or {}).get('name')}:{_canon(args) if err is None else ''}"
                if sig in just:
                    return Violation("chosen_repeats_answered_call",
                                     f"chosen repeats {sig[:160]}, the call whose result the context just shows")
    else:
        text = " ".join(content.split())
        if "chosen_not_substantive" in on and (len(text) < config.min_text_chars or _FILLER.match(text)
                or (_PLEASANTRY.match(text) and not _CONCRETE.search(text))):
            return Violation("chosen_not_substantive",
                             f"chosen is {len(text)} characters of text and no tool call "
                             f"(a text answer needs {config.min_text_chars}+ characters of substance)")
        if "chosen_role_play" in on and _ROLE_PLAY.match(text):
            return Violation("chosen_role_play", f"chosen hands the assistant a role or instructions "
                             f"({text[:60]!r}) instead of answering: a system prompt echoed back")
        if "chosen_repetitive" in on and (rep := repetition(text)) > config.max_repetition:
            return Violation("chosen_repetitive", f"chosen loops: {rep:.0%} of its word 3-grams repeat "
                             f"(limit {config.max_repetition:.0%})")
        if "chosen_text_for_a_call_mistake" in on and strategy == "error_site" and rejected is not None \
                and rejected.get("tool_calls"):
            rule = (rejected_failure or "").partition(":")[2]
            if rule not in config.text_fixes:
                return Violation("chosen_text_for_a_call_mistake",
                                 f"the rejected call failed by mistake ({rule or 'no verdict'}) and chosen "
                                 "answers in text, without a corrected call")
    if "chosen_same_action_as_rejected" in on and rejected is not None \
            and _signature(chosen) == _signature(rejected):
        return Violation("chosen_same_action_as_rejected", "chosen and rejected do the same thing")
    return None


def check_row(row: Mapping[str, Any], config: ValidityConfig = ValidityConfig()) -> Violation | None:
    """:func:`check_pair` over a PREFERENCE_PAIRS row (JSON columns)."""
    def load(v, default):
        if v is None or v == "":
            return default
        return json.loads(v) if isinstance(v, str) else v

    chosen = (load(row.get("chosen"), []) or [{}])[0]
    rejected = (load(row.get("rejected"), []) or [None])[0]
    return check_pair(load(row.get("prompt"), []), chosen, rejected, load(row.get("tools"), None),
                      strategy=row.get("strategy"), rejected_failure=row.get("rejected_failure"),
                      config=config)


def count_rules(violations: Iterable[Violation | None]) -> dict[str, int]:
    out = {r: 0 for r in RULES}
    for v in violations:
        if v is not None:
            out[v.rule] += 1
    return out
