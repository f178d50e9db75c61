"""The personal-data half of the independent audit: is any personal data the policy asks
to pseudonymize left in text that was already scrubbed?

Not found by the scrubber's own patterns (:mod:`resources.privacy.pii`): e-mail addresses,
phone numbers, payment cards and IP addresses are found by DataFog's Rust detectors
(PyPI ``datafog-core``); user names in home-directory paths (a kind DataFog does not have)
by a separate reading of paths here (``/Users/<name>``, ``/home/<name>``,
``C:\\Users\\<name>``, Claude Code's ``-Users-<name>-...`` folders). What the policy
exempts (kinds turned off, allow-listed users and domains, loopback / private addresses,
numbers libphonenumber calls invalid, cards failing Luhn) is decided by the policy's own
tests, so a finding is exactly "what the policy asks to replace, still there". Counts by
kind only, never the text.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

__all__ = ["PiiAuditor", "pii_auditor", "DATAFOG_KINDS"]

# datafog-core entity -> our kind
DATAFOG_KINDS = {"EMAIL": "email", "PHONE": "phone", "CREDIT_CARD": "payment_card", "IP_ADDRESS": "ip_address"}
_SEP = "\n\u241e\n"  # between texts joined for one call (no detector reads across it)
_CHUNK = 1 << 20  # characters per call

# home-directory user names, read as path components (slash, backslash or dashed form)
_HOME_PATH = re.compile(r"(?:^|[^A-Za-z0-9_.])(?:/Users|/home|[A-Za-z]:(?:\\{1,4}|/)Users)(?:\\{1,4}|/)"
                        r"([^/\\\"'\s:*?<>|`]+)")
_HOME_DASHED = re.compile(r"(?<![A-Za-z0-9])(?:[A-Za-z]--|-)(?:Users|home)-([A-Za-z0-9]+)")
_PSEUDONYM = re.compile(r"user_[0-9a-f]{8}")


class PiiAuditor:
    """``scan(texts) -> Counter({kind: n})`` of the personal data a policy asks to replace."""

    def __init__(self, privacy=None):
        from resources import privacy as _privacy

        p = privacy if privacy is not None else _privacy.active()
        self.pii = p.pii  # the policy's tests (None: the policy replaces no personal data)
        self.kinds = tuple(self.pii.policy.enabled) if self.pii is not None else ()
        self._entities = [e for e, k in DATAFOG_KINDS.items() if k in self.kinds]
        self.version = _datafog_version()

    def __repr__(self) -> str:
        return f"PiiAuditor(kinds={list(self.kinds)}, datafog-core {self.version})"

    def scan(self, texts: Iterable[str | None]) -> Counter:
        found: Counter = Counter()
        if not self.kinds:
            return found
        chunk: list[str] = []
        size = 0
        for t in texts:
            if not t:
                continue
            chunk.append(t)
            size += len(t)
            if size >= _CHUNK:
                found.update(self._scan(_SEP.join(chunk)))
                chunk, size = [], 0
        if chunk:
            found.update(self._scan(_SEP.join(chunk)))
        return found

    def _scan(self, text: str) -> Counter:
        import datafog_core

        out: Counter = Counter()
        if self._entities and _might_hold(text):
            for f in datafog_core.scan(text, {"entities": self._entities}):
                kind = DATAFOG_KINDS.get(f.entity_type)
                if kind and self._asked(kind, f.matched_text):
                    out[kind] += 1
        if "home_user" in self.kinds and ("Users" in text or "home" in text):
            for rx in (_HOME_PATH, _HOME_DASHED):
                for m in rx.finditer(text):
                    name = m.group(1)
                    if self.pii._user_name(name) and not _PSEUDONYM.fullmatch(name):
                        out["home_user"] += 1
        return out

    def _asked(self, kind: str, value: str) -> bool:
        """Whether the policy asks to replace this value (its kind's exemptions)."""
        value = value.strip()
        try:
            return getattr(self.pii, "_" + kind)(value) is not None
        except Exception:  # noqa: BLE001 - a shape the policy's test cannot read: not asked
            return False


def _might_hold(text: str) -> bool:
    """A cheap necessary condition of the four DataFog kinds: an "@" or a digit."""
    return "@" in text or any(c in text for c in "0123456789")


def _datafog_version() -> str:
    try:
        from importlib.metadata import version

        return version("datafog-core")
    except Exception:  # noqa: BLE001
        return "?"


_AUDITORS: dict[int, PiiAuditor] = {}


def pii_auditor(privacy=None) -> PiiAuditor:
    """The personal-data auditor of ``privacy`` (default: the configured lake's scrubber)."""
    from resources import privacy as _privacy

    p = privacy if privacy is not None else _privacy.active()
    a = _AUDITORS.get(id(p))
    if a is None or a.pii is not p.pii:
        a = _AUDITORS[id(p)] = PiiAuditor(p)
    return a
