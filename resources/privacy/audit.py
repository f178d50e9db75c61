"""An independent audit: is anything secret-shaped left in text that was already scrubbed?

The scrubber (:mod:`resources.privacy.secrets`: detect-secrets' plugins + our rules, in
Python's ``re``) is NOT what checks its own work. The audit runs a second, separately
maintained rule set -- gitleaks' default rules (``gitleaks.toml`` beside this file,
vendored unchanged) -- with a second regex engine (Rust's, through polars), the way
gitleaks applies them: keyword pre-filter, the rule's regex, its secret group, its
entropy threshold, its and the global allowlists. It reports counts by rule and never
the text it found.

Rules left out (``SKIPPED``) are listed with the reason: those that flag ordinary text of
the real transcripts in shared/realdata (measured in tests/privacy/test_audit.py).
"""

from __future__ import annotations

import math
import tomllib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from resources.privacy.secrets import ascii_rust

__all__ = ["Auditor", "auditor", "GITLEAKS_TOML", "SKIPPED", "shannon_entropy"]

GITLEAKS_TOML = Path(__file__).with_name("gitleaks.toml")

SKIPPED = {
    # matches any `key = value` with some entropy: on the real transcripts it flags
    # identifiers and code (`apiKey: params.litellmApiKey`) -- the scrubber's own
    # keyword rules (config_secret / env_secret) cover assignments instead
    "generic-api-key": "flags code identifiers in the real transcripts",
}


def shannon_entropy(s: str) -> float:
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


@dataclass(frozen=True)
class _Rule:
    id: str
    regex: str  # Rust syntax (ASCII classes)
    keywords: tuple[str, ...]
    entropy: float | None
    secret_group: int | None
    allow_regexes: tuple[tuple[str, str], ...]  # (target: secret|match|line, pattern)
    stopwords: tuple[str, ...]


class Auditor:
    """gitleaks' rules over many texts: ``scan(texts) -> Counter({rule_id: n})``."""

    def __init__(self, path: str | Path = GITLEAKS_TOML, skip: Iterable[str] = tuple(SKIPPED)):
        import polars as pl

        doc = tomllib.loads(Path(path).read_text())
        skip = set(skip)
        glob = doc.get("allowlist", {}) or {}
        self.global_regexes = tuple(ascii_rust(r) for r in glob.get("regexes", []))
        self.global_stopwords = tuple(w.lower() for w in glob.get("stopwords", []))
        self.rules: list[_Rule] = []
        self.unusable: dict[str, str] = {}
        for r in doc.get("rules", []):
            rid = r["id"]
            if rid in skip:
                continue
            if "regex" not in r:
                self.unusable[rid] = "path-only rule"
                continue
            rx = ascii_rust(r["regex"])
            try:
                pl.Series(["x"]).str.contains(rx)
            except Exception as e:  # noqa: BLE001 -- a regex the Rust engine refuses
                self.unusable[rid] = type(e).__name__
                continue
            allows, stops = [], []
            for a in r.get("allowlists", []) or []:
                target = a.get("regexTarget", "secret")
                allows += [(target, ascii_rust(x)) for x in a.get("regexes", [])]
                stops += [w.lower() for w in a.get("stopwords", [])]
            self.rules.append(_Rule(rid, rx, tuple(k.lower() for k in r.get("keywords", [])), r.get("entropy"),
                                    r.get("secretGroup"), tuple(allows), tuple(stops)))
        self.keywords = sorted({k for r in self.rules for k in r.keywords})

    def scan(self, texts: list[str | None]) -> Counter:
        """``Counter({rule_id: findings})`` over ``texts`` (None / empty are skipped)."""
        import polars as pl

        found: Counter = Counter()
        s = pl.Series("t", texts, dtype=pl.String).drop_nulls()
        if s.len() == 0:
            return found
        low_hit = s.str.contains_any(self.keywords, ascii_case_insensitive=True) if self.keywords else None
        cand = s.filter(low_hit) if low_hit is not None else s
        no_kw = [r for r in self.rules if not r.keywords]
        if cand.len() == 0 and not no_kw:
            return found
        for r in self.rules:
            pool = cand if r.keywords else s
            if r.keywords:
                pool = pool.filter(pool.str.contains_any(list(r.keywords), ascii_case_insensitive=True))
            if pool.len() == 0:
                continue
            matches = pool.str.extract_all(r.regex).explode().drop_nulls()
            if matches.len() == 0:
                continue
            n = self._confirm(r, matches)
            if n:
                found[r.id] += n
        return found

    def _confirm(self, r: _Rule, matches) -> int:
        import polars as pl

        groups = matches.str.extract_groups(r.regex)
        fields = groups.struct.fields if groups.dtype == pl.Struct else []
        n = 0
        rows = groups.to_list() if fields else [None] * matches.len()
        for m, g in zip(matches.to_list(), rows):
            secret = m
            if g:
                vals = [g.get(f) for f in fields]
                if r.secret_group is not None and 0 < r.secret_group <= len(vals):
                    secret = vals[r.secret_group - 1] or m
                else:
                    secret = next((v for v in vals if v), m)
            if "[REDACTED:" in m or "[PII:" in m:
                continue
            if r.entropy is not None and shannon_entropy(secret) < r.entropy:
                continue
            low = secret.lower()
            if any(w in low for w in self.global_stopwords + r.stopwords):
                continue
            if self._allowed(secret, m, r):
                continue
            n += 1
        return n

    def _allowed(self, secret: str, match: str, r: _Rule) -> bool:
        import polars as pl

        checks = [("secret", x) for x in self.global_regexes] + list(r.allow_regexes)
        for target, rx in checks:
            subject = match if target in ("match", "line") else secret
            try:
                if pl.Series([subject]).str.contains(rx).item():
                    return True
            except Exception:  # noqa: BLE001 -- an allowlist regex the Rust engine refuses: ignore it
                continue
        return False


@lru_cache(maxsize=1)
def auditor() -> Auditor:
    return Auditor()
