"""Training sets derived from the traces (SFT, KTO, SDPO), as TRL conversational rows.

All functions are pure: AGENT_STEPS rows (and PREFERENCE_PAIRS rows for KTO) in, table
rows out, JSON columns as JSON strings (the exporter decodes them).

Every label built from a failure follows the failure policy (recipes/failures.yaml,
assets/traces/failures.py): a step whose own call failed is

* a **mistake** → not an SFT example, a ``label: false`` KTO row;
* **informative** (a failing test, a search with no match...) → an ordinary SFT example and
  a desirable KTO row: asking was the right action;
* **external** (timeout, network, interrupt) → neither SFT nor KTO.

SDPO sites (``sdpo_rows``): by default the *recovery* turn — the assistant turn right after
a failed tool result, with the error excerpt as the hint; ``site="failing_turn"`` gives the
hindsight variant (the turn whose own call failed). Hints come from a generator registered
by name (``@register_hint_generator``; default ``"template"``: one template per error
kind). ``final_reward`` follows :func:`session_rewards`.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from assets.traces.failures import EXTERNAL, INFORMATIVE, MISTAKE, FailurePolicy, Verdict, load_failure_policy, step_verdict
from assets.pairs.messages import (
    assistant_message,
    clean_messages,
    clean_tools,
    content_hash,
    dumps,
    flatten_content,
    is_empty,
    loads,
    tool_call_ids,
)
from assets.pairs.strategies import ORIGINAL


def _step_parts(r: Mapping) -> tuple[list[dict], dict, str | None]:
    prompt = clean_messages(loads(r.get("messages"), []))
    answer = assistant_message(loads(r.get("response"), None), r.get("response_text"))
    tools = clean_tools(r.get("tools"))
    return prompt, answer, dumps(tools) if tools else None


def sft_rows(steps: Iterable[Mapping], created_at: dt.datetime | None = None,
             policy: FailurePolicy | None = None) -> tuple[list[dict], Counter]:
    """messages = context + the original assistant turn (with tool calls). Steps whose call
    failed are skipped when the failure is a mistake or external; informative ones stay."""
    policy = policy or load_failure_policy()
    rows, skipped = [], Counter()
    for r in steps:
        v = step_verdict(r, policy)
        if v is not None and v.cls != INFORMATIVE:
            skipped[f"{v.cls} ({v.rule})"] += 1
            continue
        prompt, answer, tools = _step_parts(r)
        if is_empty(answer):
            skipped["empty_response"] += 1
            continue
        if not prompt:
            skipped["no_context"] += 1
            continue
        messages = dumps(prompt + [answer])
        rows.append({
            "example_id": content_hash(r["step_id"], "sft", messages),
            "session_key": r["session_key"], "step_id": r["step_id"],
            "messages": messages, "tools": tools, "source": ORIGINAL, "created_at": created_at,
        })
    return rows, skipped


def kto_rows(steps: Iterable[Mapping], pairs: Iterable[Mapping] = (),
             created_at: dt.datetime | None = None,
             policy: FailurePolicy | None = None) -> tuple[list[dict], Counter]:
    """Desirable: original steps without a failure or with an informative one, and the chosen
    teacher answers of valid preference pairs (``invalid_rule`` null). Undesirable: original
    steps whose failure is a mistake. External failures make no row."""
    policy = policy or load_failure_policy()
    rows: dict[str, dict] = {}
    counts = Counter()

    def add(session_key, step_id, prompt, completion, label, tools, source):
        eid = content_hash(step_id, "kto", completion, label)
        if eid in rows:
            return
        rows[eid] = {"example_id": eid, "session_key": session_key, "step_id": step_id,
                     "prompt": prompt, "completion": completion, "label": label,
                     "tools": tools, "source": source, "created_at": created_at}
        counts["desirable" if label else "undesirable"] += 1

    for r in steps:
        prompt, answer, tools = _step_parts(r)
        if is_empty(answer) or not prompt:
            continue
        v = step_verdict(r, policy)
        if v is not None and v.cls == EXTERNAL:
            counts["skipped: external failure"] += 1
            continue
        add(r["session_key"], r["step_id"], dumps(prompt), dumps([answer]),
            v is None or v.cls != MISTAKE, tools, ORIGINAL)
    for p in pairs:
        if p.get("invalid_rule"):
            continue
        if p.get("chosen_source") and p["chosen_source"] != ORIGINAL:
            add(p["session_key"], p["step_id"], p["prompt"], p["chosen"], True, p.get("tools"),
                p["chosen_source"])
    return list(rows.values()), counts


# ------------------------------------------------------------------ SDPO hints

@dataclass(frozen=True)
class HintInput:
    """What a hint generator sees about one SDPO site."""

    kind: str | None  # error kind of the failed tool result
    error: str | None  # its text (may be None)
    site: str  # recovery | failing_turn
    failure_class: str | None  # mistake | informative | external
    tool: str | None = None  # the tool whose call failed, when known
    max_chars: int = 800


HintGenerator = Callable[[HintInput], str]
HINT_GENERATORS: dict[str, HintGenerator] = {}


def register_hint_generator(name: str):
    """Register ``fn(HintInput) -> str`` under ``name`` (pick it with ``SdpoConfig.hint_generator``)."""
    def deco(fn: HintGenerator) -> HintGenerator:
        HINT_GENERATORS[name] = fn
        return fn
    return deco


def hint_generator(name: str) -> HintGenerator:
    if name not in HINT_GENERATORS:
        raise KeyError(f"unknown hint generator {name!r}; registered: {sorted(HINT_GENERATORS)}")
    return HINT_GENERATORS[name]


def excerpt(error: str | None, max_chars: int = 800) -> str:
    """The error text on one line, cut at ``max_chars`` (its head: where messages start)."""
    err = " ".join((error or "").split())
    return err[:max_chars].rstrip() + "…" if len(err) > max_chars else err


HINT_TEMPLATE = ("Hint: the previous attempt at this step failed with {kind}: {error} "
                 "Do not repeat it; take a different approach.")

# what to do about a failure, per error kind (the recovery turn's hint)
KIND_ADVICE = {
    "edit_mismatch": "The text to replace is not in the file as written; read the file and copy the exact lines.",
    "file_not_read": "The file must be read (again) before it is edited.",
    "file_not_found": "That path does not exist; find the right path (list the directory or search) first.",
    "not_found": "What was asked for does not exist; look up the right name or path first.",
    "invalid_tool_input": "The tool call's arguments were invalid; follow the tool's schema.",
    "tool_unavailable": "That tool does not exist here; use one of the offered tools.",
    "command_not_found": "That command is not installed or misspelled; use an available one.",
    "permission_denied": "That is not permitted here; work within the allowed files and commands.",
    "syntax_error": "There is a syntax error; fix the code or command it points at.",
    "test_failure": "The tests fail; fix what the failure points at rather than the test.",
    "timeout": "The command timed out; run something smaller or faster.",
    "connection_error": "The network call failed; do not rely on it.",
    "network_error": "The network call failed; do not rely on it.",  # the kind's name before connection_error
    "session_closed": "That process or session is gone; start the command again instead of writing to it.",
    "user_rejected": "The user rejected that action; ask or take a different one.",
    "nonzero_exit": "The command failed; read its output before the next step.",
}


def make_hint(kind: str | None, error: str | None, max_chars: int = 800) -> str:
    """The hindsight hint of a failing turn (the turn's own call failed)."""
    err = excerpt(error, max_chars)
    if not err:
        return HINT_TEMPLATE.replace(": {error}", ".").format(kind=kind or "an error")
    return HINT_TEMPLATE.format(kind=kind or "an error", error=err)


@register_hint_generator("template")
def template_hint(h: HintInput) -> str:
    """Default: the failing-turn template, or for a recovery turn the kind's advice + the excerpt."""
    if h.site == "failing_turn":
        return make_hint(h.kind, h.error, h.max_chars)
    advice = KIND_ADVICE.get(h.kind or "", "The last tool call failed; read the error before acting.")
    err = excerpt(h.error, h.max_chars)
    what = f"{h.tool} failed" if h.tool else "The tool call failed"
    return f"Hint: {what} with {h.kind or 'an error'}" + (f": {err}" if err else ".") + f" {advice}"


@register_hint_generator("excerpt")
def excerpt_hint(h: HintInput) -> str:
    """Only the error excerpt, as the design's minimal hint."""
    return f"Hint: {excerpt(h.error, h.max_chars) or h.kind or 'the last tool call failed'}"


def _failure_of(step: Mapping, answer: dict, later: Sequence[Mapping]) -> tuple[str | None, str | None]:
    """(error_kind, error text) of the tool result that ``step``'s call produced.

    Looks at the next steps of the session: the first whose context holds a tool result
    answering one of this step's tool calls (its ``error_text`` when it is the error
    site, else that tool message's text).
    """
    ids = set(tool_call_ids(answer))
    kind = step.get("caused_error_kind")
    for t in later:
        ctx = loads(t.get("messages"), [])
        hit = None
        for m in reversed(ctx[-64:]):
            if isinstance(m, dict) and m.get("role") == "tool" and m.get("tool_call_id") in ids:
                hit = m
                break
        if hit is None and ids:
            continue
        if t.get("is_error_site") and t.get("error_text"):
            return kind or t.get("error_kind"), t["error_text"]
        if hit is not None:
            return kind or t.get("error_kind"), flatten_content(hit.get("content"))
        if t.get("is_error_site"):  # no tool-call ids to match: the next error site
            return kind or t.get("error_kind"), t.get("error_text")
    return kind, None


def _trailing_failure(prompt: list[dict], error_text: str | None) -> tuple[str | None, dict | None]:
    """(tool name, the failed call) of a recovery site: the trailing tool result whose text
    is the step's ``error_text``, and the call it answers."""
    calls: dict[str, dict] = {}
    for m in prompt:
        for tc in m.get("tool_calls") or []:
            if tc.get("id"):
                calls[tc["id"]] = tc
    head = (error_text or "")[:200]
    for m in reversed(prompt):
        if m.get("role") != "tool":
            break
        if head and flatten_content(m.get("content")).startswith(head):
            tc = calls.get(m.get("tool_call_id") or "")
            return (m.get("name") or ((tc or {}).get("function") or {}).get("name")), tc
    return None, None


def _site_verdict(r: Mapping, prompt: list[dict], policy: FailurePolicy) -> tuple[Verdict, str | None]:
    tool, tc = _trailing_failure(prompt, r.get("error_text"))
    args = ((tc or {}).get("function") or {}).get("arguments")
    return policy.classify(r.get("error_kind"), tool, args), tool


def session_rewards(session_steps: Sequence[Mapping], policy: FailurePolicy) -> list[float]:
    """``final_reward`` of each step of one session (steps in order), by this rule:

    * **0.0** when the session ended unresolved: its last main-thread step called a tool
      whose result failed or never came back, or answers a failed tool result (an error site),
      or still calls tools (no final answer);
    * otherwise ``1 / (1 + m)``, ``m`` = the mistakes (failure policy) made from this step to
      the end of the session: 1.0 when the agent recovered without another mistake.
    """
    main = [r for r in session_steps if not r.get("is_sidechain")] or list(session_steps)
    last = main[-1] if main else None
    unresolved = last is None or bool(last.get("caused_error")) or bool(last.get("is_error_site")) \
        or bool(loads(last.get("response"), {}).get("tool_calls"))
    mistakes = [1 if (v := step_verdict(r, policy)) is not None and v.cls == MISTAKE else 0
                for r in session_steps]
    after = [0] * (len(session_steps) + 1)
    for i in range(len(session_steps) - 1, -1, -1):
        after[i] = after[i + 1] + mistakes[i]
    return [0.0 if unresolved else round(1.0 / (1 + after[i]), 4) for i in range(len(session_steps))]


SITES = ("recovery", "failing_turn")


def sdpo_rows(steps: Iterable[Mapping], created_at: dt.datetime | None = None,
              hint_role: str = "user", max_hint_chars: int = 800, *, site: str = "recovery",
              hint_generator_name: str = "template", policy: FailurePolicy | None = None,
              site_classes: Sequence[str] = (MISTAKE, INFORMATIVE)) -> tuple[list[dict], Counter]:
    """SDPO sites with a hint-injected context, as an SDPO collator builds them.

    ``site="recovery"`` (default): one row per assistant turn right after a failed tool result
    (``is_error_site``): ``prompt`` is its context (ending with the failure), ``completion``
    the original recovery turn, ``hint`` the error excerpt (through the hint generator).
    ``site="failing_turn"``: one row per step whose own call failed (hindsight: the hint
    tells the turn what its call will do). Failures whose class is not in ``site_classes``
    make no site. ``hinted_prompt`` = ``prompt`` + the hint message (role ``hint_role``).
    """
    if site not in SITES:
        raise ValueError(f"site must be one of {SITES}, not {site!r}")
    policy = policy or load_failure_policy()
    gen = hint_generator(hint_generator_name)
    by_session: dict[str, list[Mapping]] = defaultdict(list)
    for r in steps:
        by_session[r["session_key"]].append(r)
    rows, counts = [], Counter()
    for session_steps in by_session.values():
        session_steps.sort(key=lambda r: (r.get("step_index") or 0, r["step_id"]))
        rewards = session_rewards(session_steps, policy)
        for i, r in enumerate(session_steps):
            if site == "recovery" and not r.get("is_error_site"):
                continue
            if site == "failing_turn" and not r.get("caused_error"):
                continue
            prompt, answer, tools = _step_parts(r)
            if not prompt or is_empty(answer):
                counts["skipped: no context or empty turn"] += 1
                continue
            if site == "recovery":
                verdict, tool = _site_verdict(r, prompt, policy)
                kind, error = r.get("error_kind"), r.get("error_text")
            else:
                verdict, tool = step_verdict(r, policy), None
                later = [t for t in session_steps[i + 1:]
                         if bool(t.get("is_sidechain")) == bool(r.get("is_sidechain"))][:8]
                kind, error = _failure_of(r, answer, later)
            if verdict.cls not in site_classes:
                counts[f"skipped: {verdict.cls} failure"] += 1
                continue
            hint = gen(HintInput(kind, error, site, verdict.cls, tool, max_hint_chars))
            counts["with_error_text" if error else "kind_only"] += 1
            rows.append({
                "example_id": content_hash(r["step_id"], "sdpo", site, hint),
                "session_key": r["session_key"], "step_id": r["step_id"],
                "trace_id": r.get("session_id") or r["session_key"], "site": site,
                "prompt": dumps(prompt),
                "hinted_prompt": dumps(prompt + [{"role": hint_role, "content": hint}]),
                "completion": dumps([answer]),
                "hint": hint, "hint_generator": hint_generator_name, "error_kind": kind,
                "failure_class": verdict.cls, "final_reward": rewards[i],
                "tools": tools, "created_at": created_at,
            })
    return rows, counts
