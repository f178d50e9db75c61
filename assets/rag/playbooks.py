"""Playbook derivation (pure): traces, accepted training data and accepted rag runs → playbooks.

A playbook says what was done for a task: the steps, the tools and commands used, the
files edited and the outcome, with a success score and a label (accepted /
partially_accepted / rejected) from outcome signals:

- unresolved tool errors: an error of a tool that no later successful call of the same
  tool follows (a failing ``pytest`` fixed by a later passing run is resolved);
- teacher agreement: of the source's steps the pair builder judged, the share where the
  original answer was the chosen one;
- whether the session ends with an outcome (a final assistant message).
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from assets.rag.bundle import extract_validation_steps
from assets.rag.retrieval import playbook_text
from assets.rag.text import clip, normalize_task, sha

EDIT_TOOLS = {"edit", "write", "multiedit", "notebookedit", "str_replace_based_edit_tool",
              "str_replace_editor", "apply_patch", "write_file", "edit_file", "create_file"}
SHELL_TOOLS = {"bash", "shell", "exec_command", "local_shell", "run_shell_command", "terminal"}
TEST_CMD_RE = re.compile(r"\b(pytest|py\.test|unittest|tox|nox|npm (?:run )?test|yarn test|pnpm test|"
                         r"cargo (?:test|check|clippy)|go (?:test|vet)|make (?:test|check)|ruff|mypy|"
                         r"eslint|tsc|jest|vitest|dg check|gradle test|mvn test)\b")
PATCH_FILE_RE = re.compile(r"^\*\*\* (?:Add|Update|Delete) File: (.+)$", re.MULTILINE)
_TAG_RE = re.compile(r"<[^>]{1,80}>")

ACCEPT_AT = 0.75
REJECT_BELOW = 0.4
MAX_STEP_LINES = 24


# ------------------------------------------------------------------ scoring
def score_outcome(*, n_errors: int, n_unresolved: int, has_outcome: bool,
                  teacher_agreement: float | None, base: float = 1.0) -> tuple[float, str, list[str]]:
    """(success score in [0, 1], label, reasons)."""
    reasons: list[str] = []
    s = base
    if n_unresolved:
        s -= 0.35 * n_unresolved
        reasons.append(f"unresolved_tool_errors={n_unresolved}")
    resolved = max(0, n_errors - n_unresolved)
    if resolved:
        s -= 0.05 * min(resolved, 4)
        reasons.append(f"resolved_tool_errors={resolved}")
    if not has_outcome:
        s -= 0.2
        reasons.append("no_final_answer")
    s = max(0.0, min(1.0, s))
    if teacher_agreement is not None:
        s = 0.7 * s + 0.3 * float(teacher_agreement)
        reasons.append(f"teacher_agreement={teacher_agreement:.2f}")
    s = round(s, 4)
    if s >= ACCEPT_AT and n_unresolved == 0:
        label = "accepted"
    elif s < REJECT_BELOW:
        label = "rejected"
    else:
        label = "partially_accepted"
    return s, label, reasons


# ------------------------------------------------------------------ tool calls
def _loads(v: Any) -> Any:
    if isinstance(v, (dict, list)) or v is None:
        return v
    try:
        return json.loads(v)
    except (TypeError, ValueError):
        return v


def parse_tool_calls(raw: Any) -> list[dict]:
    """OpenAI tool_calls (JSON string or list) → [{id, name, args}]."""
    calls = _loads(raw)
    if not isinstance(calls, list):
        return []
    out = []
    for c in calls:
        if not isinstance(c, Mapping):
            continue
        fn = c.get("function") if isinstance(c.get("function"), Mapping) else c
        args = _loads(fn.get("arguments", fn.get("input")))
        out.append({"id": c.get("id"), "name": str(fn.get("name") or "?"),
                    "args": args if isinstance(args, Mapping) else {"input": args}})
    return out


def describe_call(name: str, args: Mapping[str, Any]) -> tuple[str, str | None, list[str]]:
    """(step description, shell command or None, files edited)."""
    low = name.lower()
    cmd = args.get("command", args.get("cmd"))
    if isinstance(cmd, list):
        cmd = " ".join(str(x) for x in cmd)
        if cmd.startswith(("bash -lc ", "bash -c ", "sh -c ")):
            cmd = cmd.split(" ", 2)[2]
    files: list[str] = []
    if low in EDIT_TOOLS or "edit" in low or low.startswith("write"):
        for k in ("file_path", "path", "notebook_path", "filename"):
            if isinstance(args.get(k), str):
                files.append(args[k])
        patch = args.get("input") or args.get("patch")
        if isinstance(patch, str):
            files += PATCH_FILE_RE.findall(patch)
        if files:
            return f"Edited {', '.join(files)} ({name})", None, files
    if isinstance(cmd, str) and cmd.strip() and (low in SHELL_TOOLS or "command" in args or "cmd" in args):
        cmd = " ".join(cmd.split())
        return f"Ran `{clip(cmd, 200)}`", cmd, []
    target = next((args[k] for k in ("file_path", "path", "pattern", "query", "url", "description")
                   if isinstance(args.get(k), str)), None)
    if target is None and args:
        target = json.dumps(dict(args), ensure_ascii=False, sort_keys=True, default=str)
    return (f"{name} {clip(target, 120)}" if target else name), None, []


_WRAPPERS = {"sudo", "time", "env", "nohup", "exec"}
_RUNNERS = {"uv", "poetry", "pipenv", "pdm", "hatch", "rye"}


def program_key(cmd: str | None) -> str:
    """What a shell command runs, for matching a failure with a later success:
    ``cd x && pytest -q a`` → "pytest"; ``python -m pytest`` → "python -m pytest";
    ``uv run pytest`` → "pytest"."""
    if not cmd:
        return ""
    segs = [s.strip() for s in re.split(r"&&|\|\||;", cmd) if s.strip()]
    segs = [s for s in segs if not s.startswith(("cd ", "export ", "source ", ". "))] or segs
    toks = segs[-1].split("|")[0].split() if segs else []  # a pipeline runs its first program
    while toks and ("=" in toks[0] and not toks[0].startswith("-") or toks[0] in _WRAPPERS):
        toks = toks[1:]
    if len(toks) >= 2 and toks[0] in _RUNNERS and toks[1] == "run":
        toks = toks[2:]
    if not toks:
        return ""
    prog = toks[0].rsplit("/", 1)[-1]
    if prog.startswith("python") and len(toks) >= 3 and toks[1] == "-m":
        return f"python -m {toks[2]}"
    return prog


def _clean_user_text(text: str | None) -> str:
    t = _TAG_RE.sub(" ", text or "")
    return normalize_task(t)


def is_task_turn(t: Mapping[str, Any]) -> bool:
    if t.get("role") != "user" or t.get("is_sidechain") or t.get("is_compact_summary"):
        return False
    if t.get("kind") not in (None, "message"):
        return False
    raw = t.get("content") or ""
    if "<command-name>" in raw or "<local-command-stdout>" in raw:  # /compact, /clear ... and their output
        return False
    text = _clean_user_text(raw)
    return len(text) >= 3 and not text.lower().startswith("caveat:")


# ------------------------------------------------------------------ traces
@dataclass
class DeriveStats:
    sessions: int = 0
    playbooks: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)


def teacher_agreement_by_session(pairs: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Per session: share of judged steps where the original answer was chosen."""
    yes: Counter = Counter()
    total: Counter = Counter()
    for p in pairs:
        key = p.get("session_key")
        if p.get("chosen_source") == "original":
            yes[key] += 1
            total[key] += 1
        elif p.get("rejected_source") == "original":
            total[key] += 1
    return {k: yes[k] / n for k, n in total.items() if n}


def derive_trace_playbook(session_key: str, turns: Sequence[Mapping[str, Any]],
                          step_ids: Sequence[str] = (), teacher_agreement: float | None = None,
                          now=None) -> dict | None:
    """One playbook for a session: its first user request and what was done about it."""
    turns = sorted(turns, key=lambda t: (t.get("turn_index") or 0))
    task_turn = next((t for t in turns if is_task_turn(t)), None)
    if task_turn is None:
        return None
    task = clip(_clean_user_text(task_turn.get("content")), 2000)
    call_names: dict[str, str] = {}
    call_cmds: dict[str, str] = {}
    steps: list[str] = []
    tools: Counter = Counter()
    commands: list[str] = []
    files: list[str] = []
    events: list[tuple[str, bool, str | None]] = []  # (tool, ok, command) in order
    error_notes: list[str] = []
    assistant_texts: list[str] = []
    final_text = ""
    for t in turns:
        role = t.get("role")
        if role == "assistant":
            text = (t.get("content") or "").strip()
            if text:
                assistant_texts.append(text)
                if not t.get("is_sidechain"):
                    final_text = text
            for c in parse_tool_calls(t.get("tool_calls")):
                tools[c["name"]] += 1
                desc, cmd, edited = describe_call(c["name"], c["args"])
                if c["id"]:
                    call_names[c["id"]] = c["name"]
                    if cmd:
                        call_cmds[c["id"]] = cmd
                if cmd:
                    commands.append(cmd)
                for f in edited:
                    if f not in files:
                        files.append(f)
                steps.append(desc)
        elif role == "tool" or t.get("kind") == "tool_result":
            cid = t.get("tool_call_id")
            name = t.get("tool_name") or call_names.get(cid) or "?"
            ok = not bool(t.get("tool_error"))
            cmd = call_cmds.get(cid)
            # a shell tool's "same tool" is the same program (a failing pytest is not fixed by `ls`)
            key = f"{name}:{program_key(cmd)}" if cmd else name
            events.append((key, ok, cmd))
            if not ok:
                kind = t.get("error_kind") or "error"
                note = f"{name}{' `' + clip(cmd, 80) + '`' if cmd else ''} failed ({kind}): {clip(' '.join((t.get('content') or '').split()), 160)}"
                error_notes.append(note)
                if steps:
                    steps[-1] += f" → failed ({kind})"
    n_errors = sum(1 for _, ok, _ in events if not ok)
    unresolved = [i for i, (name, ok, _) in enumerate(events)
                  if not ok and not any(n2 == name and ok2 for n2, ok2, _ in events[i + 1:])]
    has_outcome = bool(final_text)
    score, label, reasons = score_outcome(n_errors=n_errors, n_unresolved=len(unresolved),
                                          has_outcome=has_outcome, teacher_agreement=teacher_agreement)
    # checklist: checks the session ran successfully, then checks its own messages state
    validation: list[str] = []
    for name, ok, cmd in events:
        if ok and cmd and TEST_CMD_RE.search(cmd):
            line = f"Verify: `{clip(cmd, 160)}` passes"
            if line not in validation:
                validation.append(line)
    for text in assistant_texts:
        for s in extract_validation_steps(text):
            if s not in validation:
                validation.append(s)
    validation = validation[:10]
    lines = ["Steps:"]
    shown = steps[:MAX_STEP_LINES]
    lines += [f"{i}. {s}" for i, s in enumerate(shown, 1)]
    if len(steps) > len(shown):
        lines.append(f"… {len(steps) - len(shown)} more steps")
    if not steps:
        lines.append("(answered without tools)")
    if tools:
        lines.append("Tools: " + ", ".join(f"{n} ×{c}" for n, c in tools.most_common()))
    if files:
        lines.append("Files edited: " + ", ".join(files[:20]))
    if n_errors:
        lines.append(f"Errors: {n_errors} tool error(s), {len(unresolved)} unresolved")
        lines += [f"- {e}" for e in error_notes[:4]]
    lines.append("Outcome: " + (clip(final_text, 600) if has_outcome else "(no final answer)"))
    lines += [v for v in validation if v not in final_text]
    content = "\n".join(lines)
    tags = sorted({n.lower() for n in tools} | {_ext_tag(f) for f in files if _ext_tag(f)}
                  | {t.get("source_format") for t in turns[:1] if t.get("source_format")})
    if n_errors:
        tags.append("unresolved-errors" if unresolved else "errors-resolved")
    return _record(
        source_kind="trace", title=clip(task.splitlines()[0] if task else session_key, 80), task=task,
        content=content, tags=tags, session_key=session_key,
        source_step_ids=list(step_ids) or [t["turn_id"] for t in turns if t.get("role") == "assistant"][:200],
        tools=sorted(tools), commands=commands[:50], files_edited=files[:50], validation_steps=validation,
        n_steps=len(steps), n_tool_errors=n_errors, n_unresolved_errors=len(unresolved),
        teacher_agreement=teacher_agreement, success_score=score, label=label, label_reasons=reasons, now=now,
    )


def _ext_tag(path: str) -> str | None:
    m = re.search(r"\.([A-Za-z0-9]{1,6})$", path or "")
    return m.group(1).lower() if m else None


def derive_from_traces(turns: Iterable[Mapping[str, Any]], steps: Iterable[Mapping[str, Any]] = (),
                       pairs: Iterable[Mapping[str, Any]] = (), stats: DeriveStats | None = None,
                       now=None) -> list[dict]:
    by_session: dict[str, list] = defaultdict(list)
    for t in turns:
        by_session[t["session_key"]].append(t)
    step_ids: dict[str, list[str]] = defaultdict(list)
    for s in sorted(steps, key=lambda s: (s.get("session_key"), s.get("step_index") or 0)):
        step_ids[s["session_key"]].append(s["step_id"])
    agreement = teacher_agreement_by_session(pairs)
    out = []
    for key in sorted(by_session):
        if stats:
            stats.sessions += 1
        pb = derive_trace_playbook(key, by_session[key], step_ids.get(key, ()), agreement.get(key), now=now)
        if pb is None:
            if stats:
                stats.dropped["trace:no_user_task"] += 1
            continue
        out.append(pb)
    return out


# ------------------------------------------------------------------ accepted training data
def _messages(v: Any) -> list[dict]:
    m = _loads(v)
    return [x for x in m if isinstance(x, Mapping)] if isinstance(m, list) else []


def _first_user(messages: Sequence[Mapping[str, Any]]) -> str:
    for m in messages:
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):  # content parts
                c = " ".join(p.get("text", "") for p in c if isinstance(p, Mapping))
            text = _clean_user_text(c)
            if len(text) >= 3:
                return clip(text, 2000)
    return ""


def _render_answer(msgs: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str], list[str], list[str]]:
    """(lines, tools, commands, files) of assistant messages."""
    lines, tools, cmds, files = [], [], [], []
    for m in msgs:
        text = m.get("content")
        if isinstance(text, list):
            text = " ".join(p.get("text", "") for p in text if isinstance(p, Mapping))
        if text and str(text).strip():
            lines.append(clip(str(text).strip(), 500))
        for c in parse_tool_calls(m.get("tool_calls")):
            desc, cmd, edited = describe_call(c["name"], c["args"])
            lines.append(f"- {desc}")
            tools.append(c["name"])
            if cmd:
                cmds.append(cmd)
            files += [f for f in edited if f not in files]
    return lines, tools, cmds, files


def derive_from_training(sft: Iterable[Mapping[str, Any]] = (), pairs: Iterable[Mapping[str, Any]] = (),
                         stats: DeriveStats | None = None, now=None) -> list[dict]:
    """Accepted SFT rows and pair answers, one playbook per (session, task, kind).

    Chosen answers of preference pairs and SFT rows are accepted behaviour; rejected pair
    answers become partially_accepted failure patterns (shown as what to avoid).
    """
    groups: dict[tuple, dict] = {}

    def add(kind: str, session_key: str, task: str, step_id: str | None, answer: list[dict],
            score: float | None, agreement: float | None):
        g = groups.setdefault((kind, session_key, task), {"steps": [], "answers": [], "scores": [],
                                                          "agreement": agreement})
        if step_id and step_id not in g["steps"]:
            g["steps"].append(step_id)
        g["answers"].append(answer)
        if score is not None:
            g["scores"].append(float(score))

    agreement = teacher_agreement_by_session(pairs) if pairs else {}
    for r in sft:
        msgs = _messages(r.get("messages"))
        task = _first_user(msgs)
        if not task or not msgs or msgs[-1].get("role") != "assistant":
            if stats:
                stats.dropped["sft:no_task_or_answer"] += 1
            continue
        add("sft", r.get("session_key") or "", task, r.get("step_id"), [msgs[-1]], None,
            agreement.get(r.get("session_key")))
    for p in pairs:
        task = _first_user(_messages(p.get("prompt")))
        if not task:
            if stats:
                stats.dropped["pair:no_task"] += 1
            continue
        ag = agreement.get(p.get("session_key"))
        add("pair_chosen", p.get("session_key") or "", task, p.get("step_id"), _messages(p.get("chosen")),
            p.get("score_chosen"), ag)
        add("pair_rejected", p.get("session_key") or "", task, p.get("step_id"), _messages(p.get("rejected")),
            p.get("score_rejected"), ag)
    out = []
    for (kind, session_key, task), g in sorted(groups.items(), key=lambda kv: kv[0]):
        lines, tools, cmds, files = [], [], [], []
        for i, ans in enumerate(g["answers"][:8], 1):
            l, t, c, f = _render_answer(ans)
            if l:
                lines.append(f"Step {i}:")
                lines += l
            tools += t
            cmds += c
            files += [x for x in f if x not in files]
        if not lines:
            if stats:
                stats.dropped[f"{kind}:empty_answer"] += 1
            continue
        content = "\n".join(lines)
        validation = [s for s in extract_validation_steps(content)][:10]
        scores = [s for s in g["scores"] if 0.0 <= s <= 1.0]
        if kind == "pair_rejected":
            score, label, reasons = 0.5, "partially_accepted", ["rejected_answer_of_preference_pair"]
            title = "Avoid: " + clip(task.splitlines()[0], 72)
            content = "What was rejected:\n" + content
        else:
            base = sum(scores) / len(scores) if scores else 0.9
            score, label, reasons = score_outcome(n_errors=0, n_unresolved=0, has_outcome=True,
                                                  teacher_agreement=g["agreement"], base=max(base, 0.0))
            reasons.insert(0, "accepted_training_data")
            title = clip(task.splitlines()[0], 80)
        out.append(_record(
            source_kind=kind, title=title, task=task, content=content,
            tags=sorted({x.lower() for x in tools} | {kind}), session_key=session_key or None,
            source_step_ids=g["steps"], tools=sorted(set(tools)), commands=cmds[:50], files_edited=files[:50],
            validation_steps=validation, n_steps=len(g["answers"]), n_tool_errors=0, n_unresolved_errors=0,
            teacher_agreement=g["agreement"], success_score=score, label=label, label_reasons=reasons, now=now,
        ))
    return out


# ------------------------------------------------------------------ mined from rag runs
MINED_SCORE = 0.8
MINED_ESCALATED_SCORE = 0.85


def derive_from_runs(runs: Iterable[Mapping[str, Any]], stats: DeriveStats | None = None, now=None) -> list[dict]:
    """Accepted rag runs (the gate passed) → mined playbooks; the latest run per task wins."""
    latest: dict[str, Mapping[str, Any]] = {}
    for r in runs:
        if not r.get("gate_passed") or not (r.get("response") or "").strip():
            continue
        key = r.get("task_hash") or normalize_task(r.get("task") or "")
        prev = latest.get(key)
        if prev is None or (r.get("created_at"), r.get("run_id")) > (prev.get("created_at"), prev.get("run_id")):
            latest[key] = r
    out = []
    for key in sorted(latest):
        r = latest[key]
        task = normalize_task(r["task"])
        content = (r.get("response") or "").strip()
        validation = extract_validation_steps(content)[:10]
        escalated = bool(r.get("escalated"))
        out.append(_record(
            source_kind="mined", title="Answered: " + clip(task.splitlines()[0] if task else "", 70), task=task,
            content=content, tags=sorted({"mined", "escalated" if escalated else "local", str(r.get("model_used"))}),
            session_key=None, source_step_ids=[], source_run_id=r.get("run_id"), tools=[], commands=[],
            files_edited=[], validation_steps=validation, n_steps=0, n_tool_errors=0, n_unresolved_errors=0,
            teacher_agreement=None, success_score=MINED_ESCALATED_SCORE if escalated else MINED_SCORE,
            label="accepted", label_reasons=["rag_run_passed_gate"] + (["escalated"] if escalated else []),
            mined=True, now=now,
        ))
    return out


# ------------------------------------------------------------------ records
def _record(*, source_kind: str, title: str, task: str, content: str, mined: bool = False,
            source_run_id: str | None = None, now=None, **kw) -> dict:
    rec = {"title": title or "(untitled)", "task": task, "content": content, "source_kind": source_kind,
           "source_run_id": source_run_id, "mined": mined, "created_at": now, **kw}
    rec["content_hash"] = sha(playbook_text(rec), n=24)
    rec["playbook_id"] = "pb_" + sha(source_kind, kw.get("session_key") or source_run_id or "", task, content)
    rec["embedding"] = None
    rec["embedding_model"] = None
    return rec


def derive_playbooks(*, turns: Iterable[Mapping[str, Any]] = (), steps: Iterable[Mapping[str, Any]] = (),
                     pairs: Iterable[Mapping[str, Any]] = (), sft: Iterable[Mapping[str, Any]] = (),
                     runs: Iterable[Mapping[str, Any]] = (), now=None,
                     stats: DeriveStats | None = None) -> list[dict]:
    """All playbooks, unique by id (the first of duplicates is kept)."""
    pairs = list(pairs)
    stats = stats if stats is not None else DeriveStats()
    out: list[dict] = []
    seen: set[str] = set()
    for rec in (derive_from_traces(turns, steps, pairs, stats, now)
                + derive_from_training(sft, pairs, stats, now) + derive_from_runs(runs, stats, now)):
        if rec["playbook_id"] in seen:
            stats.dropped["duplicate"] += 1
            continue
        seen.add(rec["playbook_id"])
        stats.playbooks[f"{rec['source_kind']}/{rec['label']}"] += 1
        out.append(rec)
    return out


def reuse_embeddings(records: list[dict], previous: Iterable[Mapping[str, Any]], model: str) -> list[int]:
    """Copy embeddings of unchanged text from the previous table; return rows still to embed."""
    known = {p["content_hash"]: p["embedding"] for p in previous
             if p.get("embedding") is not None and p.get("embedding_model") == model}
    todo = []
    for i, r in enumerate(records):
        v = known.get(r["content_hash"])
        if v is not None:
            r["embedding"] = list(v)
            r["embedding_model"] = model
        else:
            todo.append(i)
    return todo
