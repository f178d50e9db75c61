"""A real OpenAI-compatible chat-completions server on 127.0.0.1 for tests and benchmarks.

It answers ``POST /v1/chat/completions`` with a deterministic assistant message and
``usage``, counts every request (in total and per request content: the text of the last
user message), checks the ``Authorization`` header when ``required_key`` is set, and
injects faults, either by directives in the last user message:

    [[429xN]]     the first N requests of this content get 429 + Retry-After: <retry_after>
    [[500xN]]     ... get 500
    [[slowxN]]    ... are answered after ``slow_seconds`` (past a client's timeout)
    [[dropxN]]    ... have their connection dropped without a response
    [[malformed]] 200 with a body that is not JSON
    [[empty]]     200 with ``choices: []``
    [[refuse]]    a refusal;  [[length]] finish_reason "length";  [[nousage]] no usage
    [[tool]]      a valid tool call of the first offered tool;  [[badtool]] invalid JSON args
    [[hang]]      never answered (until the server stops)
    [[echoauth]]  500 whose body echoes the Authorization header (a leaky proxy)

or by a schedule (``server.schedule.append("500")``: the next request gets that fault) or
``hang_after`` (after that many successful answers every request hangs: a run to kill).

In-process: ``with FakeOpenAI(latency=0.2) as srv: srv.url``. As a process (benchmarks):
``python testsupport/fake_openai.py --latency 0.2`` prints ``PORT <n>`` then serves.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import re
import sys
import threading
import time
from typing import Any

from aiohttp import web

_DIRECTIVE = re.compile(r"\[\[(\w+?)(?:x(\d+))?\]\]")


def content_key(body: dict[str, Any]) -> str:
    """What a request is counted by: the text of its last user message."""
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, list):
                c = "".join(p.get("text", "") for p in c if isinstance(p, dict))
            return c or ""
    return ""


class FakeOpenAI:
    def __init__(self, latency: float = 0.0, required_key: str | None = None,
                 retry_after: str = "1", slow_seconds: float = 3.0, host: str = "127.0.0.1",
                 port: int = 0, keep_bodies: bool = False) -> None:
        self.latency = latency
        self.required_key = required_key
        self.retry_after = retry_after
        self.slow_seconds = slow_seconds
        self.host, self.port = host, port
        self.keep_bodies = keep_bodies
        self.schedule: collections.deque[str] = collections.deque()
        self.hang_after: int | None = None
        self.lock = threading.Lock()
        self.reset()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._release: asyncio.Event | None = None

    # ------------------------------------------------------------------ counters
    def reset(self) -> None:
        with getattr(self, "lock", threading.Lock()):
            self.calls = 0
            self.ok = 0
            self.admitted = 0  # requests not held by hang_after
            self.by_content: collections.Counter[str] = collections.Counter()
            self.ok_by_content: collections.Counter[str] = collections.Counter()
            self.times_by_content: dict[str, list[float]] = collections.defaultdict(list)
            self.auth_ok = 0
            self.auth_bad = 0
            self.bodies: list[dict[str, Any]] = []
            self.models: collections.Counter[str] = collections.Counter()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # ------------------------------------------------------------------ handler
    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return web.json_response({"error": {"message": "bad json"}}, status=400)
        key = content_key(body)
        with self.lock:
            self.calls += 1
            self.by_content[key] += 1
            n = self.by_content[key]
            self.times_by_content[key].append(time.monotonic())
            self.models[body.get("model", "")] += 1
            if self.keep_bodies:
                self.bodies.append(body)
            fault = self.schedule.popleft() if self.schedule else None
            hang = self.hang_after is not None and self.admitted >= self.hang_after
            if not hang:
                self.admitted += 1
        if self.required_key is not None:
            if request.headers.get("Authorization") != f"Bearer {self.required_key}":
                with self.lock:
                    self.auth_bad += 1
                return web.json_response({"error": {"message": "invalid api key"}}, status=401)
            with self.lock:
                self.auth_ok += 1
        directives = {d: int(c) if c else None for d, c in _DIRECTIVE.findall(key)}
        if fault is None:
            for d in ("429", "500", "slow", "drop"):
                if d in directives and n <= (directives[d] or 1):
                    fault = d
                    break
        if fault is None:
            for d in ("malformed", "empty", "hang", "echoauth"):
                if d in directives:
                    fault = d
        if hang or fault == "hang":
            assert self._release is not None
            await self._release.wait()
            return web.Response(status=503)
        if fault == "429":
            return web.json_response({"error": {"message": "rate limited"}}, status=429,
                                     headers={"Retry-After": self.retry_after})
        if fault == "echoauth":  # a misbehaving proxy that echoes the request headers
            return web.json_response({"error": {"message": "upstream failed", "headers": {
                "authorization": request.headers.get("Authorization", "")}}}, status=500)
        if fault == "500":
            return web.json_response({"error": {"message": "boom"}}, status=500)
        if fault == "drop":
            assert request.transport is not None
            request.transport.abort()  # connection reset, no response
            raise asyncio.CancelledError
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        if self.latency:
            await asyncio.sleep(self.latency)
        if fault == "malformed":
            return web.Response(text='{"choices": [{"message": ', content_type="application/json")
        if fault == "empty":
            return web.json_response({"id": "x", "object": "chat.completion", "choices": []})
        text = f"Answer to: {key[:80]} (model {body.get('model')}, t={body.get('temperature')})"
        if "refuse" in directives:
            text = "I'm sorry, but I can't help with that request."
        message: dict[str, Any] = {"role": "assistant", "content": text}
        finish = "length" if "length" in directives else "stop"
        tools = body.get("tools") or []
        if ("tool" in directives or "badtool" in directives) and tools:
            name = tools[0].get("function", {}).get("name", "tool")
            args = '{"path": "README.md"' if "badtool" in directives else '{"path": "README.md"}'
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": name, "arguments": args}}]}
            finish = "tool_calls"
        resp: dict[str, Any] = {
            "id": f"chatcmpl-{n}", "object": "chat.completion", "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }
        if "nousage" not in directives:
            resp["usage"] = {"prompt_tokens": max(1, len(raw) // 4),
                             "completion_tokens": len(text.split()),
                             "total_tokens": max(1, len(raw) // 4) + len(text.split())}
        with self.lock:
            self.ok += 1
            self.ok_by_content[key] += 1
        return web.json_response(resp)

    # ------------------------------------------------------------------ lifecycle
    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.handle)
        self._release = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> "FakeOpenAI":
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            assert self._release is not None and self._runner is not None
            self._release.set()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(10)
        self._loop = None

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    args = ap.parse_args(argv)

    srv = FakeOpenAI(latency=args.latency, port=args.port)

    async def serve() -> None:
        await srv._start()
        print(f"PORT {srv.port}", flush=True)
        # "STATS" on stdin prints the call count; EOF stops the server
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = await reader.readline()
            if not line:
                break
            if line.strip() == b"STATS":
                print(f"CALLS {srv.calls} OK {srv.ok}", flush=True)
            elif line.strip() == b"RESET":
                srv.reset()
                print("RESET", flush=True)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
