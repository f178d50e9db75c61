"""The held-out split by session (pure).

Each session goes to ``eval`` when ``bucket(seed, session_key) < eval_share``, where the
bucket is the first 8 bytes of sha256("<seed>:<session_key>") read as a fraction of 2^64.
A session keeps its side when other sessions arrive (no ranking over the set), so an
evaluation session never becomes a training session as the lake grows. The only exception
is the guard against an empty side: with at least two sessions, when the hash sends all
of them to one side, the session with the lowest (or highest) bucket is moved and marked
``forced`` — deterministic too.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Iterable, Mapping, Sequence

from assets.student.tables import SPLIT_VERSION

TRAIN, EVAL = "train", "eval"


def bucket(session_key: str, seed: str = "tracelake") -> float:
    h = hashlib.sha256(f"{seed}:{session_key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def split_sessions(session_keys: Iterable[str], eval_share: float = 0.3, seed: str = "tracelake",
                   counts: Mapping[str, Mapping[str, int]] | None = None) -> list[dict]:
    """One row per distinct session: split, bucket, forced (see the module doc)."""
    if not 0.0 < eval_share < 1.0:
        raise ValueError(f"eval_share must be in (0, 1), got {eval_share}")
    keys = sorted({k for k in session_keys if k})
    rows = [{"session_key": k, "bucket": bucket(k, seed), "forced": False} for k in keys]
    for r in rows:
        r["split"] = EVAL if r["bucket"] < eval_share else TRAIN
    if len(rows) >= 2:
        sides = Counter(r["split"] for r in rows)
        if not sides[EVAL]:
            r = min(rows, key=lambda r: r["bucket"])
            r["split"], r["forced"] = EVAL, True
        elif not sides[TRAIN]:
            r = max(rows, key=lambda r: r["bucket"])
            r["split"], r["forced"] = TRAIN, True
    counts = counts or {}
    for r in rows:
        c = counts.get(r["session_key"], {})
        r.update(eval_share=float(eval_share), seed=str(seed), split_version=SPLIT_VERSION,
                 n_sft=int(c.get("sft", 0)), n_pairs=int(c.get("pairs", 0)), n_kto=int(c.get("kto", 0)))
    return rows


def sessions_of(split_rows: Sequence[Mapping], side: str) -> set[str]:
    return {r["session_key"] for r in split_rows if r["split"] == side}


def partition_rows(rows: Iterable[Mapping], split_rows: Sequence[Mapping]) -> tuple[list, list, list]:
    """(train rows, eval rows, rows of sessions the split does not know — never trained on)."""
    train, evals = sessions_of(split_rows, TRAIN), sessions_of(split_rows, EVAL)
    a, b, unknown = [], [], []
    for r in rows:
        k = r.get("session_key")
        (a if k in train else b if k in evals else unknown).append(r)
    return a, b, unknown


def check_no_leak(trained_on: Iterable[str], split_rows: Sequence[Mapping]) -> None:
    """Refuse to evaluate on sessions a model was trained on (the split changed since)."""
    leaked = sorted(set(trained_on) & sessions_of(split_rows, EVAL))
    if leaked:
        raise ValueError(f"{len(leaked)} evaluation session(s) were training sessions of this run "
                         f"(the split changed since it trained), e.g. {leaked[0]!r}: retrain, or evaluate "
                         f"with the split it trained on")
