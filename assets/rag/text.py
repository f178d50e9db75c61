"""Shared text helpers of the rag family: normalized tokens, hashes, token estimates."""

from __future__ import annotations

import hashlib
import re

_TOKEN_RE = re.compile(r"[a-z0-9_]+")

# Small English stop list + words every task says (they carry no retrieval signal).
STOPWORDS = frozenset(
    """
    a an the and or but if then else of to in on at by for with from into onto as is are was were be
    been being it its this that these those there here i you he she we they me my our your their them
    do does did done doing have has had having not no nor so than too very can could should would will
    shall may might must just also only about over under again further once all any both each few more
    most other some such own same what which who whom when where why how up down out off s t don
    please let lets make sure
    """.split()
)

# Words that mark a checklist line; they are not evidence that an answer covers the checklist.
CHECK_VERBS = frozenset({"verify", "check", "assert", "ensure", "confirm", "verified", "checked",
                         "ensured", "confirmed", "asserted", "that", "whether"})


def tokens(text: str | None) -> list[str]:
    """Lower-cased alphanumeric tokens without stop words or 1-character tokens."""
    if not text:
        return []
    return [t for t in _TOKEN_RE.findall(text.lower()) if len(t) > 1 and t not in STOPWORDS]


def token_set(text: str | None) -> frozenset[str]:
    return frozenset(tokens(text))


def sha(*parts: str, n: int = 16) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update((p or "").encode("utf-8", "replace"))
        h.update(b"\x1f")
    return h.hexdigest()[:n]


def normalize_task(task: str) -> str:
    return " ".join((task or "").split()).strip()


def task_hash(task: str) -> str:
    return sha(normalize_task(task).lower(), n=16)


def estimate_tokens(text: str) -> int:
    """Rough token count (≈4 characters a token for English and code)."""
    return (len(text) + 3) // 4


def clip(text: str | None, n: int) -> str:
    text = text or ""
    return text if len(text) <= n else text[: max(0, n - 1)].rstrip() + "…"
