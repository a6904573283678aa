"""FAKE OpenAI-compatible streaming server that sends token i at an exact
time, and keeps its own send stamps as the truth a client is judged against.

Never used to produce performance numbers of an engine: it exists to measure
the *client* (benchmarks/client_ceiling.py) and to produce, on demand, what a
real engine does not: a stream above the client's ceiling, a server that holds
tokens back and flushes them, a stall, a stream that never ends.

It runs as its own process (its own GIL, optionally pinned to one core) and
serves HTTP/1.1 (a thread per connection, one stream at a time) with chunked transfer encoding,
one chunk per SSE event, TCP_NODELAY: vLLM's (uvicorn's) framing. Events look
like vLLM's (with `token_ids`), for /v1/completions and /v1/chat/completions.

Control (plain JSON over HTTP):
  POST /pace   {"rate": tok/s, "ttft_s": s, "flush_from": i|null, "stall_after": i|null,
                "trickle_s": s|null, "batch": N|null, "serial": bool}   pace of the following requests
               (batch: N streams sent as one engine batch, token i to all at once; serial:
               one stream at a time, the others queued, as a server with one slot)
  GET  /truth  send stamps (server clock) of the last stream:
               {"n": tokens, "first": s, "last": s, "tg_tps": (n-1)/(last-first),
                "unsure_s": longest send call of the first/last token (a preemption)}
  GET  /truths a batch's streams since the last /pace: {first word of the prompt: truth}

Run: `python tests/fakes/paced_sse_server.py [--cpu N]`; prints `PORT <n>`.
From Python: `with PacedServer(cpu=0) as srv: srv.pace(rate=20000); srv.url`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

_PC = time.perf_counter


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(obj: dict) -> bytes:
    return _chunk(b"data: " + json.dumps(obj, separators=(", ", ": ")).encode() + b"\n\n")


class _Pace:
    def __init__(self) -> None:
        self.rate = 1000.0
        self.ttft_s = 0.002
        self.flush_from: int | None = None  # tokens from here on are held back and sent at once, at the end
        self.stall_after: int | None = None  # after this many tokens: silence, connection kept open
        self.trickle_s: float | None = None  # a token every trickle_s, forever (never closes)
        # N concurrent streams sent as one engine's batch: the N-th stream to
        # arrive starts a decode loop that sends token i to every stream at
        # t0 + i / rate (rate is per stream); the truth of each is kept by its
        # prompt's first word (GET /truths)
        self.batch: int | None = None
        # one stream at a time (a server with one slot): the others wait their turn
        self.serial: bool = False


def _events(body: dict, chat: bool, n: int) -> tuple[list[bytes], bytes]:
    """Per-token event bytes (built before the first send) and the tail."""
    model = body.get("model", "m")
    base = {"id": "cmpl-fake0123456789abcdef", "created": 1700000000, "model": model}
    evs = []
    for i in range(n):
        last = i == n - 1
        if chat:
            choice = {"index": 0, "delta": {"content": f" w{i % 100}"}, "logprobs": None,
                      "finish_reason": "length" if last else None, "token_ids": [1000 + i % 100]}
            obj = dict(base, object="chat.completion.chunk", choices=[choice], usage=None)
        else:
            choice = {"index": 0, "text": f" w{i % 100}", "logprobs": None,
                      "finish_reason": "length" if last else None, "stop_reason": None,
                      "token_ids": [1000 + i % 100]}
            obj = dict(base, object="text_completion", choices=[choice], usage=None)
        evs.append(_event(obj))
    prompt = body.get("prompt")
    if prompt is None:
        prompt = " ".join(str(m.get("content", "")) for m in body.get("messages") or [])
    usage = {"prompt_tokens": 1 + len(str(prompt).split()), "completion_tokens": n,
             "total_tokens": 1 + len(str(prompt).split()) + n}
    tail = _event(dict(base, object="chat.completion.chunk" if chat else "text_completion",
                       choices=[], usage=usage)) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    return evs, tail


class _Server:
    def __init__(self, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(16)
        self.pace = _Pace()
        self.truth: dict = {}
        self.truths: dict = {}  # a batch's streams, by the first word of their prompts
        self.lock = threading.Lock()
        self.serial_lock = threading.Lock()
        self.group: dict | None = None

    def serve_forever(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:  # no pacing by the congestion control (BBR defers small sends): a send is a transmit
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
            except OSError:
                pass
            # a thread per connection (a keep-alive client must not block /truth);
            # streams are measured one at a time, so they never share the GIL
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._connection(conn)
        except (ConnectionError, OSError):
            pass
        finally:
            conn.close()

    def _connection(self, conn: socket.socket) -> None:
        buf = b""
        while True:  # keep-alive: one request after another on this connection
            while b"\r\n\r\n" not in buf:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            head, _, buf = buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
            length = int(headers.get("content-length", 0))
            while len(buf) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            raw, buf = buf[:length], buf[length:]
            body = json.loads(raw) if raw else {}
            close = headers.get("connection", "").lower() == "close"
            if not self._request(conn, method, path.split("?")[0], body, close) or close:
                return

    def _json(self, conn: socket.socket, obj, status: int = 200, close: bool = False) -> bool:
        data = json.dumps(obj).encode()
        conn.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n%s"
                     % (status, len(data), b"Connection: close\r\n" if close else b"", data))
        return True

    def _request(self, conn, method: str, path: str, body: dict, close: bool) -> bool:
        if method == "GET" and path == "/truth":
            return self._json(conn, self.truth, close=close)
        if method == "GET" and path == "/truths":
            return self._json(conn, self.truths, close=close)
        if method == "GET" and path in ("/v1/models", "/health"):
            return self._json(conn, {"object": "list", "data": [{"id": "m", "object": "model"}]}, close=close)
        if method == "POST" and path == "/pace":
            p = _Pace()
            for k, v in body.items():
                setattr(p, k, v)
            self.pace = p
            self.truths = {}
            return self._json(conn, {"ok": True}, close=close)
        if method == "POST" and path == "/tokenize":
            return self._json(conn, {"count": 1 + len(str(body.get("prompt", "")).split())}, close=close)
        if method == "POST" and path in ("/v1/completions", "/v1/chat/completions"):
            return self._stream(conn, body, path.endswith("chat/completions"), close)
        return self._json(conn, {"detail": "Not Found"}, 404, close=close)

    def _stream(self, conn, body: dict, chat: bool, close: bool) -> bool:
        p = self.pace
        if p.batch and p.batch > 1:
            return self._batched(conn, body, chat, p)
        if p.serial:
            with self.serial_lock:
                return self._paced(conn, body, chat, close, p)
        return self._paced(conn, body, chat, close, p)

    def _paced(self, conn, body: dict, chat: bool, close: bool, p: _Pace) -> bool:
        n = int(body.get("max_tokens") or 16)
        evs, tail = _events(body, chat, n)
        sendall = conn.sendall
        sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
                b"transfer-encoding: chunked\r\n%s\r\n" % (b"connection: close\r\n" if close else b""))
        t0 = _PC() + p.ttft_s
        if chat:  # vLLM's chat stream opens with a role-only delta (a response, not content)
            while _PC() < t0:
                pass
            sendall(_event({"id": "cmpl-fake", "object": "chat.completion.chunk", "model": body.get("model"),
                            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "logprobs": None, "finish_reason": None}]}))
        if p.trickle_s:  # never closes: the client's total timeout must end it
            i = 0
            while True:
                sendall(evs[i % n])
                i += 1
                time.sleep(p.trickle_s)
        step = 1.0 / float(p.rate)
        sent = [0.0] * n
        held = b""
        unsure = 0.0
        for i in range(n):
            if p.stall_after is not None and i == p.stall_after:
                conn.recv(1)  # silence with the connection open until the client gives up (idle timeout)
                return False
            target = t0 + i * step
            while _PC() < target:
                pass
            if p.flush_from is not None and i >= p.flush_from:
                held += evs[i]  # "computed" on time, but held back
                sent[i] = target
                continue
            before = _PC()
            sendall(evs[i])
            sent[i] = _PC()
            if i in (0, n - 1):  # a preemption around the send makes its stamp unsure
                unsure = max(unsure, sent[i] - before)
        if held:
            sendall(held)
            now = _PC()
            for i in range(p.flush_from, n):
                sent[i] = now  # what the client can at best see: they all left now
        sendall(tail)
        span = sent[-1] - sent[0]
        self.truth = {"n": n, "first": sent[0], "last": sent[-1], "unsure_s": unsure,
                      "tg_tps": (n - 1) / span if n > 1 and span > 0 else None}
        return True


    def _batched(self, conn, body: dict, chat: bool, p: _Pace) -> bool:
        n = int(body.get("max_tokens") or 16)
        evs, tail = _events(body, chat, n)
        prompt = str(body.get("prompt") or "") or " ".join(str(m.get("content", ""))
                                                           for m in body.get("messages") or [])
        key = (prompt.split() or ["?"])[0]
        with self.lock:
            grp = self.group
            if grp is None:
                grp = self.group = {"members": [], "done": threading.Event()}
            grp["members"].append((conn, evs, tail, key))
            leader = len(grp["members"]) == p.batch
            if leader:
                self.group = None
        if not leader:  # the batch's leader sends this stream; wait for the batch to end
            return grp["done"].wait(60)
        members = grp["members"]
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"
        for c, *_ in members:
            c.sendall(head)
        t0 = _PC() + p.ttft_s
        step = 1.0 / float(p.rate)
        sent = [[0.0] * n for _ in members]
        unsure = [0.0] * len(members)
        for i in range(n):
            target = t0 + i * step
            while _PC() < target:
                pass
            for k, (c, evs_k, _, _) in enumerate(members):
                before = _PC()
                c.sendall(evs_k[i])
                sent[k][i] = _PC()
                if i in (0, n - 1):
                    unsure[k] = max(unsure[k], sent[k][i] - before)
        for c, _, tail_k, _ in members:
            c.sendall(tail_k)
        for k, (_, _, _, key_k) in enumerate(members):
            span = sent[k][-1] - sent[k][0]
            self.truths[key_k] = {"n": n, "first": sent[k][0], "last": sent[k][-1], "unsure_s": unsure[k],
                                  "tg_tps": (n - 1) / span if n > 1 and span > 0 else None}
        grp["done"].set()
        return True


class PacedServer:
    """The fake in its own process (pinned to `cpu` when given)."""

    def __init__(self, cpu: int | None = None) -> None:
        self.cpu = cpu
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def __enter__(self) -> "PacedServer":
        cmd = [sys.executable, os.path.abspath(__file__)]
        if self.cpu is not None:
            cmd += ["--cpu", str(self.cpu)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.__exit__()
            raise RuntimeError(f"paced fake server did not start: {line!r}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc.stdout.close()
            self.proc = None

    def _call(self, method: str, path: str, obj=None) -> dict:
        data = json.dumps(obj).encode() if obj is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def pace(self, rate: float, ttft_s: float = 0.002, **kw) -> None:
        self._call("POST", "/pace", dict(rate=rate, ttft_s=ttft_s, **kw))

    def truth(self) -> dict:
        return self._call("GET", "/truth")

    def truths(self) -> dict:
        """A batch's streams: {first word of the prompt: truth}."""
        return self._call("GET", "/truths")


def main() -> None:
    args = sys.argv[1:]
    if "--cpu" in args:
        os.sched_setaffinity(0, {int(args[args.index("--cpu") + 1])})
    srv = _Server()
    print(f"PORT {srv.sock.getsockname()[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
