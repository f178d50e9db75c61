"""Teacher endpoints: the pool configuration and the clients that talk to them.

A *teacher pool* is a YAML file (``recipes/teachers.yaml`` is the embedded, fully offline
default; ``recipes/teachers.example-openrouter.yaml`` shows remote teachers). The
:class:`TeacherPool` resource finds it (``config_file`` > ``$TRACELAKE_TEACHERS_FILE`` >
the embedded default) and opens a :class:`TeacherSet` of runtime clients:

* :class:`HttpTeacher` — any OpenAI-compatible ``/v1/chat/completions`` server (OpenRouter,
  vLLM, Ollama, llama.cpp, LiteLLM...), on one pooled ``httpx.AsyncClient`` per teacher with
  bounded concurrency, an RPM and a TPM token bucket, and retries with exponential backoff
  and jitter on 429 / 5xx / timeouts / connection errors (honouring ``Retry-After``).
* :class:`LocalTeacher` — an in-process transformers model (``resources.models``), batched
  generation with left padding on a worker thread so HTTP teachers keep going.

Secrets: a teacher names the environment variable that holds its key (``api_key_env``);
the value is read at request time, put in the ``Authorization`` header only, and scrubbed
from any error text. It never enters the request hash, a table, a log line or metadata.

Nothing here raises on a bad answer: every call ends as a :class:`CallOutcome` that is
either ``ok`` or an ``error`` with a kind (``http_429``, ``timeout``, ``connection``,
``malformed_json``, ``empty_choices``...).
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import hashlib
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import dagster as dg
import httpx
import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

HASH_VERSION = "tl-teacher-v1"
DEFAULT_TEACHERS_FILE = Path(__file__).resolve().parents[1] / "recipes" / "teachers.yaml"
TEACHERS_FILE_ENV = "TRACELAKE_TEACHERS_FILE"

_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


# --------------------------------------------------------------------------- config
class TeacherSpec(BaseModel):
    """One teacher of the pool (one YAML list item)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    provider: Literal["openai_compatible", "local"] = "openai_compatible"
    base_url: str = ""  # e.g. https://openrouter.ai/api/v1 (".../chat/completions" is appended)
    model: str  # remote model id, or for local: "smollm2-135m" / an HF dir / a .gguf file
    api_key_env: Optional[str] = None  # NAME of the env var holding the key (never the key)
    extra_headers: dict[str, str] = Field(default_factory=dict)  # non-secret (e.g. HTTP-Referer)
    max_concurrency: int = Field(default=4, ge=1)
    requests_per_minute: Optional[float] = Field(default=None, gt=0)
    tokens_per_minute: Optional[float] = Field(default=None, gt=0)
    price_input_per_mtok: float = Field(default=0.0, ge=0)  # USD per million input tokens
    price_output_per_mtok: float = Field(default=0.0, ge=0)
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = Field(default=512, ge=1)
    seed: Optional[int] = None
    extra_body: dict[str, Any] = Field(default_factory=dict)  # extra sampling params sent as-is
    system_prompt: Optional[str] = None
    system_prompt_mode: Literal["prepend", "replace"] = "prepend"
    timeout: float = Field(default=60.0, gt=0)  # seconds per attempt (whole request)
    max_attempts: int = Field(default=5, ge=1)
    backoff_base: float = Field(default=0.5, ge=0)  # seconds; doubled each retry, full jitter
    backoff_max: float = Field(default=30.0, ge=0)
    max_retry_after: float = Field(default=120.0, ge=0)  # cap on a server's Retry-After
    # local provider only
    batch_size: int = Field(default=4, ge=1)
    max_context_tokens: int = Field(default=2048, ge=32)
    device: str = "cpu"
    dtype: str = "float32"
    # torch intra-op threads while this teacher generates (process-wide, restored after);
    # 1 is ~5x faster than 2 on a CPU shared with other busy processes. None: leave as is.
    torch_threads: Optional[int] = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "TeacherSpec":
        if self.provider == "openai_compatible" and not self.base_url:
            raise ValueError(f"teacher {self.name!r}: openai_compatible needs a base_url")
        if self.api_key_env is not None and not self.api_key_env.replace("_", "").isalnum():
            raise ValueError(
                f"teacher {self.name!r}: api_key_env must be the NAME of an environment variable"
            )
        return self

    @property
    def priced(self) -> bool:
        return self.price_input_per_mtok > 0 or self.price_output_per_mtok > 0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.price_input_per_mtok
                + output_tokens * self.price_output_per_mtok) / 1e6


class CacheSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    flush_seconds: float = Field(default=0.5, gt=0)  # max age of an unpersisted answer
    flush_rows: int = Field(default=256, ge=1)  # or flush as soon as this many are waiting
    compact_min_files: int = Field(default=64, ge=2)  # compact the cache table past this
    # every answer is also appended to a local write-ahead spool at once (survives kill -9);
    # fsync each line too (survives a power loss, costs a disk sync per answer)
    spool_fsync: bool = False


class PoolSpec(BaseModel):
    """A teacher pool file."""

    model_config = ConfigDict(extra="forbid")

    teachers: list[TeacherSpec]
    budget_usd: Optional[float] = Field(default=None, ge=0)  # per run; None = unlimited
    # ask only the first N steps of each session (a demo pool's cap); None = all
    max_steps_per_session: Optional[int] = Field(default=None, ge=1)
    # worst-case input tokens are reserved as (request bytes / this); 1.0 is a true upper
    # bound for byte-level BPE tokenizers, larger values reserve less (and may overshoot).
    reserve_bytes_per_token: float = Field(default=1.0, gt=0)
    cache: CacheSettings = Field(default_factory=CacheSettings)

    @model_validator(mode="after")
    def _unique(self) -> "PoolSpec":
        names = [t.name for t in self.teachers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"duplicate teacher names: {sorted(dup)}")
        return self


def load_pool_spec(path: str | os.PathLike | None = None, text: str | None = None) -> PoolSpec:
    if text is None:
        text = Path(path or DEFAULT_TEACHERS_FILE).read_text(encoding="utf-8")
    data = yaml.safe_load(text) or {}
    return PoolSpec.model_validate(data)


# --------------------------------------------------------------------------- requests
def canonical_json(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def _load_json(value: Any, default: Any) -> Any:
    if value is None or value == "":
        return default
    if isinstance(value, (str, bytes)):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return default
    return value


def normalize_tool_calls(calls: Any) -> list[dict[str, Any]]:
    out = []
    for i, c in enumerate(calls or []):
        if not isinstance(c, dict):
            continue
        fn = c.get("function") or {}
        args = fn.get("arguments", c.get("arguments", ""))
        if not isinstance(args, str):
            args = orjson.dumps(args).decode()
        out.append({
            "id": str(c.get("id") or f"call_{i}"),
            "type": "function",
            "function": {"name": str(fn.get("name") or c.get("name") or ""), "arguments": args},
        })
    return out


def normalize_messages(messages: Any) -> list[dict[str, Any]]:
    """OpenAI chat messages restricted to the fields every compatible server accepts."""
    out = []
    for m in messages or []:
        if not isinstance(m, dict) or "role" not in m:
            continue
        n = {k: m[k] for k in _MESSAGE_KEYS if k in m and m[k] is not None}
        if "tool_calls" in n:
            n["tool_calls"] = normalize_tool_calls(n["tool_calls"])
            if not n["tool_calls"]:
                del n["tool_calls"]
        if "content" not in n:
            n["content"] = None if n.get("tool_calls") else ""
        out.append(n)
    return out


def content_text(content: Any) -> str:
    """Text of an OpenAI ``content`` (a string or a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for p in content:
            if isinstance(p, str):
                parts.append(p)
            elif isinstance(p, dict) and isinstance(p.get("text"), str):
                parts.append(p["text"])
        return "".join(parts)
    return str(content)


@dataclass(frozen=True)
class TeacherRequest:
    """A request as it will be sent, and its content address."""

    teacher: str
    body: dict[str, Any]  # the exact JSON body (never holds a key)
    request_hash: str
    tools: tuple[str, ...]  # names of the tools offered (for the unknown_tool check)
    reserve_input_tokens: int  # upper bound used for the budget reservation
    estimate_tokens: int  # typical input + max_tokens, for the TPM limiter


@dataclass
class CallOutcome:
    """How one request ended (after all retries)."""

    status: str  # ok | error
    message: dict[str, Any] | None = None
    text: str | None = None
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float = 0.0
    latency_ms: float | None = None
    attempts: int = 0
    error_kind: str | None = None
    error: str | None = None
    flags: list[str] = field(default_factory=list)  # flags known to the client (usage_estimated...)


# --------------------------------------------------------------------------- rate limits
class TokenBucket:
    """An async token bucket: ``rate_per_minute`` tokens a minute, bursts up to ``capacity``.

    A request larger than the bucket waits for a full bucket and drives it into debt, so the
    long-run rate is exact. Waiters are served in order.
    """

    def __init__(self, rate_per_minute: float, capacity: float) -> None:
        self.rate = rate_per_minute / 60.0
        self.capacity = max(1.0, capacity)
        self.tokens = self.capacity
        self.t = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
        self.t = now

    async def acquire(self, n: float = 1.0) -> None:
        async with self._lock:
            need = min(n, self.capacity)
            while True:
                self._refill()
                if self.tokens >= need:
                    self.tokens -= n
                    return
                await asyncio.sleep((need - self.tokens) / self.rate)

    def refund(self, n: float) -> None:
        if n > 0:
            self._refill()
            self.tokens = min(self.capacity, self.tokens + n)


# --------------------------------------------------------------------------- teachers
class Teacher:
    """Common request building / hashing of both providers."""

    spec: TeacherSpec
    kind = "base"

    def __init__(self, spec: TeacherSpec) -> None:
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def _messages(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        sp = self.spec.system_prompt
        if not sp:
            return messages
        if self.spec.system_prompt_mode == "replace":
            return [{"role": "system", "content": sp}] + [m for m in messages if m["role"] != "system"]
        if messages and messages[0]["role"] == "system":
            first = dict(messages[0])
            first["content"] = sp + "\n\n" + content_text(first.get("content"))
            return [first] + messages[1:]
        return [{"role": "system", "content": sp}] + messages

    def _sampling(self) -> dict[str, Any]:
        s = self.spec
        out: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
        if s.seed is not None:
            out["seed"] = s.seed
        out.update(s.extra_body)
        return out

    def _body(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.spec.model, "messages": messages}
        body.update(self._sampling())
        if tools:
            body["tools"] = tools
            body["tool_choice"] = "auto"
        return body

    def _address(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"v": HASH_VERSION, "provider": self.spec.provider,
                "base_url": self.spec.base_url.rstrip("/"), "body": body}

    def build_request(self, messages: Any, tools: Any = None,
                      reserve_bytes_per_token: float = 1.0) -> TeacherRequest:
        msgs = self._messages(normalize_messages(_load_json(messages, [])))
        tool_list = [t for t in (_load_json(tools, []) or []) if isinstance(t, dict)]
        body = self._body(msgs, tool_list)
        h = hashlib.sha256(canonical_json(self._address(body))).hexdigest()
        size = len(canonical_json(msgs)) + (len(canonical_json(tool_list)) if tool_list else 0)
        names = tuple(
            str((t.get("function") or {}).get("name") or t.get("name") or "") for t in tool_list
        )
        return TeacherRequest(
            teacher=self.name, body=body, request_hash=h, tools=names,
            reserve_input_tokens=int(size / reserve_bytes_per_token) + 64,
            estimate_tokens=size // 4 + self.spec.max_tokens,
        )

    def worst_case_cost(self, req: TeacherRequest) -> float:
        return self.spec.cost(req.reserve_input_tokens, self.spec.max_tokens)

    async def start(self) -> None:  # pragma: no cover - trivial
        pass

    async def aclose(self) -> None:  # pragma: no cover - trivial
        pass


class _Retry(Exception):
    def __init__(self, kind: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        dt = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, dt.timestamp() - time.time())


@functools.lru_cache(maxsize=1)
def _ssl_context():
    return httpx.create_ssl_context()


class HttpTeacher(Teacher):
    """An OpenAI-compatible chat-completions endpoint."""

    kind = "openai_compatible"
    RETRY_STATUS = frozenset({408, 409, 425, 429})

    def __init__(self, spec: TeacherSpec) -> None:
        super().__init__(spec)
        self.url = spec.base_url.rstrip("/") + "/chat/completions"
        # One pooled keep-alive AsyncClient per concurrency slot: checking a client out of
        # the queue is the concurrency bound. (A single pool of N connections costs
        # O(requests x connections) per pool event in httpcore: ~4 ms a call at 32 in flight.)
        self._clients: list[httpx.AsyncClient] = []
        self._slots: asyncio.Queue | None = None
        self._rpm = (TokenBucket(spec.requests_per_minute, spec.requests_per_minute / 30)
                     if spec.requests_per_minute else None)
        self._tpm = (TokenBucket(spec.tokens_per_minute, spec.tokens_per_minute / 6)
                     if spec.tokens_per_minute else None)
        self._cooldown_until = 0.0  # a 429's Retry-After pauses the whole teacher
        self.http_requests = 0  # attempts actually sent

    async def start(self) -> None:
        if self._slots is not None:
            return
        # one CA bundle load per process, not per client (plain http needs none)
        verify: Any = _ssl_context() if self.url.startswith("https://") else False
        self._slots = asyncio.Queue()
        for _ in range(self.spec.max_concurrency):
            client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.spec.timeout, connect=min(10.0, self.spec.timeout)),
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1,
                                    keepalive_expiry=30.0),
                headers={"Content-Type": "application/json"},
                verify=verify,
            )
            self._clients.append(client)
            self._slots.put_nowait(client)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        self._clients = []
        self._slots = None

    def _scrub(self, text: str, key: str | None) -> str:
        if key:
            text = text.replace(key, "***")
        return text[:500]

    async def complete(self, req: TeacherRequest) -> CallOutcome:
        await self.start()
        assert self._slots is not None
        client = await self._slots.get()
        try:
            return await self._complete(req, client)
        finally:
            self._slots.put_nowait(client)

    async def _complete(self, req: TeacherRequest, client: httpx.AsyncClient) -> CallOutcome:
        s = self.spec
        payload = orjson.dumps(req.body)
        attempts = 0
        kind, detail = "unknown", ""
        while attempts < s.max_attempts:
            wait = self._cooldown_until - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if self._rpm:
                await self._rpm.acquire(1)
            if self._tpm:
                await self._tpm.acquire(req.estimate_tokens)
            key = None
            headers = dict(s.extra_headers)
            if s.api_key_env:
                key = os.environ.get(s.api_key_env)
                if not key:
                    return CallOutcome(status="error", attempts=attempts, error_kind="missing_api_key",
                                       error=f"environment variable {s.api_key_env} is not set")
                headers["Authorization"] = f"Bearer {key}"
            attempts += 1
            self.http_requests += 1
            t0 = time.perf_counter()
            retry_after = None
            try:
                async with asyncio.timeout(s.timeout):  # whole attempt, not per read
                    resp = await client.post(self.url, content=payload, headers=headers)
                latency = (time.perf_counter() - t0) * 1000
                sc = resp.status_code
                if sc in self.RETRY_STATUS or sc >= 500:
                    retry_after = parse_retry_after(resp.headers.get("retry-after"))
                    raise _Retry(f"http_{sc}", self._scrub(resp.text, key), retry_after)
                if sc >= 400:
                    return CallOutcome(status="error", attempts=attempts, latency_ms=latency,
                                       error_kind=f"http_{sc}", error=self._scrub(resp.text, key))
                out = self._parse(resp.content, req, key)
                out.attempts, out.latency_ms = attempts, latency
                if self._tpm and out.input_tokens is not None:
                    self._tpm.refund(req.estimate_tokens - out.input_tokens - (out.output_tokens or 0))
                return out
            except _Retry as r:
                kind, detail, retry_after = r.kind, r.detail, r.retry_after
            except (httpx.TimeoutException, TimeoutError) as exc:
                kind, detail = "timeout", f"{type(exc).__name__} after {s.timeout}s"
            except httpx.TransportError as exc:
                kind, detail = "connection", self._scrub(f"{type(exc).__name__}: {exc}", key)
            except Exception as exc:  # never let a teacher crash the run
                return CallOutcome(status="error", attempts=attempts, error_kind="internal",
                                   error=self._scrub(f"{type(exc).__name__}: {exc}", key))
            if attempts >= s.max_attempts:
                break
            delay = random.uniform(0, min(s.backoff_max, s.backoff_base * 2 ** (attempts - 1)))
            if retry_after is not None:
                ra = min(retry_after, s.max_retry_after)
                delay = max(delay, ra)
                if kind == "http_429":
                    self._cooldown_until = max(self._cooldown_until, time.monotonic() + ra)
            await asyncio.sleep(delay)
        return CallOutcome(status="error", attempts=attempts, error_kind=kind,
                           error=f"after {attempts} attempt(s): {detail}")

    def _parse(self, raw: bytes, req: TeacherRequest, key: str | None) -> CallOutcome:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return CallOutcome(status="error", error_kind="malformed_json",
                               error=self._scrub("response is not JSON: " + raw[:200].decode("utf-8", "replace"), key))
        if not isinstance(data, dict):
            return CallOutcome(status="error", error_kind="malformed_json", error="response is not a JSON object")
        if data.get("error") and not data.get("choices"):
            return CallOutcome(status="error", error_kind="provider_error",
                               error=self._scrub(orjson.dumps(data["error"]).decode(), key))
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return CallOutcome(status="error", error_kind="empty_choices", error="response has no choices")
        choice = choices[0]
        msg = choice.get("message")
        if not isinstance(msg, dict):
            return CallOutcome(status="error", error_kind="malformed_response", error="choice has no message")
        text = content_text(msg.get("content"))
        message: dict[str, Any] = {"role": "assistant", "content": msg.get("content")}
        if msg.get("tool_calls"):
            message["tool_calls"] = msg["tool_calls"]  # kept as returned; checked for flags later
        for k in ("reasoning", "reasoning_content", "refusal"):
            if msg.get(k):
                message[k] = msg[k]
        flags = []
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        tin, tout = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(tin, int) or not isinstance(tout, int):
            flags.append("usage_estimated")
            tin = req.estimate_tokens - self.spec.max_tokens
            tout = max(1, len(text) // 4) if text else 0
        return CallOutcome(
            status="ok", message=message, text=text, finish_reason=choice.get("finish_reason"),
            input_tokens=tin, output_tokens=tout, cost_usd=self.spec.cost(tin, tout), flags=flags,
        )


class LocalTeacher(Teacher):
    """An in-process causal LM (SmolLM2 GGUF by default), generating in batches on a thread."""

    kind = "local"

    def __init__(self, spec: TeacherSpec, executor: ThreadPoolExecutor) -> None:
        super().__init__(spec)
        self._executor = executor
        self._loaded: tuple[Any, Any] | None = None
        self._load_lock = threading.Lock()

    def _body(self, messages, tools):
        body = super()._body(messages, tools)
        body["max_context_tokens"] = self.spec.max_context_tokens  # changes the input: hashed
        return body

    def _model(self):
        with self._load_lock:
            if self._loaded is None:
                from resources.models import load_causal_lm

                self._loaded = load_causal_lm(self.spec.model,
                                              device=self.spec.device, dtype=self.spec.dtype)
            return self._loaded

    async def complete_batch(self, reqs: Sequence[TeacherRequest]) -> list[CallOutcome]:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._generate, list(reqs))
        except Exception as exc:  # a model failure is an error of these calls, not a crash
            return [CallOutcome(status="error", attempts=1, error_kind="local_model",
                                error=f"{type(exc).__name__}: {str(exc)[:300]}") for _ in reqs]

    async def complete(self, req: TeacherRequest) -> CallOutcome:
        return (await self.complete_batch([req]))[0]

    @staticmethod
    def _chat(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
        out = []
        for m in messages:
            role = m["role"] if m["role"] in ("system", "user", "assistant", "tool") else "user"
            text = content_text(m.get("content"))
            for c in m.get("tool_calls") or []:
                fn = c.get("function", {})
                text += f"\n<tool_call>{{\"name\": {orjson.dumps(fn.get('name')).decode()}, " \
                        f"\"arguments\": {fn.get('arguments') or '{}'}}}</tool_call>"
            out.append({"role": role, "content": text})
        return out

    def _encode(self, tok, messages: list[dict[str, Any]]) -> tuple[list[int], bool]:
        """Prompt ids; contexts longer than the window are cut from the left (system kept)."""
        chat = self._chat(messages)
        text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        limit = max(16, self.spec.max_context_tokens - self.spec.max_tokens)
        if len(ids) <= limit:
            return ids, False
        keep: list[int] = []
        if chat and chat[0]["role"] == "system":
            sys_text = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=False)
            keep = tok(sys_text, add_special_tokens=False)["input_ids"]
            if len(keep) > limit // 2:
                keep = []
        return keep + ids[len(ids) - (limit - len(keep)):], True

    def _generate(self, reqs: list[TeacherRequest]) -> list[CallOutcome]:
        import torch

        tok, model = self._model()
        s = self.spec
        t0 = time.perf_counter()
        encoded = [self._encode(tok, r.body["messages"]) for r in reqs]
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        eos = {tok.eos_token_id}
        gc_eos = getattr(model.generation_config, "eos_token_id", None)
        eos.update(gc_eos if isinstance(gc_eos, list) else [gc_eos])
        im_end = tok.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != tok.unk_token_id:
            eos.add(im_end)
        eos.discard(None)
        width = max(len(ids) for ids, _ in encoded)
        input_ids = torch.tensor([[pad] * (width - len(ids)) + ids for ids, _ in encoded])
        attn = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids, _ in encoded])
        kw: dict[str, Any] = dict(max_new_tokens=s.max_tokens, pad_token_id=pad,
                                  eos_token_id=sorted(eos))
        if s.temperature > 0:
            kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
            if s.seed is not None:
                torch.manual_seed(s.seed)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        prev_threads = torch.get_num_threads()
        if s.torch_threads:
            torch.set_num_threads(s.torch_threads)
        try:
            with torch.inference_mode():
                out = model.generate(input_ids=input_ids.to(model.device),
                                     attention_mask=attn.to(model.device), **kw)
        finally:
            if s.torch_threads:
                torch.set_num_threads(prev_threads)
        latency = (time.perf_counter() - t0) * 1000 / len(reqs)
        results = []
        for i, (ids, truncated) in enumerate(encoded):
            new = out[i, width:].tolist()
            finish = "length"
            for j, t in enumerate(new):
                if t in eos:
                    new, finish = new[: j + 1], "stop"
                    break
            text = tok.decode(new, skip_special_tokens=True).strip()
            flags = ["context_truncated"] if truncated else []
            results.append(CallOutcome(
                status="ok", message={"role": "assistant", "content": text}, text=text,
                finish_reason=finish, input_tokens=len(ids), output_tokens=len(new),
                cost_usd=0.0, latency_ms=latency, attempts=1, flags=flags,
            ))
        return results


class TeacherSet:
    """The runtime clients of a pool; ``async with`` it to open and close connections."""

    def __init__(self, pool: PoolSpec) -> None:
        self.pool = pool
        self._executors: dict[tuple[str, str], ThreadPoolExecutor] = {}
        self.teachers: list[Teacher] = []
        for spec in pool.teachers:
            if spec.provider == "local":
                key = (spec.model, spec.device)  # one thread per model: they share the weights
                ex = self._executors.get(key)
                if ex is None:
                    ex = self._executors[key] = ThreadPoolExecutor(1, thread_name_prefix="local-teacher")
                self.teachers.append(LocalTeacher(spec, ex))
            else:
                self.teachers.append(HttpTeacher(spec))

    def __iter__(self):
        return iter(self.teachers)

    def __len__(self) -> int:
        return len(self.teachers)

    async def __aenter__(self) -> "TeacherSet":
        for t in self.teachers:
            await t.start()
        return self

    async def __aexit__(self, *exc) -> None:
        for t in self.teachers:
            await t.aclose()
        for ex in self._executors.values():
            ex.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------- resource
class TeacherPool(dg.ConfigurableResource):
    """The teachers asked, from a YAML pool file (see recipes/teachers*.yaml).

    ``config_file`` > ``$TRACELAKE_TEACHERS_FILE`` > the embedded offline default
    (three SmolLM2-135M teachers). ``config_yaml`` (inline YAML) wins over both.
    """

    config_file: str = Field(default="", description="Teacher pool YAML (empty: env, then default).")
    config_yaml: str = Field(default="", description="Inline teacher pool YAML (overrides the file).")
    budget_usd: Optional[float] = Field(default=None, description="Per-run budget (overrides the YAML).")
    only: list[str] = Field(default_factory=list, description="Use only these teachers (by name).")

    def source(self) -> str:
        if self.config_yaml:
            return "<inline>"
        return self.config_file or os.environ.get(TEACHERS_FILE_ENV) or str(DEFAULT_TEACHERS_FILE)

    def pool_spec(self) -> PoolSpec:
        spec = (load_pool_spec(text=self.config_yaml) if self.config_yaml
                else load_pool_spec(self.source()))
        if self.only:
            missing = set(self.only) - {t.name for t in spec.teachers}
            if missing:
                raise ValueError(f"unknown teachers: {sorted(missing)}")
            spec = spec.model_copy(update={"teachers": [t for t in spec.teachers if t.name in self.only]})
        if self.budget_usd is not None:
            spec = spec.model_copy(update={"budget_usd": self.budget_usd})
        return spec

    def open(self, pool: PoolSpec | None = None) -> TeacherSet:
        return TeacherSet(pool or self.pool_spec())
