"""A tiny OpenAI-compatible chat server on 127.0.0.1 (the escalation target in tests).

It counts requests, records whether an Authorization header came with them, and answers
according to ``mode``: "ok" (``reply``), "fail" (HTTP 500 every time), or "flaky" (``fail_first``
503/429 answers, then ok).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LoopbackLLM:
    def __init__(self, reply: str = "ok", model: str = "loopback-large"):
        self.reply = reply
        self.model = model
        self.mode = "ok"
        self.fail_first = 0
        self.fail_status = 503
        self.requests: list[dict] = []
        self.auth_headers: list[str | None] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def count(self) -> int:
        return len(self.requests)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> "LoopbackLLM":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n) or b"{}")
                with owner._lock:
                    owner.requests.append(body)
                    owner.auth_headers.append(self.headers.get("Authorization"))
                    i = len(owner.requests)
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": "not found"})
                if owner.mode == "fail" or (owner.mode == "flaky" and i <= owner.fail_first):
                    status = 500 if owner.mode == "fail" else owner.fail_status
                    return self._send(status, {"error": {"message": "unavailable"}})
                reply = owner.reply(body) if callable(owner.reply) else owner.reply
                self._send(200, {
                    "id": f"cmpl-{i}", "object": "chat.completion", "model": owner.model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 20, "total_tokens": 30},
                })

            def _send(self, status, obj):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
