"""The one model client: every model call of tracelake goes through here.

Two providers behind one interface (:class:`ModelClient`):

* :class:`HttpModelClient` — any OpenAI-compatible ``/v1/chat/completions`` server (OpenRouter,
  vLLM, Ollama, llama.cpp, LiteLLM, OpenAI...), on pooled ``httpx.AsyncClient`` s with bounded
  concurrency, an RPM and a TPM token bucket, and retries with exponential backoff and full
  jitter on 408/409/425/429, 5xx, timeouts and connection errors, honouring ``Retry-After``
  (seconds or an HTTP date; a 429's pause holds the whole client).
* :class:`LocalModelClient` — an in-process transformers causal LM (``resources.models``:
  the embedded SmolLM2-135M, an HF directory or a .gguf), batched generation with left padding,
  contexts longer than the window cut from the left (the system message kept), run on a
  worker thread so an event loop keeps serving HTTP clients meanwhile.

Both take a :class:`ModelSpec` (connection, limits, prices, sampling), build content-addressed
:class:`ModelRequest` s (the request hash covers everything that changes the answer and nothing
else), and end every call as a :class:`CallOutcome` — ``ok`` or an ``error`` with a kind
(``http_429``, ``timeout``, ``connection``, ``malformed_json``, ``empty_choices``,
``missing_api_key``, ``local_model``...): nothing raises on a bad answer. Each client keeps
its :class:`Usage` (calls, attempts, tokens, cost in USD from the spec's per-million prices).

Two ways to call:

* async: ``async with client: out = await client.complete(req)`` (teachers: many requests
  on one loop; ``complete_batch`` for a local model's batches);
* sync: ``client.chat(messages)`` / ``client.chat_many([messages, ...])`` (the RAG runtime,
  the pair judge): opens, answers and closes on a private event loop.

Secrets: a spec names the environment variable that holds its key (``api_key_env``); the
value is read (through ``resources.settings``) at request time, put in the ``Authorization``
header only, and scrubbed from any error text. It never enters the request hash, a table, a
log line or metadata.

Message helpers (:func:`content_text`, :func:`normalize_messages`) are the one place chat
content is flattened and cleaned for a model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.utils
import functools
import hashlib
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Optional, Sequence

import httpx
import orjson

from resources import privacy
from pydantic import BaseModel, ConfigDict, Field, model_validator

HASH_VERSION = "tl-teacher-v1"  # request hashes address the teacher cache: changing it re-pays
RETRY_STATUS = frozenset({408, 409, 425, 429})
_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")
# substrings of every text tool-call format resources.tool_text reads (besides bare/fenced JSON)
_TEXT_CALL_MARKERS = re.compile(r"<tool_call>|<function=|<\|python_tag\|>|\[TOOL_CALLS\]|tool\u2581call")

__all__ = [
    "ModelSpec", "ModelRequest", "CallOutcome", "Usage", "ModelClient", "HttpModelClient",
    "LocalModelClient", "ModelClients", "make_client", "complete_local_group", "decode_batch", "DecodeParams",
    "TokenBucket", "parse_retry_after",
    "content_text", "normalize_messages", "normalize_tool_calls", "canonical_json", "load_json",
]


# --------------------------------------------------------------------------- config
class ModelSpec(BaseModel):
    """How to reach one model and how to sample from it (one YAML mapping)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = ""  # a label (a teacher's name, "judge", "escalation"); not part of the hash
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
    # the model's context window in tokens (prompt + answer), when known: a request that
    # cannot fit is not sent (see ``fits_window``); local models cut from the left instead
    context_window: Optional[int] = Field(default=None, ge=16)
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
    max_context_tokens: int = Field(default=2048, ge=32)  # prompt + answer; longer prompts are cut
    device: str = "cpu"
    # float32 | bfloat16 | float16 | int8 (float32 weights, Linear layers dynamically quantized to
    # int8: ~2.5x faster on a CPU, resources/models.py) | auto
    dtype: str = "float32"
    repetition_penalty: Optional[float] = Field(default=None, gt=0)
    gguf_cache: bool = True  # load a GGUF from its dequantized safetensors copy (~2 s, not ~70 s)
    # torch intra-op threads while this model generates (process-wide, restored after);
    # 1 is ~5x faster than 2 on a CPU shared with other busy processes. None: leave as is.
    torch_threads: Optional[int] = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "ModelSpec":
        who = self.name or self.model
        if self.provider == "openai_compatible" and not self.base_url:
            raise ValueError(f"model {who!r}: openai_compatible needs a base_url")
        if self.api_key_env is not None and not self.api_key_env.replace("_", "").isalnum():
            raise ValueError(f"model {who!r}: api_key_env must be the NAME of an environment variable")
        return self

    @property
    def label(self) -> str:
        return self.name or self.model_id

    @property
    def model_id(self) -> str:
        """A stable, readable id of the model ("smollm2-135m", a directory's name, a remote id)."""
        if self.provider == "local":
            from resources.models import ModelRef

            return ModelRef(self.model).model_id
        return self.model

    @property
    def priced(self) -> bool:
        return self.price_input_per_mtok > 0 or self.price_output_per_mtok > 0

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.price_input_per_mtok
                + output_tokens * self.price_output_per_mtok) / 1e6

    def public(self) -> dict[str, Any]:
        """The spec as it may be logged (it holds no secret: only the key variable's name)."""
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------- messages
def canonical_json(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def load_json(value: Any, default: Any) -> Any:
    """A JSON column's value (a string, bytes, or already parsed); ``default`` when unusable."""
    if value is None or value == "":
        return default
    if isinstance(value, (str, bytes)):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return default
    return value


def content_text(content: Any) -> str:
    """The text of an OpenAI ``content``: a string, None, or a list of parts (text parts joined
    by newlines; an image part becomes ``[image]``, another typed part ``[<type>]``)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict):
                kind = part.get("type", "")
                if isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif kind in ("image_url", "image", "input_image"):
                    out.append("[image]")
                elif kind:
                    out.append(f"[{kind}]")
        return "\n".join(s for s in out if s)
    return str(content)


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


# --------------------------------------------------------------------------- requests / outcomes
@dataclass(frozen=True)
class ModelRequest:
    """A request as it will be sent, and its content address."""

    client: str  # label of the client that built it
    body: dict[str, Any]  # the exact JSON body (never holds a key)
    request_hash: str
    tools: tuple[str, ...]  # names of the tools offered (for the unknown_tool check)
    reserve_input_tokens: int  # upper bound used for a budget reservation
    estimate_tokens: int  # typical input + max_tokens, for the TPM limiter

    @property
    def estimate_input_tokens(self) -> int:
        return self.estimate_tokens - int(self.body.get("max_tokens") or 0)


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

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe_error(self) -> str:
        return f"{self.error_kind}: {self.error}" if self.error_kind else str(self.error)


@dataclass
class Usage:
    """What a client has done so far (this process): calls, attempts, tokens, cost."""

    calls: int = 0
    ok: int = 0
    errors: int = 0
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, out: CallOutcome) -> None:
        self.calls += 1
        self.attempts += out.attempts
        if out.ok:
            self.ok += 1
            self.input_tokens += out.input_tokens or 0
            self.output_tokens += out.output_tokens or 0
            self.cost_usd += out.cost_usd
        else:
            self.errors += 1

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__, cost_usd=round(self.cost_usd, 8))


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


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
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


def _api_key(name: str) -> str | None:
    from resources import settings

    return settings.secret(name)


def _run_sync(coro_fn):
    """Run ``coro_fn()`` to completion on a private loop (a worker thread when this thread
    already runs one, e.g. inside an async caller)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro_fn())
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro_fn()).result()


# --------------------------------------------------------------------------- clients
class ModelClient:
    """Request building / hashing / accounting common to both providers."""

    kind = "base"

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.usage = Usage()
        self.name: str = spec.label  # the spec is frozen: computed once
        self.model_id: str = spec.model_id

    # ---- requests
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

    def _sampling(self, max_tokens: int | None = None) -> dict[str, Any]:
        s = self.spec
        out: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p,
                               "max_tokens": max_tokens or s.max_tokens}
        if s.seed is not None:
            out["seed"] = s.seed
        out.update(s.extra_body)
        return out

    def _body(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]],
              max_tokens: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.spec.model, "messages": messages}
        body.update(self._sampling(max_tokens))
        if tools:
            body["tools"] = tools
            body["tool_choice"] = "auto"
        return body

    def _address(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"v": HASH_VERSION, "provider": self.spec.provider,
                "base_url": self.spec.base_url.rstrip("/"), "body": body}

    def build_request(self, messages: Any, tools: Any = None, reserve_bytes_per_token: float = 1.0,
                      max_tokens: int | None = None) -> ModelRequest:
        """A request for ``messages`` (a list or its JSON) offering ``tools`` (the same)."""
        msgs = self._messages(normalize_messages(load_json(messages, [])))
        tool_list = [t for t in (load_json(tools, []) or []) if isinstance(t, dict)]
        # nothing unscrubbed leaves the machine: the text was scrubbed when it was first
        # written, and is again here (idempotent: placeholders and pseudonyms stay as they are)
        (msgs, tool_list), _ = privacy.scrub_json((msgs, tool_list))
        msgs, tool_list = list(msgs), list(tool_list)
        body = self._body(msgs, tool_list, max_tokens)
        h = hashlib.sha256(canonical_json(self._address(body))).hexdigest()
        size = len(canonical_json(msgs)) + (len(canonical_json(tool_list)) if tool_list else 0)
        names = tuple(
            str((t.get("function") or {}).get("name") or t.get("name") or "") for t in tool_list
        )
        return ModelRequest(
            client=self.name, body=body, request_hash=h, tools=names,
            reserve_input_tokens=int(size / reserve_bytes_per_token) + 64,
            estimate_tokens=size // 4 + body["max_tokens"],
        )

    def worst_case_cost(self, req: ModelRequest) -> float:
        return self.spec.cost(req.reserve_input_tokens, int(req.body["max_tokens"]))

    @staticmethod
    def _structure(req: ModelRequest, out: CallOutcome) -> CallOutcome:
        """Tool calls the model wrote as text (Hermes, Qwen XML, Llama, Mistral, DeepSeek, JSON)
        become structured ``tool_calls`` when the request offered tools; the text left is the
        prose around them. Nothing after the client sees a tool call written as text."""
        tools = req.body.get("tools")
        if not tools or not out.ok or not out.message or out.message.get("tool_calls"):
            return out
        text = out.message.get("content")
        if not isinstance(text, str) or not (_TEXT_CALL_MARKERS.search(text)
                                             or text.lstrip().startswith(("{", "[", "`"))):
            return out  # the common case, decided without parsing
        from resources.tool_text import structure_tool_calls

        msg, fmt = structure_tool_calls(out.message, tools)
        if fmt is not None:
            out.message = msg
            out.text = content_text(msg.get("content"))
        return out

    def fits_window(self, req: ModelRequest) -> bool:
        """False when the spec declares a context window and the request's typical size
        (request bytes / 4 + max_tokens) is over it: the call could only fail or be cut."""
        w = self.spec.context_window
        return w is None or req.estimate_tokens <= w

    # ---- lifecycle
    async def start(self) -> None:  # pragma: no cover - trivial
        pass

    async def aclose(self) -> None:  # pragma: no cover - trivial
        pass

    async def __aenter__(self) -> "ModelClient":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    # ---- calls
    async def complete(self, req: ModelRequest) -> CallOutcome:
        raise NotImplementedError

    async def complete_batch(self, reqs: Sequence[ModelRequest]) -> list[CallOutcome]:
        """Answer several requests (concurrently up to ``max_concurrency``, or as one batch)."""
        return list(await asyncio.gather(*(self.complete(r) for r in reqs)))

    def chat(self, messages: Any, tools: Any = None, max_tokens: int | None = None) -> CallOutcome:
        """One synchronous call (opens and closes this client around it)."""
        return self.chat_many([messages], tools, max_tokens)[0]

    def chat_many(self, conversations: Iterable[Any], tools: Any = None,
                  max_tokens: int | None = None) -> list[CallOutcome]:
        """Synchronous calls for several conversations, answered concurrently."""
        reqs = [self.build_request(m, tools, max_tokens=max_tokens) for m in conversations]

        async def go() -> list[CallOutcome]:
            async with self:
                return await self.complete_batch(reqs)

        return _run_sync(go) if reqs else []


@functools.lru_cache(maxsize=1)
def _ssl_context():
    return httpx.create_ssl_context()


class _Retry(Exception):
    def __init__(self, kind: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


class HttpModelClient(ModelClient):
    """An OpenAI-compatible chat-completions endpoint."""

    kind = "openai_compatible"
    RETRY_STATUS = RETRY_STATUS

    def __init__(self, spec: ModelSpec) -> None:
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
        self._cooldown_until = 0.0  # a 429's Retry-After pauses the whole client
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
        # token buckets hold an asyncio.Lock bound to the loop that used them
        s = self.spec
        self._rpm = TokenBucket(s.requests_per_minute, s.requests_per_minute / 30) if s.requests_per_minute else None
        self._tpm = TokenBucket(s.tokens_per_minute, s.tokens_per_minute / 6) if s.tokens_per_minute else None

    def _scrub(self, text: str, key: str | None) -> str:
        if key:
            text = text.replace(key, "***")
        return privacy.scrub_text(text[:2000])[0][:500]

    async def complete(self, req: ModelRequest) -> CallOutcome:
        await self.start()
        assert self._slots is not None
        client = await self._slots.get()
        try:
            out = self._structure(req, await self._complete(req, client))
        finally:
            self._slots.put_nowait(client)
        self.usage.add(out)
        return out

    async def _complete(self, req: ModelRequest, client: httpx.AsyncClient) -> CallOutcome:
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
                key = _api_key(s.api_key_env)
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
            except Exception as exc:  # never let a model call crash the caller
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

    def _parse(self, raw: bytes, req: ModelRequest, key: str | None) -> CallOutcome:
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
            tin = req.estimate_input_tokens
            tout = max(1, len(text) // 4) if text else 0
        return CallOutcome(
            status="ok", message=message, text=text, finish_reason=choice.get("finish_reason"),
            input_tokens=tin, output_tokens=tout, cost_usd=self.spec.cost(tin, tout), flags=flags,
        )


class LocalModelClient(ModelClient):
    """An in-process causal LM (SmolLM2 GGUF by default), generating in batches on a thread.

    ``executor``: the thread that generates (clients of one model share one, so they share the
    weights and never generate at once); without one, a private thread is used.
    ``loaded``: a (tokenizer, model) pair the caller already holds (e.g. a student being
    evaluated) to generate with instead of loading ``spec.model``, which is then only a label.
    """

    kind = "local"

    def __init__(self, spec: ModelSpec, executor: ThreadPoolExecutor | None = None,
                 loaded: tuple[Any, Any] | None = None) -> None:
        super().__init__(spec)
        self._executor = executor
        self._own_executor: ThreadPoolExecutor | None = None
        self._loaded: tuple[Any, Any] | None = loaded
        self._held = id(loaded) if loaded is not None else None  # a model the caller holds
        self._load_lock = threading.Lock()

    def _body(self, messages, tools, max_tokens=None):
        body = super()._body(messages, tools, max_tokens)
        body["max_context_tokens"] = self.spec.max_context_tokens  # changes the input: hashed
        if self.spec.dtype != "float32":  # other weights' precision, other answers (float32 hashes as before)
            body["dtype"] = self.spec.dtype
        if self.spec.repetition_penalty is not None:
            body["repetition_penalty"] = self.spec.repetition_penalty
        return body

    def fits_window(self, req: ModelRequest) -> bool:
        return True  # a local model cuts a long context from the left (flag context_truncated)

    def _model(self):
        with self._load_lock:
            if self._loaded is None:
                from resources.models import load_causal_lm

                self._loaded = load_causal_lm(self.spec.model, device=self.spec.device,
                                              dtype=self.spec.dtype, gguf_cache=self.spec.gguf_cache)
            return self._loaded

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is not None:
            return self._executor
        if self._own_executor is None:
            self._own_executor = ThreadPoolExecutor(1, thread_name_prefix="local-model")
        return self._own_executor

    async def aclose(self) -> None:
        if self._own_executor is not None:
            self._own_executor.shutdown(wait=False)
            self._own_executor = None

    @property
    def group_key(self) -> tuple:
        """Local clients with the same key generate together (:func:`complete_local_group`):
        they hold the same weights and generate on the same thread."""
        s = self.spec
        return (s.model, s.device, s.dtype, s.gguf_cache, id(self._pool()), self._held)

    async def complete_batch(self, reqs: Sequence[ModelRequest]) -> list[CallOutcome]:
        """Generate for ``reqs`` in batches of ``batch_size`` on the model's thread."""
        reqs = list(reqs)
        outs: list[CallOutcome] = []
        for i in range(0, len(reqs), self.spec.batch_size):
            outs.extend(await complete_local_group([(self, r) for r in reqs[i:i + self.spec.batch_size]]))
        return outs

    async def complete(self, req: ModelRequest) -> CallOutcome:
        return (await self.complete_batch([req]))[0]

    @staticmethod
    def _chat(messages: list[dict[str, Any]]) -> list[dict[str, str]]:
        """Messages as a plain chat template reads them (tool calls rendered as Hermes text)."""
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

    def _encode(self, tok, messages: list[dict[str, Any]], max_new: int,
                max_context: int | None = None) -> tuple[list[int], bool]:
        """Prompt ids; contexts longer than the window (``max_context``, default the spec's
        ``max_context_tokens``) are cut from the left (system kept)."""
        chat = self._chat(messages)
        text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        limit = max(16, (max_context or self.spec.max_context_tokens) - max_new)
        if len(ids) <= limit:
            return ids, False
        keep: list[int] = []
        if chat and chat[0]["role"] == "system":
            sys_text = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=False)
            keep = tok(sys_text, add_special_tokens=False)["input_ids"]
            if len(keep) > limit // 2:
                keep = []
        return keep + ids[len(ids) - (limit - len(keep)):], True

    def _generate(self, reqs: list[ModelRequest]) -> list[CallOutcome]:
        """Answers to ``reqs`` in one batch (on the model's thread). Each request's body says
        how it is sampled (``temperature``, ``top_p``, ``seed``, ``max_tokens``,
        ``repetition_penalty``, ``max_context_tokens``), so a batch may hold the requests of
        several clients of this model (:func:`complete_local_group`)."""
        import torch

        tok, model = self._model()
        t0 = time.perf_counter()
        encoded = [self._encode(tok, r.body["messages"], int(r.body["max_tokens"]),
                                r.body.get("max_context_tokens")) for r in reqs]
        prev_threads = torch.get_num_threads()
        if self.spec.torch_threads:
            torch.set_num_threads(self.spec.torch_threads)
        try:
            gens = decode_batch(model, tok, [ids for ids, _ in encoded],
                                [DecodeParams.of(r) for r in reqs])
        finally:
            if self.spec.torch_threads:
                torch.set_num_threads(prev_threads)
        latency = (time.perf_counter() - t0) * 1000 / len(reqs)
        results = []
        for (ids, truncated), (new, finish) in zip(encoded, gens):
            text = tok.decode(new, skip_special_tokens=True).strip()
            results.append(CallOutcome(
                status="ok", message={"role": "assistant", "content": text}, text=text,
                finish_reason=finish, input_tokens=len(ids), output_tokens=len(new),
                cost_usd=0.0, latency_ms=latency, attempts=1,
                flags=["context_truncated"] if truncated else [],
            ))
        return results


async def complete_local_group(items: Sequence[tuple[LocalModelClient, ModelRequest]]) -> list[CallOutcome]:
    """Answer the requests of several local clients of one model (same :attr:`group_key`) in
    ONE batch on the model's thread: the teachers of a pool that share a model share its
    batches, and a prompt they all ask is computed once (:func:`decode_batch`). Each outcome is
    structured and counted by the client that built its request."""
    items = list(items)
    if not items:
        return []
    lead = items[0][0]
    if any(c.group_key != lead.group_key for c, _ in items):
        raise ValueError("complete_local_group: the clients do not share one model and thread")
    loop = asyncio.get_running_loop()
    try:
        got = await loop.run_in_executor(lead._pool(), lead._generate, [r for _, r in items])
    except Exception as exc:  # a model failure is an error of these calls, not a crash
        got = [CallOutcome(status="error", attempts=1, error_kind="local_model",
                           error=f"{type(exc).__name__}: {str(exc)[:300]}") for _ in items]
    outs = []
    for (client, req), out in zip(items, got):
        out = client._structure(req, out)
        client.usage.add(out)
        outs.append(out)
    return outs


# --------------------------------------------------------------------------- local decoding
@dataclass(frozen=True)
class DecodeParams:
    """How one row of a batch is decoded (from its request's body)."""

    max_new: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None  # the row's own seed: its sample does not depend on the batch
    repetition_penalty: float | None = None

    @classmethod
    def of(cls, req: ModelRequest) -> "DecodeParams":
        b = req.body
        t = float(b.get("temperature") or 0.0)
        seed = None
        if t > 0 and b.get("seed") is not None:
            # per request: the spec's seed mixed with the request's content address, so an answer
            # is the same whatever else shares its batch and in whatever order requests come
            h = hashlib.sha256(f"{b['seed']}|{req.request_hash}".encode()).digest()
            seed = int.from_bytes(h[:8], "big") & (2 ** 63 - 1)
        rp = b.get("repetition_penalty")
        return cls(int(b["max_tokens"]), t, float(b.get("top_p") if b.get("top_p") is not None else 1.0),
                   seed, float(rp) if rp is not None else None)


def _cache_kw(model) -> str:
    """The keyword a causal LM's forward takes its KV cache under (``cache`` in newer
    transformers, ``past_key_values`` before)."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _eos_ids(model, tok) -> set[int]:
    eos = {tok.eos_token_id}
    gc_eos = getattr(model.generation_config, "eos_token_id", None)
    eos.update(gc_eos if isinstance(gc_eos, list) else [gc_eos])
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tok.unk_token_id:
        eos.add(im_end)
    eos.discard(None)
    return eos


def decode_batch(model, tok, prompts: Sequence[list[int]], params: Sequence[DecodeParams]
                 ) -> list[tuple[list[int], str]]:
    """Generate for a batch of prompt ids: ``[(new token ids, "stop" | "length")]``.

    What ``model.generate`` does for one sampling setting, per row instead: rows may differ in
    temperature, top-p, seed, max new tokens and repetition penalty. And two savings:

    * identical prompts are prefilled once (teachers asking the same context share its KV
      cache rows; the prefill is most of a short answer's cost on a CPU), each prompt alone
      (no padding), their caches then left-padded into one;
    * a row that has stopped leaves the batch (its cache rows are dropped), so the batch costs
      the answers' real lengths, not the longest one's times the batch.

    Greedy rows take the argmax; sampled rows follow ``generate``'s warpers (temperature, the
    model's top-k, top-p) and draw with their own ``torch.Generator`` (seeded per request, see
    :meth:`DecodeParams.of`). Left padding with an attention mask and explicit positions, as
    ``generate`` does.
    """
    import torch

    n = len(prompts)
    if n == 0:
        return []
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    eos = _eos_ids(model, tok)
    top_k = int(getattr(model.generation_config, "top_k", None) or 0)
    cache_kw = _cache_kw(model)
    dev = model.device

    # one prefill per distinct prompt, each alone (no padding: a padded position's activations
    # would take part in a dynamically quantized layer's scale, and cost compute), then their
    # caches left-padded into the batch's
    first: dict[tuple, int] = {}
    row_of = [first.setdefault(tuple(p), len(first)) for p in prompts]
    uniq = [list(k) for k in first]
    width = max(len(p) for p in uniq)
    with torch.inference_mode():
        caches, last = [], []
        for p in uniq:
            out = model(input_ids=torch.tensor([p], device=dev), use_cache=True, logits_to_keep=1)
            caches.append(_cache_tensors(getattr(out, "cache", None) or out.past_key_values))
            last.append(out.logits[:, -1, :].float())
        sel = torch.tensor(row_of, device=dev)
        cache = _batched_cache(caches, width, sel)
        logits = torch.cat(last)[sel]
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in uniq], device=dev)[sel]
        last_pos = torch.tensor([len(p) - 1 for p in uniq], device=dev)[sel]

        gens = [torch.Generator().manual_seed(p.seed) if p.seed is not None else None for p in params]
        seen = [torch.tensor(sorted(set(p)), dtype=torch.long) for p in prompts]  # for the repetition penalty
        new: list[list[int]] = [[] for _ in range(n)]
        finish = ["length"] * n
        active = list(range(n))  # batch row -> request index
        while True:
            tokens = []
            for b, i in enumerate(active):
                tokens.append(_next_token(logits[b], params[i], top_k, gens[i], seen[i]))
            keep = []
            for b, (i, t) in enumerate(zip(active, tokens)):
                new[i].append(t)
                if params[i].repetition_penalty is not None:
                    seen[i] = torch.unique(torch.cat([seen[i], torch.tensor([t])]))
                if t in eos:
                    finish[i] = "stop"
                elif len(new[i]) < params[i].max_new:
                    keep.append(b)
            if not keep:
                break
            if len(keep) != len(active):
                k = torch.tensor(keep, device=dev)
                cache.batch_select_indices(k)
                mask, last_pos = mask[k], last_pos[k]
                tokens = [tokens[b] for b in keep]
                active = [active[b] for b in keep]
            mask = torch.cat([mask, torch.ones((len(active), 1), dtype=mask.dtype, device=dev)], dim=1)
            last_pos = last_pos + 1
            out = model(input_ids=torch.tensor(tokens, device=dev)[:, None], attention_mask=mask,
                        position_ids=last_pos[:, None], use_cache=True, **{cache_kw: cache})
            cache = getattr(out, "cache", None) or out.past_key_values
            logits = out.logits[:, -1, :].float()
    return [(new[i], finish[i]) for i in range(n)]


def _cache_tensors(cache) -> list[tuple[Any, Any]]:
    """(keys, values) of every layer of a transformers KV cache ([batch, heads, tokens, dim])."""
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def _batched_cache(caches: list[list[tuple[Any, Any]]], width: int, rows):
    """One DynamicCache of ``rows`` (indices into ``caches``, one-row caches of prompts of
    different lengths), each left-padded with zeros to ``width`` tokens (masked out)."""
    import torch
    from transformers import DynamicCache

    out = DynamicCache()
    for layer in range(len(caches[0])):
        ks, vs = [], []
        for c in caches:
            k, v = c[layer]
            padding = (0, 0, width - k.shape[2], 0)  # (dim: none, tokens: on the left)
            ks.append(torch.nn.functional.pad(k, padding))
            vs.append(torch.nn.functional.pad(v, padding))
        out.update(torch.cat(ks)[rows], torch.cat(vs)[rows], layer)
    return out


def _next_token(logits, p: DecodeParams, top_k: int, gen, seen) -> int:
    """One row's next token: repetition penalty, then argmax (greedy) or the sampling warpers
    of ``generate`` (temperature, top-k, top-p) and a draw with the row's generator."""
    import torch

    if p.repetition_penalty is not None and p.repetition_penalty != 1.0 and len(seen):
        idx = seen.to(logits.device)
        score = logits.gather(0, idx)
        score = torch.where(score < 0, score * p.repetition_penalty, score / p.repetition_penalty)
        logits = logits.scatter(0, idx, score)
    if p.temperature <= 0:
        return int(torch.argmax(logits))
    scores = logits / p.temperature
    if top_k and top_k < scores.numel():
        kth = torch.topk(scores, top_k).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if p.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cum = sorted_scores.softmax(-1).cumsum(-1)
        drop = cum <= (1 - p.top_p)
        drop[-1] = False  # keep at least one token
        scores = scores.masked_fill(drop.scatter(0, order, drop), float("-inf"))
    probs = scores.softmax(-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=gen).item())


def make_client(spec: ModelSpec, executor: ThreadPoolExecutor | None = None) -> ModelClient:
    """The client of ``spec``'s provider."""
    if spec.provider == "local":
        return LocalModelClient(spec, executor)
    return HttpModelClient(spec)


class ModelClients:
    """Clients of several specs on one event loop; ``async with`` it to open and close them.

    Local clients of the same model and device share one generating thread (and the weights).
    """

    def __init__(self, specs: Iterable[ModelSpec]) -> None:
        self._executors: dict[tuple[str, str], ThreadPoolExecutor] = {}
        self.clients: list[ModelClient] = []
        for spec in specs:
            ex = None
            if spec.provider == "local":
                key = (spec.model, spec.device)
                ex = self._executors.get(key)
                if ex is None:
                    ex = self._executors[key] = ThreadPoolExecutor(1, thread_name_prefix="local-model")
            self.clients.append(make_client(spec, ex))

    def __iter__(self):
        return iter(self.clients)

    def __len__(self) -> int:
        return len(self.clients)

    async def __aenter__(self) -> "ModelClients":
        for c in self.clients:
            await c.start()
        return self

    async def __aexit__(self, *exc) -> None:
        for c in self.clients:
            await c.aclose()
        for ex in self._executors.values():
            ex.shutdown(wait=False, cancel_futures=True)
