"""Secret scrubbing for trace text.

``scrub(text)`` replaces credentials with typed placeholders such as
``[REDACTED:anthropic_key]`` and counts what it replaced, by kind.

It is built to run on the *raw text of JSONL lines*, where secrets usually sit
JSON-escaped inside strings (``"...\\nAPI_KEY=abc\\n..."``, PEM blocks whose
newlines are literal ``\\n``, doubly escaped Codex tool outputs). Guarantees:

* a placeholder never contains a quote or a backslash, and no pattern consumes a
  quote or a partial escape sequence, so a valid JSON line stays valid JSON;
* for ``KEY=value`` style rules only the value is replaced, the key name stays.

Speed: each rule has a few lowercase literal "gate" substrings; the regex of a rule
only runs when one of its gates occurs in the lowered text. For bulk work
(:func:`scrub_many`, used by the raw reader) one relaxed union pattern is first run
over all texts by Rust's regex engine (via polars); only the few texts it flags go
through the Python rules.

Extend with :func:`register` (a name, gate literals and a regex whose group
``val`` -- or the whole match when there is no such group -- is replaced).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

__all__ = ["scrub", "scrub_many", "scrub_obj", "scrub_bytes", "suspicious", "register", "RULES", "placeholder", "Rule"]


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


# A token may start at a word boundary, or right after a JSON escape such as \n \t \r
# (the escape's letter would otherwise look like part of a word).
_LB = r"(?:(?<![A-Za-z0-9_\-])|(?<=\\[nrt]))"
# End of a line in raw text or in JSON-escaped text.
_LINE_START = r"(?:^|(?<=\n)|(?<=\\n)|(?<=\\r)|(?<=\\t)|(?<=\"))"
# An optional quote opener, possibly JSON-escaped once or twice.
_Q = r"""(?:\\*["'])?"""
_NOT_REDACTED = r"(?!\[REDACTED:)"


@dataclass(frozen=True)
class Rule:
    kind: str
    gates: tuple[str, ...]  # lowercase literals; the regex runs only if one occurs in text.lower()
    regex: re.Pattern[str]


def _rule(kind: str, gates: Iterable[str], pattern: str, flags: int = 0) -> Rule:
    return Rule(kind, tuple(g.lower() for g in gates), re.compile(pattern, flags))


# Order matters: the more specific rules run first (an ``sk-ant-`` key must be
# reported as anthropic_key, not openai_key; a PEM block before the tokens it may hold).
RULES: list[Rule] = [
    _rule(
        "private_key",
        ["private key"],
        r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[A-Za-z0-9+/=:,. \t\r\n]|\\+[nrt]|-(?!----))*"
        r"(?:-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----)?",
    ),
    _rule("anthropic_key", ["sk-ant-"], r"sk-ant-[A-Za-z0-9_\-]{20,}"),
    _rule("openrouter_key", ["sk-or-"], r"sk-or-(?:v1-)?[A-Za-z0-9_\-]{20,}"),
    _rule(
        "openai_key",
        ["sk-"],
        # sk-proj-/sk-svcacct-/sk-admin- or a legacy key; must hold a digit, so
        # kebab-case words like "sk-learn-model-selection" never match.
        _LB + r"sk-(?:proj-|svcacct-|admin-)?(?=[A-Za-z0-9_\-]*[0-9])[A-Za-z0-9_\-]{32,}",
    ),
    _rule("google_api_key", ["aiza"], _LB + r"AIza[0-9A-Za-z_\-]{35,}"),
    _rule(
        "aws_access_key_id",
        ["akia", "asia", "abia", "acca", "a3t"],
        _LB + r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
    ),
    _rule(
        "aws_secret_key",
        ["secret"],
        r"(?i:aws_?secret_?access_?key|aws_?secret_?key|secret_?access_?key)"
        + _Q
        + r"[ \t]*[:=][ \t]*"
        + _Q
        + r"(?P<val>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
    ),
    _rule(
        "github_token",
        ["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        _LB + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})",
    ),
    _rule(
        "slack_token",
        ["xox", "xapp-", "hooks.slack.com"],
        r"(?:"
        + _LB
        + r"xox[abposre]-[A-Za-z0-9\-]{10,}|"
        + _LB
        + r"xapp-\d-[A-Za-z0-9\-]{10,}|https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]{20,})",
    ),
    _rule("hf_token", ["hf_"], _LB + r"hf_[A-Za-z0-9]{30,}"),
    _rule(
        "bearer_token",
        ["bearer"],
        r"\b(?i:bearer)[ \t]+(?P<val>(?=[A-Za-z0-9\-._~+/]*[0-9])[A-Za-z0-9\-._~+/]{16,}=*)",
    ),
    _rule(
        # a JSON / YAML / dict field whose name ends like a secret: "password": "...",
        # \"client_secret\": \"...\", 'api_key': '...'
        "secret_field",
        [n + q for n in ("password", "passwd", "secret", "key", "token") for q in ('"', "'", "\\")],
        r"(?i:password|passwd|secret|api_?key|access_?key|private_?key|token)"
        r"\\*[\"'][ \t]*:[ \t]*\\*[\"']"
        + _NOT_REDACTED
        + r"(?P<val>(?![$<{])[^\s\"'\\]{6,})",
    ),
    _rule(
        # KEY=value lines of env files / shell exports / ini files; the key name stays.
        "env_secret",
        [n + s for n in ("key", "secret", "token", "password", "passwd", "pwd", "credentials") for s in ("=", " =", "\t=")],
        _LINE_START
        + r"(?P<pre>[ \t]*(?:\d+(?:→|\\u2192|\\t|\t))?[ \t]*(?:export[ \t]+)?"
        r"[A-Za-z0-9_.\-]*(?i:key|secret|token|password|passwd|pwd|credentials)"
        r"[ \t]*=[ \t]*"
        + _Q
        + r")"
        + _NOT_REDACTED
        + r"(?P<val>(?!\$)[^\s\"'\\]+)",
    ),
]

# One pattern (Rust regex syntax, used through polars) that matches wherever any rule
# above *could* match: lines it does not match are skipped without running the Python
# regexes. Each alternative is a relaxed form of the rule of the same kind; keep the two
# in step when editing a rule (tests/traces/test_secrets.py checks every kind).
_BULK_GATE_PARTS: list[str] = [
    r"PRIVATE KEY",
    r"sk-[A-Za-z0-9_\-]{20}",
    r"AIza[0-9A-Za-z_\-]{35}",
    r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}",
    r"(?i:secret_?access_?key|aws_?secret)",
    r"gh[pousr]_[A-Za-z0-9]{36}|github_pat_",
    r"xox[abposre]-|xapp-|hooks\.slack\.com",
    r"hf_[A-Za-z0-9]{30}",
    r"(?i:bearer)[ \t]+[A-Za-z0-9\-._~+/]{16}",
    r"""(?i:password|passwd|secret|api_?key|access_?key|private_?key|token)\\*["'][ \t]*:""",
    r"(?i:key|secret|token|password|passwd|pwd|credentials)[ \t]*=",
]
_N_BUILTIN = len(RULES)

_EXTRA_GATES: list[str] = []  # literal gates of rules added with register()


def _rust_escape(lit: str) -> str:
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$#&-~" else c for c in lit)


def register(kind: str, gates: Iterable[str], pattern: str | re.Pattern[str], *, first: bool = False) -> Rule:
    """Add a scrubbing rule.

    ``gates``: literal substrings, at least one of which occurs (case-insensitively)
    wherever the pattern matches. ``pattern`` may use a named group ``val``: only that
    group is replaced by the placeholder (the rest of the match stays).
    """
    gates = tuple(g.lower() for g in gates)
    if not gates:
        raise ValueError("a rule needs at least one literal gate")
    regex = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
    rule = Rule(kind, gates, regex)
    if first:
        RULES.insert(0, rule)
    else:
        RULES.append(rule)
    _EXTRA_GATES.extend("(?i:" + _rust_escape(g) + ")" for g in gates)
    _bulk_gate_pattern.cache_clear()
    return rule


def _apply(rule: Rule, text: str, counts: dict[str, int]) -> str:
    ph = placeholder(rule.kind)
    has_val = "val" in rule.regex.groupindex
    n = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal n
        n += 1
        if not has_val:
            return ph
        s, e = m.span("val")
        ms = m.start()
        whole = m.group(0)
        return whole[: s - ms] + ph + whole[e - ms :]

    out = rule.regex.sub(repl, text)
    if n:
        counts[rule.kind] = counts.get(rule.kind, 0) + n
    return out


def scrub(text: str, counts: dict[str, int] | None = None) -> tuple[str, dict[str, int]]:
    """Return ``(scrubbed_text, {kind: n_replaced})``.

    Pass ``counts`` to accumulate into an existing dict (it is also returned).
    For many texts at once prefer :func:`scrub_many` (one vectorized pre-filter).
    """
    if counts is None:
        counts = {}
    if not text:
        return text, counts
    low = text.lower()
    for rule in RULES:
        for g in rule.gates:
            if g in low:
                text = _apply(rule, text, counts)
                break
    return text, counts


@lru_cache(maxsize=1)
def _bulk_gate_pattern() -> str:
    return "|".join(_BULK_GATE_PARTS + _EXTRA_GATES)


def suspicious(texts: list[str]) -> list[bool]:
    """Which texts could hold a secret (a superset of what :func:`scrub` changes).

    One pass of Rust's regex engine (through polars) over all texts: hundreds of MB/s,
    where ~60 Python substring scans per text would manage ~10 MB/s.
    """
    flags = [False] * len(texts)
    for i in _suspicious_indices(texts):
        flags[i] = True
    return flags


def _suspicious_indices(texts: list[str]) -> list[int]:
    """Indices of the texts :func:`suspicious` flags (in order)."""
    if not texts:
        return []
    import polars as pl

    return pl.Series(texts, dtype=pl.String).str.contains(_bulk_gate_pattern()).arg_true().to_list()


def scrub_many(texts: list[str]) -> tuple[list[str], list[dict[str, int]]]:
    """Scrub many texts; returns the texts and, for each, its ``{kind: n}`` counts."""
    out = list(texts)
    per: list[dict[str, int]] = [{} for _ in texts]
    for i in _suspicious_indices(texts):
        out[i], per[i] = scrub(texts[i])
    return out, per


def _scrub_sparse(texts: list[str]) -> tuple[list[str], dict[int, dict[str, int]]]:
    """:func:`scrub_many` for bulk work: the counts only of the texts that changed,
    ``{index: {kind: n}}`` (most texts hold no secret)."""
    out = list(texts)
    counts: dict[int, dict[str, int]] = {}
    for i in _suspicious_indices(texts):
        text, c = scrub(texts[i])
        if c:
            out[i] = text
            counts[i] = c
    return out, counts


def scrub_bytes(data: bytes, counts: dict[str, int] | None = None) -> tuple[bytes, dict[str, int]]:
    """Scrub bytes that may not be valid UTF-8 (latin-1 round trip keeps every byte)."""
    text, counts = scrub(data.decode("latin-1"), counts)
    return text.encode("latin-1"), counts


def scrub_obj(obj: Any, counts: dict[str, int] | None = None) -> tuple[Any, dict[str, int]]:
    """Scrub every string (values, not keys) inside a JSON-like object; returns a copy."""
    if counts is None:
        counts = {}

    def walk(o: Any) -> Any:
        if isinstance(o, str):
            return scrub(o, counts)[0]
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        if isinstance(o, tuple):
            return tuple(walk(v) for v in o)
        return o

    return walk(obj), counts
