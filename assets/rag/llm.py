"""Chat models the rag runtime calls: the embedded local model and any OpenAI-compatible endpoint.

``LocalChatModel`` runs a causal LM offline through ``resources.models.load_causal_lm``
(SmolLM2-135M by default; greedy, so a run is reproducible). ``OpenAICompatClient`` is a
small synchronous client (httpx) with a timeout and retries on 429 / 5xx / transport
errors. It takes the NAME of the environment variable holding the API key and reads it at
call time; the key never leaves the Authorization header (not in errors, logs or tables).
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import httpx

RETRY_STATUS = frozenset({408, 409, 425, 429}) | frozenset(range(500, 600))


class LLMError(RuntimeError):
    """A model call failed for good (after retries). The message never holds a secret."""


@dataclass
class ChatResult:
    text: str
    model: str
    finish_reason: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float = 0.0
    attempts: int = 1
    extra: dict = field(default_factory=dict)


class ChatModel(Protocol):
    name: str

    def chat(self, messages: Sequence[dict], max_tokens: int | None = None) -> ChatResult: ...


class LocalChatModel:
    """A local causal LM (transformers, offline). ``path``: "smollm2-135m", an HF dir or a .gguf.

    A GGUF model is loaded from its dequantized HF-format copy
    (``resources.models.dequantized_gguf_dir``: ~2 s instead of ~70 s) unless ``gguf_cache`` is off.
    """

    def __init__(self, path: str = "smollm2-135m", max_new_tokens: int = 128, device: str = "cpu",
                 max_input_tokens: int = 2048, repetition_penalty: float = 1.1, gguf_cache: bool = True,
                 threads: int = 1):
        from resources.models import ModelRef

        self.path = path
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.max_input_tokens = max_input_tokens
        self.repetition_penalty = repetition_penalty
        self.gguf_cache = gguf_cache
        self.threads = threads  # torch threads while generating (0: leave torch's default)
        self.name = ModelRef(path).model_id

    def load(self):
        from resources.models import load_causal_lm

        return load_causal_lm(self.path, device=self.device, gguf_cache=self.gguf_cache)

    def chat(self, messages: Sequence[dict], max_tokens: int | None = None) -> ChatResult:
        import torch

        t0 = time.perf_counter()
        tok, model = self.load()
        enc = tok.apply_chat_template(list(messages), add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        ids = enc["input_ids"]
        if ids.shape[1] > self.max_input_tokens:  # keep the end: the task is the last message
            ids = ids[:, -self.max_input_tokens:]
        mask = torch.ones_like(ids)
        n_new = max_tokens or self.max_new_tokens
        # a 135M model decodes fastest on one thread; more threads on a busy machine are
        # several times slower (measured: 16 tokens 7 s on 1 thread vs 42 s on 2)
        prev_threads = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                out = model.generate(
                    input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                    max_new_tokens=n_new, do_sample=False, temperature=None, top_p=None, top_k=None,
                    repetition_penalty=self.repetition_penalty, pad_token_id=tok.pad_token_id,
                )
        finally:
            torch.set_num_threads(prev_threads)
        new = out[0, ids.shape[1]:]
        text = tok.decode(new, skip_special_tokens=True).strip()
        finish = "length" if len(new) >= n_new else "stop"
        return ChatResult(text=text, model=self.name, finish_reason=finish,
                          input_tokens=int(ids.shape[1]), output_tokens=int(len(new)),
                          latency_ms=(time.perf_counter() - t0) * 1000)


class OpenAICompatClient:
    """POST {base_url}/chat/completions with retries (429, 5xx, timeouts, connection errors)."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, *,
                 timeout: float = 60.0, max_retries: int = 3, backoff_s: float = 0.5,
                 max_tokens: int = 512, temperature: float = 0.0,
                 transport: httpx.BaseTransport | None = None):
        if not base_url or not model:
            raise ValueError("an OpenAI-compatible model needs base_url and model")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = model
        self.api_key_env = api_key_env or None
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._transport = transport

    def _headers(self) -> dict:
        h = {"Content-Type": "application/json"}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise LLMError(f"environment variable {self.api_key_env} (API key for {self.model}) is not set")
            h["Authorization"] = f"Bearer {key}"
        return h

    def chat(self, messages: Sequence[dict], max_tokens: int | None = None) -> ChatResult:
        body = {"model": self.model, "messages": list(messages),
                "max_tokens": max_tokens or self.max_tokens, "temperature": self.temperature}
        url = f"{self.base_url}/chat/completions"
        t0 = time.perf_counter()
        last = "no attempt"
        attempts = 0
        with httpx.Client(timeout=self.timeout, transport=self._transport) as client:
            for attempt in range(self.max_retries + 1):
                attempts = attempt + 1
                wait = None
                try:
                    r = client.post(url, json=body, headers=self._headers())
                except httpx.TransportError as exc:  # timeouts, refused connections
                    last = f"{type(exc).__name__}"
                else:
                    if r.status_code == 200:
                        return self._parse(r, attempts, t0)
                    last = f"HTTP {r.status_code}: {r.text[:200]}"
                    if r.status_code not in RETRY_STATUS:
                        break
                    wait = _retry_after(r)
                if attempt < self.max_retries:
                    time.sleep(wait if wait is not None else
                               self.backoff_s * (2 ** attempt) * (0.5 + random.random()))
        raise LLMError(f"{self.model} at {self.base_url}: failed after {attempts} attempt(s): {last}")

    def _parse(self, r: httpx.Response, attempts: int, t0: float) -> ChatResult:
        try:
            data = r.json()
            choice = data["choices"][0]
            msg = choice.get("message") or {}
            text = msg.get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"{self.model}: malformed response ({type(exc).__name__})") from None
        usage = data.get("usage") or {}
        return ChatResult(text=text.strip(), model=data.get("model") or self.model,
                          finish_reason=choice.get("finish_reason"),
                          input_tokens=usage.get("prompt_tokens"), output_tokens=usage.get("completion_tokens"),
                          latency_ms=(time.perf_counter() - t0) * 1000, attempts=attempts)


def _retry_after(r: httpx.Response) -> float | None:
    v = r.headers.get("retry-after")
    try:
        return min(10.0, max(0.0, float(v))) if v is not None else None
    except ValueError:
        return None
