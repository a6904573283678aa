"""FAKE OpenAI-compatible server process with a set decode rate, for the
plugin's start/A-B wiring (which arm is which, what is reported, what an arm
that fails to start does). Never a source of performance numbers.

    python tests/fakes/rate_server.py --port N

Environment: FAKE_TPS (tokens per second, default 2000); FAKE_FAIL=1 exits
at once with status 3 (an arm that does not start); FAKE_STARTS_FILE: a file
one line is appended to per start (the test counts starts and their order,
with FAKE_ARM naming the arm); FAKE_JITTER=j alternates the rate of
successive starts between (1 + j) and (1 - j) (a between-start spread);
FAKE_NEIGHBOUR_START=k: on the k-th start (0-based, counted in the starts
file) a neighbour process of its own session spins a core for as long as
this server lives (a planted disturbance the plugin must see).
"""

from __future__ import annotations

import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    port = int(sys.argv[sys.argv.index("--port") + 1])
    if os.environ.get("FAKE_FAIL") == "1":
        print("fake: refusing to start (FAKE_FAIL=1)", flush=True)
        sys.exit(3)
    tps = float(os.environ.get("FAKE_TPS", "2000"))
    if os.environ.get("FAKE_STARTS_FILE"):
        path = os.environ["FAKE_STARTS_FILE"]
        k = len(open(path).read().split()) if os.path.exists(path) else 0
        # FAKE_JITTER j: start k runs at tps * (1 + j) for even k, (1 - j) for odd k
        j = float(os.environ.get("FAKE_JITTER", "0"))
        tps *= 1 + (j if k % 2 == 0 else -j)
        with open(path, "a") as f:
            f.write(os.environ.get("FAKE_ARM", "?") + "\n")
        if os.environ.get("FAKE_NEIGHBOUR_START") == str(k):
            import subprocess

            # own session, so it is not the server's process group: another process
            subprocess.Popen([sys.executable, "-c", "import os\np = os.getppid()\nwhile os.getppid() == p: pass"],
                             start_new_session=True)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            words = len(str(body.get("prompt", "")).split())
            if self.path == "/tokenize":
                return self._json({"count": 1 + words})
            if not self.path.endswith("completions"):
                return self._json({"detail": "Not Found"}, 404)
            n = int(body.get("max_tokens") or 16)
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            t0 = time.perf_counter() + 0.002
            for i in range(n):
                target = t0 + i / tps
                while time.perf_counter() < target:
                    time.sleep(max(0.0, min(0.0005, target - time.perf_counter())))
                self._event({"choices": [{"index": 0, "text": f" t{i}", "token_ids": [i + 5],
                                          "finish_reason": None}]})
            self._event({"choices": [], "usage": {"prompt_tokens": 1 + words, "completion_tokens": n}})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
            self.close_connection = True

        def do_GET(self):
            if self.path in ("/health", "/v1/models"):
                return self._json({"data": []})
            if self.path == "/metrics":
                return self._json({})
            return self._json({}, 404)

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

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
