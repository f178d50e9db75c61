"""normalized_pairs, refreshed by what changed (see resources/changes.py).

The sessions whose preference pairs changed since the last refresh (the change feed of
gold/preference_pairs) are re-normalized, a bounded group of sessions at a time: their old
rows leave normalized_pairs and pair_rejections, the recipe runs over their pairs, and the
result is appended. The recipe's exact dedup (document_deduplicator) also holds across
groups and refreshes: every kept row carries ``text_hash`` (the dedup key's hash) and a
new pair whose hash is already kept in another session is dropped as its duplicate.

A full rebuild (first refresh, a recipe edit, a near-duplicate op such as minhash that
needs every row at once, or ``full_refresh``) empties both tables and runs the same loop
over every session, so memory stays bounded by one group either way.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import dagster as dg
import pyarrow.compute as pc

from assets.metadata import md_counts, md_table, pair_preview
from assets.pairs.normalize import OpReport, Recipe, build_ops, normalize_pairs, pair_sample
from assets.pairs.tables import NORMALIZED_PAIRS, PAIR_REJECTIONS, PREFERENCE_PAIRS
from resources.changes import changes_since, consumed_versions, delete_keys, record_consumed, rows_of, scan, scan_keys
from resources.lake import DeltaLake, count_rows
from assets.pairs.messages import dumps

DATASET = NORMALIZED_PAIRS.path
NEAR_DUP_OPS = ("document_minhash_deduplicator", "document_simhash_deduplicator", "ray_")
EXACT_DEDUP_OP = "document_deduplicator"


def recipe_state_version(recipe: Recipe) -> int:
    return int(recipe.version[:12], 16)


def dedup_settings(recipe: Recipe) -> dict | None:
    """The exact dedup op's settings (text_key, lowercase), None when the recipe has none."""
    for p in recipe.process:
        for name, args in p.items():
            if name == EXACT_DEDUP_OP:
                args = args or {}
                return {"text_key": args.get("text_key", recipe.text_key), "lowercase": bool(args.get("lowercase", False))}
    return None


def text_hash(row: Mapping[str, Any], dedup: dict | None) -> str | None:
    if dedup is None:
        return None
    text = pair_sample(row, 0).get(dedup["text_key"]) or ""
    if dedup["lowercase"]:
        text = text.lower()
    return hashlib.md5(text.encode("utf-8")).hexdigest()


@dataclass
class RefreshReport:
    mode: str = "incremental"
    reason: str = ""
    sessions: int = 0
    groups: int = 0
    rows_in: int = 0
    kept: int = 0
    dropped: int = 0
    cross_duplicates: int = 0
    pairs_total: int = 0
    input_version: int | None = None
    ops: dict[str, OpReport] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    languages: Counter = field(default_factory=Counter)
    strategies: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    kept_preview: list = field(default_factory=list)  # the first few rows of each, for the UI
    rejected_preview: list = field(default_factory=list)
    recipe: Recipe | None = None

    def _common(self) -> dict[str, Any]:
        ops_md = md_table(
            ["op", "rows in", "dropped", "seconds", "example reason"],
            [[o.name, o.rows_in, o.dropped, f"{o.seconds:.2f}", self.examples.get(o.name, "")[:120]]
             for o in self.ops.values()])
        return {
            "refresh_mode": self.mode,
            "refresh_reason": self.reason,
            "sessions_refreshed": dg.MetadataValue.int(self.sessions),
            "recipe": self.recipe.name if self.recipe else "",
            "recipe_version": self.recipe.version if self.recipe else "",
            "rows_in": dg.MetadataValue.int(self.rows_in),
            "rows_kept": dg.MetadataValue.int(self.kept),
            "rows_dropped": dg.MetadataValue.int(self.dropped),
            "preference_pairs_version": dg.MetadataValue.int(-1 if self.input_version is None else self.input_version),
            "drops_by_op": ops_md,
        }

    def kept_metadata(self) -> dict[str, Any]:
        """normalized_pairs' figures (beside the table's state)."""
        return self._common() | {
            "recipe_runs": dg.MetadataValue.int(self.groups),
            "recipe_path": dg.MetadataValue.path(str(self.recipe.path) if self.recipe else ""),
            "duplicates_of_earlier_pairs": dg.MetadataValue.int(self.cross_duplicates),
            "pairs_total": dg.MetadataValue.int(self.pairs_total),
            "kept_by_strategy": md_counts("strategy", dict(self.strategies)),
            "kept_by_language": md_counts("language", dict(self.languages)),
            "preview": pair_preview(self.kept_preview, n=3),
            "seconds": dg.MetadataValue.float(round(self.seconds, 3)),
        }

    def rejected_metadata(self) -> dict[str, Any]:
        """pair_rejections' figures (beside the table's state)."""
        return self._common() | {
            "preview": pair_preview(self.rejected_preview, n=3, why=lambda r: f"{r['op']}: {r['reason']}"),
        }


def _session_groups(lake: DeltaLake, keys: Iterable[str], version: int, max_rows: int) -> Iterable[list[str]]:
    """Sessions in sorted groups of about ``max_rows`` pairs (never one group per whole lake)."""
    keys = sorted(keys)
    counts: Counter = Counter()
    for b in scan_keys(lake, PREFERENCE_PAIRS, "session_key", keys, columns=["session_key"], version=version):
        counts.update(b.column("session_key").to_pylist())
    group, n = [], 0
    for k in keys:
        c = counts.get(k, 0)
        if group and n + c > max_rows:
            yield group
            group, n = [], 0
        group.append(k)
        n += c
    if group:
        yield group


def refresh_normalized_pairs(lake: DeltaLake, recipe: Recipe, *, overrides=None, full: bool = False,
                             group_rows: int = 5000, log=None) -> RefreshReport:
    t0 = time.perf_counter()
    rep = RefreshReport(recipe=recipe)
    state = consumed_versions(lake, DATASET)
    dedup = dedup_settings(recipe)
    near_dup = [n for p in recipe.process for n in p if n.startswith(NEAR_DUP_OPS)]
    why_full = ("full refresh requested" if full else
                f"recipe changed ({recipe.name}@{recipe.version})"
                if state and state.get("recipe") != recipe_state_version(recipe) else
                f"near-duplicate op {near_dup[0]} needs every row" if near_dup else "")
    ch = changes_since(lake, PREFERENCE_PAIRS, state.get(PREFERENCE_PAIRS.path), ["session_key"], full=bool(why_full))
    rep.input_version = ch.version
    if ch.version is None:
        rep.mode, rep.reason = "skipped", ch.reason
        return rep
    if ch.full:
        rep.mode, rep.reason = "full", why_full or ch.reason
        sessions: set = set()
        for b in scan(lake, PREFERENCE_PAIRS, columns=["session_key"], version=ch.version):
            sessions.update(pc.unique(b.column("session_key")).to_pylist())
        for spec in (NORMALIZED_PAIRS, PAIR_REJECTIONS):
            lake.overwrite(spec, [])
    else:
        rep.reason = ch.reason
        sessions = ch.keys("session_key")
    rep.sessions = len(sessions)
    if sessions:
        ops = build_ops(recipe, overrides)
        for group in _session_groups(lake, sessions, ch.version, group_rows):
            rep.groups += 1
            _refresh_group(lake, recipe, ops, group, ch.version, dedup, rep)
            if log is not None:
                log(f"normalized_pairs: group {rep.groups}: {len(group)} sessions, {rep.rows_in} pairs so far")
    else:
        lake.ensure(NORMALIZED_PAIRS)
        lake.ensure(PAIR_REJECTIONS)
    dt = lake.table(PREFERENCE_PAIRS, ch.version)
    rep.pairs_total = count_rows(dt) if dt is not None else 0
    record_consumed(lake, DATASET, {PREFERENCE_PAIRS.path: ch.version, "recipe": recipe_state_version(recipe)},
                    rep.mode)
    rep.seconds = time.perf_counter() - t0
    return rep


def _refresh_group(lake: DeltaLake, recipe: Recipe, ops, group: list[str], version: int,
                   dedup: dict | None, rep: RefreshReport) -> None:
    pairs = rows_of(scan_keys(lake, PREFERENCE_PAIRS, "session_key", group, version=version))
    pairs.sort(key=lambda r: (r["session_key"], r["step_id"], r["pair_id"]))
    res = normalize_pairs(pairs, recipe, ops=ops)
    kept, rejections = res.kept, res.rejections
    for r in kept:
        r["text_hash"] = text_hash(r, dedup)
    gone = set(group)
    if dedup is not None and kept:
        hashes = {r["text_hash"] for r in kept}
        first: dict[str, str] = {}
        for b in scan_keys(lake, NORMALIZED_PAIRS, "text_hash", hashes,
                           columns=["text_hash", "pair_id", "session_key"]):
            for h, pid, sk in zip(*(b.column(c).to_pylist() for c in ("text_hash", "pair_id", "session_key"))):
                if sk not in gone:  # the rows of this group's sessions are being replaced
                    first.setdefault(h, pid)
        still = []
        for r in kept:
            dup = first.get(r["text_hash"])
            if dup is None:
                still.append(r)
                continue
            rep.cross_duplicates += 1
            rejections.append({k: v for k, v in r.items() if k not in ("language", "text_hash")} | {
                "op": EXACT_DEDUP_OP,
                "reason": f"duplicate of pair {dup} (same {dedup['text_key']}, kept earlier)",
                "stats": dumps({"duplicate_of": dup, "text_hash": r["text_hash"]})})
        kept = still
    # replace this group's sessions in both tables (rows of other sessions stay)
    delete_keys(lake, NORMALIZED_PAIRS, "session_key", group)
    delete_keys(lake, PAIR_REJECTIONS, "session_key", group)
    if kept:
        lake.append(NORMALIZED_PAIRS, kept)
    if rejections:
        lake.append(PAIR_REJECTIONS, rejections)
    rep.rows_in += len(pairs)
    rep.kept += len(kept)
    rep.dropped += len(rejections)
    for o in res.ops:
        cur = rep.ops.get(o.name)
        rep.ops[o.name] = o if cur is None else OpReport(o.name, o.kind, cur.rows_in + o.rows_in,
                                                         cur.dropped + o.dropped, cur.seconds + o.seconds)
    for r in rejections:
        rep.examples.setdefault(r["op"], r["reason"])
    rep.kept_preview += kept[: max(0, 3 - len(rep.kept_preview))]
    rep.rejected_preview += rejections[: max(0, 3 - len(rep.rejected_preview))]
    rep.languages.update(r.get("language") or "n/a" for r in kept)
    rep.strategies.update(r["strategy"] for r in kept)
