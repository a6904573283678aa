"""FAKE llama-server for the build script's smoke test (tests/test_build_script.py):
answers /health and /completion the way llama-server does, nothing more. Never
used for numbers.

    python tests/fakes/fake_llama_server.py -m MODEL --port P [any other llama-server flags]
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # quiet
        pass

    def reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self.reply({"status": "ok"})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path != "/completion":
            self.send_error(404)
            return
        n = int(body.get("n_predict", 1))
        words = len(str(body.get("prompt", "")).split())
        self.reply({"content": " x" * n, "tokens_predicted": n, "tokens_evaluated": words,
                    "timings": {"prompt_per_second": 1000.0}})


def main(argv: list[str]) -> None:
    port = int(argv[argv.index("--port") + 1])
    print(f"fake llama-server: model {argv[argv.index('-m') + 1]} on port {port}", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
