"""Teacher asking, the Dagster-free core: every step asked of every teacher.

``await ask_teachers(steps, teachers, cache, budget)`` takes plain AGENT_STEPS rows (dicts with
``session_key``, ``step_id``, ``messages`` and ``tools`` JSON), runtime teachers
(``assets.teachers.pool.TeacherSet``: clients of the one model client), a response cache and
a budget, and returns the TEACHER_RESPONSES rows plus per-teacher totals.

* Requests are content-addressed (``request_hash``); answers held by the cache are reused
  without a call, identical requests in one run are sent once.
* Each HTTP teacher runs ``max_concurrency`` workers; the local teachers of one model share
  one batching worker (their requests in the same batches, a context they all ask prefilled
  once: ``resources.model_client.complete_local_group``); all on one event loop, so every
  step of every partition of a run shares the concurrency.
* Budget: a priced call first reserves its worst-case cost (input-token upper bound +
  max_tokens); the reservation is settled to the real cost when the answer arrives. A call
  that cannot fit waits for in-flight reservations to settle; when nothing is in flight and
  it still does not fit, the budget is exhausted and every remaining priced request is
  ``skipped_budget``. Spend stays within the budget as long as the provider counts no more
  input tokens than the request's bytes (true for byte-level BPE tokenizers).
* Flags are computed as each answer arrives (``checks.answer_flags``) and every successful
  answer is handed to the cache writer at once.
* Spend control (the pool's ``circuit_breaker`` and ``prefilter``):
  - circuit breaker: per priced teacher (every teacher with ``priced_only: false``), the last
    ``window`` answers of this run's calls are kept;
    when the share flagged (empty, refusal, hedge, truncated, invalid_tool_json by default)
    is above ``max_flagged_share``, the teacher is paused for the rest of the run: its
    remaining requests are not sent and their rows say ``skipped_breaker`` (requests already
    in flight at that moment still finish: at most ``max_concurrency - 1`` more calls);
  - pre-filter: a request is not sent when it cannot produce a usable answer: its context is
    over the teacher's declared ``context_window`` (``over_window``), or the context has
    nothing to answer (it ends with an assistant message, or holds no user/tool text):
    rows say ``skipped_prefilter`` with the rule. Answers the cache already holds are used
    either way (they cost nothing).
  The totals count what was skipped and an estimate of what it saved (calls, tokens, USD at
  the teacher's prices with ``max_tokens`` out).
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import dagster as dg
import orjson

from assets.metadata import percentiles
from assets.teachers.cache import MemoryResponseCache, ResponseCache
from assets.teachers.flags import answer_flags
from assets.teachers.pool import CircuitBreakerSettings, PrefilterSettings
from resources import privacy
from resources.model_client import (
    CallOutcome,
    LocalModelClient,
    ModelClient,
    ModelRequest,
    canonical_json,
    complete_local_group,
    content_text,
)

OK, ERROR, SKIPPED = "ok", "error", "skipped_budget"
SKIPPED_BREAKER, SKIPPED_PREFILTER = "skipped_breaker", "skipped_prefilter"


class Budget:
    """A per-run USD budget with reservations, served first come first served.

    ``reserve`` grants a worst-case amount when it fits beside what is spent and reserved,
    else queues; ``settle`` swaps a reservation for the real cost and serves the queue in
    order. When the head of the queue does not fit and nothing is in flight, the budget is
    exhausted: every waiting and later reservation is refused. One event loop only.
    """

    def __init__(self, limit_usd: float | None = None) -> None:
        self.limit = limit_usd
        self.spent = 0.0
        self.reserved = 0.0
        self.exhausted = False
        self._waiters: collections.deque = collections.deque()

    def _fits(self, amount: float) -> bool:
        return self.limit is None or self.spent + self.reserved + amount <= self.limit + 1e-12

    def _serve(self) -> None:
        while self._waiters:
            amount, fut = self._waiters[0]
            if fut.done():  # its task was cancelled
                self._waiters.popleft()
            elif self.exhausted:
                self._waiters.popleft()
                fut.set_result(False)
            elif self._fits(amount):
                self._waiters.popleft()
                self.reserved += amount
                fut.set_result(True)
            elif self.reserved <= 1e-15:  # nothing in flight can free room
                self.exhausted = True
            else:
                return

    async def reserve(self, amount: float) -> bool:
        if amount <= 0:
            return True
        if self.exhausted:
            return False
        if not self._waiters and self._fits(amount):
            self.reserved += amount
            return True
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((amount, fut))
        self._serve()
        return await fut

    async def settle(self, reserved: float, actual: float) -> None:
        self.reserved = max(0.0, self.reserved - max(reserved, 0.0))
        self.spent += actual
        self._serve()


@dataclass
class TeacherTotals:
    teacher: str
    provider: str
    model: str
    rows: int = 0
    cached: int = 0  # answered from the cache (no call)
    shared: int = 0  # identical request already sent in this run
    calls: int = 0  # requests sent in this run (each may take several attempts)
    attempts: int = 0
    ok: int = 0
    errors: int = 0
    skipped_budget: int = 0
    skipped_breaker: int = 0  # rows not asked: the teacher was paused by the circuit breaker
    skipped_prefilter: int = 0  # rows not asked: the step could not yield a usable answer
    saved_calls: int = 0  # calls not made thanks to the breaker and the pre-filter
    saved_tokens_estimate: int = 0  # their typical input + max_tokens
    saved_usd_estimate: float = 0.0  # at the teacher's prices
    breaker_tripped: bool = False
    breaker_after_calls: int | None = None  # calls made when the breaker tripped
    breaker_reason: str | None = None
    input_tokens: int = 0  # of this run's calls
    output_tokens: int = 0
    cost_usd: float = 0.0  # spent in this run
    latencies_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "latencies_ms"}
        d["p50_latency_ms"], d["p95_latency_ms"] = percentiles(self.latencies_ms, (50, 95))
        return d


@dataclass
class AskResult:
    rows: list[dict[str, Any]]
    totals: dict[str, TeacherTotals]
    errors_by_kind: collections.Counter
    flags_by_kind: collections.Counter
    spent_usd: float
    budget_usd: float | None
    wall_seconds: float
    cache_stats: dict[str, Any]
    prefilter_by_rule: collections.Counter = field(default_factory=collections.Counter)
    steps: int = 0  # agent steps asked about
    teachers: int = 0  # teachers asked

    @property
    def calls(self) -> int:
        return sum(t.calls for t in self.totals.values())

    @property
    def cached(self) -> int:
        return sum(t.cached for t in self.totals.values())

    def markdown(self) -> str:
        head = ("| teacher | provider | model | rows | calls | cached | ok | errors | skipped_budget "
                "| skipped_breaker | skipped_prefilter "
                "| tokens in | tokens out | cost USD (run) | p50 latency ms | p95 latency ms |")
        lines = [head, "|" + "---|" * 16]
        for t in self.totals.values():
            d = t.as_dict()
            p50, p95 = (f"{d[k]:.0f}" if d[k] is not None else "–" for k in ("p50_latency_ms", "p95_latency_ms"))
            lines.append(
                f"| {t.teacher} | {t.provider} | {t.model} | {t.rows} | {t.calls} | {t.cached} "
                f"| {t.ok} | {t.errors} | {t.skipped_budget} | {t.skipped_breaker} | {t.skipped_prefilter} "
                f"| {t.input_tokens} | {t.output_tokens} "
                f"| {t.cost_usd:.6f} | {p50} | {p95} |"
            )
        return "\n".join(lines)

    def spend_control(self) -> dict[str, Any]:
        """What the circuit breaker and the pre-filter did, and what they saved."""
        tot = self.totals.values()
        return {
            "paused_teachers": {t.teacher: {"after_calls": t.breaker_after_calls, "reason": t.breaker_reason}
                                for t in tot if t.breaker_tripped},
            "skipped_breaker": sum(t.skipped_breaker for t in tot),
            "skipped_prefilter": dict(self.prefilter_by_rule),
            "saved_calls": sum(t.saved_calls for t in tot),
            "saved_tokens_estimate": sum(t.saved_tokens_estimate for t in tot),
            "saved_usd_estimate": round(sum(t.saved_usd_estimate for t in tot), 6),
        }

    def latency_ms(self) -> dict[str, float | None]:
        """p50 / p95 / max latency of this run's calls over all teachers (None: no call)."""
        lat = [x for t in self.totals.values() for x in t.latencies_ms]
        p50, p95 = percentiles(lat, (50, 95))
        return {"p50": p50, "p95": p95, "max": max(lat) if lat else None}

    def metadata(self) -> dict[str, Any]:
        """What the asset reports beside its write's metadata."""
        tot = self.totals.values()
        return {
            "steps": dg.MetadataValue.int(self.steps),
            "teachers": dg.MetadataValue.int(self.teachers),
            "calls": dg.MetadataValue.int(self.calls),
            "cache_hits": dg.MetadataValue.int(self.cached),
            "cost_usd_run": dg.MetadataValue.float(round(self.spent_usd, 6)),
            "budget_usd": dg.MetadataValue.float(self.budget_usd) if self.budget_usd is not None else "unlimited",
            "skipped_budget": dg.MetadataValue.int(sum(t.skipped_budget for t in tot)),
            "skipped_breaker": dg.MetadataValue.int(sum(t.skipped_breaker for t in tot)),
            "skipped_prefilter": dg.MetadataValue.int(sum(t.skipped_prefilter for t in tot)),
            "spend_control": dg.MetadataValue.json(self.spend_control()),
            "errors_by_kind": dg.MetadataValue.json(dict(self.errors_by_kind)),
            "flags_by_kind": dg.MetadataValue.json(dict(self.flags_by_kind)),
            "per_teacher": dg.MetadataValue.md(self.markdown()),
            "cache_writes": dg.MetadataValue.json(self.cache_stats),
            "ask_seconds": dg.MetadataValue.float(round(self.wall_seconds, 3)),
            "latency_ms": dg.MetadataValue.json(self.latency_ms()),
        }


def _now() -> datetime:
    return datetime.now(timezone.utc)


def nothing_to_answer(messages: Sequence[dict[str, Any]]) -> str | None:
    """Why a context holds nothing for a model to answer (None: it does).

    It is empty; it ends with an assistant message (the model has already spoken, the step
    continues its own turn); or it has no user or tool message with any text."""
    if not messages:
        return "empty context"
    if messages[-1].get("role") == "assistant":
        return "context ends with an assistant message"
    asked = [m for m in messages if m.get("role") in ("user", "tool")]
    if not any(content_text(m.get("content")).strip() for m in asked):
        return "no user or tool message with text"
    return None


class CircuitBreaker:
    """The last ``window`` answers of one teacher; trips when too many are flagged."""

    def __init__(self, cfg: CircuitBreakerSettings) -> None:
        self.cfg = cfg
        self.enabled = cfg.enabled
        self.recent: collections.deque = collections.deque(maxlen=cfg.window)
        self.flags = frozenset(cfg.flags)
        self.n_flagged = 0  # flagged answers in ``recent``
        self.tripped = False
        self.reason: str | None = None

    def record(self, flags: Iterable[str]) -> bool:
        """Record one answer; True when this answer trips the breaker."""
        if self.tripped or not self.enabled:
            return False
        hit = tuple(sorted(self.flags.intersection(flags))) if flags else ()
        if len(self.recent) == self.recent.maxlen and self.recent[0]:
            self.n_flagged -= 1  # the oldest answer leaves the window
        self.recent.append(hit)
        self.n_flagged += bool(hit)
        n = len(self.recent)
        if n >= self.cfg.window and self.n_flagged / n > self.cfg.max_flagged_share:
            bad = [f for f in self.recent if f]
            kinds = collections.Counter(k for f in bad for k in f)
            self.tripped = True
            self.reason = (f"{len(bad)} of the last {n} answers flagged ("
                           + ", ".join(f"{k}: {v}" for k, v in kinds.most_common()) + ")")
            return True
        return False


def _cache_record(teacher: ModelClient, req: ModelRequest, out: CallOutcome, run_id: str | None,
                  created_at: datetime) -> dict[str, Any]:
    return {
        "request_hash": req.request_hash,
        "provider": teacher.spec.provider,
        "base_url": teacher.spec.base_url.rstrip("/") or None,
        "model": teacher.spec.model,
        "teacher": teacher.name,
        "status": OK,
        "message": orjson.dumps(out.message).decode() if out.message is not None else None,
        "text": out.text,
        "finish_reason": out.finish_reason,
        "flags": out.flags,
        "input_tokens": out.input_tokens,
        "output_tokens": out.output_tokens,
        "cost_usd": out.cost_usd,
        "latency_ms": out.latency_ms,
        "attempts": out.attempts,
        "run_id": run_id,
        "created_at": created_at,
    }


async def ask_teachers(
    steps: Sequence[dict[str, Any]],
    teachers: Iterable[ModelClient],
    cache: ResponseCache | None = None,
    budget: Budget | float | None = None,
    *,
    reserve_bytes_per_token: float = 1.0,
    run_id: str | None = None,
    log: Any = None,
    circuit_breaker: CircuitBreakerSettings | None = None,
    prefilter: PrefilterSettings | None = None,
) -> AskResult:
    """Ask every teacher at every step; return TEACHER_RESPONSES rows and totals.

    ``circuit_breaker`` / ``prefilter``: spend control (the pool's; None: the defaults)."""
    t_start = time.perf_counter()
    teachers = list(teachers)
    cache = cache if cache is not None else MemoryResponseCache()
    budget = budget if isinstance(budget, Budget) else Budget(budget)
    totals = {t.name: TeacherTotals(t.name, t.spec.provider, t.spec.model) for t in teachers}
    errors_by_kind: collections.Counter = collections.Counter()
    flags_by_kind: collections.Counter = collections.Counter()

    # 1. build every request (a step whose JSON is unusable still gets rows: errors)
    entries: list[tuple[dict[str, Any], ModelClient, ModelRequest | None, str | None]] = []
    for step in steps:
        for t in teachers:
            try:
                req = t.build_request(step.get("messages"), step.get("tools"), reserve_bytes_per_token)
                entries.append((step, t, req, None))
            except Exception as exc:
                entries.append((step, t, None, f"bad_request: {type(exc).__name__}: {exc}"[:300]))

    # 2. what the cache already holds is never asked again
    all_hashes = {req.request_hash for _, _, req, _ in entries if req is not None}
    held = await cache.lookup(all_hashes) if all_hashes else {}

    # 3. one queue per teacher of the distinct requests still to answer (in step order);
    #    the pre-filter keeps out those that cannot yield a usable answer
    prefilter = prefilter or PrefilterSettings()
    cb = circuit_breaker or CircuitBreakerSettings()
    breakers = {t.name: CircuitBreaker(cb if (t.spec.priced or not cb.priced_only)
                                       else cb.model_copy(update={"enabled": False}))
                for t in teachers}
    prefilter_by_rule: collections.Counter = collections.Counter()
    queues: dict[str, collections.deque] = {t.name: collections.deque() for t in teachers}
    owner: dict[str, str] = {}
    results: dict[str, CallOutcome | str] = {}
    skip_reason: dict[str, str] = {}

    def saved(t: ModelClient, req: ModelRequest) -> None:
        tot = totals[t.name]
        tot.saved_calls += 1
        tot.saved_tokens_estimate += req.estimate_tokens
        tot.saved_usd_estimate += t.spec.cost(req.estimate_input_tokens, int(req.body["max_tokens"]))

    for _, t, req, _ in entries:
        if req is None or req.request_hash in held or req.request_hash in owner:
            continue
        owner[req.request_hash] = t.name
        why = None
        if prefilter.nothing_to_answer:
            nothing = nothing_to_answer(req.body["messages"])
            if nothing:
                why = f"prefilter nothing_to_answer: {nothing}"
                prefilter_by_rule["nothing_to_answer"] += 1
        if why is None and prefilter.over_window and not t.fits_window(req):
            why = (f"prefilter over_window: ~{req.estimate_tokens} tokens (input + max_tokens) "
                   f"> context_window {t.spec.context_window}")
            prefilter_by_rule["over_window"] += 1
        if why is not None:
            results[req.request_hash] = SKIPPED_PREFILTER
            skip_reason[req.request_hash] = why
            saved(t, req)
            continue
        queues[t.name].append(req)

    done = 0
    n_todo = len(owner)
    report_every = max(50, n_todo // 10)

    def finish(t: ModelClient, req: ModelRequest, out: CallOutcome) -> None:
        nonlocal done
        tot = totals[t.name]
        tot.calls += 1
        tot.attempts += out.attempts
        if out.status == OK:
            # an answer is written to the cache, a spool and tables: scrubbed before any of them
            if out.message is not None:
                out.message, _ = privacy.scrub_json(out.message)
            if out.text:
                out.text, _ = privacy.scrub_text(out.text)
            calls = (out.message or {}).get("tool_calls")
            out.flags = answer_flags(out.text, out.finish_reason, calls, req.tools, out.flags)
            br = breakers[t.name]
            if br.record(out.flags):
                tot.breaker_tripped, tot.breaker_after_calls, tot.breaker_reason = True, tot.calls, br.reason
                if log is not None:
                    log.warning(f"teacher {t.name} paused for the rest of the run after {tot.calls} "
                                f"calls: {br.reason}")
            tot.ok += 1
            tot.input_tokens += out.input_tokens or 0
            tot.output_tokens += out.output_tokens or 0
            tot.cost_usd += out.cost_usd
            if out.latency_ms is not None:
                tot.latencies_ms.append(out.latency_ms)
            cache.put(_cache_record(t, req, out, run_id, _now()))
        else:
            tot.errors += 1
        results[req.request_hash] = out
        done += 1
        if log is not None and (done % report_every == 0 or done == n_todo):
            log.info(f"teacher asking: {done}/{n_todo} requests answered, "
                     f"spent ${budget.spent:.4f}")

    def paused(t: ModelClient, req: ModelRequest) -> bool:
        br = breakers[t.name]
        if not br.tripped:
            return False
        results[req.request_hash] = SKIPPED_BREAKER
        skip_reason[req.request_hash] = f"teacher paused by the circuit breaker: {br.reason}"
        saved(t, req)
        return True

    async def call_one(t: ModelClient, req: ModelRequest) -> None:
        if paused(t, req):
            return
        worst = t.worst_case_cost(req) if t.spec.priced else 0.0
        if not await budget.reserve(worst):
            results[req.request_hash] = SKIPPED
            return
        out: CallOutcome | None = None
        try:
            out = await t.complete(req)
        except Exception as exc:  # the clients should not raise; never let one escape
            out = CallOutcome(status=ERROR, attempts=1, error_kind="internal",
                              error=f"{type(exc).__name__}"[:300])
        finally:
            await budget.settle(worst, out.cost_usd if out is not None and out.status == OK else 0.0)
        finish(t, req, out)

    async def http_worker(t: ModelClient, q: collections.deque) -> None:
        while q:
            await call_one(t, q.popleft())

    async def local_worker(group: list[LocalModelClient]) -> None:
        """The local teachers of one model: their requests in shared batches of
        ``sum(batch_size)`` rows, ordered by prompt size, then prompt, then teacher, so a
        context several teachers ask lands in one batch (and is prefilled once) and a batch
        holds prompts of similar length (less padding)."""
        rank = {t.name: i for i, t in enumerate(group)}
        items = [(t, r) for t in group for r in queues[t.name]]
        prompt = {id(r): canonical_json(r.body["messages"]) for _, r in items}
        items.sort(key=lambda x: (x[1].estimate_input_tokens, prompt[id(x[1])], rank[x[0].name]))
        size = sum(t.spec.batch_size for t in group)
        for i in range(0, len(items), size):
            go = []
            for t, req in items[i:i + size]:
                if paused(t, req):
                    continue
                worst = t.worst_case_cost(req) if t.spec.priced else 0.0
                if await budget.reserve(worst):
                    go.append((t, req, worst))
                else:
                    results[req.request_hash] = SKIPPED
            if not go:
                continue
            outs = await complete_local_group([(t, r) for t, r, _ in go])
            for (t, req, worst), out in zip(go, outs):
                await budget.settle(worst, out.cost_usd if out.status == OK else 0.0)
                finish(t, req, out)

    await cache.start()
    try:
        workers = []
        local_groups: dict[tuple, list[LocalModelClient]] = {}
        for t in teachers:
            q = queues[t.name]
            if not q:
                continue
            if isinstance(t, LocalModelClient):
                local_groups.setdefault(t.group_key, []).append(t)
            else:
                workers.extend(http_worker(t, q) for _ in range(min(t.spec.max_concurrency, len(q))))
        workers.extend(local_worker(g) for g in local_groups.values())
        await asyncio.gather(*workers)
    finally:
        await cache.close()  # commits every answer still queued (also on cancellation)

    # 4. one row per (step, teacher)
    now = _now()
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for step, t, req, bad in entries:
        tot = totals[t.name]
        tot.rows += 1
        row: dict[str, Any] = {
            "session_key": step["session_key"], "step_id": step["step_id"], "teacher": t.name,
            "provider": t.spec.provider, "model": t.spec.model,
            "request_hash": req.request_hash if req else "", "cached": False, "created_at": now,
        }
        if req is None:
            tot.errors += 1
            errors_by_kind["bad_request"] += 1
            row.update(status=ERROR, error=bad, flags=[])
            rows.append(row)
            continue
        h = req.request_hash
        if h in held:
            c = held[h]
            tot.cached += 1
            flags = list(c.get("flags") or [])
            row.update(status=OK, cached=True, message=c["message"], text=c["text"],
                       finish_reason=c["finish_reason"], flags=flags,
                       input_tokens=c["input_tokens"], output_tokens=c["output_tokens"],
                       cost_usd=c["cost_usd"], latency_ms=c["latency_ms"], attempts=0,
                       created_at=c["created_at"] or now)
            flags_by_kind.update(flags)
        else:
            out = results.get(h)
            first = h not in seen and owner.get(h) == t.name
            if not first and out is not None:
                tot.shared += 1
            if out in (SKIPPED_BREAKER, SKIPPED_PREFILTER):
                if out == SKIPPED_BREAKER:
                    tot.skipped_breaker += 1
                else:
                    tot.skipped_prefilter += 1
                row.update(status=out, flags=[], error=skip_reason.get(h), attempts=0)
            elif out == SKIPPED or out is None:
                tot.skipped_budget += 1
                row.update(status=SKIPPED, flags=[], error="budget exhausted" if out else "not run")
            elif out.status == OK:
                row.update(status=OK, message=orjson.dumps(out.message).decode(), text=out.text,
                           finish_reason=out.finish_reason, flags=list(out.flags),
                           input_tokens=out.input_tokens, output_tokens=out.output_tokens,
                           cost_usd=out.cost_usd, latency_ms=out.latency_ms,
                           attempts=out.attempts if first else 0)
                flags_by_kind.update(out.flags)
            else:
                errors_by_kind[out.error_kind or "unknown"] += 1
                row.update(status=ERROR, flags=[], error=f"{out.error_kind}: {out.error}",
                           latency_ms=out.latency_ms, attempts=out.attempts if first else 0)
        seen.add(h)
        rows.append(row)

    stats = {k: getattr(cache, k) for k in ("commits", "rows_written", "write_errors", "unflushed")
             if hasattr(cache, k)}
    return AskResult(
        rows=rows, totals=totals, errors_by_kind=errors_by_kind, flags_by_kind=flags_by_kind,
        spent_usd=budget.spent, budget_usd=budget.limit,
        wall_seconds=time.perf_counter() - t_start, cache_stats=stats,
        prefilter_by_rule=prefilter_by_rule, steps=len(steps), teachers=len(teachers),
    )
