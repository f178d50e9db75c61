"""Personal data in trace text: found, then replaced by a stable pseudonym per value.

Kinds (each can be turned off in ``recipes/privacy.yaml``):

==============  ===========================================  ==============================
``home_user``   the user name in ``/Users/<name>``,           ``/Users/user_3f9a2c1b/...``
                ``/home/<name>``, ``C:\\Users\\<name>``
``email``       e-mail addresses                              ``email_5d1e07aa@example.invalid``
``phone``       phone numbers, validated with Google's        ``[PII:phone_0c4f9e21]``
                libphonenumber (``phonenumbers``)
``payment_card``13-19 digits, Luhn-checked, known issuer       ``[REDACTED:payment_card]``
``ip_address``  IPv4 addresses (not loopback / unspecified /   ``[PII:ip_77b0c2d9]``
                link-local / multicast; private ones optional)
==============  ===========================================  ==============================

A pseudonym is ``<kind>_<8 hex>`` of HMAC-SHA256(salt, kind:value): the same value gets
the same pseudonym in every session and every run of a lake (no shared counter, so
concurrent runs agree), and without the salt -- kept outside every table -- it cannot be
reversed by hashing guesses.

Speed: everything is vectorized with polars (Rust regex): one ``extract_all`` pass over
all texts finds the candidates, the (few) distinct candidates are validated in Python,
and one Aho-Corasick ``replace_many`` pass rewrites only the texts that hold one.
Replacements never contain a quote or a backslash, so JSON text stays valid JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

__all__ = ["PiiPolicy", "Pseudonymizer", "PII_KINDS", "luhn_ok"]

PII_KINDS = ("home_user", "email", "phone", "payment_card", "ip_address")

# Rust-syntax patterns (polars). Each alternative also compiles with Python's re (used to
# tell which kind a candidate is).
# (a Windows drive letter is not part of the match: patterns that start with a literal let
# Rust's regex skip ahead with a literal search, ~5x faster than a letter class first)
_HOME = r"(?:/Users/|/home/|:\\{1,4}Users\\{1,4}|:/Users/)[^/\\\"'\s:*?<>|`]{1,64}"
# the same path as Claude Code names its project folders (every character but [A-Za-z0-9]
# written as "-"): /Users/jane/proj -> -Users-jane-proj, C:\Users\jane -> C--Users-jane.
# Not after a letter or digit ("take-home-pay"). Found by Python's re (lookbehind) in the
# few texts that hold "-Users-" / "-home-", apart from the literal-led union below.
_HOME_DASH = r"(?:[A-Za-z]--|-)(?:Users|home)-[A-Za-z0-9][A-Za-z0-9\-]{0,200}"
_HOME_DASH_FIND = re.compile(r"(?<![A-Za-z0-9])" + _HOME_DASH)
_EMAIL = (r"(?:\\[nrt])?[A-Za-z0-9._%+\-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?"
          r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,62}[A-Za-z0-9])?){0,8}\.[A-Za-z]{2,24}\b")
_PHONE = (r"\+[1-9][0-9]{0,2}[ .\-]?(?:\([0-9]{1,4}\)|[0-9]{1,4})(?:[ .\-]?[0-9]{2,4}){2,4}\b"
          r"|\([0-9]{3}\)[ .\-]?[0-9]{3}[ .\-][0-9]{4}\b"
          r"|\b[0-9]{3}[.\-][0-9]{3}[.\-][0-9]{4}\b")
_CARD = (r"\b(?:[0-9]{13,19}|[0-9]{4}(?:[ \-][0-9]{4}){2}[ \-][0-9]{1,7}"
         r"|[0-9]{4}[ \-][0-9]{6}[ \-][0-9]{4,5})\b")  # contiguous, 4-4-4-x, Amex 4-6-5
# Necessary conditions of the kinds above, cheap to scan for (literal-led or short): only
# the texts that match one go through the full extraction.
_PRE = {
    "home_user": r"/Users/|/home/|:\\{1,4}Users\\{1,4}|:/Users/|-Users-|-home-",
    # what _EMAIL needs around its "@" (not npm's "pkg@1.2.3/" nor a hash's "...@v2")
    "email": r"[A-Za-z0-9._%+\-]@[A-Za-z0-9][A-Za-z0-9\-]{0,63}\.[A-Za-z0-9]",
    "phone": r"\+[1-9][0-9 .\-()]{6}|\([0-9]{3}\)|[0-9][.\-][0-9]{3}[.\-][0-9]",
    # contiguous, 4-4-4-x, Amex 4-6-5 (not a UUID's 4-4-4 hex groups)
    "payment_card": r"[2-6][0-9]{3}(?:[0-9]{9}|[ \-][0-9]{4}[ \-][0-9]{4}|[ \-][0-9]{6}[ \-][0-9]{4})",
    "ip_address": r"[0-9]\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]",
}
_IP = r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b"

_PY = {
    "home_user": re.compile(_HOME + "|" + _HOME_DASH),
    "email": re.compile(_EMAIL),
    "phone": re.compile(_PHONE),
    "payment_card": re.compile(_CARD),
    "ip_address": re.compile(_IP),
}
_RUST = {"home_user": _HOME, "email": _EMAIL, "phone": _PHONE, "payment_card": _CARD, "ip_address": _IP}
# which kinds a candidate may be, tried in this order
_PREFIX = {"home_user": "user", "ip_address": "ip"}
_ORDER = ("home_user", "email", "payment_card", "phone", "ip_address")


def _dashed(name: str) -> str:
    """A name as Claude Code writes it in a folder name (every character but [A-Za-z0-9] -> "-")."""
    return re.sub(r"[^A-Za-z0-9]", "-", name)


_DASHED_RE = re.compile(r"([^A-Za-z0-9]?(?:[A-Za-z]--|-)(?:Users|home)-)([A-Za-z0-9][A-Za-z0-9\-]*)")


def _is_dashed(cand: str) -> bool:
    return _DASHED_RE.match(cand) is not None


def luhn_ok(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        alt = not alt
    return total % 10 == 0


def _issuer_ok(d: str) -> bool:
    """A major issuer's prefix and length (Visa, Mastercard, Amex, Discover, JCB, Diners, UnionPay)."""
    n = len(d)
    if d[0] == "4":
        return n in (13, 16, 19)
    two, four = int(d[:2]), int(d[:4])
    if 51 <= two <= 55 or 2221 <= four <= 2720:
        return n == 16
    if two in (34, 37):
        return n == 15
    if d.startswith("6011") or d.startswith("65") or 644 <= int(d[:3]) <= 649:
        return 16 <= n <= 19
    if 3528 <= four <= 3589:
        return 16 <= n <= 19
    if two in (36, 38, 39) or 300 <= int(d[:3]) <= 305:
        return 14 <= n <= 19
    if two == 62:
        return 16 <= n <= 19
    return False


@dataclass(frozen=True)
class PiiPolicy:
    """Which personal data is replaced, and what is left alone."""

    home_user: bool = True
    email: bool = True
    phone: bool = True
    payment_card: bool = True
    ip_address: bool = True
    keep_private_ips: bool = False  # 10.x, 192.168.x, 172.16-31.x stay when True
    phone_region: str = "US"  # numbers without a +country prefix are read in this region
    allow_users: frozenset[str] = field(default_factory=lambda: frozenset(
        {"Shared", "Public", "Default", "All Users", "user", "User", "username", "runner"}))
    # user names whose folder names Claude Code writes with "-" (Jane_Smith -> Jane-Smith): a
    # name known here (or the name of this machine's user) is taken whole in -Users-Jane-Smith-proj;
    # an unknown one up to its first "-" (see Pseudonymizer.dashed_home)
    known_users: frozenset[str] = field(default_factory=frozenset)
    allow_email_locals: frozenset[str] = field(default_factory=lambda: frozenset({"noreply", "no-reply", "git"}))
    allow_email_domains: frozenset[str] = field(default_factory=lambda: frozenset({
        "example.com", "example.org", "example.net", "example.invalid", "users.noreply.github.com"}))

    @classmethod
    def from_mapping(cls, m: dict[str, Any] | None) -> "PiiPolicy":
        m = dict(m or {})
        kinds = m.pop("kinds", {}) or {}
        allow = m.pop("allow", {}) or {}
        kw: dict[str, Any] = {}
        for k, v in kinds.items():
            if k not in PII_KINDS:
                raise ValueError(f"unknown personal-data kind {k!r} (known: {', '.join(PII_KINDS)})")
            kw[k] = bool(v)
        for k in ("keep_private_ips", "phone_region"):
            if k in m:
                kw[k] = m.pop(k)
        for k, attr in (("users", "allow_users"), ("email_locals", "allow_email_locals"),
                        ("email_domains", "allow_email_domains")):
            if k in allow:
                kw[attr] = frozenset(allow[k] or [])
        if "known_users" in m:
            kw["known_users"] = frozenset(str(u) for u in (m.pop("known_users") or []))
        if m:
            raise ValueError(f"unknown personal-data settings: {sorted(m)}")
        return cls(**kw)

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(k for k in _ORDER if getattr(self, k))


class Pseudonymizer:
    """Finds and replaces personal data per a :class:`PiiPolicy`, keyed by a secret salt."""

    def __init__(self, policy: PiiPolicy, salt: bytes):
        if not salt:
            raise ValueError("a pseudonym salt is required")
        self.policy = policy
        self._salt = salt
        self._cache: dict[str, tuple[str, str] | None] = {}
        # user names seen in /Users/<name> paths by this scrubber: a dashed folder name in the
        # same texts (-Users-Jane-Smith-proj) is then cut after the whole name
        self._learned: set[str] = set()

    def __repr__(self) -> str:  # never show the salt
        return f"Pseudonymizer(kinds={list(self.policy.enabled)})"

    @cached_property
    def prefilter_patterns(self) -> tuple[str, ...]:
        """The pre-filter of each enabled kind (the gate's personal-data patterns)."""
        return tuple(_PRE[k] for k in self.policy.enabled)

    @cached_property
    def prefilter(self) -> str | None:
        from resources.privacy.gate import ascii_rust

        kinds = self.policy.enabled
        return ascii_rust("|".join(_PRE[k] for k in kinds)) if kinds else None

    @cached_property
    def pattern(self) -> str | None:
        kinds = self.policy.enabled
        from resources.privacy.gate import ascii_rust

        return ascii_rust("|".join(_RUST[k] for k in kinds)) if kinds else None

    def pseudonym(self, kind: str, value: str) -> str:
        h = hmac.new(self._salt, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:8]
        return f"{_PREFIX.get(kind, kind)}_{h}"

    # -------------------------------------------------------------- one candidate
    def classify(self, cand: str) -> tuple[str, str] | None:
        """(kind, replacement) of a candidate the pattern found, or None to leave it."""
        hit = self._cache.get(cand, ...)
        if hit is not ...:
            return hit  # type: ignore[return-value]
        out = None
        dashed = _is_dashed(cand)
        for kind in self.policy.enabled:
            if _PY[kind].fullmatch(cand):
                out = getattr(self, "_" + kind)(cand)
                if out is not None:
                    out = (kind, out)
                    break
        if len(self._cache) < 100_000 and not dashed:  # a dashed one depends on the names learned so far
            self._cache[cand] = out
        return out

    def _home_user(self, cand: str) -> str | None:
        m = re.match(r"(/Users/|/home/|:\\{1,4}Users\\{1,4}|:/Users/)(.*)", cand, re.S)
        if m is None:
            return self.dashed_home(cand, self._learned)
        prefix, name = m.group(1), m.group(2)
        if not self._user_name(name):
            return None
        if len(self._learned) < 10_000:
            self._learned.add(name)
        return prefix + self.pseudonym("home_user", name)

    def _user_name(self, name: str) -> bool:
        """Whether ``name`` (after /Users/) is a user's name to pseudonymize."""
        return bool(name) and name not in self.policy.allow_users and not name.startswith(
            ("user_", "$", "%", "{", "<", "["))

    @cached_property
    def _static_users(self) -> tuple[tuple[str, str], ...]:
        from resources import settings

        names = set(self.policy.known_users) | set(settings.local_user_names())
        return tuple(sorted(((n, _dashed(n)) for n in names if self._user_name(n)), key=lambda x: -len(x[1])))

    def dashed_home(self, text: str, users=()) -> str | None:
        """A home folder written the Claude Code way (``-Users-Jane-Smith-proj``, ``C--Users-jane``,
        ``-home-jane``, with at most one character before it) with its user name pseudonymized
        (the pseudonym of ``/Users/Jane_Smith``), or None.

        Where the name ends cannot be read from the dashes: a name known from the policy, this
        machine or ``users`` (names seen in /Users/<name> paths) is taken whole (the longest
        that fits), any other one up to its first "-"."""
        m = _DASHED_RE.match(text)
        if m is None:
            return None
        prefix, rest = m.group(1), m.group(2)
        name = None
        extra = sorted(((u, _dashed(u)) for u in users if self._user_name(u)), key=lambda x: -len(x[1]))
        for real, dashed in (*extra, *self._static_users):
            if rest == dashed or rest.startswith(dashed + "-"):
                name, tail = real, rest[len(dashed):]
                break
        if name is None:
            name, _, tail = rest.partition("-")
            tail = "-" + tail if tail else ""
            if not self._user_name(name):
                return None
        return prefix + self.pseudonym("home_user", name) + tail + text[m.end():]

    def path(self, relpath: str, users=()) -> str:
        """A relative path with the user names of its folders pseudonymized: dashed home
        folders (Claude Code's ``-Users-jane-proj``) and ``.../Users/<name>/...``,
        ``.../home/<name>/...`` components. Deterministic for a given salt, policy and
        ``users``; every other component is kept as it is."""
        if "home_user" not in self.policy.enabled:
            return relpath
        parts = relpath.split("/")
        out = []
        for i, comp in enumerate(parts):
            if i and parts[i - 1] in ("Users", "home") and self._user_name(comp):
                comp = self.pseudonym("home_user", comp)
            elif "Users-" in comp or "home-" in comp:
                comp = self.dashed_home(comp, users) or comp
            out.append(comp)
        return "/".join(out)

    def _email(self, cand: str) -> str | None:
        esc = ""
        if cand.startswith("\\"):
            esc, cand = cand[:2], cand[2:]
        local, _, domain = cand.rpartition("@")
        domain = domain.lower()
        if local.startswith(".") or local.endswith(".") or ".." in local:
            return None  # not an address (Promise.@resolve)
        if not esc and local in ("n", "r", "t"):
            return None  # the letter of a JSON escape ("...\n@github.com"): replacing it would break the escape
        if (local.lower() in self.policy.allow_email_locals or domain in self.policy.allow_email_domains
                or domain.endswith((".invalid", ".test", ".example", ".localhost", ".local"))
                or local.startswith("email_")):
            return None
        if domain.rsplit(".", 1)[-1] in ("png", "jpg", "jpeg", "gif", "svg", "webp", "js", "ts", "py", "css"):
            return None  # retina image names (icon@2x.png), not addresses
        return esc + self.pseudonym("email", local.lower() + "@" + domain) + "@example.invalid"

    def _phone(self, cand: str) -> str | None:
        import phonenumbers

        try:
            num = phonenumbers.parse(cand, self.policy.phone_region)
        except phonenumbers.NumberParseException:
            return None
        if not phonenumbers.is_valid_number(num):
            return None
        e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
        return f"[PII:{self.pseudonym('phone', e164)}]"

    def _payment_card(self, cand: str) -> str | None:
        d = cand.replace(" ", "").replace("-", "")
        if not (13 <= len(d) <= 19 and luhn_ok(d) and _issuer_ok(d)):
            return None
        return "[REDACTED:payment_card]"

    def _ip_address(self, cand: str) -> str | None:
        try:
            ip = ipaddress.IPv4Address(cand)
        except ValueError:
            return None
        if ip.is_loopback or ip.is_unspecified or ip.is_link_local or ip.is_multicast or ip.is_reserved:
            return None
        if self.policy.keep_private_ips and ip.is_private:
            return None
        if cand.rsplit(".", 1)[1] in ("0", "255"):
            return None  # network / broadcast addresses and masks (10.0.0.0, 255.255.255.0)
        return f"[PII:{self.pseudonym('ip_address', str(ip))}]"

    # -------------------------------------------------------------- many texts
    def candidates(self, texts: list[str]) -> list[int]:
        """Indices of the texts that may hold personal data (the cheap pre-filter)."""
        if not texts or self.prefilter is None:
            return []
        import polars as pl

        return pl.Series("t", texts, dtype=pl.String).str.contains(self.prefilter).arg_true().to_list()

    def scrub_many(self, texts: list[str], candidates: list[int] | None = None
                   ) -> tuple[list[str], dict[int, dict[str, int]]]:
        """Replace personal data in every text: ``(texts, {index: {kind: n}})`` (sparse).
        ``candidates``: the indices :meth:`candidates` gave (computed here when None)."""
        if not texts or self.pattern is None:
            return texts, {}
        import polars as pl

        s = pl.Series("t", texts, dtype=pl.String)
        if candidates is None:
            idx = s.str.contains(self.prefilter).arg_true()
        else:
            idx = pl.Series("i", candidates, dtype=pl.UInt32)
        if len(idx) == 0:
            return texts, {}
        sub = s.gather(idx)
        found = sub.str.extract_all(self.pattern)
        df = pl.DataFrame({"i": idx, "m": found}).explode("m").drop_nulls("m")
        if "home_user" in self.policy.enabled:
            dashed = sub.str.contains("-(?:Users|home)-").arg_true().to_list()
            if dashed:
                rows = [(idx[j], m.group(0)) for j in dashed for m in _HOME_DASH_FIND.finditer(sub[j])]
                if rows:
                    extra = pl.DataFrame({"i": [r[0] for r in rows], "m": [r[1] for r in rows]},
                                         schema={"i": df.schema["i"], "m": pl.String})
                    df = pl.concat([df, extra])
        if df.height == 0:
            return texts, {}
        repl: dict[str, str] = {}
        kind_of: dict[str, str] = {}
        # slash-form home paths first: they teach the user names of dashed folder names
        for cand in sorted(df["m"].unique().to_list(), key=_is_dashed):
            hit = self.classify(cand)
            if hit is not None:
                kind_of[cand], repl[cand] = hit
        if not repl:
            return texts, {}
        hits = df.filter(pl.col("m").is_in(list(repl)))
        counts: dict[int, dict[str, int]] = {}
        for i, m in zip(hits["i"].to_list(), hits["m"].to_list()):
            c = counts.setdefault(i, {})
            k = kind_of[m]
            c[k] = c.get(k, 0) + 1
        rows = sorted(counts)
        keys = sorted(repl, key=len, reverse=True)
        new = s.gather(rows).str.replace_many(keys, [repl[k] for k in keys]).to_list()
        out = list(texts)
        for i, t in zip(rows, new):
            out[i] = t
        return out, counts

    def scrub(self, text: str) -> tuple[str, dict[str, int]]:
        out, counts = self.scrub_many([text])
        return out[0], counts.get(0, {})
