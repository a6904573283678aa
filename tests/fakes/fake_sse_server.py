"""FAKE OpenAI-compatible server, for what a real engine cannot produce on
demand: a stream that breaks mid-way, malformed SSE lines, wrong token
counts, an error event. Never used to produce performance numbers."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeBehaviour:
    def __init__(self, tokens: int = 8, break_after: int | None = None, malformed: bool = False,
                 usage_completion: int | None = None, error_event: bool = False, status: int = 200):
        self.tokens = tokens
        self.break_after = break_after
        self.malformed = malformed
        self.usage_completion = usage_completion
        self.error_event = error_event
        self.status = status


class FakeSSEServer:
    """`with FakeSSEServer(FakeBehaviour(...)) as url:` serves on 127.0.0.1."""

    def __init__(self, behaviour: FakeBehaviour):
        self.b = behaviour
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/tokenize":
                    n = 1 + len(str(body.get("prompt", "")).split())
                    return self._json({"count": n})
                if not self.path.endswith("completions"):
                    return self._json({"detail": "Not Found"}, 404)
                b = outer.b
                if b.status != 200:
                    return self._json({"error": {"message": "model overloaded"}}, b.status)
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                for i in range(b.tokens):
                    if b.break_after is not None and i == b.break_after:
                        self.wfile.flush()
                        self.connection.shutdown(2)  # abrupt close mid-stream
                        return
                    if b.malformed and i == 2:
                        self.wfile.write(b"data: {not json\n\n")
                        continue
                    if b.error_event and i == 2:
                        self._event({"error": {"message": "engine died"}})
                        continue
                    self._event({"choices": [{"index": 0, "text": f" t{i}", "finish_reason": None}]})
                n = b.usage_completion if b.usage_completion is not None else b.tokens
                self._event({"choices": [], "usage": {"prompt_tokens": 1 + len(str(body.get('prompt', '')).split()),
                                                        "completion_tokens": n}})
                self.wfile.write(b"data: [DONE]\n\n")

            def do_GET(self):
                if self.path in ("/health", "/v1/models"):
                    return self._json({"data": []})
                if self.path == "/metrics":
                    return self._text("# no prefix cache here\n")
                self._json({}, 404)

            def _event(self, obj):
                self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
                self.wfile.flush()

            def _json(self, obj, status=200):
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _text(self, s):
                data = s.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
