"""FAKE OpenAI-compatible server with fault modes, for the fault suite
(tests/test_faults_*.py): what a real engine cannot produce on demand — a
/tokenize that answers empty or ignores the text, a stream that stalls or
never closes, usage that overstates the streamed tokens, a server that dies
mid-run or echoes its secrets into its log. Never used for performance numbers.

In-process:  `with FaultServer("stall") as url: ...`
As a process (for the process runner): `python tests/fakes/fault_server.py --port P --mode M [args...]`;
it prints its argv and environment the way vLLM logs "non-default args".
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODES = (
    "ok",                 # a well-behaved server
    "tokenize_empty",     # /tokenize -> {"tokens": []}
    "tokenize_constant",  # /tokenize -> {"count": 3} whatever the text (ignores the prompt)
    "tokenize_blank",     # /tokenize -> 200 with an empty body
    "tokenize_huge",      # /tokenize -> one token per 50 words: the prompt must grow absurdly
    "stall",              # first chunk, then silence (connection kept open)
    "no_close",           # every chunk and the usage, but no [DONE] and no close
    "usage_overstates",   # usage says max_tokens, but only a fifth of the token ids were streamed
    "http500",            # completions answer 500
    "break_mid",          # connection dropped mid-stream
    "malformed",          # a broken SSE data line
    "error_event",        # an error object mid-stream
    "wrong_prompt_tokens",  # usage.prompt_tokens off by 7
    "no_usage",           # no usage block at all
    "ctx_small",          # /v1/models says max_model_len 600
    "die_after_first",    # process exits after the first completion request
    "plain_json",         # stream: true answered with one plain JSON completion (no SSE)
)


def count_words(text: str) -> int:
    return 1 + len(str(text).split())


class FaultState:
    def __init__(self, mode: str = "ok", tokens_default: int = 8, die=None, interval_s: float = 0.004):
        if mode not in MODES:
            raise ValueError(f"unknown fake mode {mode!r}")
        self.mode = mode
        self.tokens_default = tokens_default
        self.requests = 0
        self.die = die  # callable for die_after_first (process mode)
        self.interval_s = interval_s  # between tokens: an even pace, not a burst
        self.stop = threading.Event()


def make_handler(state: FaultState):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _body(self) -> dict:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
            try:
                return json.loads(raw or b"{}")
            except ValueError:
                return {}

        def do_POST(self):
            body = self._body()
            mode = state.mode
            if self.path == "/tokenize":
                text = body.get("prompt")
                if text is None:
                    msgs = body.get("messages") or [{}]
                    text = msgs[-1].get("content", "")
                if mode == "tokenize_empty":
                    return self._json({"tokens": []})
                if mode == "tokenize_constant":
                    return self._json({"count": 3})
                if mode == "tokenize_blank":
                    return self._raw(b"", "application/json")
                if mode == "tokenize_huge":
                    return self._json({"count": 1 + len(str(text).split()) // 50})
                return self._json({"count": count_words(text)})
            if self.path == "/reset_prefix_cache":
                return self._json({})
            if not self.path.endswith("completions"):
                return self._json({"detail": "Not Found"}, 404)
            state.requests += 1
            if mode == "http500":
                return self._json({"error": {"message": "model overloaded"}}, 500)
            prompt = body.get("prompt")
            if prompt is None:
                prompt = (body.get("messages") or [{}])[-1].get("content", "")
            n = int(body.get("max_tokens") or state.tokens_default)
            if mode == "plain_json":  # as a server that ignores `stream` would answer
                return self._json({"object": "text_completion", "choices": [
                    {"index": 0, "text": " t" * n, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": count_words(prompt), "completion_tokens": n}})
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            streamed = max(2, n // 5) if mode == "usage_overstates" else n
            try:
                for i in range(streamed):
                    if mode == "stall" and i == 1:
                        state.stop.wait(3600)
                        return
                    if mode == "break_mid" and i == n // 2:
                        self.wfile.flush()
                        self.connection.shutdown(2)
                        return
                    if mode == "malformed" and i == 1:
                        self.wfile.write(b"data: {not json\n\n")
                        continue
                    if mode == "error_event" and i == 1:
                        self._event({"error": {"message": "engine died"}})
                        continue
                    self._event({"choices": [{"index": 0, "text": f" t{i}", "token_ids": [100 + i],
                                              "finish_reason": None}]})
                    time.sleep(state.interval_s)
                usage = {"prompt_tokens": count_words(prompt), "completion_tokens": n}
                if mode == "wrong_prompt_tokens":
                    usage["prompt_tokens"] += 7
                if mode != "no_usage":
                    self._event({"choices": [], "usage": usage})
                if mode == "no_close":
                    state.stop.wait(3600)
                    return
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return
            finally:
                if mode == "die_after_first" and state.die is not None:
                    state.die()

        def do_GET(self):
            if self.path == "/health":
                return self._json({})
            if self.path == "/v1/models":
                entry = {"id": "fake", "object": "model"}
                if state.mode == "ctx_small":
                    entry["max_model_len"] = 600
                return self._json({"object": "list", "data": [entry]})
            if self.path == "/metrics":
                return self._raw(b"# fake: no prefix cache counters\n", "text/plain")
            if self.path == "/version":
                return self._json({"version": "fake-0"})
            self._json({}, 404)

        def _event(self, obj):
            self.wfile.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
            self.wfile.flush()

        def _json(self, obj, status=200):
            self._raw(json.dumps(obj).encode(), "application/json", status)

        def _raw(self, data: bytes, ctype: str, status: int = 200):
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class FaultServer:
    """`with FaultServer("stall") as url:` serves on 127.0.0.1 in a thread."""

    def __init__(self, mode: str = "ok", port: int = 0):
        self.state = FaultState(mode)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), make_handler(self.state))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.state.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def main(argv: list[str]) -> None:
    port, mode, delay = 0, "ok", 0.0
    it = iter(range(len(argv)))
    for i in it:
        if argv[i] == "--port":
            port = int(argv[i + 1])
        elif argv[i] == "--mode":
            mode = argv[i + 1]
        elif argv[i] == "--startup-delay":
            delay = float(argv[i + 1])
        elif argv[i] == "--spawn-child":
            # like vLLM's engine core: a child in the server's process group, which the
            # parent-death signal does not reach when pytest is SIGKILLed
            import subprocess

            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    # like vLLM: the arguments and the environment it was given, into its log
    print(f"INFO fake server: non-default args: {argv!r}", flush=True)
    print(f"INFO fake server: env FAKE_VISIBLE={os.environ.get('FAKE_VISIBLE', '')!r} "
          f"HF_TOKEN={os.environ.get('HF_TOKEN', '')!r}", flush=True)
    if mode == "exit_at_start":
        print("ERROR fake server: refusing to start", flush=True)
        sys.exit(3)
    time.sleep(delay)
    state = FaultState(mode, die=lambda: os._exit(7))
    httpd = ThreadingHTTPServer(("127.0.0.1", port), make_handler(state))
    print(f"INFO fake server: listening on 127.0.0.1:{httpd.server_address[1]} mode {mode}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
