"""Privacy: secrets and personal data are removed from text before anything is written.

The one entry point every family, client and exporter uses::

    from resources import privacy
    text, counts = privacy.scrub_text(text)            # one string
    texts, counts = privacy.scrub_texts(texts)         # many (vectorized); counts: {index: {kind: n}}
    obj, counts = privacy.scrub_json(obj)              # a whole JSON document: every value AND key
    data, counts = privacy.scrub_bytes(data)           # bytes that may not be UTF-8

``counts`` are ``{kind: n}``; secret kinds (``stripe_key``, ``env_secret``...) and
personal-data kinds (:data:`PII_KINDS`) side by side; :func:`split_counts` separates them
for metadata. Nothing here ever returns or logs the text it removed.

The policy (``recipes/privacy.yaml``) says which personal data kinds are replaced; the
salt of the pseudonyms comes from :mod:`resources.settings`. :func:`for_lake` gives the
scrubber of a lake (its salt lives beside the lake, outside the tables); the module-level
functions use the scrubber of the configured lake root.
"""

from __future__ import annotations

import os
import secrets as _pysecrets
import threading
from pathlib import Path
from typing import Any

from resources import settings
from resources.privacy import secrets
from resources.privacy.secrets import gate_for
from resources.privacy.pii import PII_KINDS, PiiPolicy, Pseudonymizer

__all__ = ["Privacy", "for_lake", "active", "configure", "scrub_text", "scrub_texts", "scrub_json", "scrub_bytes",
           "split_counts", "PII_KINDS", "PiiPolicy", "load_policy", "secrets"]


def load_policy(path: str | Path | None = None) -> PiiPolicy:
    """The personal-data policy of ``recipes/privacy.yaml`` (or ``path``)."""
    import yaml

    p = Path(path) if path is not None else settings.privacy_file()
    if not p.exists():
        return PiiPolicy()
    doc = yaml.safe_load(p.read_text()) or {}
    unknown = set(doc) - {"personal_data"}
    if unknown:
        raise ValueError(f"{p}: unknown sections {sorted(unknown)}")
    return PiiPolicy.from_mapping(doc.get("personal_data"))


def _read_or_create_salt(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as f:
        f.write(_pysecrets.token_hex(32))
    return path.read_bytes().strip()


class Privacy:
    """Secrets scrubbing followed by personal-data pseudonymization."""

    def __init__(self, policy: PiiPolicy | None = None, salt: bytes | str | None = None):
        self.policy = policy if policy is not None else load_policy()
        if isinstance(salt, str):
            salt = salt.encode()
        self.pii = Pseudonymizer(self.policy, salt or b"") if self.policy.enabled else None

    def __repr__(self) -> str:
        return f"Privacy(pii={list(self.policy.enabled)})"

    def scrub_texts(self, texts: list[str], raw: list[bytes] | None = None
                    ) -> tuple[list[str], dict[int, dict[str, int]]]:
        """Scrub many texts: ``(texts, {index: {kind: n}})`` with counts only for changed texts.

        One gate pass (resources/privacy/gate.py) picks the texts that may hold a secret and
        those that may hold personal data; only those go through the rules. ``raw``: the
        texts' exact UTF-8 bytes when the caller has them (the gate reads them as they are)."""
        if not texts:
            return texts, {}
        gate = gate_for(self.pii.prefilter_patterns if self.pii is not None else ())
        sec_idx, pii_idx = gate.scan(texts, raw)
        hits = gate.secret_hits([texts[i] for i in sec_idx]) if sec_idx else []
        out, counts = secrets._scrub_sparse(texts, sec_idx, hits)
        if self.pii is None:
            return out, counts
        cand = sorted(set(pii_idx) | set(counts)) if counts else pii_idx  # texts a secret rule changed: again
        if not cand:
            return out, counts
        out, pc = self.pii.scrub_many(out, cand)
        for i, c in pc.items():
            d = counts.setdefault(i, {})
            for k, n in c.items():
                d[k] = d.get(k, 0) + n
        return out, counts

    def scrub_text(self, text: str, counts: dict[str, int] | None = None) -> tuple[str, dict[str, int]]:
        if counts is None:
            counts = {}
        if not text:
            return text, counts
        out, c = self.scrub_texts([text])
        for k, n in c.get(0, {}).items():
            counts[k] = counts.get(k, 0) + n
        return out[0], counts

    def scrub_bytes(self, data: bytes, counts: dict[str, int] | None = None) -> tuple[bytes, dict[str, int]]:
        """Bytes that may not be valid UTF-8 (a latin-1 round trip keeps every byte)."""
        text, counts = self.scrub_text(data.decode("latin-1"), counts)
        return text.encode("latin-1", "replace"), counts

    def scrub_json(self, obj: Any, counts: dict[str, int] | None = None) -> tuple[Any, dict[str, int]]:
        """Scrub every string of a JSON-like object -- values and keys -- in one vectorized
        pass; returns a scrubbed copy and ``{kind: n}``."""
        if counts is None:
            counts = {}
        strings: list[str] = []

        def collect(o: Any) -> None:
            if isinstance(o, str):
                strings.append(o)
            elif isinstance(o, dict):
                for k, v in o.items():
                    if isinstance(k, str):
                        strings.append(k)
                    collect(v)
            elif isinstance(o, (list, tuple)):
                for v in o:
                    collect(v)

        collect(obj)
        if not strings:
            return obj, counts
        out, per = self.scrub_texts(strings)
        if not per:
            return obj, counts
        for c in per.values():
            for k, n in c.items():
                counts[k] = counts.get(k, 0) + n
        it = iter(out)

        def rebuild(o: Any) -> Any:
            if isinstance(o, str):
                return next(it)
            if isinstance(o, dict):
                new = {}
                for k, v in o.items():
                    nk = next(it) if isinstance(k, str) else k
                    new[nk] = rebuild(v)
                return new
            if isinstance(o, list):
                return [rebuild(v) for v in o]
            if isinstance(o, tuple):
                return tuple(rebuild(v) for v in o)
            return o

        return rebuild(obj), counts


def split_counts(counts: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    """``(secrets, personal_data)`` of a ``{kind: n}``."""
    sec = {k: n for k, n in counts.items() if k not in PII_KINDS}
    pii = {k: n for k, n in counts.items() if k in PII_KINDS}
    return sec, pii


_LOCK = threading.Lock()
_BY_ROOT: dict[str, Privacy] = {}
_CONFIGURED: Privacy | None = None


def for_lake(root: str | None = None) -> Privacy:
    """The scrubber of the lake at ``root`` (default: the configured lake root): the
    policy of ``recipes/privacy.yaml`` and the lake's pseudonym salt."""
    if _CONFIGURED is not None:
        return _CONFIGURED
    root = root if root is not None else settings.lake_root()
    with _LOCK:
        p = _BY_ROOT.get(root)
        if p is None:
            policy = load_policy()
            salt = None
            if policy.enabled:
                salt = settings.pii_salt().encode() or _read_or_create_salt(settings.pii_salt_file(root))
            p = _BY_ROOT[root] = Privacy(policy, salt)
        return p


def active() -> Privacy:
    return for_lake(None)


def configure(privacy: Privacy | None) -> None:
    """Use ``privacy`` everywhere in this process (None: back to the per-lake default)."""
    global _CONFIGURED
    _CONFIGURED = privacy
    _BY_ROOT.clear()


def scrub_text(text: str, counts: dict[str, int] | None = None) -> tuple[str, dict[str, int]]:
    return active().scrub_text(text, counts)


def scrub_texts(texts: list[str]) -> tuple[list[str], dict[int, dict[str, int]]]:
    return active().scrub_texts(texts)


def scrub_json(obj: Any, counts: dict[str, int] | None = None) -> tuple[Any, dict[str, int]]:
    return active().scrub_json(obj, counts)


def scrub_bytes(data: bytes, counts: dict[str, int] | None = None) -> tuple[bytes, dict[str, int]]:
    return active().scrub_bytes(data, counts)
