"""Mistakes versus informative failures: how a failed tool result is read.

A failed tool result is not always a mistake: a failing test, ``grep`` finding nothing,
``diff`` reporting a difference are answers the agent asked for. The policy
(``recipes/failures.yaml``) maps an error kind, the tool, and for shell tools the program a
command runs, to a class:

``mistake``      the step did something wrong → error-site pairs, ``label: false`` KTO rows;
``informative``  the step asked and got an answer → an ordinary SFT / desirable KTO example;
``external``     not the agent's doing (timeout, network, interrupt) → no label either way.

Pure and Dagster-free: every label built from a failure (pairs, KTO, SFT, SDPO) goes
through :func:`FailurePolicy.classify_step`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

MISTAKE, INFORMATIVE, EXTERNAL = "mistake", "informative", "external"
CLASSES = (MISTAKE, INFORMATIVE, EXTERNAL)
DEFAULT_POLICY_PATH = Path(__file__).resolve().parents[2] / "recipes" / "failures.yaml"
_COMMAND_KEYS = ("command", "cmd", "script", "commandLine", "command_line", "input")
_SEGMENT_SPLIT = re.compile(r"&&|\|\||[;|\n]")
_ENV_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_WRAPPERS = {"sudo", "time", "nice", "nohup", "env", "command", "exec", "xargs", "stdbuf"}
_RUNNERS = {("uv", "run"), ("poetry", "run"), ("pipenv", "run"), ("pdm", "run"), ("hatch", "run"),
            ("rye", "run"), ("bundle", "exec")}
_PYTHONS = re.compile(r"^python(?:\d(?:\.\d+)?)?$")
_SUBCOMMAND_TOOLS = {"npm", "yarn", "pnpm", "bun", "cargo", "go", "git", "mvn", "gradle", "dotnet",
                     "make", "bazel"}


@dataclass(frozen=True)
class FailureRule:
    name: str
    cls: str
    kinds: frozenset[str] | None = None
    tools: frozenset[str] | None = None
    programs: frozenset[str] | None = None

    def matches(self, kind: str | None, tool: str | None, programs: Sequence[str], shell: bool) -> bool:
        if self.kinds is not None and (kind or "other") not in self.kinds:
            return False
        if self.tools is not None and tool not in self.tools:
            return False
        if self.programs is not None:
            if not shell or not any(p in self.programs for p in programs):
                return False
        return True


@dataclass(frozen=True)
class Verdict:
    cls: str  # mistake | informative | external
    rule: str  # the rule that decided ("default" when none matched)
    kind: str | None
    tool: str | None = None
    program: str | None = None

    @property
    def is_mistake(self) -> bool:
        return self.cls == MISTAKE


@dataclass(frozen=True)
class FailurePolicy:
    rules: tuple[FailureRule, ...]
    default: str = INFORMATIVE
    shell_tools: frozenset[str] = frozenset({"Bash", "shell", "exec_command"})
    path: str = ""
    version: str = ""

    def classify(self, kind: str | None, tool: str | None = None, arguments: Any = None) -> Verdict:
        """The class of one failed call: its error kind, tool name and arguments."""
        shell = tool in self.shell_tools
        programs = command_programs(command_of(arguments)) if shell else []
        for r in self.rules:
            if r.matches(kind, tool, programs, shell):
                prog = next((p for p in programs if r.programs and p in r.programs), None)
                return Verdict(r.cls, r.name, kind, tool, prog or (programs[0] if programs else None))
        return Verdict(self.default, "default", kind, tool, programs[0] if programs else None)

    def classify_step(self, kind: str | None, response: Mapping | None) -> Verdict:
        """The class of a step whose own call got a failed result (``caused_error_kind``).

        A step with several tool calls does not record which one failed: it is a mistake
        only when every call would be one (an informative reading wins when in doubt).
        """
        calls = [c for c in ((response or {}).get("tool_calls") or []) if isinstance(c, Mapping)]
        if not calls:
            return self.classify(kind)
        verdicts = []
        for c in calls:
            fn = c.get("function") or {}
            verdicts.append(self.classify(kind, fn.get("name") or c.get("name"),
                                          fn.get("arguments", c.get("arguments"))))
        for cls in (INFORMATIVE, EXTERNAL):
            hit = next((v for v in verdicts if v.cls == cls), None)
            if hit is not None:
                return hit
        return verdicts[0]

    def summary(self) -> dict[str, Any]:
        return {"path": self.path, "version": self.version, "default": self.default,
                "rules": [f"{r.name}: {r.cls}" for r in self.rules]}


def command_of(arguments: Any) -> str:
    """The shell command of a tool call's arguments (a JSON string or a dict)."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return arguments
    if isinstance(arguments, Mapping):
        for k in _COMMAND_KEYS:
            v = arguments.get(k)
            if isinstance(v, str):
                return v
            if isinstance(v, list) and all(isinstance(x, str) for x in v):  # Codex: ["bash", "-lc", "..."]
                if len(v) >= 3 and v[0] in ("bash", "sh", "zsh") and v[1] in ("-lc", "-c"):
                    return v[2]
                return " ".join(shlex.quote(x) for x in v)
    return ""


def command_programs(command: str) -> list[str]:
    """Programs a shell command runs, in order: ``"cd x && python -m pytest -q | tail"`` →
    ``["cd", "pytest", "tail"]``; a program with sub-commands also gives ``"cargo test"``."""
    out: list[str] = []
    for seg in _SEGMENT_SPLIT.split(command or ""):
        try:
            words = shlex.split(seg, comments=True)
        except ValueError:
            words = seg.split()
        i = 0
        while i < len(words):
            w = words[i]
            if _ENV_ASSIGN.match(w):
                i += 1
                continue
            if w in _WRAPPERS:  # and its options: `nice -n 10 pytest`
                i += 1
                while i < len(words) and (words[i].startswith("-") or words[i].isdigit()):
                    i += 1
                continue
            if w == "timeout" and i + 1 < len(words):
                i += 2
                continue
            if i + 1 < len(words) and (w, words[i + 1]) in _RUNNERS:
                i += 2
                continue
            if w in ("npx", "pnpx", "bunx") and i + 1 < len(words):
                i += 1
                continue
            if _PYTHONS.match(w) and i + 2 < len(words) and words[i + 1] == "-m":
                i += 2
                continue
            break
        if i >= len(words):
            continue
        prog = words[i].rsplit("/", 1)[-1]
        if prog == "cd":
            continue
        out.append(prog)
        if prog in _SUBCOMMAND_TOOLS and i + 1 < len(words):
            sub = [x for x in words[i + 1:i + 3] if not x.startswith("-")]
            if sub:
                out.append(f"{prog} {sub[0]}")
                if sub[0] == "run" and len(sub) > 1:
                    out.append(f"{prog} run {sub[1]}")
    return out


def _frozen(v: Any, what: str, rule: str) -> frozenset[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not all(isinstance(x, (str, int, float)) for x in v):
        raise ValueError(f"failure rule {rule!r}: {what} must be a list of strings")
    return frozenset(str(x) for x in v)


def parse_policy(raw: Mapping[str, Any], path: str = "", text: str = "") -> FailurePolicy:
    if not isinstance(raw, Mapping):
        raise ValueError(f"failure policy {path or '<inline>'}: expected a mapping")
    default = raw.get("default", INFORMATIVE)
    if default not in CLASSES:
        raise ValueError(f"failure policy: default must be one of {CLASSES}, not {default!r}")
    rules = []
    for i, r in enumerate(raw.get("rules") or []):
        if not isinstance(r, Mapping):
            raise ValueError(f"failure policy: rule {i} is not a mapping")
        name = str(r.get("name") or f"rule_{i}")
        cls = r.get("class")
        if cls not in CLASSES:
            raise ValueError(f"failure rule {name!r}: class must be one of {CLASSES}, not {cls!r}")
        unknown = set(r) - {"name", "class", "kinds", "tools", "programs"}
        if unknown:
            raise ValueError(f"failure rule {name!r}: unknown keys {sorted(unknown)}")
        rules.append(FailureRule(name, cls, _frozen(r.get("kinds"), "kinds", name),
                                 _frozen(r.get("tools"), "tools", name),
                                 _frozen(r.get("programs"), "programs", name)))
    shell = _frozen(raw.get("shell_tools"), "shell_tools", "shell_tools") or frozenset()
    version = hashlib.sha256((text or json.dumps(raw, sort_keys=True, default=str)).encode()).hexdigest()[:12]
    return FailurePolicy(tuple(rules), default, shell, path, version)


@lru_cache(maxsize=16)
def _load(path: str, mtime: float) -> FailurePolicy:
    text = Path(path).read_text(encoding="utf-8")
    return parse_policy(yaml.safe_load(text) or {}, path, text)


def load_failure_policy(path: str | Path | None = None) -> FailurePolicy:
    """The policy in ``path`` (default ``recipes/failures.yaml``)."""
    p = Path(path or DEFAULT_POLICY_PATH)
    if not p.is_file():
        raise FileNotFoundError(f"failure policy {p} not found")
    return _load(str(p.resolve()), p.stat().st_mtime)


def step_verdict(row: Mapping[str, Any], policy: FailurePolicy) -> Verdict | None:
    """The verdict of a step row (AGENT_STEPS shape) whose own call failed, else None."""
    if not row.get("caused_error"):
        return None
    resp = row.get("response")
    if isinstance(resp, str):
        try:
            resp = json.loads(resp)
        except ValueError:
            resp = None
    return policy.classify_step(row.get("caused_error_kind"), resp if isinstance(resp, Mapping) else None)


def count_classes(verdicts: Iterable[Verdict | None]) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in verdicts:
        if v is not None:
            out[f"{v.cls} ({v.rule})"] = out.get(f"{v.cls} ({v.rule})", 0) + 1
    return out
