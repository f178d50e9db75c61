"""Pure, Dagster-free core of the replay corpus.

* **Snapshots** — every accepted training row becomes one snapshot keyed by a content hash
  (``section_id``): ``preference`` (DPO pair), ``instruction`` (SFT / desirable KTO row with a
  user turn) or ``prose`` (a messages row without a user turn, or an SFT row whose source is
  ``prose``). ``content`` is the TRL row as canonical JSON, so the same row seen twice — from
  any table — has the same id.
* **Eviction planning** — oldest first by ``(last_seen_at, added_at, section_id)``, never a
  protected id, until the byte / row budget holds. The plan also gives a compact range
  predicate that deletes exactly the plan in one Delta commit.
* **Sampling** — Efraimidis–Spirakis A-Res: key ``u^(1/w)`` (compared as ``log(u)/w``), top-k
  keys win. ``u`` is a counter-based draw from ``(seed, section_id)``: a numpy Generator seeded
  with ``seed`` draws a 64-bit salt, mixed (splitmix64) with a 64-bit hash of the row's
  section_id computed straight from Arrow's string buffer. The draw is therefore vectorized, needs no sort of the corpus, does not depend
  on the order files are read in, and a row keeps its key when other rows are added.
  Recency weight: ``max(weight / (1 + age_days), 0.01)`` with age since ``last_seen_at``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from resources.lake import in_predicate, sql_literal

from assets.corpus.tables import REPLAY_CORPUS, SECTION_TYPES

RECENCY_FLOOR = 0.01
SCHEMES = ("recency", "uniform")
_US_PER_DAY = 86_400 * 1_000_000

SOURCE_PAIRS = "gold/normalized_pairs"
SOURCE_SFT = "gold/sft_examples"
SOURCE_KTO = "gold/kto_examples"


# --------------------------------------------------------------------------- helpers
def utc(ts: datetime | str | None = None) -> datetime:
    """A timezone-aware UTC datetime (now, or parsed from ISO 8601; naive means UTC)."""
    if ts is None:
        return datetime.now(timezone.utc)
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.strip().replace("Z", "+00:00"))
    if ts.tzinfo is None:
        return ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc)


def iso(ts: datetime) -> str:
    """Fixed-width ISO form used in ids and predicates: 2026-11-01T12:00:00.000000Z."""
    return utc(ts).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def to_us(ts: datetime) -> int:
    ts = utc(ts)
    return (ts - datetime(1970, 1, 1, tzinfo=timezone.utc)) // _US_DELTA


_US_DELTA = datetime(1970, 1, 1, 0, 0, 0, 1) - datetime(1970, 1, 1)


def from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + int(us) * _US_DELTA


def canonical_json(obj: Any) -> str:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()


def _loads(text: Any) -> Any:
    if text is None:
        return None
    if isinstance(text, (list, dict)):
        return text
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return _INVALID


_INVALID = object()


def section_id_for(section_type: str, content: str) -> str:
    """Content hash of a snapshot: 32 hex chars of sha256(type, canonical content)."""
    h = hashlib.sha256()
    h.update(section_type.encode())
    h.update(b"\x1f")
    h.update(content.encode())
    return h.hexdigest()[:32]


def _rows(data: Any) -> list[Mapping[str, Any]]:
    if data is None:
        return []
    if isinstance(data, (pa.Table, pa.RecordBatch)):
        return data.to_pylist()
    if hasattr(data, "to_dicts"):  # polars
        return data.to_dicts()
    return list(data)


# --------------------------------------------------------------------------- snapshots
@dataclass
class Snapshots:
    """Snapshot rows built from training rows, plus what was dropped and why."""

    rows: list[dict] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)
    duplicates: int = 0

    def extend(self, other: "Snapshots") -> "Snapshots":
        self.rows.extend(other.rows)
        self.dropped.update(other.dropped)
        return self

    def deduped(self) -> "Snapshots":
        """One row per section_id (first sighting wins), sorted by section_id."""
        seen: dict[str, dict] = {}
        for r in self.rows:
            seen.setdefault(r["section_id"], r)
        rows = [seen[k] for k in sorted(seen)]
        return Snapshots(rows=rows, dropped=Counter(self.dropped),
                         duplicates=self.duplicates + len(self.rows) - len(rows))

    @property
    def ids(self) -> list[str]:
        return [r["section_id"] for r in self.rows]


def make_snapshot(
    section_type: str,
    trl_row: Mapping[str, Any],
    *,
    now: datetime,
    source: str | None = None,
    source_id: str | None = None,
    weight: float = 1.0,
    auto_mined: bool = True,
) -> dict:
    """One corpus row from a TRL row (``messages`` or ``prompt``/``chosen``/``rejected``)."""
    if section_type not in SECTION_TYPES:
        raise ValueError(f"unknown section type {section_type!r}")
    content = canonical_json({k: v for k, v in trl_row.items() if v is not None})
    now = utc(now)
    section_id = section_id_for(section_type, content)
    return {
        "section_id": section_id,
        "section_type": section_type,
        "content": content,
        "source": source,
        "source_id": source_id,
        "added_at": now,
        "last_seen_at": now,
        "weight": float(weight),
        "auto_mined": bool(auto_mined),
        "byte_size": len(content.encode()),
        "id_hash": int(id_hash64([section_id]).view(np.int64)[0]),
    }


def classify_messages(messages: Sequence[Mapping[str, Any]], source: str | None = None) -> str:
    """``prose`` for a row without a user turn (or marked as prose), else ``instruction``."""
    if source == "prose":
        return "prose"
    if not any(isinstance(m, Mapping) and m.get("role") == "user" for m in messages):
        return "prose"
    return "instruction"


def _messages_ok(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(isinstance(m, Mapping) for m in v)


def _tools(v: Any) -> Any:
    v = _loads(v)
    return None if v is _INVALID or not v else v


def snapshots_from_pairs(rows: Any, *, now: datetime, weight: float = 1.0,
                         source: str = SOURCE_PAIRS) -> Snapshots:
    """Preference snapshots from (normalized) DPO pair rows. Pairs are always auto-mined."""
    out = Snapshots()
    for r in _rows(rows):
        prompt, chosen, rejected = (_loads(r.get(c)) for c in ("prompt", "chosen", "rejected"))
        if not all(_messages_ok(v) for v in (prompt, chosen, rejected)):
            out.dropped["invalid_pair_json"] += 1
            continue
        row = {"prompt": prompt, "chosen": chosen, "rejected": rejected, "tools": _tools(r.get("tools"))}
        out.rows.append(make_snapshot("preference", row, now=now, source=source,
                                      source_id=r.get("pair_id"), weight=weight, auto_mined=True))
    return out


def snapshots_from_sft(rows: Any, *, now: datetime, weight: float = 1.0,
                       prose_weight: float | None = None, source: str = SOURCE_SFT) -> Snapshots:
    """Instruction / prose snapshots from SFT rows; teacher-written rows are auto-mined."""
    out = Snapshots()
    for r in _rows(rows):
        messages = _loads(r.get("messages"))
        if not _messages_ok(messages):
            out.dropped["invalid_messages_json"] += 1
            continue
        out.rows.append(_conversation_snapshot(messages, r, now=now, weight=weight,
                                               prose_weight=prose_weight, source=source))
    return out


def _conversation_snapshot(messages: list, r: dict, *, now: datetime, weight: float,
                           prose_weight: float | None, source: str) -> dict:
    """The snapshot of one conversation row (SFT, or a desirable KTO row as messages)."""
    origin = r.get("source")
    kind = classify_messages(messages, origin)
    w = prose_weight if (kind == "prose" and prose_weight is not None) else weight
    row = {"messages": messages, "tools": _tools(r.get("tools"))}
    return make_snapshot(kind, row, now=now, source=source, source_id=r.get("example_id"),
                         weight=w, auto_mined=origin not in (None, "original", "prose"))


def snapshots_from_kto(rows: Any, *, now: datetime, weight: float = 1.0,
                       prose_weight: float | None = None, source: str = SOURCE_KTO) -> Snapshots:
    """Instruction snapshots from *desirable* KTO rows (prompt + completion as messages).

    Undesirable rows (label false) are not accepted training targets and are skipped.
    A desirable KTO row with the same conversation as an SFT row has the same section_id.
    """
    out = Snapshots()
    for r in _rows(rows):
        if not r.get("label"):
            out.dropped["kto_undesirable"] += 1
            continue
        prompt, completion = _loads(r.get("prompt")), _loads(r.get("completion"))
        if not (_messages_ok(prompt) and _messages_ok(completion)):
            out.dropped["invalid_kto_json"] += 1
            continue
        messages = list(prompt) + list(completion)
        out.rows.append(_conversation_snapshot(messages, r, now=now, weight=weight,
                                               prose_weight=prose_weight, source=source))
    return out


def apply_sightings(snapshots: Snapshots, existing: pa.Table) -> tuple[list[str], list[str]]:
    """Split deduped snapshots into (added ids, refreshed ids) against the corpus index.

    ``existing`` has ``section_id`` and ``last_seen_at``. For a refreshed row the new
    ``last_seen_at`` never goes back in time (max of stored and now), so a materialization
    with an older ``as_of`` cannot make rows look older than they are.
    """
    if existing.num_rows == 0 or not snapshots.rows:
        return snapshots.ids, []
    ids = pa.array(snapshots.ids, pa.string())
    pos = pc.index_in(ids, value_set=existing.column("section_id").combine_chunks())
    matched = pos.is_valid().to_numpy(zero_copy_only=False)
    stored_us = np.full(len(ids), np.iinfo(np.int64).min, np.int64)
    if matched.any():
        stored_us[matched] = _ts_us(existing.column("last_seen_at")).take(
            pos.filter(pos.is_valid()).to_numpy(zero_copy_only=False).astype(np.int64))
    added, refreshed = [], []
    for row, m, prev in zip(snapshots.rows, matched, stored_us):
        if not m:
            added.append(row["section_id"])
            continue
        refreshed.append(row["section_id"])
        if prev > to_us(row["last_seen_at"]):
            row["last_seen_at"] = from_us(prev)
    return added, refreshed


# --------------------------------------------------------------------------- eviction
@dataclass
class EvictionPlan:
    """Which snapshots to evict (oldest first) and how to delete them."""

    ids: list[str]
    evicted_bytes: int
    rows_before: int
    bytes_before: int
    protected_rows: int
    protected_bytes: int
    max_bytes: int | None = None
    max_rows: int | None = None
    # sort key (last_seen_at, added_at, section_id) of the last evicted row
    cutoff: tuple[datetime, datetime, str] | None = None
    # protected ids that sort at or before the cutoff (must be excluded from a range delete)
    protected_in_range: list[str] = field(default_factory=list)
    types: dict[str, int] = field(default_factory=dict)

    @property
    def rows_after(self) -> int:
        return self.rows_before - len(self.ids)

    @property
    def bytes_after(self) -> int:
        return self.bytes_before - self.evicted_bytes

    @property
    def within_budget(self) -> bool:
        return ((self.max_rows is None or self.rows_after <= self.max_rows)
                and (self.max_bytes is None or self.bytes_after <= self.max_bytes))

    def range_predicate(self) -> str | None:
        """A Delta predicate selecting exactly ``ids``: the sort-key prefix minus protected ids."""
        if not self.ids or self.cutoff is None:
            return None
        ls, ad, sid = iso(self.cutoff[0]), iso(self.cutoff[1]), self.cutoff[2]
        pred = (
            f"(last_seen_at < '{ls}' OR (last_seen_at = '{ls}' AND (added_at < '{ad}' "
            f"OR (added_at = '{ad}' AND section_id <= {sql_literal(sid)}))))"
        )
        if self.protected_in_range:
            pred += f" AND NOT ({in_predicate('section_id', self.protected_in_range)})"
        return pred

    def in_predicates(self, chunk_size: int = 2000) -> list[str]:
        ids = sorted(self.ids)
        return [in_predicate("section_id", ids[i:i + chunk_size]) for i in range(0, len(ids), chunk_size)]


def _ts_us(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    return col.cast(pa.int64()).to_numpy(zero_copy_only=False)


def _le_cutoff(table: pa.Table, cutoff_us: tuple[int, int, str]) -> np.ndarray:
    """Vectorized (last_seen_at, added_at, section_id) <= cutoff."""
    ls, ad = _ts_us(table.column("last_seen_at")), _ts_us(table.column("added_at"))
    sid_le = pc.less_equal(table.column("section_id"), pa.scalar(cutoff_us[2])).to_numpy(
        zero_copy_only=False)
    return (ls < cutoff_us[0]) | ((ls == cutoff_us[0]) & ((ad < cutoff_us[1]) | ((ad == cutoff_us[1]) & sid_le)))


def plan_eviction(
    index: pa.Table,
    *,
    max_bytes: int | None = None,
    max_rows: int | None = None,
    protected: Iterable[str] | pa.Array = (),
) -> EvictionPlan:
    """Plan eviction to a budget: oldest first by (last_seen_at, added_at, section_id).

    ``index`` holds section_id, byte_size, added_at, last_seen_at (section_type optional).
    Protected ids are never evicted, even if that leaves the corpus over budget
    (``within_budget`` is then False).
    """
    if max_bytes is not None and max_bytes < 0 or max_rows is not None and max_rows < 0:
        raise ValueError("budgets must be >= 0")
    n = index.num_rows
    sizes = index.column("byte_size").to_numpy() if n else np.zeros(0, np.int64)
    total = int(sizes.sum())
    prot_arr = protected if isinstance(protected, (pa.Array, pa.ChunkedArray)) else pa.array(list(protected), pa.string())
    is_prot = (pc.is_in(index.column("section_id"), value_set=prot_arr).to_numpy(zero_copy_only=False)
               if n and len(prot_arr) else np.zeros(n, bool))
    plan = EvictionPlan(ids=[], evicted_bytes=0, rows_before=n, bytes_before=total,
                        protected_rows=int(is_prot.sum()), protected_bytes=int(sizes[is_prot].sum()),
                        max_bytes=max_bytes, max_rows=max_rows)
    need_rows = max(0, n - max_rows) if max_rows is not None else 0
    need_bytes = max(0, total - max_bytes) if max_bytes is not None else 0
    if not need_rows and not need_bytes:
        return plan

    cand = index.filter(pa.array(~is_prot))
    if cand.num_rows == 0:
        return plan
    order = pc.sort_indices(cand, sort_keys=[("last_seen_at", "ascending"), ("added_at", "ascending"),
                                             ("section_id", "ascending")])
    cand = cand.take(order)
    cum = np.cumsum(cand.column("byte_size").to_numpy())
    m_bytes = int(np.searchsorted(cum, need_bytes, side="left")) + 1 if need_bytes else 0
    m = min(max(need_rows, m_bytes), cand.num_rows)
    chosen = cand.slice(0, m)
    plan.ids = chosen.column("section_id").to_pylist()
    plan.evicted_bytes = int(cum[m - 1])
    last = chosen.slice(m - 1, 1).to_pylist()[0]
    plan.cutoff = (last["last_seen_at"], last["added_at"], last["section_id"])
    if "section_type" in chosen.column_names:
        plan.types = dict(Counter(chosen.column("section_type").to_pylist()))
    if plan.protected_rows:
        prot = index.filter(pa.array(is_prot))
        cut_us = (to_us(plan.cutoff[0]), to_us(plan.cutoff[1]), plan.cutoff[2])
        plan.protected_in_range = sorted(prot.filter(pa.array(_le_cutoff(prot, cut_us)))
                                         .column("section_id").to_pylist())
    return plan


# --------------------------------------------------------------------------- sampling
def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer (a bijection on uint64), vectorized."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)  # a new array; the rest works in place
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
        return z


def id_hash64(ids: pa.Array | pa.ChunkedArray | Sequence[str]) -> np.ndarray:
    """64-bit hash of each id, vectorized over Arrow's string buffer.

    Section ids are 32 chars: their bytes are read as four uint64 words and folded with
    splitmix64 (no per-row Python). Ids of any other length fall back to blake2b (per row).
    """
    if not isinstance(ids, (pa.Array, pa.ChunkedArray)):
        ids = pa.array(list(ids), pa.string())
    if isinstance(ids, pa.ChunkedArray):
        ids = ids.combine_chunks() if ids.num_chunks else pa.array([], ids.type)
    if not pa.types.is_string(ids.type):
        ids = ids.cast(pa.string())
    n = len(ids)
    if n == 0:
        return np.zeros(0, np.uint64)
    if ids.null_count:
        raise ValueError("section ids must not be null")
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int32)[ids.offset: ids.offset + n + 1]
    buf = ids.buffers()[2]
    data = np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, np.uint8)
    ok = np.diff(offsets) == _ID_LEN
    if ok.all():  # contiguous fixed-width ids: a reshape, no gather
        raw = data[offsets[0]: offsets[0] + _ID_LEN * n]
    else:
        raw = np.zeros((n, _ID_LEN), np.uint8)
        raw[ok] = data[offsets[:-1][ok, None] + np.arange(_ID_LEN)]
    words = np.ascontiguousarray(raw).view("<u8").reshape(n, _ID_LEN // 8)
    h = _mix64(words[:, 0].copy())
    for j in range(1, _ID_LEN // 8):
        h = _mix64(h ^ words[:, j])
    for i in np.flatnonzero(~ok):
        h[i] = int.from_bytes(hashlib.blake2b(ids[int(i)].as_py().encode(), digest_size=8).digest(), "big")
    return h


_ID_LEN = 32


def seeded_uniform(ids: pa.Array | pa.ChunkedArray | Sequence[str], seed: int) -> np.ndarray:
    """Deterministic u in (0, 1) per id for this seed (order-independent, vectorized).

    A numpy Generator seeded with ``seed`` draws a 64-bit salt; each id's hash is mixed
    with it, so the draw of a row depends only on (seed, section_id).
    """
    return uniform_from_hash(id_hash64(ids), seed)


def row_hashes(index: pa.Table) -> np.ndarray:
    """:func:`id_hash64` of each row: the stored ``id_hash`` column, or, if any row lacks
    it (written before the column existed), computed from ``section_id`` (same values)."""
    if "id_hash" in index.column_names and index.column("id_hash").null_count == 0:
        col = index.column("id_hash")
        return (col.to_numpy() if index.num_rows else np.zeros(0, np.int64)).view(np.uint64)
    return id_hash64(index.column("section_id"))


def uniform_from_hash(h: np.ndarray, seed: int) -> np.ndarray:
    """u in (0, 1) from precomputed :func:`id_hash64` values (see :func:`seeded_uniform`)."""
    salt = np.random.default_rng(seed).integers(0, 2**64, dtype=np.uint64)
    u = (_mix64(h ^ salt) >> np.uint64(11)).astype(np.float64)
    u += 0.5
    u *= 2.0 ** -53
    return u


def recency_weights(base: np.ndarray, last_seen_us: np.ndarray, reference_us: int) -> np.ndarray:
    """``max(weight / (1 + age_days), 0.01)``; rows seen after the reference time have age 0."""
    age = np.maximum(reference_us - last_seen_us, 0).astype(np.float64)
    age /= _US_PER_DAY
    age += 1.0  # 1 + age_days
    w = np.asarray(base, np.float64) / age
    return np.maximum(w, RECENCY_FLOOR, out=w)


def sample_weights(index: pa.Table, scheme: str, reference_time: datetime) -> np.ndarray:
    if scheme == "uniform":
        return np.ones(index.num_rows, np.float64)
    if scheme == "recency":
        base = index.column("weight").to_numpy() if index.num_rows else np.zeros(0)
        return recency_weights(base, _ts_us(index.column("last_seen_at")), to_us(reference_time))
    raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")


def a_res_top_k(u: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest A-Res keys ``u^(1/w)`` (as ``log(u)/w``), largest first."""
    if k <= 0 or len(u) == 0:
        return np.zeros(0, np.int64)
    pos = weights > 0
    if pos.all():  # (recency weights have a floor; uniform ones are 1)
        keys = np.log(u) / weights
    else:
        keys = np.full(len(u), -np.inf)
        keys[pos] = np.log(u[pos]) / weights[pos]
    if k < len(keys):
        part = np.argpartition(-keys, k - 1)[:k]
    else:
        part = np.arange(len(keys))
    part = part[np.isfinite(keys[part])]
    return part[np.argsort(-keys[part], kind="stable")]


def select_sample(
    index: pa.Table,
    *,
    k: int,
    seed: int,
    scheme: str = "recency",
    reference_time: datetime | str | None = None,
    preference_only: bool = False,
) -> pa.Table:
    """Pick k snapshots from the index columns only (no content).

    Returns the chosen index rows in rank order with ``sample_weight`` and ``rank``. Each
    row's draw depends only on (seed, section_id): :func:`row_hashes`.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {SCHEMES}")
    ref = utc(reference_time)
    if preference_only and index.num_rows:
        index = index.filter(pc.equal(index.column("section_type"), "preference"))
    w = sample_weights(index, scheme, ref)
    u = uniform_from_hash(row_hashes(index), seed)
    picked = a_res_top_k(u, w, k)
    out = index.take(pa.array(picked, pa.int64()))
    out = out.append_column("sample_weight", pa.array(w[picked], pa.float64()))
    return out.append_column("rank", pa.array(np.arange(len(picked), dtype=np.int32)))


def replay_id(section_id: str, last_seen_at: datetime) -> str:
    return f"replay:{section_id}:{iso(last_seen_at)}"


def to_trl_table(
    selection: pa.Table,
    content: pa.Table,
    *,
    scheme: str,
    seed: int,
    reference_time: datetime,
) -> pa.Table:
    """The sample in TRL shape (JSON columns, REPLAY_SAMPLE schema), in rank order.

    ``selection`` comes from :func:`select_sample`; ``content`` holds section_id, content
    and optionally source / added_at for (at least) the selected ids. A selected id with
    no content (evicted between the two reads) is dropped.
    """
    from assets.corpus.tables import REPLAY_SAMPLE

    content = content.combine_chunks()
    pos = pc.index_in(selection.column("section_id"), value_set=content.column("section_id"))
    if pos.null_count:
        keep = pos.is_valid()
        selection, pos = selection.filter(keep), pos.filter(keep)
    n = selection.num_rows
    got = content.take(pos) if n else content.slice(0, 0)

    loads, dumps, opt = orjson.loads, orjson.dumps, orjson.OPT_SORT_KEYS
    parsed = [loads(text) for text in got.column("content").to_pylist()]

    def col(key: str) -> pa.Array:
        return pa.array([dumps(v, option=opt) if (v := r.get(key)) else None for r in parsed],
                        pa.binary()).cast(pa.string())

    # ids: replay:<section_id>:<last_seen_at as 2026-11-01T12:00:00.000000Z> (UTC wall time)
    seen = selection.column("last_seen_at")
    stamp = np.datetime_as_string(_ts_us(seen).astype("datetime64[us]"), unit="us")
    ids = pc.binary_join_element_wise("replay:", selection.column("section_id"), ":",
                                      pa.array(stamp, pa.string()), "Z", "")
    ts_type = REPLAY_SAMPLE.schema.field("reference_time").type
    data = {
        "id": ids,
        "section_id": selection.column("section_id"),
        "section_type": selection.column("section_type"),
        "messages": col("messages"),
        "prompt": col("prompt"),
        "chosen": col("chosen"),
        "rejected": col("rejected"),
        "tools": col("tools"),
        "source": got.column("source") if "source" in got.column_names else pa.nulls(n, pa.string()),
        "added_at": got.column("added_at") if "added_at" in got.column_names else pa.nulls(n, ts_type),
        "last_seen_at": seen,
        "base_weight": selection.column("weight") if "weight" in selection.column_names else pa.nulls(n, pa.float64()),
        "sample_weight": selection.column("sample_weight"),
        "rank": selection.column("rank"),
        "scheme": pa.array([scheme] * n, pa.string()),
        "seed": pa.array([seed] * n, pa.int64()),
        "reference_time": pa.array([utc(reference_time)] * n, ts_type),
    }
    return REPLAY_SAMPLE.conform(pa.table(data))


def to_trl_rows(selection: pa.Table, content: pa.Table, **kw: Any) -> list[dict]:
    """:func:`to_trl_table` as a list of dicts."""
    return to_trl_table(selection, content, **kw).to_pylist()


def composition(section_types: Iterable[str]) -> dict[str, int]:
    """Row count per section type (known types first)."""
    c = Counter(section_types)
    order = [t for t in SECTION_TYPES if t in c] + sorted(t for t in c if t not in SECTION_TYPES)
    return {t: c[t] for t in order}


__all__ = [
    "REPLAY_CORPUS", "RECENCY_FLOOR", "SCHEMES", "Snapshots", "EvictionPlan", "a_res_top_k",
    "apply_sightings", "canonical_json", "classify_messages", "composition", "id_hash64", "iso",
    "make_snapshot", "plan_eviction", "recency_weights", "replay_id", "row_hashes", "sample_weights",
    "section_id_for", "seeded_uniform", "select_sample", "snapshots_from_kto",
    "snapshots_from_pairs", "snapshots_from_sft", "to_trl_rows", "to_trl_table", "uniform_from_hash", "utc",
]
