"""The prompt pool: candidate conversations → domain → quotas (pure, Dagster-free).

Candidates come from NORMALIZED_PAIRS (``prompt`` + ``chosen`` → one conversation),
SFT_EXAMPLES (``messages``) and user JSONL files (``{"messages": [...]}`` or
``{"prompt": "..."}``) listed in the quota YAML. Each is normalized to OpenAI messages,
length-filtered, hashed (``prompt_id`` = sha256 of the canonical messages + tools, so
dedup is by content), classified into one domain and language-tagged. Per domain, the
candidates are ranked by ``sha256(f"{seed}:{domain}:{prompt_id}")`` and the first
``min(quota, available)`` are drawn: the same inputs (in any order) and the same config give
the same pool, and a prompt's rank does not depend on the other candidates, so the pool
drawn from (current pool + new candidates) is the pool drawn from everything (what lets
the refresh read only what changed; see assets/capture/assets.py). A quota that cannot be met is reported (``QuotaLine.shortfall``), never
silently shrunk.

Domain rules, first match wins (deterministic, documented in recipes/capture_quotas.yaml):
  tool-call     a message with ``tool_calls``, a ``tool``/``function`` role, or a tool-call tag
  code          a code fence, or >= ``code_min_lines`` code-like lines
  math          LaTeX math, or >= 2 arithmetic expressions, or a math keyword next to digits
  chat-zh       Han characters >= 30% of the letters (and no kana)
  long-context  n_chars >= ``long_context_chars``
  multi-turn    user turns >= ``multi_turn_min_user_turns``
  chat-en       everything else (general chat; its language is in the ``language`` column)
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from assets.capture.tables import DOMAINS

DEFAULT_LANGUAGES = ("en", "zh", "de", "fr", "es", "ja", "ru")


# ----------------------------------------------------------------------------- config
@dataclass(frozen=True)
class PoolConfig:
    quotas: Mapping[str, int]
    seed: int = 0
    min_chars: int = 16
    max_chars: int = 64_000
    long_context_chars: int = 8_000
    multi_turn_min_user_turns: int = 2
    code_min_lines: int = 3
    languages: tuple[str, ...] = DEFAULT_LANGUAGES
    use_normalized_pairs: bool = True
    use_sft_examples: bool = True
    files: tuple[str, ...] = ()  # absolute, or relative to the YAML's directory
    base_dir: str = "."
    config_hash: str = ""
    # near-duplicate removal (MinHash LSH over character shingles); 0 turns it off
    near_duplicate_threshold: float = 0.85
    shingle_chars: int = 5
    num_perm: int = 128
    language_detector: str = "lingua"  # a name registered with register_language_detector

    def __post_init__(self):
        unknown = set(self.quotas) - set(DOMAINS)
        if unknown:
            raise ValueError(f"unknown domains in quotas: {sorted(unknown)} (known: {list(DOMAINS)})")
        for d, q in self.quotas.items():
            if int(q) < 0:
                raise ValueError(f"quota of {d} is negative")
        if not 0.0 <= self.near_duplicate_threshold <= 1.0:
            raise ValueError("dedup.near_duplicate_threshold must be in [0, 1] (0 = off)")
        if self.language_detector not in LANGUAGE_DETECTORS:
            raise ValueError(f"unknown language_detector {self.language_detector!r}; "
                             f"registered: {sorted(LANGUAGE_DETECTORS)}")

    def file_paths(self) -> list[Path]:
        out = []
        for f in self.files:
            p = Path(f).expanduser()
            out.append(p if p.is_absolute() else Path(self.base_dir) / p)
        return out


def load_pool_config(path: str | Path) -> PoolConfig:
    path = Path(path)
    raw_text = path.read_text()
    raw = yaml.safe_load(raw_text) or {}
    length = raw.get("length", {}) or {}
    sources = raw.get("sources", {}) or {}
    rules = raw.get("rules", {}) or {}
    dedup = raw.get("dedup", {}) or {}
    return PoolConfig(
        near_duplicate_threshold=float(dedup.get("near_duplicate_threshold", 0.85) or 0.0),
        shingle_chars=int(dedup.get("shingle_chars", 5)),
        num_perm=int(dedup.get("num_perm", 128)),
        language_detector=str(raw.get("language_detector") or "lingua"),
        quotas={str(k): int(v) for k, v in (raw.get("quotas") or {}).items()},
        seed=int(raw.get("seed", 0)),
        min_chars=int(length.get("min_chars", 16)),
        max_chars=int(length.get("max_chars", 64_000)),
        long_context_chars=int(rules.get("long_context_chars", 8_000)),
        multi_turn_min_user_turns=int(rules.get("multi_turn_min_user_turns", 2)),
        code_min_lines=int(rules.get("code_min_lines", 3)),
        languages=tuple(raw.get("languages") or DEFAULT_LANGUAGES),
        use_normalized_pairs=bool(sources.get("normalized_pairs", True)),
        use_sft_examples=bool(sources.get("sft_examples", True)),
        files=tuple(sources.get("files") or ()),
        base_dir=str(path.parent),
        config_hash=hashlib.sha256(raw_text.encode()).hexdigest()[:16],
    )


# --------------------------------------------------------------------------- messages
def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, Mapping):
                parts.append(str(p.get("text") or p.get("content") or ""))
        return "\n".join(x for x in parts if x)
    return str(content)


def normalize_messages(messages: Any) -> list[dict]:
    """OpenAI messages with string contents; keeps role, content, name, tool_calls, tool_call_id."""
    if isinstance(messages, str):
        messages = json.loads(messages)
    out = []
    for m in messages or []:
        if not isinstance(m, Mapping) or "role" not in m:
            raise ValueError(f"not a chat message: {m!r:.80}")
        msg = {"role": str(m["role"]), "content": _text_of(m.get("content"))}
        if m.get("name"):
            msg["name"] = str(m["name"])
        if m.get("tool_calls"):
            msg["tool_calls"] = m["tool_calls"]
        if m.get("tool_call_id"):
            msg["tool_call_id"] = str(m["tool_call_id"])
        out.append(msg)
    return out


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def prompt_hash(messages: list[dict], tools: Any = None) -> str:
    payload = canonical_json({"messages": messages, "tools": tools or None})
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


def system_prompt_hash(messages: list[dict]) -> str | None:
    sys = [m["content"] for m in messages if m["role"] in ("system", "developer")]
    if not sys:
        return None
    return hashlib.sha256("\n\n".join(sys).encode()).hexdigest()[:32]


def message_chars(m: dict) -> int:
    n = len(m.get("content") or "")
    if m.get("tool_calls"):
        n += len(canonical_json(m["tool_calls"]))
    return n


# ------------------------------------------------------------------------- classifier
_FENCE = re.compile(r"```")
_CODE_LINE = re.compile(
    r"^\s*(def |class |import |from \S+ import |#include|public |private |static |function |"
    r"const |let |var |return\b|if \(|for \(|while \(|elif |fn |func |package |using |@\w+|"
    r"SELECT |INSERT |\}|\{$|</?\w+[^>]*>$)"
    r"|[;{]\s*$"
)
_LATEX = re.compile(r"\\(frac|sum|int|sqrt|cdot|times|alpha|beta|theta|pi|infty|lim|partial|binom)\b|\$\$|\\\(|\\\[")
_ARITH = re.compile(r"\d\s*[-+*/^=×÷<>≤≥]\s*[\d(x-z]")
_MATH_WORDS = re.compile(
    r"\b(equation|integral|derivative|theorem|prove|proof|solve|probability|polynomial|"
    r"matrix|eigen\w*|factori[sz]e|arithmetic|algebra|geometry|calculus)\b|方程|求解|计算|证明|概率",
    re.IGNORECASE,
)
_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_LETTER = re.compile(r"\w", re.UNICODE)
_TOOL_TAG = re.compile(r"<tool_call>|<function_call>|\"tool_use\"")


def conversation_text(messages: list[dict]) -> str:
    return "\n".join(m.get("content") or "" for m in messages)


def is_code(text: str, min_lines: int = 3) -> bool:
    if _FENCE.search(text):
        return True
    hits = sum(1 for line in text.splitlines() if line.strip() and _CODE_LINE.search(line))
    return hits >= min_lines


def is_math(text: str) -> bool:
    if _LATEX.search(text):
        return True
    if len(_ARITH.findall(text)) >= 2:
        return True
    return bool(_MATH_WORDS.search(text)) and bool(re.search(r"\d", text))


def is_chinese(text: str) -> bool:
    letters = len(_LETTER.findall(text))
    if not letters or _KANA.search(text):
        return False
    return len(_HAN.findall(text)) / letters >= 0.3


def classify_domain(messages: list[dict], cfg: PoolConfig) -> str:
    if any(m.get("tool_calls") or m["role"] in ("tool", "function") for m in messages):
        return "tool-call"
    text = conversation_text(messages)
    if _TOOL_TAG.search(text):
        return "tool-call"
    if is_code(text, cfg.code_min_lines):
        return "code"
    if is_math(text):
        return "math"
    if is_chinese(text):
        return "chat-zh"
    if sum(message_chars(m) for m in messages) >= cfg.long_context_chars:
        return "long-context"
    if sum(1 for m in messages if m["role"] == "user") >= cfg.multi_turn_min_user_turns:
        return "multi-turn"
    return "chat-en"


# ----------------------------------------------------------------------------- language
@functools.lru_cache(maxsize=4)
def _detector(languages: tuple[str, ...]):
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    codes = [getattr(IsoCode639_1, c.upper()) for c in languages]
    return LanguageDetectorBuilder.from_iso_codes_639_1(*codes).build()


_FENCED_BLOCK = re.compile(r"```.*?(```|$)", re.DOTALL)


LanguageDetector = Callable[[str, Sequence[str]], str]
"""(text, allowed ISO 639-1 codes) -> an ISO 639-1 code, or "und"."""
LANGUAGE_DETECTORS: dict[str, LanguageDetector] = {}


def register_language_detector(name: str):
    """Register ``fn(text, languages) -> code`` under ``name`` (the quotas file's
    ``language_detector`` picks it)."""
    def deco(fn: LanguageDetector) -> LanguageDetector:
        LANGUAGE_DETECTORS[name] = fn
        return fn
    return deco


@register_language_detector("lingua")
def detect_language(text: str, languages: Sequence[str] = DEFAULT_LANGUAGES) -> str:
    """ISO 639-1 code from a short language list; "und" for code-only / too little text.

    lingua never answers "unknown" for source code, so fenced blocks are removed first and
    a text with fewer than 12 letters left is "und".
    """
    prose = _FENCED_BLOCK.sub(" ", text)
    prose = "\n".join(line for line in prose.splitlines() if not _CODE_LINE.search(line))
    sample = prose[:2000]
    if len(_LETTER.findall(sample)) < 12:
        return "und"
    lang = _detector(tuple(languages)).detect_language_of(sample)
    return lang.iso_code_639_1.name.lower() if lang is not None else "und"


# ---------------------------------------------------------------------------- candidates
@dataclass
class Candidate:
    messages: list[dict]
    source: str
    source_id: str | None = None
    tools: Any = None


def candidates_from_pairs(rows: Iterable[Mapping]) -> list[Candidate]:
    out = []
    for r in rows:
        conv = normalize_messages(r["prompt"]) + normalize_messages(r["chosen"])
        tools = json.loads(r["tools"]) if r.get("tools") else None
        out.append(Candidate(conv, "normalized_pairs", r.get("pair_id"), tools))
    return out


def candidates_from_pool(rows: Iterable[Mapping]) -> list[Candidate]:
    """The current pool's prompts as candidates again (an incremental refresh draws from
    them plus what is new); they keep their source and source id."""
    return [Candidate(normalize_messages(r["messages"]), r["source"], r.get("source_id"),
                      json.loads(r["tools"]) if r.get("tools") else None) for r in rows]


def candidates_from_sft(rows: Iterable[Mapping]) -> list[Candidate]:
    out = []
    for r in rows:
        tools = json.loads(r["tools"]) if r.get("tools") else None
        out.append(Candidate(normalize_messages(r["messages"]), "sft_examples", r.get("example_id"), tools))
    return out


def candidates_from_file(path: str | Path) -> tuple[list[Candidate], int]:
    """JSONL of {"messages": [...]} or {"prompt": "..."}; returns (candidates, bad lines)."""
    path = Path(path)
    out, bad = [], 0
    with path.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if "messages" in obj:
                    msgs = normalize_messages(obj["messages"])
                elif isinstance(obj.get("prompt"), str):
                    msgs = [{"role": "user", "content": obj["prompt"]}]
                else:
                    raise ValueError("neither messages nor prompt")
            except (ValueError, TypeError, KeyError):
                bad += 1
                continue
            out.append(Candidate(msgs, f"file:{path.name}", str(i), obj.get("tools")))
    return out, bad


# ----------------------------------------------------------------------------- compose
@dataclass
class QuotaLine:
    domain: str
    quota: int
    available: int
    selected: int

    @property
    def shortfall(self) -> int:
        return max(0, self.quota - self.selected)


@dataclass
class PoolReport:
    candidates: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # too_short / too_long / duplicate / empty
    unassigned: dict[str, int] = field(default_factory=dict)  # domains with no quota
    quotas: list[QuotaLine] = field(default_factory=list)
    languages: dict[str, int] = field(default_factory=dict)
    near_duplicates: dict[str, str] = field(default_factory=dict)  # dropped prompt_id -> kept one

    @property
    def shortfalls(self) -> list[QuotaLine]:
        return [q for q in self.quotas if q.shortfall]


_WS_RE = re.compile(r"\s+")


def shingles(text: str, k: int = 5) -> set[str]:
    """Character k-shingles of the lowercased, whitespace-collapsed text."""
    t = _WS_RE.sub(" ", text.lower()).strip()
    if len(t) <= k:
        return {t} if t else set()
    return {t[i:i + k] for i in range(len(t) - k + 1)}


def draw_rank(seed: int, domain: str, prompt_id: str) -> str:
    """A prompt's place in its domain's draw (smallest first): a seeded content hash."""
    return hashlib.sha256(f"{seed}:{domain}:{prompt_id}".encode()).hexdigest()


def near_duplicates(texts: Sequence[str], threshold: float, k: int = 5, num_perm: int = 128) -> dict[int, int]:
    """{index dropped: index kept} for texts whose shingle Jaccard similarity is at least
    ``threshold`` with an earlier kept text (MinHash LSH from datasketch finds candidates;
    each is confirmed by its estimated Jaccard). Earlier texts win, so the result depends
    only on the order given."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    sigs: dict[int, MinHash] = {}
    out: dict[int, int] = {}
    for i, text in enumerate(texts):
        mh = MinHash(num_perm=num_perm, seed=1)
        sh = shingles(text, k)
        mh.update_batch([s.encode("utf-8") for s in sh])
        hits = sorted(int(h) for h in lsh.query(mh)) if sh else []
        best = next((j for j in hits if sigs[j].jaccard(mh) >= threshold), None)
        if best is not None:
            out[i] = best
            continue
        sigs[i] = mh
        if sh:
            lsh.insert(str(i), mh)
    return out


def compose_pool(candidates: Sequence[Candidate], cfg: PoolConfig) -> tuple[list[dict], PoolReport]:
    """Filter, dedup, classify and draw by quotas. Rows follow PROMPT_POOL (minus created_at)."""
    report = PoolReport(candidates=len(candidates))
    dropped: dict[str, int] = {}
    by_id: dict[str, dict] = {}
    for c in candidates:
        msgs = [m for m in c.messages if (m.get("content") or m.get("tool_calls"))]
        if not any(m["role"] != "system" for m in msgs):
            dropped["empty"] = dropped.get("empty", 0) + 1
            continue
        n_chars = sum(message_chars(m) for m in msgs)
        if n_chars < cfg.min_chars:
            dropped["too_short"] = dropped.get("too_short", 0) + 1
            continue
        if n_chars > cfg.max_chars:
            dropped["too_long"] = dropped.get("too_long", 0) + 1
            continue
        pid = prompt_hash(msgs, c.tools)
        row = {
            "prompt_id": pid,
            "messages": msgs,
            "tools": c.tools,
            "n_chars": n_chars,
            "source": c.source,
            "source_id": c.source_id,
        }
        prev = by_id.get(pid)
        if prev is not None:
            dropped["duplicate"] = dropped.get("duplicate", 0) + 1
            # keep a deterministic representative, whatever the input order
            if (row["source"], str(row["source_id"])) >= (prev["source"], str(prev["source_id"])):
                continue
        by_id[pid] = row
    kept_ids = sorted(by_id)
    if cfg.near_duplicate_threshold > 0 and len(kept_ids) > 1:
        near = near_duplicates([conversation_text(by_id[pid]["messages"]) for pid in kept_ids],
                               cfg.near_duplicate_threshold, cfg.shingle_chars, cfg.num_perm)
        if near:
            dropped["near_duplicate"] = len(near)
            report.near_duplicates = {kept_ids[i]: kept_ids[j] for i, j in near.items()}
            kept_ids = [pid for i, pid in enumerate(kept_ids) if i not in near]
    report.dropped = dropped

    detect = LANGUAGE_DETECTORS[cfg.language_detector]
    per_domain: dict[str, list[dict]] = {}
    for pid in kept_ids:
        row = by_id[pid]
        row["domain"] = classify_domain(row["messages"], cfg)
        per_domain.setdefault(row["domain"], []).append(row)

    out: list[dict] = []
    for domain in DOMAINS:
        rows = per_domain.get(domain, [])
        if domain not in cfg.quotas:
            if rows:
                report.unassigned[domain] = len(rows)
            continue
        quota = int(cfg.quotas[domain])
        take = sorted(rows, key=lambda r: draw_rank(cfg.seed, domain, r["prompt_id"]))[:quota]
        line = QuotaLine(domain, quota, len(rows), len(take))
        report.quotas.append(line)
        for rank, row in enumerate(take):
            msgs = row["messages"]
            lang = detect(conversation_text(msgs), cfg.languages)
            report.languages[lang] = report.languages.get(lang, 0) + 1
            out.append({
                "prompt_id": row["prompt_id"],
                "domain": domain,
                "language": lang,
                "messages": json.dumps(msgs, ensure_ascii=False),
                "tools": json.dumps(row["tools"], ensure_ascii=False) if row["tools"] else None,
                "system_prompt_hash": system_prompt_hash(msgs),
                "n_chars": row["n_chars"],
                "n_messages": len(msgs),
                "n_user_turns": sum(1 for m in msgs if m["role"] == "user"),
                "source": row["source"],
                "source_id": row["source_id"],
                "selection_rank": rank,
                "domain_quota": quota,
                "domain_available": len(rows),
                "domain_shortfall": line.shortfall,
                "pool_seed": cfg.seed,
                "config_hash": cfg.config_hash,
            })
    return out, report
