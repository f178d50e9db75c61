"""prompt_pool of one run, Dagster-free: the candidates (the current pool plus what changed
upstream since the last draw, or everything on a full draw) composed into the pool under the
quota config. :func:`draw_prompt_pool` returns the rows and a report that renders the
asset's metadata and its ``quotas_met`` check."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg

from assets.capture.pool import (
    PoolConfig,
    PoolReport,
    QuotaLine,
    candidates_from_file,
    candidates_from_pairs,
    candidates_from_pool,
    candidates_from_sft,
    compose_pool,
)
from assets.capture.tables import PROMPT_POOL
from assets.examples.tables import SFT_EXAMPLES
from assets.metadata import json_preview, md_preview, md_table
from assets.pairs.tables import NORMALIZED_PAIRS
from resources.changes import changes_since, consumed_versions, scan
from resources.lake import DeltaLake


@dataclass
class DrawReport:
    """What a draw did; :meth:`metadata` and :meth:`check_metadata` are what the asset reports."""

    path: Path
    cfg: PoolConfig
    full: bool
    pool: PoolReport = field(default_factory=PoolReport)
    versions: dict = field(default_factory=dict)  # input path -> version read (+ quota_config)
    modes: dict = field(default_factory=dict)  # input name -> full | incremental
    per_source: Counter = field(default_factory=Counter)
    bad_lines: int = 0
    preview: list = field(default_factory=list)

    @property
    def shortfalls(self) -> list[QuotaLine]:
        return self.pool.shortfalls

    def _quotas(self) -> dg.MetadataValue:
        return md_table(("domain", "quota", "available", "selected", "shortfall"),
                        [(q.domain, q.quota, q.available, q.selected, q.shortfall) for q in self.pool.quotas])

    def check_metadata(self) -> dict[str, Any]:
        return {
            "shortfall_domains": ", ".join(q.domain for q in self.shortfalls) or "none",
            "total_shortfall": sum(q.shortfall for q in self.shortfalls),
            "quotas": self._quotas(),
        }

    def metadata(self) -> dict[str, Any]:
        rep, cfg = self.pool, self.cfg
        return {
            "quota_config": dg.MetadataValue.path(str(self.path)),
            "refresh_mode": "full" if self.full else "incremental",
            "input_refresh": md_table(("input", "mode", "version"),
                                      [(k, self.modes[k.split("/")[-1]], v) for k, v in self.versions.items()
                                       if "/" in k]),
            "config_hash": cfg.config_hash,
            "seed": cfg.seed,
            "candidates": rep.candidates,
            "candidates_by_source": md_table(("source", "rows"), sorted(self.per_source.items())),
            "bad_file_lines": self.bad_lines,
            "dropped_by_reason": md_table(("reason", "count"), sorted(rep.dropped.items())),
            "unassigned_by_domain": md_table(("domain (no quota)", "candidates"), sorted(rep.unassigned.items())),
            "quotas": self._quotas(),
            "quota_shortfall_total": sum(q.shortfall for q in self.shortfalls),
            "languages": md_table(("language", "prompts"), sorted(rep.languages.items(), key=lambda kv: -kv[1])),
            "language_detector": cfg.language_detector,
            "near_duplicate_threshold": cfg.near_duplicate_threshold,
            "near_duplicates": md_table(("dropped prompt_id", "near-duplicate of"),
                                        sorted(rep.near_duplicates.items())[:5]),
            "preview": md_preview(self.preview, {
                "domain": lambda r: r["domain"], "language": lambda r: r["language"],
                "conversation": lambda r: json_preview(r["messages"]),
            }, n=3),
        }


def draw_prompt_pool(lake: DeltaLake, cfg: PoolConfig, path: Path, *, full_refresh: bool = False
                     ) -> tuple[list[dict], DrawReport]:
    """The pool's rows. Only what changed upstream since the last draw (change feeds) is
    read, drawn together with the current pool: a prompt's draw rank does not depend on the
    others, so this is the pool a full draw over everything gives (except prompts deleted
    upstream, which stay). The caller records ``report.versions`` as consumed after writing."""
    state = consumed_versions(lake, PROMPT_POOL.path)
    cfg_version = int(cfg.config_hash[:12], 16)
    full = (full_refresh or not lake.exists(PROMPT_POOL)
            or state.get("quota_config") not in (None, cfg_version))
    rep = DrawReport(path=path, cfg=cfg, full=full, versions={"quota_config": cfg_version})
    candidates: list = []
    if not full:
        current = lake.read(PROMPT_POOL, columns=["prompt_id", "messages", "tools", "source", "source_id"])
        candidates += candidates_from_pool(current.to_pylist())
        rep.per_source["current pool"] = current.num_rows
    inputs = []
    if cfg.use_normalized_pairs:
        inputs.append((NORMALIZED_PAIRS, ["pair_id", "prompt", "chosen", "tools"], candidates_from_pairs))
    if cfg.use_sft_examples:
        inputs.append((SFT_EXAMPLES, ["example_id", "messages", "tools"], candidates_from_sft))
    for spec, cols, make in inputs:
        ch = changes_since(lake, spec, state.get(spec.path), cols, full=full)
        rep.versions[spec.path], rep.modes[spec.name] = ch.version, ("full" if ch.full else "incremental")
        if ch.version is None or ch.empty:
            continue
        for b in (scan(lake, spec, cols, version=ch.version) if ch.full else ch.inserted()):
            candidates += make(b.to_pylist())
            rep.per_source[spec.name] += b.num_rows
    for f in cfg.file_paths():
        if not f.is_file():
            raise FileNotFoundError(f"prompt file listed in {path} does not exist: {f}")
        got, bad = candidates_from_file(f)
        candidates += got
        rep.bad_lines += bad
        rep.per_source[f"file:{f.name}"] = len(got)

    rows, rep.pool = compose_pool(candidates, cfg)
    now = datetime.now(timezone.utc)
    for r in rows:
        r["created_at"] = now
    rep.preview = rows[:3]
    return rows, rep
