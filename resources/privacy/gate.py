"""The one pre-scan every text goes through first: which texts may hold a secret, which
may hold personal data. Only those go on to the (slower) rules.

With Intel's Hyperscan (PyPI ``hyperscan``: every pre-filter pattern of the secret rules
and of the personal-data kinds compiled into ONE multi-pattern database, each pattern
reported once per text) a text is read once for all of them; without it (a machine where
the wheel does not install) the same patterns run as polars (Rust regex) passes over the
column. Both give the same indices (tested): a pattern here is a necessary condition of
its rule, so a text the gate passes over holds nothing any rule would change.
"""

from __future__ import annotations

import threading

__all__ = ["Gate", "Finder", "HYPERSCAN", "ascii_rust"]

try:  # pragma: no cover - the import is what decides
    import hyperscan as _hs

    HYPERSCAN = True
except Exception:  # noqa: BLE001 - missing wheel / unsupported CPU: the polars path
    _hs = None
    HYPERSCAN = False


# Texts longer than this go through the polars path: some unions of the secret patterns
# make Hyperscan's time grow with the square of a text's length on repetitive input
# ("sk-" x 3 million: 0.1 s at 300 KB, 99 s at 9 MB, measured); Rust's regex stays linear. At
# 64 KB a 9 MB file of such lines costs under a second.
HS_MAX_CHARS = 64 * 1024


class Gate:
    """``scan(texts) -> (secret_candidates, personal_data_candidates)`` (sorted indices)."""

    def __init__(self, secret_patterns: tuple[str, ...], pii_patterns: tuple[str, ...], *,
                 use_hyperscan: bool | None = None, polars_secret_patterns: tuple[str, ...] | None = None):
        """``polars_secret_patterns``: how the polars path runs the secret pre-filter (Rust
        syntax; a text matching any of them is a candidate); by default one union of
        ``secret_patterns``."""
        self.secret_patterns = tuple(secret_patterns)
        self.pii_patterns = tuple(pii_patterns)
        if polars_secret_patterns is None:
            polars_secret_patterns = (ascii_rust("|".join(self.secret_patterns)),) if self.secret_patterns else ()
        self._polars_secret = tuple(polars_secret_patterns)
        self._n_secret = len(self.secret_patterns)
        self._db = None
        self._local = threading.local()
        want = HYPERSCAN if use_hyperscan is None else use_hyperscan
        if want and (self.secret_patterns or self.pii_patterns):
            try:
                self._db = _compile(self.secret_patterns + self.pii_patterns)
            except Exception:  # noqa: BLE001 - a pattern Hyperscan cannot take: the polars path
                self._db = None
        self.engine = "hyperscan" if self._db is not None else "polars"

    def __repr__(self) -> str:
        return f"Gate({self.engine}, {self._n_secret} secret + {len(self.pii_patterns)} personal-data patterns)"

    def scan(self, texts: list[str], raw: list[bytes] | None = None) -> tuple[list[int], list[int]]:
        """Indices of the texts that may hold a secret, and of those that may hold personal
        data. ``raw``: the texts' UTF-8 bytes when the caller has them (saves encoding)."""
        if not texts:
            return [], []
        if self._db is None:
            return self._scan_polars(texts)
        return self._scan_hyperscan(texts, raw)

    def secret_hits(self, texts: list[str]) -> list[frozenset[str] | None]:
        """For each text, the secret patterns it matches (its rules' pre-filters); None where
        the caller must find out itself (no Hyperscan, a long text)."""
        if self._db is None or not self.secret_patterns:
            return [None] * len(texts)
        db = getattr(self, "_sec_db", None)
        if db is None:
            db = self._sec_db = _compile(self.secret_patterns)
        s = getattr(self._local, "sec_scratch", None)
        if s is None:
            s = self._local.sec_scratch = _hs.Scratch(db)
        pats = self.secret_patterns
        out: list[frozenset[str] | None] = []
        for t in texts:
            if len(t) > HS_MAX_CHARS:
                out.append(None)
                continue
            ids: set[int] = set()
            db.scan(t.encode("utf-8", "surrogatepass"), match_event_handler=lambda pid, *_: ids.add(pid),
                    scratch=s)
            out.append(frozenset(pats[i] for i in ids))
        return out

    # ------------------------------------------------------------------ engines
    def _scratch(self):
        s = getattr(self._local, "scratch", None)
        if s is None:
            s = self._local.scratch = _hs.Scratch(self._db)
        return s

    def _scan_hyperscan(self, texts: list[str], raw: list[bytes] | None) -> tuple[list[int], list[int]]:
        n_secret = self._n_secret
        sec: list[int] = []
        per: list[int] = []
        state = [0, False, False]  # text index, secret seen, personal data seen

        def on_match(pid, _from, _to, _flags, _ctx):
            if pid < n_secret:
                state[1] = True
            else:
                state[2] = True
            return 1 if (state[1] and state[2]) else 0  # both known: stop reading this text

        scan = self._db.scan
        scratch = self._scratch()
        encode = str.encode
        long: list[int] = []
        for i, t in enumerate(texts):
            if not t:
                continue
            if len(t) > HS_MAX_CHARS:
                long.append(i)
                continue
            state[1] = state[2] = False
            try:
                scan(raw[i] if raw is not None else encode(t, "utf-8", "surrogatepass"),
                     match_event_handler=on_match, scratch=scratch)
            except _hs.ScanTerminated:  # the callback stopped it: both kinds found
                pass
            if state[1]:
                sec.append(i)
            if state[2]:
                per.append(i)
        if long:
            lsec, lper = self._scan_polars([texts[i] for i in long])
            sec = sorted(sec + [long[j] for j in lsec])
            per = sorted(per + [long[j] for j in lper])
        return sec, per

    def _scan_polars(self, texts: list[str]) -> tuple[list[int], list[int]]:
        # the pre-filters as they run without Hyperscan (the secret rules' union + the
        # patterns that run alone; the personal-data union)
        import polars as pl

        s = pl.Series("t", texts, dtype=pl.String)
        sec: list[int] = []
        if self._polars_secret:
            mask = s.str.contains(self._polars_secret[0])
            for p in self._polars_secret[1:]:
                mask = mask | s.str.contains(p)
            sec = mask.arg_true().to_list()
        per: list[int] = []
        if self.pii_patterns:
            per = s.str.contains(ascii_rust("|".join(self.pii_patterns))).arg_true().to_list()
        return sec, per


def _compile(patterns: tuple[str, ...]):
    db = _hs.Database()
    flags = _hs.HS_FLAG_SINGLEMATCH | _hs.HS_FLAG_ALLOWEMPTY
    db.compile(expressions=[_hs_syntax(p).encode() for p in patterns], ids=list(range(len(patterns))),
               flags=[flags] * len(patterns))
    return db


def ascii_rust(pattern: str) -> str:
    """A Rust-syntax pattern with ASCII classes: Unicode ``\\d``, ``\\w``, ``\\s``, ``\\b`` keep
    Rust's regex off its fast DFA (3-20x slower on our texts, measured)."""
    return (pattern.replace(r"\d", "[0-9]").replace(r"\w", "[0-9A-Za-z_]")
            .replace(r"\s", "[\t\n\f\r ]").replace(r"\b", r"(?-u:\b)"))


def _hs_syntax(pattern: str) -> str:
    """A Rust-syntax pattern in Hyperscan's (PCRE) syntax: Rust's ``(?-u:\\b)`` is Hyperscan's
    plain ``\\b`` (ASCII unless UCP is asked for, as are ``\\d``, ``\\w``, ``\\s``)."""
    return pattern.replace(r"(?-u:\b)", r"\b")




class Finder:
    """Where a few patterns match in a text: ``spans(text) -> [(start, end)]`` in characters,
    leftmost start per match end (Hyperscan's SOM_LEFTMOST), in order. Python's ``re``
    (finditer over the union) where Hyperscan is missing or a text is long."""

    def __init__(self, patterns: tuple[str, ...], *, python_patterns: tuple[str, ...] | None = None,
                 use_hyperscan: bool | None = None):
        import re

        self.patterns = tuple(patterns)
        self._re = re.compile("|".join(f"(?:{p})" for p in (python_patterns or self.patterns)))
        self._db = None
        self._local = threading.local()
        want = HYPERSCAN if use_hyperscan is None else use_hyperscan
        if want and self.patterns:
            try:
                db = _hs.Database()
                db.compile(expressions=[_hs_syntax(p).encode() for p in self.patterns],
                           ids=list(range(len(self.patterns))),
                           flags=[_hs.HS_FLAG_SOM_LEFTMOST | _hs.HS_FLAG_ALLOWEMPTY] * len(self.patterns))
                self._db = db
            except Exception:  # noqa: BLE001 - a pattern Hyperscan cannot take: Python's re
                self._db = None

    def spans(self, text: str, max_spans: int = 256) -> list[tuple[int, int]]:
        if self._db is None or len(text) > HS_MAX_CHARS * 16:
            return [m.span() for m in self._re.finditer(text)]
        raw = text.encode("utf-8", "surrogatepass")
        found: list[tuple[int, int]] = []

        def on_match(_pid, start, end, _flags, _ctx):
            found.append((start, end))
            return 1 if len(found) > max_spans else 0

        s = getattr(self._local, "scratch", None)
        if s is None:
            s = self._local.scratch = _hs.Scratch(self._db)
        try:
            self._db.scan(raw, match_event_handler=on_match, scratch=s)
        except _hs.ScanTerminated:
            return [m.span() for m in self._re.finditer(text)]  # too many: the plain way
        if not found:
            return []
        # one span per start (the longest), in order; byte offsets -> character offsets
        best: dict[int, int] = {}
        for a, b in found:
            if b > best.get(a, -1):
                best[a] = b
        spans = sorted(best.items())
        if len(raw) != len(text):
            # byte offsets -> characters (every offset is at an ASCII pattern character, so
            # the cuts fall between characters), counted once along the text
            cuts = sorted({x for sp in spans for x in sp})
            chars, done, pos = {}, 0, 0
            for c in cuts:
                done += len(raw[pos:c].decode("utf-8", "replace"))
                chars[c], pos = done, c
            spans = [(chars[a], chars[b]) for a, b in spans]
        return spans
