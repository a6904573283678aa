"""The timed read of one streamed HTTP response: stamp every socket read, keep
the bytes, parse nothing until the stream has ended.

Why not the `openai` package / httpx here: through them each SSE event costs
the client ~20 us (h11 yields one HTTP chunk per event, then line splitting,
then JSON), so a fast stream outruns the client (measured: tg1024 read at
0.44-0.77 of the truth at 100k tok/s) and the first event, which also pays
for building the response objects, is stamped 100-250 us late (short fast
streams read high). Here the hot loop is `recvmsg` + one clock read + one
list append per read, ~1-2 us, and several events that arrive together cost
one read. Where the kernel offers it (Linux, plain TCP: SO_TIMESTAMPNS) each
read also carries the kernel's receive stamp of its last packet, so a read
holding one event is stamped at its arrival whenever the client woke up.
What the client could not see is kept too: per read, when the socket was
last seen empty (busy-polling) or when the read was asked for (blocking), so
the checks can bound how late each stamp may be.

Plain HTTP/1.1 (TLS when the URL says https), one fresh connection per
request, `Connection: close`; chunked, Content-Length and close-delimited
bodies. Environment proxies are not used: the thing timed is the server.
"""

from __future__ import annotations

import bisect
import json
import platform
import socket
import ssl
import struct
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pytest_mxfp4.errors import MeasurementError

_BUF = 1 << 18  # one read takes everything queued (a whole tg1024 stream is ~250 KB)
_CHUNKED_END = b"0\r\n\r\n"
# SO_TIMESTAMPNS (the asm-generic / x86 value; Python 3.11 does not name it), 64-bit timespec
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", None) or (
    35 if sys.platform == "linux" and platform.machine() in ("x86_64", "aarch64", "arm64") else None)
_ANC = 64  # ancillary buffer: one struct timespec
STALL_S = 20e-6  # a poll takes ~1-2 us; a gap this long between two is the client not running


class StreamTimeout(Exception):
    def __init__(self, which: str, limit_s: float):
        super().__init__(which)
        self.which = which
        self.limit_s = limit_s


@dataclass
class RawResponse:
    """Everything the socket gave, with a stamp (perf_counter s) per read."""

    start: float  # just before the request bytes were sent
    status: int = 0
    reason: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # one entry per recv that returned data: (stamp after it returned, bytes, before, spun, ancillary)
    #   spun: busy-polling; `before` = the last moment the socket was seen empty
    #   else: blocking recv; `before` = when the read was asked for
    #   ancillary: recvmsg's ancillary data (the kernel receive stamp) or None
    reads: list[tuple[float, bytes, float, bool, list | None]] = field(default_factory=list)
    clock_offset_ns: int = 0  # CLOCK_REALTIME - perf_counter, to read kernel stamps
    rcvbuf: int = 0  # the socket's receive buffer when the read began (SO_RCVBUF)
    # busy-polling: (from, to) of every gap of more than STALL_S between two polls. The
    # client was not running (preempted, possibly inside recvmsg holding the socket's
    # lock, so no ACKs went out and the server's sends waited): arrivals may be late.
    stalls: list[tuple[float, float]] = field(default_factory=list)
    body_start: int = -1  # offset of the body in the concatenated reads
    complete: bool = False  # the body ended as its framing says (or the peer closed a close-delimited one)
    broken: str | None = None  # why the stream ended early (reset, EOF mid-chunk)

    def raw(self) -> bytes:
        return b"".join(r[1] for r in self.reads)


def connect(url: str, timeout_s: float) -> tuple[socket.socket, str, str]:
    """A connected socket (TCP_NODELAY; kernel receive stamps where the
    kernel offers them), the Host header and the base path."""
    u = urlsplit(url)
    host = u.hostname or "127.0.0.1"
    tls = u.scheme == "https"
    port = u.port or (443 if tls else 80)
    sock = socket.create_connection((host, port), timeout=timeout_s)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tls:
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
    elif _SO_TIMESTAMPNS is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        except OSError:
            pass
    host_header = host if u.port is None else f"{host}:{u.port}"
    return sock, host_header, u.path.rstrip("/")


def request_bytes(method: str, path: str, host: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: close",
             f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def read_response(sock: socket.socket, start: float, total_s: float, idle_s: float, spin_s: float) -> RawResponse:
    """Read until the body ends. Busy-polls (non-blocking recv in a loop) until
    `start + spin_s`, then blocks. Raises StreamTimeout (total or idle)."""
    resp = RawResponse(start=start, clock_offset_ns=time.time_ns() - time.perf_counter_ns(),
                       rcvbuf=sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    reads = resp.reads
    append = reads.append
    pc = time.perf_counter
    deadline = start + total_s
    spin_end = start + spin_s
    # bytes still expected: unknown (inf) until the headers are parsed
    need = float("inf")
    chunked = False
    got = 0
    last_data = start
    head = b""
    try:
        if spin_s > 0:
            sock.setblocking(False)
            recv = _recvmsg(sock)
            # `empty`: the socket was seen empty no earlier than this. Stamped
            # *before* each recv: a recv that found nothing may return late
            # (the GIL, a preemption), and data arriving meanwhile must not
            # look fresh.
            empty = prev = start
            stalls = resp.stalls
            while True:
                before = pc()
                if before - prev > STALL_S:
                    stalls.append((prev, before))
                prev = before
                try:
                    data, anc, _f, _a = recv(_BUF, _ANC)
                except (BlockingIOError, ssl.SSLWantReadError):
                    if before > spin_end:
                        break
                    if before - last_data > idle_s:
                        raise StreamTimeout("idle", idle_s) from None
                    if before > deadline:
                        raise StreamTimeout("total", total_s) from None
                    empty = before
                    continue
                now = pc()
                if not data:
                    resp.complete = _ended(resp, chunked, got, need)
                    return resp
                append((now, data, empty, True, anc))
                if len(data) < _BUF:
                    empty = before  # drained by this read: later bytes arrived after `before`
                last_data = now
                got += len(data)
                if resp.body_start < 0:
                    head += data
                    if b"\r\n\r\n" in head:
                        need, chunked = _parse_head(resp, head)
                        head = b""
                if got >= need or (chunked and data.endswith(_CHUNKED_END) and _chunked_done(resp)):
                    resp.complete = True
                    return resp
        # blocking phase
        sock.setblocking(True)
        now = pc()
        if now >= deadline:
            raise StreamTimeout("total", total_s)
        if now - last_data >= idle_s:
            raise StreamTimeout("idle", idle_s)
        # the silence so far (while busy-polling) counts; reset after the next read
        sock.settimeout(min(idle_s - (now - last_data), deadline - now))
        soft = deadline - idle_s  # after this, the total limit is nearer than the idle one
        recv = _recvmsg(sock)
        while True:
            before = pc()
            try:
                data, anc, _f, _a = recv(_BUF, _ANC)
            except (socket.timeout, TimeoutError):
                now = pc()
                if now >= deadline - 1e-3:
                    raise StreamTimeout("total", total_s) from None
                raise StreamTimeout("idle", idle_s) from None
            now = pc()
            if not data:
                resp.complete = _ended(resp, chunked, got, need)
                return resp
            append((now, data, before, False, anc))
            got += len(data)
            if now > soft or len(reads) == 1 or reads[-2][3]:  # near the deadline, or the first blocking read
                if now >= deadline:
                    raise StreamTimeout("total", total_s)
                sock.settimeout(min(idle_s, deadline - now))
            if resp.body_start < 0:
                head += data
                if b"\r\n\r\n" in head:
                    need, chunked = _parse_head(resp, head)
                    head = b""
            if got >= need or (chunked and data.endswith(_CHUNKED_END) and _chunked_done(resp)):
                resp.complete = True
                return resp
    except OSError as e:  # reset, broken pipe, TLS errors (socket.timeout is handled above)
        resp.broken = f"{type(e).__name__}: {e}"
        return resp


def _recvmsg(sock: socket.socket):
    """sock.recvmsg, or recv shaped like it (TLS sockets have no recvmsg)."""
    if isinstance(sock, ssl.SSLSocket):
        recv = sock.recv
        return lambda n, _anc: (recv(n), None, 0, None)
    return sock.recvmsg


def kernel_stamp(resp: RawResponse, k: int) -> float | None:
    """The kernel's receive stamp of read k's last packet, on the perf_counter
    clock (None where the kernel gave none)."""
    anc = resp.reads[k][4]
    for level, kind, data in anc or ():
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return (sec * 1_000_000_000 + nsec - resp.clock_offset_ns) / 1e9
    return None


def _parse_head(resp: RawResponse, head: bytes) -> tuple[float, bool]:
    """Status and headers; returns (total bytes the response will have, chunked)."""
    end = head.index(b"\r\n\r\n")
    lines = head[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    try:
        resp.status = int(parts[1])
    except (IndexError, ValueError):
        raise MeasurementError(f"not an HTTP response: {lines[0][:80]!r}") from None
    resp.reason = parts[2] if len(parts) > 2 else ""
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        resp.headers[k.strip().lower()] = v.strip()
    resp.body_start = end + 4
    if "chunked" in resp.headers.get("transfer-encoding", "").lower():
        return float("inf"), True
    if "content-length" in resp.headers:
        return resp.body_start + int(resp.headers["content-length"]), False
    return float("inf"), False


def _ended(resp: RawResponse, chunked: bool, got: int, need: float) -> bool:
    """At EOF: did the body end as its framing says?"""
    if resp.body_start < 0:
        return False
    if chunked:
        return _chunked_done(resp)
    return got >= need or need == float("inf")


def _chunked_done(resp: RawResponse) -> bool:
    try:
        return dechunk(resp.raw(), resp.body_start)[1]
    except ValueError:
        return False


def dechunk(raw: bytes, pos: int) -> tuple[list[tuple[int, int, int]], bool]:
    """Chunked transfer decoding that remembers where each body byte came
    from: segments (body offset, raw offset, length) and whether the final
    zero-length chunk was seen. Raises ValueError on bad framing."""
    segs: list[tuple[int, int, int]] = []
    body_off = 0
    n = len(raw)
    while pos < n:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            return segs, False
        size = int(raw[pos:eol].split(b";", 1)[0].strip() or b"x", 16)
        if size == 0:
            return segs, True
        data_at = eol + 2
        take = min(size, n - data_at)
        if take > 0:
            segs.append((body_off, data_at, take))
            body_off += take
        if take < size:
            return segs, False
        pos = data_at + size + 2
    return segs, False


@dataclass
class DataLine:
    payload: str  # after "data:", stripped
    read: int  # index of the read that completed this line


def data_lines(resp: RawResponse) -> list[DataLine]:
    """Every SSE `data:` line of the body, with the read that completed it."""
    raw = resp.raw()
    if resp.body_start < 0:
        return []
    if "chunked" in resp.headers.get("transfer-encoding", "").lower():
        segs, _ = dechunk(raw, resp.body_start)
        body = b"".join(raw[r:r + ln] for _, r, ln in segs)
    else:
        end = len(raw)
        if "content-length" in resp.headers:
            end = min(end, resp.body_start + int(resp.headers["content-length"]))
        body = raw[resp.body_start:end]
        segs = [(0, resp.body_start, len(body))]
    read_ends = []
    acc = 0
    for r in resp.reads:
        acc += len(r[1])
        read_ends.append(acc)  # raw offsets < read_ends[k] were in reads 0..k
    seg_starts = [s[0] for s in segs]
    out = []
    pos = 0
    for line in body.split(b"\n"):
        eol = pos + len(line)  # body offset of this line's "\n"
        pos = eol + 1
        if pos > len(body):
            break  # an unterminated last line: incomplete, not an event
        if not line.startswith(b"data:"):
            continue
        i = bisect.bisect_right(seg_starts, eol) - 1
        b0, r0, _ = segs[i]
        raw_off = r0 + (eol - b0)
        k = bisect.bisect_right(read_ends, raw_off)
        out.append(DataLine(line[5:].strip().decode("utf-8", "replace"), k))
    return out


def error_message(resp: RawResponse) -> str:
    """The server's own words for a non-200 answer, as the openai package
    would show them (error.message, message or detail), else the text."""
    raw = resp.raw()
    body = raw[resp.body_start:] if resp.body_start >= 0 else raw
    if "chunked" in resp.headers.get("transfer-encoding", "").lower():
        try:
            segs, _ = dechunk(raw, resp.body_start)
            body = b"".join(raw[r:r + ln] for _, r, ln in segs)
        except ValueError:
            pass
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text or resp.reason
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        for k in ("message", "detail", "error"):
            if data.get(k):
                return str(data[k])
    return text
