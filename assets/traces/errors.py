"""Classify failed tool results into an ``error_kind``.

The classifier is an ordered list of rules; the first rule that matches wins, and
``"other"`` is the fallback. A rule is a name plus either a regex (searched in the
result text) or a predicate ``(text, tool_name) -> bool``, optionally limited to some
tool names. Extend it from your own code::

    from assets.traces import errors
    errors.register("quota_exceeded", r"(?i)quota exceeded|rate limit", before="timeout")
    errors.register("lint_failure", lambda text, tool: tool == "Bash" and "ruff" in text)

Rules see at most the first and last 3,000 characters of a result (error messages sit
at either end; pytest prints its summary last).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Iterable

__all__ = ["ErrorRule", "RULES", "register", "classify_error", "OTHER"]

OTHER = "other"
_WINDOW = 3000

Predicate = Callable[[str, "str | None"], bool]


@dataclass(frozen=True)
class ErrorRule:
    name: str
    match: re.Pattern[str] | Predicate
    tools: frozenset[str] | None = field(default=None)  # only for these tool names
    # lowercase literals; when given, the regex runs only if one occurs in the lowered text
    gates: tuple[str, ...] = ()

    def test(self, text: str, tool_name: str | None, low: str | None = None) -> bool:
        if self.tools is not None and tool_name not in self.tools:
            return False
        if self.gates:
            low = text.lower() if low is None else low
            if not any(g in low for g in self.gates):
                return False
        if isinstance(self.match, re.Pattern):
            return self.match.search(text) is not None
        return bool(self.match(text, tool_name))


def _r(name: str, gates: Iterable[str], pattern: str, tools: Iterable[str] | None = None) -> ErrorRule:
    return ErrorRule(name, re.compile(pattern), frozenset(tools) if tools else None, tuple(gates))


RULES: list[ErrorRule] = [
    _r("user_rejected", ["user doesn't want", "rejected", "denied", "declined"],
       r"(?i)user doesn't want to proceed|tool use was rejected|user (?:rejected|denied|declined)"
       r"|rejected by (?:the )?user"),
    _r("interrupted", ["interrupt", "aborted by user", "sigint"],
       r"(?i)\[Request interrupted|interrupted by user|aborted by user|KeyboardInterrupt|\bSIGINT\b"),
    _r("timeout", ["timed out", "timeout", "deadline exceeded"],
       r"(?i)timed out|timeout(?:error| expired| exceeded)|deadline exceeded"),
    _r("permission_denied", ["permission denied", "eacces", "not permitted", "eperm", "granted it yet",
                             "not allowed to", "sandbox"],
       r"(?i)permission denied|EACCES|operation not permitted|EPERM\b"
       r"|haven't granted it yet|not allowed to|sandbox(?:ed)? (?:denied|blocked)"),
    _r("edit_mismatch", ["not found", "no match", "matches of the string", "exactly the same", "apply",
                         "failed to find expected lines"],
       r"(?i)string to replace not found|old_string (?:was )?not found|no match(?:es)? found for"
       r"|Found \d+ matches of the string to replace"
       r"|old_string and new_string are exactly the same|patch (?:does not|did not) apply"
       r"|Failed to find expected lines"),
    _r("file_not_read", ["has not been read yet", "since read", "since it was read"],
       r"(?i)file has not been read yet|modified since (?:it was )?read"),
    _r("invalid_tool_input", ["inputvalidationerror", "invalid tool", "required parameter",
                              "failed to parse function arguments", "unexpected parameter", "unexpected argument"],
       r"(?i)InputValidationError|invalid tool (?:input|parameters)|required parameter"
       r"|failed to parse function arguments|unexpected (?:parameter|argument)"),
    _r("tool_unavailable", ["no such tool", "unknown tool", "tool "],
       r"(?i)no such tool available|unknown tool|\btool \S{1,40} (?:is )?not found"),
    _r("test_failure", ["failed", "fail:", "assertionerror"],
       r"(?m)(?:^|[\s=])\d+ failed\b|^FAILED |^--- FAIL:|test result: FAILED|Tests:\s+\d+ failed"
       r"|AssertionError"),
    _r("syntax_error", ["syntax", "indentationerror", "parseerror", "unexpected token"],
       r"SyntaxError|IndentationError|(?i:syntax error)|ParseError|Unexpected token"),
    _r("file_not_found", ["no such file", "enoent", "filenotfounderror", "does not exist", "cannot find the",
                          "file not found"],
       r"(?i)no such file or directory|ENOENT|FileNotFoundError|file does not exist|\bfile not found"
       r"|(?:path|directory) does not exist|cannot find the (?:file|path)"),
    _r("command_not_found", ["command not found", "exit code 127", "not recognized as an internal"],
       r"(?i)command not found|Exit code 127\b|is not recognized as an internal"),
    _r("not_found", ["not found", "does not exist", "404"], r"(?i)\bnot found\b|does not exist|\b404\b"),
    _r("connection_error", ["econnrefused", "econnreset", "connection", "resolve host", "getaddrinfo",
                            "unreachable", "name resolution", "enotfound", "failed to connect", "max retries",
                            "socket hang up", "network error", "fetch failed", "ssl"],
       r"(?i)ECONNREFUSED|ECONNRESET|ENOTFOUND|connection (?:refused|reset|aborted|closed by)"
       r"|could not resolve host|getaddrinfo|network is unreachable|Temporary failure in name resolution"
       r"|failed to connect|Max retries exceeded|ConnectionError|socket hang up|network error|fetch failed"
       r"|SSL(?:Error|: )|certificate verify failed"),
    _r("session_closed", ["stdin is closed", "session", "no such process"],
       r"(?i)stdin is closed|(?:exec |shell )?session (?:\S+ )?(?:not found|closed|has exited)"
       r"|unknown session id|no such process"),
    _r("nonzero_exit", ["exit", "non-zero"],
       r"(?i)exit(?:ed with)? code:? ?[1-9]\d*|exit status [1-9]\d*|returned non-zero"),
]


def register(
    name: str,
    match: str | re.Pattern[str] | Predicate,
    *,
    tools: Iterable[str] | None = None,
    before: str | None = None,
    gates: Iterable[str] = (),
) -> ErrorRule:
    """Add a rule. By default it runs first (user rules refine built-in ones); with
    ``before=`` it is inserted right before the named rule. ``gates``: optional
    lowercase literals that must occur in the text for the rule to be tried (speed)."""
    if isinstance(match, str):
        match = re.compile(match)
    rule = ErrorRule(name, match, frozenset(tools) if tools else None, tuple(g.lower() for g in gates))
    idx = 0
    if before is not None:
        idx = next((i for i, r in enumerate(RULES) if r.name == before), len(RULES))
    RULES.insert(idx, rule)
    return rule


def classify_error(text: str | None, tool_name: str | None = None, *, exit_code: int | None = None,
                   rules: list[ErrorRule] | None = None) -> str:
    """The kind of a failed tool result (``"other"`` when no rule matches).

    ``exit_code``: when the format records one (Codex), a non-zero code makes the
    fallback ``nonzero_exit`` instead of ``other``.
    """
    t = text or ""
    if len(t) > 2 * _WINDOW:
        t = t[:_WINDOW] + "\n" + t[-_WINDOW:]
    low = t.lower()
    for rule in RULES if rules is None else rules:
        if rule.__class__ is not ErrorRule:  # (a subclass may override test)
            if rule.test(t, tool_name, low):
                return rule.name
            continue
        # = rule.test(t, tool_name, low), inlined (runs on every failed tool result)
        if rule.tools is not None and tool_name not in rule.tools:
            continue
        gates = rule.gates
        if gates:
            for g in gates:
                if g in low:
                    break
            else:
                continue
        match = rule.match
        if isinstance(match, re.Pattern):
            if match.search(t) is not None:
                return rule.name
        elif match(t, tool_name):
            return rule.name
    if exit_code not in (None, 0):
        return "nonzero_exit"
    return OTHER
