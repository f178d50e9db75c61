"""Bronze layer: a session file → one RAW_TRACES row per physical line, lossless.

Nothing is dropped: every physical line (split on ``\\n``) becomes a row, and the byte
ranges ``[byte_offset, byte_offset + byte_len)`` tile the file exactly (``byte_len``
counts the line's terminating ``\\n`` when it has one, so ``sum(byte_len) == file
size``). ``raw`` holds the scrubbed line text without its ``\\n`` (a ``\\r`` of a CRLF
line stays). Lines a parser must not read are kept but *quarantined*, with a reason:

==================  ===============================================================
``oversized``       longer than ``max_line_bytes``: kept, scrubbed, never parsed
``binary``          holds NUL bytes
``invalid_utf8``    not UTF-8: ``raw`` = backslash-escaped text, ``raw_bytes`` = the
                    original bytes (scrubbed through a latin-1 round trip)
``blank``           empty or whitespace only (kept so line numbers stay contiguous)
``truncated``       the last line, without a trailing newline, is not valid JSON: a
                    live session being appended to. The sensor re-ingests the file
                    when it grows, and the line is then complete
``invalid_json: …`` any other line that is not valid JSON (with orjson's message)
``not_object``      valid JSON that is neither an object nor an array of objects
==================  ===============================================================

``.json`` files holding one JSON document (a ShareGPT / OpenAI export as a JSON
array, possibly pretty-printed over many lines) are detected: every physical line
becomes a row with ``record_type = "json_fragment"`` (not quarantined) and the parser
rebuilds the document by joining the rows' ``raw`` in line order. JSON strings cannot
span lines, so per-line scrubbing keeps the document valid.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import orjson

from assets.traces.detect import DOCUMENT_FORMATS, document_format, line_format
from resources import privacy as _privacy
from resources.privacy import Privacy, split_counts
from assets.traces.util import without_gc

__all__ = ["read_raw_lines", "rows_of_file_bytes", "rows_from_bytes", "detect_format", "record_type_of", "document_of", "FORMATS"]

FORMATS = ("claude_code", "codex", "openai_messages", "sharegpt", "gemini_cli", "swe_agent", "mini_swe_agent",
           "openhands", "langfuse", "otel_genai", "atif", "preference", "unknown")
DOCUMENT_SUFFIXES = (".json", ".traj")

JSON_FRAGMENT = "json_fragment"  # a line of a multi-line JSON document (.json export)
JSON_ARRAY = "json_array"  # a line that is by itself a JSON array of conversations



def record_type_of(obj: Any) -> str | None:
    """The record type of one parsed line."""
    if isinstance(obj, dict):
        t = obj.get("type")
        if isinstance(t, str):
            return t
        if isinstance(obj.get("messages"), list):
            return "messages"
        if isinstance(obj.get("conversations"), list):
            return "conversations"
        rt = obj.get("record_type")  # legacy Codex rollouts: {"record_type": "state"}
        if isinstance(rt, str):
            return rt
        if "instructions" in obj and "id" in obj:  # legacy Codex first line
            return "session_meta"
        if "$set" in obj:
            return "$set"
        if "chosen" in obj and "rejected" in obj:
            return "preference"
        return None
    if isinstance(obj, list):
        return JSON_ARRAY
    return None


_format_of = line_format


def detect_format(objs: list[Any], path: str | Path | None = None) -> str:
    """The transcript format of a file, from its first parsed records (and its name)."""
    votes: Counter = Counter()
    for o in objs:
        f = _format_of(o)
        if f:
            votes[f] += 1
    if votes:
        return votes.most_common(1)[0][0]
    if path is not None:
        name = Path(path).name
        if name.startswith("rollout-") or "/.codex/" in str(path):
            return "codex"
    return "unknown"


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    return now if now.tzinfo else now.replace(tzinfo=timezone.utc)


def read_raw_lines(
    path: str | Path,
    session_key: str,
    *,
    max_line_bytes: int = 8 * 1024 * 1024,
    now: datetime | None = None,
    source_file: str | None = None,
    privacy: Privacy | None = None,
) -> tuple[list[dict], dict]:
    """Read a session file into RAW_TRACES rows. Returns ``(rows, stats)``.

    stats: ``lines``, ``bytes``, ``quarantined`` ({reason: n}), ``secrets``
    ({kind: n}), ``personal_data`` ({kind: n}), ``record_types`` ({type: n}),
    ``source_format``. ``privacy``: the scrubber (default: the configured lake's).
    """
    p = Path(path)
    return rows_of_file_bytes(p.read_bytes(), session_key,
                              source_file=source_file if source_file is not None else str(p),
                              max_line_bytes=max_line_bytes, now=now,
                              json_document=p.suffix.lower() in DOCUMENT_SUFFIXES, privacy=privacy)


def rows_of_file_bytes(data: bytes, session_key: str, **kw) -> tuple[list[dict], dict]:
    """:func:`read_raw_lines` over a file's bytes already read (UTF-16 files decoded)."""
    encoding = utf16_encoding(data)
    if encoding is None:
        return rows_from_bytes(data, session_key, **kw)
    return _rows_from_utf16(data, encoding, session_key, **kw)


def utf16_encoding(data: bytes) -> str | None:
    """'utf-16-le' / 'utf-16-be' for a UTF-16 file (a BOM, or NULs in every other byte of
    an ASCII-heavy head, as Windows shells write redirected output), else None."""
    if data[:2] == b"\xff\xfe":
        return "utf-16-le"
    if data[:2] == b"\xfe\xff":
        return "utf-16-be"
    head = data[:256]
    if len(head) >= 8 and len(head) % 2 == 0:
        even, odd = head[0::2], head[1::2]
        if odd.count(0) == len(odd) and even.count(0) == 0:
            return "utf-16-le"
        if even.count(0) == len(even) and odd.count(0) == 0:
            return "utf-16-be"
    return None


def _rows_from_utf16(data: bytes, encoding: str, session_key: str, **kw) -> tuple[list[dict], dict]:
    """A UTF-16 file: lines are decoded (so they parse and are scrubbed like any other) and
    byte offsets/lengths refer to the original file. Undecodable files stay binary."""
    bom = 2 if data[:2] in (b"\xff\xfe", b"\xfe\xff") else 0
    try:
        text = data[bom:].decode(encoding)
    except UnicodeDecodeError:
        return rows_from_bytes(data, session_key, **kw)
    rows, stats = rows_from_bytes(text.encode("utf-8"), session_key, **kw)
    unit = 2
    offset = 0
    lines = text.split("\n")
    for i, row in enumerate(rows):
        n = len(lines[i].encode(encoding)) + (unit if i < len(lines) - 1 else 0)
        if i == 0:
            n += bom
        row["byte_offset"], row["byte_len"] = offset, n
        offset += n
        if row.get("raw_bytes") is not None:  # keep original-encoding bytes (scrubbed text)
            row["raw_bytes"] = (row["raw"] or "").encode(encoding)
    stats["bytes"] = len(data)
    stats["encoding"] = encoding
    return rows, stats


@without_gc
def rows_from_bytes(
    data: bytes,
    session_key: str,
    *,
    source_file: str = "",
    max_line_bytes: int = 8 * 1024 * 1024,
    now: datetime | None = None,
    json_document: bool = False,
    privacy: Privacy | None = None,
) -> tuple[list[dict], dict]:
    """:func:`read_raw_lines` over bytes already in memory."""
    ingested_at = _utc(now)
    privacy = privacy or _privacy.active()
    parts = data.split(b"\n")
    trailing_nl = data.endswith(b"\n")
    if trailing_nl or not data:
        parts.pop()  # the empty piece after the last newline (or of an empty file)
    n = len(parts)

    # Pass 1: classify bytes, decode. (reason, text, raw_bytes) per line.
    reasons: list[str | None] = [None] * n
    bad_bytes: dict[int, bytes] = {}
    texts: list[str] | None = None
    # Fast path (the usual file): no line can be oversized or binary, every line is UTF-8.
    # Blank lines are then found in pass 3 (they never parse as JSON).
    lazy_blank = len(data) <= max_line_bytes and b"\x00" not in data
    if lazy_blank:
        try:
            texts = list(map(bytes.decode, parts))
        except UnicodeDecodeError:
            lazy_blank = False
    if not lazy_blank:
        texts = [""] * n
        for i, b in enumerate(parts):
            if len(b) > max_line_bytes:
                reasons[i] = "oversized"
            elif b"\x00" in b:
                reasons[i] = "binary"
            try:
                texts[i] = b.decode("utf-8")
            except UnicodeDecodeError:
                texts[i] = b.decode("utf-8", "backslashreplace")
                bad_bytes[i] = b
                if reasons[i] is None:
                    reasons[i] = "invalid_utf8"
            if reasons[i] is None and (not b or b.isspace()):
                reasons[i] = "blank"

    # Pass 2: scrub secrets and personal data (vectorized pre-filter, Python rules only
    # on suspicious lines). counts: {line index: {kind: n}} of the lines that changed.
    scrubbed, counts = privacy.scrub_texts(texts, raw=parts if lazy_blank else None)
    raw_bytes: dict[int, bytes] = {}
    for i, b in bad_bytes.items():
        raw_bytes[i], _ = privacy.scrub_bytes(b)  # counted once, through the text above

    # A pretty-printed JSON document (its first line a lone "{" or "["): parse it whole
    # first; its lines are not JSON by themselves and would each fail (slowly) in pass 3.
    record_types: list[str | None] = [None] * n
    fmt = "unknown"
    whole = False
    first_nb = next((i for i in range(n) if parts[i].strip()), None)
    if (first_nb is not None and n > 1 and parts[first_nb].strip() in (b"{", b"[") and not bad_bytes
            and all(r is None or r == "blank" for r in reasons)):
        doc, err = _as_document(scrubbed, reasons)
        if err is None:
            fmt = document_format(doc) or "unknown"
            reasons = [None] * n
            record_types = [JSON_FRAGMENT] * n
            whole = True

    if not whole:
        # Pass 3: parse what may be parsed. Only the first parsed records are kept (for the
        # format vote); holding every parsed line would only feed the garbage collector.
        sample: list[Any] = []
        sample_left = 200
        loads = orjson.loads
        JSONDecodeError = orjson.JSONDecodeError
        if counts:  # changed lines parse from their scrubbed text
            srcs: list = list(parts)
            for i in counts:
                srcs[i] = scrubbed[i]
        else:  # unchanged lines parse from bytes (no str -> UTF-8 round trip)
            srcs = parts
        for i, src in enumerate(srcs):
            if reasons[i] is not None:
                continue
            try:
                obj = loads(src)
            except JSONDecodeError as e:
                b = parts[i]
                if lazy_blank and (not b or b.isspace()):
                    reasons[i] = "blank"
                    continue
                obj = _recover(texts[i], scrubbed, counts, i, privacy)
                if obj is _FAIL:
                    last_open = i == n - 1 and not trailing_nl
                    reasons[i] = "truncated" if last_open else f"invalid_json: {e}"
                    continue
            cls = obj.__class__
            if cls is dict:
                t = obj.get("type")
                record_types[i] = t if t.__class__ is str else record_type_of(obj)
            elif cls is list and all(x.__class__ is dict for x in obj):
                record_types[i] = JSON_ARRAY
            elif isinstance(obj, dict) or (isinstance(obj, list) and all(isinstance(x, dict) for x in obj)):
                record_types[i] = record_type_of(obj)  # subclasses (not produced by orjson)
            else:
                reasons[i] = "not_object"
                continue
            if sample_left:
                sample.append(obj)
                sample_left -= 1
        fmt = detect_format(sample, source_file or None)

        # A file that is one JSON document (pretty-printed over many lines, or a single line),
        # recognized by its content: most of its lines are not JSON by themselves, or its one
        # record has a document shape (a trajectory, a trace export, ...).
        nonblank = [i for i in range(n) if reasons[i] != "blank"]
        # Lines of a pretty-printed document do not parse by themselves ("{", '"key": 1,');
        # valid JSON that is not an object ("1", "null") is a bad line, not a document's part.
        failed = sum(1 for i in nonblank if _unparsed(reasons[i]))
        multi_line_doc = len(nonblank) > 1 and _unparsed(reasons[nonblank[0]]) and failed * 2 >= len(nonblank)
        if len(sample) == 1 and len(nonblank) == 1 and reasons[nonblank[0]] is None:
            dfmt = document_format(sample[0])
            if dfmt in DOCUMENT_FORMATS:
                fmt = dfmt
                record_types = [JSON_FRAGMENT if r is None else None for r in reasons]
        elif multi_line_doc or json_document or (fmt == "unknown" and n > 1):
            doc, err = _as_document(scrubbed, reasons)
            if err is None:
                dfmt = document_format(doc)
                if dfmt is not None or multi_line_doc:
                    fmt = dfmt or "unknown"
                    reasons = [None] * n
                    record_types = [JSON_FRAGMENT] * n
            elif multi_line_doc and err != "undecodable":
                kind = "truncated_document" if err.startswith("unexpected end of data") else "invalid_document"
                reasons = [r if r == "blank" else f"{kind}: {err}" for r in reasons]
                record_types = [None] * n
                fmt = "unknown"

    # the file's path names its owner (/Users/<name>/.claude/...): stored pseudonymized
    source_file = privacy.scrub_text(source_file)[0] if source_file else source_file

    rows: list[dict] = []
    append = rows.append
    offset = 0
    if not counts and not raw_bytes:  # the usual file: no secret, every line UTF-8
        for line_no, (b, raw, rtype, reason) in enumerate(zip(parts, scrubbed, record_types, reasons), 1):
            blen = len(b) + 1
            append(
                {
                    "session_key": session_key,
                    "source_file": source_file,
                    "source_format": fmt,
                    "line_no": line_no,
                    "byte_offset": offset,
                    "byte_len": blen,
                    "record_type": rtype,
                    "raw": raw,
                    "raw_bytes": None,
                    "quarantined": reason is not None,
                    "quarantine_reason": reason,
                    "secrets_scrubbed": 0,
                    "personal_data_replaced": 0,
                    "ingested_at": ingested_at,
                }
            )
            offset += blen
    else:
        for i, (b, raw, rtype, reason) in enumerate(zip(parts, scrubbed, record_types, reasons)):
            blen = len(b) + 1
            sec, pii = split_counts(counts[i]) if counts.get(i) else ({}, {})
            append(
                {
                    "session_key": session_key,
                    "source_file": source_file,
                    "source_format": fmt,
                    "line_no": i + 1,
                    "byte_offset": offset,
                    "byte_len": blen,
                    "record_type": rtype,
                    "raw": raw,
                    "raw_bytes": raw_bytes.get(i),
                    "quarantined": reason is not None,
                    "quarantine_reason": reason,
                    "secrets_scrubbed": sum(sec.values()),
                    "personal_data_replaced": sum(pii.values()),
                    "ingested_at": ingested_at,
                }
            )
            offset += blen
    if rows and not trailing_nl:
        rows[-1]["byte_len"] -= 1  # the last line has no terminating newline
    secrets_total: Counter = Counter()
    for i in sorted(counts):
        secrets_total.update(counts[i])
    secrets_total, pii_total = split_counts(dict(secrets_total))
    quarantined = Counter(r.split(":", 1)[0] for r in reasons if r is not None)
    rtypes = Counter(filter(None, record_types))
    stats = {
        "lines": n,
        "bytes": len(data),
        "quarantined": dict(quarantined),
        "secrets": secrets_total,
        "personal_data": pii_total,
        "record_types": dict(rtypes),
        "source_format": fmt,
    }
    return rows, stats


_FAIL = object()


def _unparsed(reason: str | None) -> bool:
    return reason is not None and (reason == "truncated" or reason.startswith("invalid_json"))


def _recover(original: str, scrubbed: list[str], counts: dict[int, dict], i: int, privacy: Privacy) -> Any:
    """The line did not parse after scrubbing. If the *original* parses, scrubbing broke it
    (a rule bug): scrub the parsed object instead and store its re-serialization."""
    if scrubbed[i] == original:
        return _FAIL
    try:
        obj = orjson.loads(original)
    except orjson.JSONDecodeError:
        return _FAIL
    obj, c = privacy.scrub_json(obj)
    scrubbed[i] = orjson.dumps(obj).decode()
    counts[i] = c
    return obj


def _as_document(scrubbed: list[str], reasons: list[str | None]) -> tuple[Any, str | None]:
    """``(document, None)`` when all lines joined parse as one JSON document, else
    ``(None, error message)``."""
    if any(r in ("oversized", "binary", "invalid_utf8") for r in reasons):
        return None, "undecodable"
    try:
        doc = orjson.loads("\n".join(scrubbed))
    except orjson.JSONDecodeError as e:
        return None, str(e)
    if isinstance(doc, dict) or (isinstance(doc, list) and doc and all(isinstance(x, dict) for x in doc)):
        return doc, None
    return None, "not_object"


def document_of(raw_rows: list[dict]) -> Any:
    """Rebuild the JSON document of a file stored as ``json_fragment`` rows."""
    rows = sorted(raw_rows, key=lambda r: r["line_no"])
    return orjson.loads("\n".join(r["raw"] or "" for r in rows))

