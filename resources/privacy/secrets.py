"""Secret scrubbing for trace text.

``scrub(text)`` replaces credentials with typed placeholders such as
``[REDACTED:anthropic_key]`` and counts what it replaced, by kind.

The rules come from two places:

* Yelp's **detect-secrets** (1.5.x) plugins, loaded through its API: the ``denylist``
  regexes of its regex-based detectors (Stripe, GitLab, SendGrid, Twilio, Telegram,
  Discord, Azure storage, Mailchimp, PyPI, Square, basic-auth URLs) and its JWT
  validator. Only the *placement* is ours: where a match starts (a token boundary),
  how far the replaced value reaches (to the end of the token: detect-secrets matches
  the first 24 characters of a 100-character Stripe key) and what may never be
  replaced (quotes, backslashes: JSON must stay valid).
* our own rules for what detect-secrets does not know or matches unsafely for JSON
  text (provider API keys, ``KEY=value`` lines, config fields, ``--password=`` flags,
  bearer tokens, PEM blocks, Mailgun, npm, base64-wrapped secrets).

detect-secrets' keyword and high-entropy detectors are NOT used: on the real
transcripts in shared/realdata they flag hundreds of ordinary strings (git SHAs,
message ids, base64 images, code identifiers), see docs in /work/notes/privacy.md and
``tests/privacy/test_secret_corpus.py::test_entropy_detectors_flood_real_transcripts``.

It runs on the *raw text of JSONL lines*, where secrets sit JSON-escaped inside
strings (``"...\\nAPI_KEY=abc\\n..."``, PEM blocks whose newlines are literal ``\\n``,
doubly escaped Codex tool outputs). Guarantees:

* a placeholder never contains a quote or a backslash, and no replaced value holds a
  quote or a backslash, so a valid JSON line stays valid JSON;
* for ``KEY=value`` style rules only the value is replaced, the key name stays;
* bounded time: every quantifier of our rules is bounded and a match must start at a
  token boundary, so a pathological 9 MB line costs linear time (tested).

Speed: every rule has a relaxed Rust-syntax ``bulk`` pattern; for bulk work
(:func:`scrub_many`, used by the raw reader) their union is run over all texts by
Rust's regex engine (via polars); only the few texts it flags go through the Python
rules. A rule may also have lowercase literal ``gates``: its Python regex then runs only
when one of them occurs in the lowered text.

Extend with :func:`register` (a name, gate literals and a regex whose group
``val`` -- or the whole match when there is no such group -- is replaced).
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Iterable

from resources.privacy.gate import Finder, Gate, ascii_rust

__all__ = ["scrub", "scrub_many", "scrub_obj", "scrub_bytes", "suspicious", "register", "RULES", "placeholder",
           "Rule", "find"]


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind}]"


# A token may start at a word boundary, or right after a JSON escape such as \n \t \r
# (the escape's letter would otherwise look like part of a word).
_LB = r"(?:(?<![A-Za-z0-9_\-])|(?<=\\[nrt]))"
# Start of a line in raw text or in JSON-escaped text.
_LINE_START = r"(?:^|(?<=\n)|(?<=\\n)|(?<=\\r)|(?<=\\t)|(?<=\"))"
# The same as a consumed first character: Python's regex engine then skips ahead to the
# next newline / backslash / quote instead of trying six look-behinds at every position
# (~5x faster on long tool outputs). Rules using it run on "\n" + text (``lead=True``).
_LEAD = r"(?:\n|\\[nrt]|\")"
# An optional quote opener, possibly JSON-escaped once or twice.
_Q = r"""(?:\\{0,4}["'])?"""
_NOT_REDACTED = r"(?!\[REDACTED:)"
_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_WORD_CHARS = _TOKEN_CHARS
_UNSAFE = frozenset("\"'\\ \t\r\n")  # never part of a replaced value (JSON stays valid)
_MAX_EXTEND = 1024


@dataclass(frozen=True)
class Rule:
    kind: str
    gates: tuple[str, ...] | None  # lowercase literals (regex runs only if one occurs); None: always
    regex: re.Pattern[str]
    bulk: str = ""  # Rust-syntax relaxed pattern: matches wherever ``regex`` could
    group: int | str = 0  # the replaced part: a group name/number (0: whole match); "val" if present
    check: Callable[[str], bool] | None = None  # validates a found value
    lead: bool = False  # the pattern starts with _LEAD: it runs on "\n" + text
    extend: bool = False  # the value reaches to the end of its token
    boundary: bool = False  # the match must start at a token boundary (checked in code)
    source: str = "tracelake"


def _rule(kind: str, gates: Iterable[str] | None, pattern: str, bulk: str, flags: int = 0, **kw) -> Rule:
    return Rule(kind, tuple(g.lower() for g in gates) if gates is not None else None,
                re.compile(pattern, flags), bulk=bulk, **kw)


def _relax(pattern: str) -> str:
    """A Python pattern as a Rust-syntax superset: look-arounds dropped."""
    return re.sub(r"\(\?<?[!=][^()]*\)", "", pattern)


# ----------------------------------------------------------------- detect-secrets plugins
# (module, class, our kind, gates, replaced group, extend to token end, own check)
_DETECT_SECRETS = [
    ("stripe", "StripeDetector", "stripe_key", ["sk_live_", "rk_live_"], 0, True),
    ("gitlab_token", "GitLabTokenDetector", "gitlab_token",
     ["glpat-", "gldt-", "glft-", "glsoat-", "glrt-", "gr1348941", "glcbt-", "glimt-", "glptt-", "glagent-", "gloas-"],
     0, True),
    ("sendgrid", "SendGridDetector", "sendgrid_key", ["sg."], 0, True),
    ("twilio", "TwilioKeyDetector", "twilio_key", None, 0, False),
    ("telegram_token", "TelegramBotTokenDetector", "telegram_bot_token", [":"], 0, True),
    ("discord", "DiscordBotTokenDetector", "discord_bot_token", ["."], 0, True),
    ("azure_storage_key", "AzureStorageKeyDetector", "azure_storage_key", ["accountkey="], 0, False),
    ("mailchimp", "MailchimpDetector", "mailchimp_key", ["-us"], 0, False),
    ("pypi_token", "PypiTokenDetector", "pypi_token", ["pypi-ag"], 0, True),
    ("square_oauth", "SquareOAuthDetector", "square_token", ["sq0csp-"], 0, True),
    ("basic_auth", "BasicAuthDetector", "url_password", ["://"], 1, False),
]


def _detect_secrets_rules() -> list[Rule]:
    import importlib

    rules = []
    for mod, cls, kind, gates, group, extend in _DETECT_SECRETS:
        plugin = getattr(importlib.import_module(f"detect_secrets.plugins.{mod}"), cls)
        for rx in plugin.denylist:
            if kind == "azure_storage_key":  # keep the "AccountKey=" name, replace the key
                rx = re.compile(rx.pattern.replace("AccountKey=", "AccountKey=(", 1) + ")")
                group = 1
            bulk, check = _relax(rx.pattern), None
            if kind == "telegram_bot_token":
                # every bot token's secret half starts with "A" (gitleaks' telegram rule): a
                # literal-led pre-filter, ~15x cheaper than detect-secrets' digit-led pattern
                bulk, check = r":A[0-9A-Za-z_\-]{34}", _telegram_ok
            # a bot token follows "bot" in API URLs (https://api.telegram.org/bot<token>/getMe)
            boundary = group == 0 and kind != "telegram_bot_token"
            rules.append(Rule(kind, tuple(gates) if gates is not None else None, rx, bulk=bulk, check=check,
                              group=group, extend=extend, boundary=boundary, source=f"detect-secrets:{cls}"))
    return rules


_PLACEHOLDER_WORDS = frozenset(
    "string undefined null none nil true false password passwd secret token key apikey api_key changeme "
    "example redacted hidden your_key your_token xxx".split())
_CODE_VALUE = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*(?:\.[A-Za-z_$][A-Za-z0-9_$]*)+|.*[()?].*")


def _plausible(value: str) -> bool:
    """False for values that are placeholders or code, not credentials: ``sk-...``,
    ``<your key>``, ``undefined``, ``params.apiKey``, ``getKey()``."""
    low = value.lower().strip("'\"`;,")
    if low in _PLACEHOLDER_WORDS or "..." in low or "\u2026" in low or "…" in low or "***" in low or "xxxx" in low:
        return False
    return not _CODE_VALUE.fullmatch(value)


def _strong(value: str) -> bool:
    """A keyword-found value that also looks like a credential: it holds a digit, or is
    long and mixed-case (keeps ``apiKey: 'ollama'`` and ``KEY = 'proxy-handled'`` in code)."""
    if not _plausible(value):
        return False
    if any(c.isdigit() for c in value):
        return True
    return len(value) >= 12 and any(c.isupper() for c in value) and any(c.islower() for c in value)


def _telegram_ok(value: str) -> bool:
    return value.partition(":")[2][:1] == "A"


def _jwt_check() -> Callable[[str], bool]:
    from detect_secrets.plugins.jwt import JwtTokenDetector

    return JwtTokenDetector.is_formally_valid


# ----------------------------------------------------------------- base64-wrapped secrets
_B64_PREFIXES = ["sk-ant-", "sk-proj-", "sk-or-v1", "github_pat_", "-----BEGIN", "glpat-", "sk_live_", "rk_live_",
                 "password", "PASSWORD", "secret", "SECRET", "api_key", "API_KEY", "token=", "TOKEN=", "xoxb-",
                 "AKIAI", "AKIAJ", "AKIAQ", "AKIAU", "AKIAR", "AKIAS", "AKIAT", "AKIAV", "AKIAW", "AKIAX", "AKIAY",
                 "AKIAZ", "SG."]


def _b64_cores(p: str) -> list[str]:
    """Base64 substrings that always appear where ``p`` is encoded (at the 3 alignments)."""
    out = []
    for off in range(3):
        enc = base64.b64encode(b"\x00" * off + p.encode()).decode()
        start = {0: 0, 1: 2, 2: 3}[off]
        end = ((off + len(p)) * 8) // 6
        core = enc[start:end]
        if len(core) >= 4:
            out.append(core)
    return out


_B64_CORES = sorted({c for p in _B64_PREFIXES for c in _b64_cores(p)})
_B64_RUN = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{16,8192}={0,2}(?![A-Za-z0-9+/=])")


def _base64_spans(text: str) -> Iterable[tuple[int, int]]:
    for m in _B64_RUN.finditer(text):
        run = m.group(0)
        if not any(c in run for c in _B64_CORES):
            continue
        body = run.rstrip("=")
        try:
            raw = base64.b64decode(body + "=" * (-len(body) % 4))
        except (binascii.Error, ValueError):
            continue
        decoded = raw.decode("utf-8", "replace")
        if find(decoded, skip=("base64_secret",)):
            yield m.span()


# ----------------------------------------------------------------- the rules
_KEYWORDS = r"(?:key|secret|token|password|passwd|pwd|credentials?)"

# Order matters: the more specific rules run first (an ``sk-ant-`` key must be
# reported as anthropic_key, not openai_key; a PEM block before the tokens it may hold).
RULES: list[Rule] = [
    _rule(
        "private_key",
        ["private key"],
        r"-----BEGIN[ A-Z0-9]{0,32}PRIVATE KEY(?: BLOCK)?-----"
        r"(?:[A-Za-z0-9+/=:,. \t\r\n]|\\{1,4}[nrt]|-(?!----)){0,65536}"
        r"(?:-----END[ A-Z0-9]{0,32}PRIVATE KEY(?: BLOCK)?-----)?",
        r"PRIVATE KEY",
    ),
    # the second half of a PEM block whose first half was on another line (a streamed or
    # split message): base64 lines right before an END marker -- found in code (below),
    # walking back from each END marker, so a long base64 run costs linear time
    Rule("private_key", ("private key-----",), re.compile(r"-----END[ A-Z0-9]{0,32}PRIVATE KEY(?: BLOCK)?-----"),
         bulk=r"-----END[ A-Z0-9]*PRIVATE KEY"),
    _rule("anthropic_key", ["sk-ant-"], _LB + r"sk-ant-[A-Za-z0-9_\-]{20,512}", r"sk-ant-[A-Za-z0-9_\-]{20}"),
    _rule("openrouter_key", ["sk-or-"], _LB + r"sk-or-(?:v1-)?[A-Za-z0-9_\-]{20,512}", r"sk-or-(?:v1-)?[A-Za-z0-9_\-]{20}"),
    _rule(
        "openai_key",
        ["sk-"],
        # sk-proj-/sk-svcacct-/sk-admin- or a legacy key; must hold a digit, so
        # kebab-case words like "sk-learn-model-selection" never match.
        _LB + r"sk-(?:proj-|svcacct-|admin-)?(?=[A-Za-z0-9_\-]{0,512}[0-9])[A-Za-z0-9_\-]{32,512}",
        r"sk-[A-Za-z0-9_\-]{32}",
    ),
    _rule("google_api_key", ["aiza"], _LB + r"AIza[0-9A-Za-z_\-]{35,128}", r"AIza[0-9A-Za-z_\-]{35}"),
    _rule(
        "aws_access_key_id",
        ["akia", "asia", "abia", "acca", "a3t"],
        _LB + r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])",
        r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}",
    ),
    _rule(
        "aws_secret_key",
        ["secret"],
        r"(?i:aws_?secret_?access_?key|aws_?secret_?key|secret_?access_?key)"
        + _Q + r"[ \t]{0,8}[:=][ \t]{0,8}" + _Q
        + r"(?P<val>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])",
        r"(?i:secret_?access_?key|aws_?secret)",
    ),
    _rule(
        "github_token",
        ["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        _LB + r"(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})",
        r"gh[pousr]_[A-Za-z0-9]{36}|github_pat_",
    ),
    _rule(
        "slack_token",
        ["xox", "xapp-", "hooks.slack.com"],
        r"(?:" + _LB + r"xox[abposre]-[A-Za-z0-9\-]{10,255}|" + _LB
        + r"xapp-\d-[A-Za-z0-9\-]{10,255}|https://hooks\.slack\.com/services/[A-Za-z0-9/_\-]{20,255})",
        r"xox[abposre]-|xapp-|hooks\.slack\.com",
    ),
    _rule("hf_token", ["hf_"], _LB + r"hf_[A-Za-z0-9]{30,255}", r"hf_[A-Za-z0-9]{30}"),
    _rule(
        "npm_token",
        ["npm_", "_authtoken"],
        _LB + r"npm_[A-Za-z0-9]{36}(?![A-Za-z0-9])|_authToken=(?P<val>(?!\$)[^\s\"'\\]{8,512})",
        r"npm_[A-Za-z0-9]{36}|_authToken=",
    ),
    _rule(
        "mailgun_key",
        ["key-"],
        _LB + r"(?:pub)?key-[0-9a-f]{32}(?![0-9a-zA-Z])",
        r"key-[0-9a-f]{32}",
    ),
    _rule(
        "jwt",
        ["eyj"],
        _LB + r"eyJ[A-Za-z0-9_\-]{8,4096}\.eyJ[A-Za-z0-9_\-]{2,16384}\.[A-Za-z0-9_\-]{0,4096}",
        r"eyJ[A-Za-z0-9_\-]{8}[A-Za-z0-9_\-]*\.eyJ",
        check=_jwt_check(),  # detect-secrets' validator: both parts decode to JSON
    ),
    _rule(
        "bearer_token",
        ["bearer"],
        r"\b(?i:bearer)[ \t]{1,8}" + _NOT_REDACTED
        + r"(?P<val>(?=[A-Za-z0-9\-._~+/]{0,1024}[0-9])[A-Za-z0-9\-._~+/]{16,1024}={0,2})",
        r"(?i:bearer)[ \t]+[A-Za-z0-9\-._~+/]{16}",
    ),
    _rule(
        # a JSON / YAML / dict field whose name ends like a secret: "password": "...",
        # \"client_secret\": \"...\", 'api_key': '...'
        "secret_field",
        [n + q for n in ("password", "passwd", "secret", "key", "token") for q in ('"', "'", "\\")],
        r"(?i:password|passwd|secret|api_?key|access_?key|private_?key|token)"
        r"\\{0,4}[\"'][ \t]{0,8}:[ \t]{0,8}\\{0,4}[\"']"
        + _NOT_REDACTED
        + r"(?P<val>(?![$<{])[^\s\"'\\]{6,1024})",
        r"""(?i:password|passwd|secret|api_?key|access_?key|private_?key|token)\\*["'][ \t]*:""",
        check=_plausible,
    ),
    _rule(
        # YAML / TOML / ini config lines: db_password: "hunter2", api_token = 'abc', the key name stays
        "config_secret",
        [n + ":" for n in ("password", "passwd", "pwd", "secret", "token", "key")]
        + [n + " :" for n in ("password", "secret", "token", "key")],
        _LEAD
        + r"(?P<pre>[ \t\-]{0,32}[A-Za-z0-9_.\-]{0,64}(?i:password|passwd|pwd|secret|token|api_?key|access_?key)"
        r"[ \t]{0,8}:[ \t]{1,8}" + _Q + r")"
        + _NOT_REDACTED
        + r"(?P<val>(?![$<{\[(])[^\s\"'\\,}]{6,1024})",
        r"(?i:password|passwd|pwd|secret|token|api_?key|access_?key)[ \t]*:[ \t]",
        check=_strong, lead=True,
    ),
    _rule(
        # command-line flags: --password=..., --api-key abc..., --token=...
        "password_flag",
        ["--pass", "--token", "--api-key", "--api_key", "--apikey", "--secret", "--client-secret", "--auth-token"],
        r"(?<![A-Za-z0-9_\-])--(?i:password|passwd|pass|token|api[-_]?key|secret|client[-_]secret|auth[-_]token)"
        r"(?:=|[ \t]{1,4})" + _Q + _NOT_REDACTED
        + r"(?P<val>(?![$<{\-])[^\s\"'\\]{4,1024})",
        r"--(?i:pass|token|api[-_]?key|secret|client[-_]secret|auth[-_]token)",
        check=_strong,
    ),
    _rule(
        # KEY=value lines of env files / shell exports / ini files; the key name stays.
        "env_secret",
        [n + s for n in ("key", "secret", "token", "password", "passwd", "pwd", "credentials") for s in ("=", " =", "\t=")],
        _LEAD
        + r"(?P<pre>[ \t]{0,32}(?:\d{1,9}(?:→|\\u2192|\\t|\t))?[ \t]{0,32}(?:export[ \t]{1,8})?"
        r"[A-Za-z0-9_.\-]{0,64}(?i:key|secret|token|password|passwd|pwd|credentials)"
        r"[ \t]{0,8}=[ \t]{0,8}" + _Q + r")"
        + _NOT_REDACTED
        + r"(?P<val>(?!\$)[^\s\"'\\]{1,1024})",
        r"(?i:key|secret|token|password|passwd|pwd|credentials)[ \t]*=",
        check=_strong, lead=True,
    ),
    _rule(
        # an UPPER_CASE env assignment in the middle of a line: `DD_API_KEY=abc123 python app.py`
        "env_secret",
        ["key=", "secret=", "token=", "password=", "passwd=", "pwd=", "credentials="],
        r"(?<![A-Za-z0-9_])(?P<pre>[A-Z][A-Z0-9_]{0,63}(?:KEY|SECRET|TOKEN|PASSWORD|PASSWD|PWD|CREDENTIALS)="
        + _Q + r")" + _NOT_REDACTED
        + r"(?P<val>(?![$<{(])[^\s\"'\\;&|`]{6,1024})",
        r"(?:KEY|SECRET|TOKEN|PASSWORD|PASSWD|PWD|CREDENTIALS)=",
        check=_strong,
    ),
]
# detect-secrets' plugins go before the generic field / assignment rules (a Stripe key in
# an env line is reported as stripe_key), after the provider keys.
_FIRST_GENERIC = next(i for i, r in enumerate(RULES) if r.kind == "bearer_token")
RULES[_FIRST_GENERIC:_FIRST_GENERIC] = _detect_secrets_rules()
RULES.append(Rule("base64_secret", None, _B64_RUN, bulk="|".join(re.escape(c) for c in _B64_CORES)))

# A token split in two by a line break: a terminal wrapped it, a value was copied over two
# lines ("ghp_Zq8Xw7Cv6Bn5\nMm4Ll3Kk2Jj1Hh0Gg9Ff8Ee7D" in a JSON string, once or twice
# escaped). Neither half alone matches its rule (a fixed-length token), or only the first
# does and the tail stays. The line starting with a known prefix is joined with the next
# line's token and the rules run on the whole; a secret across the break is replaced
# whole (the break kept after its placeholder), counted under its own kind. Runs first.
SPLIT_PREFIXES = (
    "AKIA", "ASIA", "ABIA", "ACCA", "A3T", "AIza", "sk-", "sk_live_", "sk_test_", "rk_live_", "rk_test_",
    "hf_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "gldt-", "glrt-", "glsa_", "npm_",
    "pypi-", "SG.", "AC", "SK", "key-", "sq0csp-", "sq0atp-", "EAAA", "xoxb-", "xoxp-", "xoxa-", "xoxr-",
    "xoxs-", "xoxe-", "xapp-", "eyJ", "dop_v1_", "shpat_", "shpss_", "shpca_", "gsk_", "xai-", "r8_", "pplx-",
    "lin_api_", "dapi", "ATATT", "nfp_", ":AA", "-us",
    "hooks.slack.com/",
)
_SPLIT_CHARS = r"A-Za-z0-9_\-.+/="
_SPLIT_SEP = r"(?:\\{1,3}r)?\\{1,3}n|\r?\n"
_SPLIT_RX = re.compile(
    "(?P<left>(?:" + "|".join(re.escape(p) for p in SPLIT_PREFIXES) + ")[" + _SPLIT_CHARS + "]{0,512})"
    "(?P<sep>" + _SPLIT_SEP + ")(?P<right>[" + _SPLIT_CHARS + "]{1,512})")  # what the rule finds (docs, bulk)
# ... or a secret's keyword just before the value on the first line (password=..., "client_secret":
# "...", Bearer ..., postgres://user:...)
_SPLIT_KEYWORDS = r"key|secret|token|passw|pwd|bearer|auth|credential"
_SPLIT_KEYWORD_RX = re.compile(
    "(?i:" + _SPLIT_KEYWORDS + r")[A-Za-z0-9_\-]{0,40}[\"': =\\]{1,8}|://[^:/@\s\\]{1,64}:")
_SPLIT_PREFIX_ALT = "(?:" + "|".join(re.escape(p).replace("\\ ", " ") for p in SPLIT_PREFIXES) + ")"
_SPLIT_KW_ALT = "(?:(?i:" + _SPLIT_KEYWORDS + r")[A-Za-z0-9_\-]*[\"': =\\]+|://[^:/@\s\\]+:)"
# (an anchor, its token, a line break, a token character): the gate's pattern (unbounded:
# Rust and Hyperscan run it in linear time) and, bounded, Python's
# (two characters at least on the next line: not a "- " bullet after "Key features")
_SPLIT_FIND = (_SPLIT_PREFIX_ALT + "[" + _SPLIT_CHARS + "]*(?:" + _SPLIT_SEP + ")[" + _SPLIT_CHARS + "]{2}",
               _SPLIT_KW_ALT + "[" + _SPLIT_CHARS + "]*(?:" + _SPLIT_SEP + ")[" + _SPLIT_CHARS + "]{2}")
_SPLIT_BULK = "|".join(_SPLIT_FIND)
_SEP_RX = re.compile(_SPLIT_SEP)
_RUN_RX = re.compile("[" + _SPLIT_CHARS + ":]{1,512}")  # ":" for telegram's <digits>:AA...
_NEXT_RX = re.compile(r"[A-Za-z0-9_\-.+/]{1,512}={0,3}")  # a token's rest: "=" only as padding
_RUN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.+/=:")
_PREFIX_RX = re.compile("|".join(re.escape(p) for p in SPLIT_PREFIXES))


def _tokenish(run: str) -> bool:
    """A line start that reads as the rest of a token (not an ordinary next word)."""
    return len(run) >= 6 and (any(c.isdigit() for c in run) or (not run.islower() and not run.isupper()))


_ANCHOR_RX = re.compile("(?P<kw>" + _SPLIT_KEYWORD_RX.pattern + ")|" + _PREFIX_RX.pattern)
_CONTEXT = 64  # characters around the two lines the rules see too (scheme of a URL, --flag, @host)


def _split_spans(text: str, counts: dict[str, int]) -> str:
    """Find each known prefix or secret keyword whose token runs into a line break, join it
    with the token that starts the next line, and replace what the rules find across the
    break. Linear: anchors are found by one regex pass, each looked at once with bounded runs."""
    if "\n" not in text and "\\n" not in text:
        return text  # no line break, raw or escaped
    rules = _RULES_BUT_SPLIT()
    run_chars = _RUN_CHARS
    out, last = [], 0
    for f0, f1 in _split_finder().spans(text):
        # (an anchor, its token, a line break, a token character): the anchor again, by re
        if f0 < last:
            continue
        am = _PREFIX_RX.match(text, f0) or _SPLIT_KEYWORD_RX.match(text, f0)  # a prefix first: "key-..."
        if am is None:
            continue
        if am.re is _SPLIT_KEYWORD_RX:
            a = vstart = am.end()
            if text[a - 1] == "\\" and text[a: a + 1] in ("n", "r", "\\"):
                continue  # the keyword's line ends here: "key\n..." is no value
        else:
            a, vstart, lim = am.start(), am.start(), max(last, am.start() - 64)
            while a > lim and text[a - 1] in run_chars:
                a -= 1  # the token may start before its prefix (telegram's digits, "xsk-...")
            if a > 0 and text[a - 1] == "\\" and text[a] in "nrtu":
                a += 1  # after a JSON escape (\nghp_...): not its letter
        rm = _RUN_RX.match(text, vstart)
        if rm is None:
            continue
        sm = _SEP_RX.match(text, rm.end())
        if sm is None:
            continue  # the token does not run into a line break
        r = _NEXT_RX.match(text, sm.end())
        if r is None or r.end() - r.start() < 2:
            continue
        raw_nl, esc_nl = text.rfind("\n", 0, a), text.rfind("\\n", 0, a)
        c0 = max(raw_nl + 1 if raw_nl >= 0 else 0, esc_nl + 2 if esc_nl >= 0 else 0, a - _CONTEXT, last)
        c0 = min(c0, am.start())
        c1 = min(len(text), r.end() + _CONTEXT)
        sep = sm.group(0)
        first, second = text[c0: sm.start()], text[sm.end(): c1]
        joined = first + second
        wrules = _window_rules(joined, rules)
        if not wrules:
            continue  # no rule's relaxed pattern in the two lines joined
        sj, sub = scrub(joined, {}, wrules)
        if not sub:
            continue
        p = 0
        lim = min(len(joined), len(sj))
        while p < lim and joined[p] == sj[p]:
            p += 1
        q = 0
        while q < lim - p and joined[-1 - q] == sj[-1 - q]:
            q += 1
        k = len(first)
        s_, e_ = p, len(joined) - q
        if not (s_ < k < e_):
            continue  # the secret lies on one side of the break: the rules find it there
        if "private_key" in sub:
            continue  # PEM blocks span lines by nature: their own rules take them whole
        frag = second[: min(e_ - k, r.end() - sm.end())]  # what the secret takes of the next line
        whole_line = r.end() == len(text) or text[r.end()] in "\\\"'\r\n"
        if scrub(first, {}, wrules)[1] and not _tokenish(frag) and not (
                whole_line and any(c.isdigit() or c.isupper() for c in frag)):
            continue  # the first line holds a whole secret; the next one goes on with words
        out.append(text[last:c0] + joined[:s_] + sj[p: len(sj) - q] + sep + joined[e_:])
        last = c1
        for kind, n in sub.items():
            counts[kind] = counts.get(kind, 0) + n
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


@lru_cache(maxsize=1)
def _split_finder():
    bounded = tuple(p.replace("]*", "]{0,512}").replace("]+", "]{1,64}") for p in _SPLIT_FIND)
    return Finder(_SPLIT_FIND, python_patterns=bounded)


def _window_rules(window: str, rules: list) -> list:
    """The rules whose relaxed pattern matches ``window`` (one Hyperscan pass; all of them
    without it)."""
    hits = gate_for((), skip=("split_secret",)).secret_hits([window])[0]
    if hits is None:
        return rules
    return [r for r in rules if not r.bulk or r.bulk in hits]


def _RULES_BUT_SPLIT() -> list:
    return [r for r in RULES if r.kind != "split_secret"]


RULES.insert(0, Rule("split_secret", None, _SPLIT_RX, bulk=_SPLIT_BULK))
_N_BUILTIN = len(RULES)


def _rust_escape(lit: str) -> str:
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$#&-~" else c for c in lit)


def register(kind: str, gates: Iterable[str], pattern: str | re.Pattern[str], *, first: bool = False,
             bulk: str | None = None) -> Rule:
    """Add a scrubbing rule.

    ``gates``: literal substrings, at least one of which occurs (case-insensitively)
    wherever the pattern matches. ``pattern`` may use a named group ``val``: only that
    group is replaced by the placeholder (the rest of the match stays). ``bulk``: a
    Rust-syntax pattern for the pre-filter (default: the gates).
    """
    gates = tuple(g.lower() for g in gates)
    if not gates:
        raise ValueError("a rule needs at least one literal gate")
    regex = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
    bulk = bulk or "|".join("(?i:" + _rust_escape(g) + ")" for g in gates)
    rule = Rule(kind, gates, regex, bulk=bulk, source="registered")
    if first:
        RULES.insert(0, rule)
    else:
        RULES.insert(len(RULES) - 1, rule)  # before base64_secret
    _bulk_gate_patterns.cache_clear()
    bulk_patterns.cache_clear()
    return rule


def unregister(rule: Rule) -> None:
    """Remove a rule added with :func:`register`."""
    RULES.remove(rule)
    _bulk_gate_patterns.cache_clear()
    bulk_patterns.cache_clear()


_PEM_BODY = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n\\")


def _pem_tail_spans(rule: Rule, text: str) -> list[tuple[int, int]]:
    """Spans from the start of the base64 run before each END marker to the marker's end."""
    out = []
    for m in rule.regex.finditer(text):
        s = m.start()
        lim = max(0, s - 65536)
        while s > lim and text[s - 1] in _PEM_BODY:
            s -= 1
        # the run starts after a JSON escape's letter? (\nMIIE... : keep the escape)
        while s < m.start() and text[s] in "\\\r\n":
            s += 1
            if text[s - 1] == "\\" and s < m.start() and text[s] in "nrt":
                s += 1
        if s < m.start() and not (out and s < out[-1][1]):
            out.append((s, m.end()))
    return out


def _spans(rule: Rule, text: str) -> list[tuple[int, int]]:
    """The (start, end) of every value ``rule`` replaces in ``text``."""
    if rule.kind == "base64_secret":
        return list(_base64_spans(text))
    if rule.kind == "private_key" and rule.regex.pattern.startswith("-----END"):
        return _pem_tail_spans(rule, text)
    out = []
    n = len(text)
    group = "val" if "val" in rule.regex.groupindex else rule.group
    shift = 1 if rule.lead else 0
    for m in rule.regex.finditer("\n" + text if shift else text):
        s, e = m.span(group)
        if s < 0:
            s, e = m.span(0)
        s, e = s - shift, e - shift
        if rule.boundary and s > 0 and text[s - 1] in _WORD_CHARS and not (
                s > 1 and text[s - 2] == "\\" and text[s - 1] in "nrt"):
            continue
        if rule.source != "tracelake":
            # a library's pattern may run over a quote / backslash / space: cut the value there
            for j in range(s, e):
                if text[j] in _UNSAFE:
                    e = j
                    break
        if e <= s:
            continue
        if rule.extend:
            lim = min(n, e + _MAX_EXTEND)
            while e < lim and text[e] in _TOKEN_CHARS:
                e += 1
        if rule.check is not None and not rule.check(text[s:e]):
            continue
        if out and s < out[-1][1]:
            continue
        out.append((s, e))
    return out


def _apply(rule: Rule, text: str, counts: dict[str, int]) -> str:
    if rule.kind == "split_secret":
        return _split_spans(text, counts)
    spans = _spans(rule, text)
    if not spans:
        return text
    ph = placeholder(rule.kind)
    parts, last = [], 0
    for s, e in spans:
        parts.append(text[last:s])
        parts.append(ph)
        last = e
    parts.append(text[last:])
    counts[rule.kind] = counts.get(rule.kind, 0) + len(spans)
    return "".join(parts)


def _gated(rule: Rule, low: str) -> bool:
    if rule.gates is None:
        return True
    for g in rule.gates:
        if g in low:
            return True
    return False


def scrub(text: str, counts: dict[str, int] | None = None,
          rules: list[Rule] | None = None) -> tuple[str, dict[str, int]]:
    """Return ``(scrubbed_text, {kind: n_replaced})``.

    Pass ``counts`` to accumulate into an existing dict (it is also returned).
    For many texts at once prefer :func:`scrub_many` (one vectorized pre-filter).
    ``rules``: only these (default: all).
    """
    if counts is None:
        counts = {}
    if not text:
        return text, counts
    low = text.lower()
    for rule in RULES if rules is None else rules:
        if _gated(rule, low):
            text = _apply(rule, text, counts)
    return text, counts


def _rules_per_text(texts: list[str]) -> list[list[Rule]]:
    """For each (flagged) text, the rules whose own relaxed pattern matches it: one
    vectorized pass per rule, so a long text flagged by one rule is not searched by the
    Python regexes of all the others."""
    import polars as pl

    if len(texts) < 4 and sum(map(len, texts)) < 65536:
        return [RULES] * len(texts)
    s = pl.Series(texts, dtype=pl.String)
    hits: list[list[Rule]] = [[] for _ in texts]
    memo: dict[str, list[int]] = {}
    for rule in RULES:
        if not rule.bulk:
            for h in hits:
                h.append(rule)
            continue
        b = ascii_rust(rule.bulk)
        if b not in memo:
            memo[b] = s.str.contains(b).arg_true().to_list()
        for i in memo[b]:
            hits[i].append(rule)
    return hits


def find(text: str, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """``{kind: n}`` of the secrets in ``text`` (without replacing them)."""
    counts: dict[str, int] = {}
    if not text:
        return counts
    low = text.lower()
    for rule in RULES:
        if rule.kind not in skip and _gated(rule, low):
            n = len(_spans(rule, text))
            if n:
                counts[rule.kind] = counts.get(rule.kind, 0) + n
    return counts


# Patterns without a leading literal make a union of alternatives fall off Rust's
# literal prefilter (the union then runs ~40x slower): those run on their own.
_ALONE = ("discord_bot_token", "mailchimp_key")


@lru_cache(maxsize=1)
def _bulk_gate_patterns() -> tuple[str, ...]:
    """The pre-filter: a union of the literal-led relaxed patterns, then the others."""
    union, alone = [], []
    for r in RULES:
        if not r.bulk:
            continue
        b = ascii_rust(r.bulk)
        target = alone if r.kind in _ALONE else union
        if b not in target:
            target.append(b)
    return ("|".join(union), *alone)


@lru_cache(maxsize=8)
def bulk_patterns(skip: tuple[str, ...] = ()) -> tuple[str, ...]:
    """Every rule's relaxed pattern (Python / PCRE syntax), each once: the gate's
    (resources/privacy/gate.py) secret patterns. ``skip``: rule kinds left out."""
    out: list[str] = []
    for r in RULES:
        if r.bulk and r.bulk not in out and r.kind not in skip:
            out.append(r.bulk)
    return tuple(out)


_GATE_LOCK = threading.Lock()
_GATES: dict[tuple, Gate] = {}


def gate_for(pii_patterns: tuple[str, ...], use_hyperscan: bool | None = None, skip: tuple[str, ...] = ()) -> Gate:
    """The gate (resources/privacy/gate.py) of today's secret rules (user-registered ones
    included; but the rules of the kinds in ``skip``) and the given personal-data pre-filter
    patterns, compiled once per set of patterns. Without Hyperscan its secret pass is
    :func:`_suspicious_indices`' (a superset where ``skip`` leaves rules out)."""
    key = (bulk_patterns(skip), tuple(pii_patterns), use_hyperscan)
    g = _GATES.get(key)
    if g is None:
        with _GATE_LOCK:
            g = _GATES.get(key)
            if g is None:
                if len(_GATES) > 32:
                    _GATES.clear()
                g = _GATES[key] = Gate(key[0], key[1], use_hyperscan=use_hyperscan,
                                       polars_secret_patterns=_bulk_gate_patterns())
    return g


def _bulk_gate_pattern() -> str:
    """All pre-filter patterns as one (slower) union."""
    return "|".join(_bulk_gate_patterns())


_bulk_gate_pattern.cache_clear = _bulk_gate_patterns.cache_clear  # type: ignore[attr-defined]


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

    s = pl.Series(texts, dtype=pl.String)
    union, *alone = _bulk_gate_patterns()
    mask = s.str.contains(union)
    for p in alone:
        mask = mask | s.str.contains(p)
    return mask.arg_true().to_list()


def scrub_many(texts: list[str]) -> tuple[list[str], list[dict[str, int]]]:
    """Scrub many texts; returns the texts and, for each, its ``{kind: n}`` counts."""
    out = list(texts)
    per: list[dict[str, int]] = [{} for _ in texts]
    idx = _suspicious_indices(texts)
    for i, rules in zip(idx, _rules_per_text([texts[i] for i in idx])):
        out[i], per[i] = scrub(texts[i], rules=rules)
    return out, per


def _scrub_sparse(texts: list[str], idx: list[int] | None = None, hits: list | None = None
                  ) -> tuple[list[str], dict[int, dict[str, int]]]:
    """:func:`scrub_many` for bulk work: the counts only of the texts that changed,
    ``{index: {kind: n}}`` (most texts hold no secret). ``idx``: the suspicious texts
    when the caller's gate found them already; ``hits``: for each of them, the rules'
    relaxed patterns it matches (None: found here)."""
    out = list(texts)
    counts: dict[int, dict[str, int]] = {}
    if idx is None:
        idx = _suspicious_indices(texts)
    if hits is None:
        per_text = _rules_per_text([texts[i] for i in idx])
    else:
        todo = [j for j, h in enumerate(hits) if h is None]
        found = dict(zip(todo, _rules_per_text([texts[idx[j]] for j in todo]))) if todo else {}
        per_text = [found[j] if h is None else [r for r in RULES if not r.bulk or r.bulk in h]
                    for j, h in enumerate(hits)]
    for i, rules in zip(idx, per_text):
        text, c = scrub(texts[i], rules=rules)
        if c:
            out[i] = text
            counts[i] = c
    return out, counts


def scrub_bytes(data: bytes, counts: dict[str, int] | None = None) -> tuple[bytes, dict[str, int]]:
    """Scrub bytes that may not be valid UTF-8 (latin-1 round trip keeps every byte)."""
    text, counts = scrub(data.decode("latin-1"), counts)
    return text.encode("latin-1"), counts


def scrub_obj(obj: Any, counts: dict[str, int] | None = None) -> tuple[Any, dict[str, int]]:
    """Scrub every string (values and keys) inside a JSON-like object; returns a copy."""
    if counts is None:
        counts = {}

    def walk(o: Any) -> Any:
        if isinstance(o, str):
            return scrub(o, counts)[0]
        if isinstance(o, dict):
            return {(scrub(k, counts)[0] if isinstance(k, str) else k): walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        if isinstance(o, tuple):
            return tuple(walk(v) for v in o)
        return o

    return walk(obj), counts
