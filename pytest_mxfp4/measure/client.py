"""Talks to an OpenAI-compatible server.

The measured request is built with the OpenAI API's body (the `openai`
package's keyword arguments, `extra_body` merged in as the package does) but
sent and read on a plain socket (measure/rawstream.py): each socket read is
stamped and kept, and SSE/JSON is parsed only after the stream has ended.
Through the package (httpx/h11, one HTTP chunk object per event) a fast
stream outran the client (tg1024 at 100k tok/s read as 0.44-0.77 of the
truth) and the first event was stamped 100-250 us late. Errors keep the API's
shape: the server's status and `error.message`. Side endpoints (/tokenize,
/metrics, /reset_prefix_cache) are plain httpx calls.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass

import httpx
import openai

from pytest_mxfp4.errors import MeasurementError, ServerError
from pytest_mxfp4.measure import rawstream
from pytest_mxfp4.measure.spec import SpecCounts
from pytest_mxfp4.measure.spec import parse_counters as parse_spec_counters
from pytest_mxfp4.measure.timing import ReadInfo, StreamTiming

# Busy-poll the socket for the first 250 ms of each request: a short, fast
# stream then has every stamp (the first one too) within a few us of arrival;
# a blocking read pays the wake-up from idle on its first event (tens of us:
# a tg128 at 20k tok/s lasts 6 ms). Longer requests block after that, so a
# slow stream does not keep a core spinning (an engine may share it).
BUSY_POLL_S = 0.25


@dataclass(frozen=True)
class RequestSpec:
    prompt: str  # for api "chat" this is the user message
    max_tokens: int


@dataclass
class OpenStream:
    """A connected socket and the request bytes, not yet sent."""

    sock: object
    request: bytes


class EngineClient:
    def __init__(self, name: str, base_url: str, model: str, engine: str = "vllm", api: str = "completions",
                 timeout_s: float = 600.0, total_timeout_s: float | None = None,
                 idle_timeout_s: float | None = None, busy_poll_s: float = BUSY_POLL_S):
        """total_timeout_s: the whole streamed request; idle_timeout_s: no byte
        at all for that long (both default to timeout_s). busy_poll_s: spin on
        the socket for the first seconds of each request (0: always block)."""
        self.name = name
        self.total_timeout_s = float(total_timeout_s if total_timeout_s is not None else timeout_s)
        self.idle_timeout_s = float(idle_timeout_s if idle_timeout_s is not None else timeout_s)
        self.busy_poll_s = float(busy_poll_s)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.engine = engine
        self.api = api
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout_s)
        self.openai = openai.OpenAI(
            base_url=self.base_url + "/v1",
            api_key=os.environ.get("OPENAI_API_KEY", "EMPTY"),
            max_retries=0,
            timeout=timeout_s,
        )
        self._reset_supported: bool | None = None

    def close(self) -> None:
        self.http.close()
        self.openai.close()

    # -- side endpoints -------------------------------------------------------

    def count_tokens(self, prompt: str) -> int:
        """Prompt length as the server will count it (incl. BOS / chat template)."""
        if self.engine == "llama.cpp":
            return self._count_tokens_llamacpp(prompt)
        body: dict = {"model": self.model}
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
            body["add_generation_prompt"] = True
        else:
            body["prompt"] = prompt
        try:
            r = self.http.post("/tokenize", json=body)
        except httpx.HTTPError as e:
            raise ServerError(f"server {self.name!r}: /tokenize failed: {e}") from None
        if r.status_code == 404:
            raise ServerError(
                f"server {self.name!r} has no /tokenize endpoint; exact prompt lengths need it "
                f"(vLLM and llama.cpp's llama-server provide one)"
            )
        if r.status_code != 200:
            raise ServerError(f"server {self.name!r}: /tokenize answered {r.status_code}: {r.text[:200]}")
        try:
            data = r.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise ServerError(f"server {self.name!r}: /tokenize answered {r.text[:80]!r}, not a JSON object "
                              "with 'count' or 'tokens'")
        if isinstance(data.get("count"), int) and not isinstance(data.get("count"), bool):
            return int(data["count"])
        if isinstance(data.get("tokens"), list):
            return len(data["tokens"])
        raise ServerError(f"server {self.name!r}: /tokenize answer has neither 'count' nor 'tokens': {str(data)[:200]}")

    def _count_tokens_llamacpp(self, prompt: str) -> int:
        """llama-server reads only `content` (+ `add_special`): vLLM's body gets
        HTTP 200 with `{"tokens": []}`. `add_special: true` tokenizes as
        /v1/completions does (BOS included). For api "chat" the server's own
        chat template is applied first (/apply-template), then the result is
        tokenized with its special tokens parsed, as /v1/chat/completions does."""
        def as_json(resp: httpx.Response):
            try:
                return resp.json()
            except ValueError:
                return None

        content = prompt
        body: dict = {"add_special": True}
        if self.api == "chat":
            try:
                r = self.http.post("/apply-template", json={"messages": [{"role": "user", "content": prompt}]})
            except httpx.HTTPError as e:
                raise ServerError(f"server {self.name!r}: /apply-template failed: {e}") from None
            if r.status_code != 200 or not isinstance(as_json(r), dict) or "prompt" not in r.json():
                raise ServerError(f"server {self.name!r}: /apply-template answered {r.status_code}: {r.text[:200]} "
                                  "(exact chat prompt lengths need llama-server's chat template endpoint)")
            content = r.json()["prompt"]
            body["parse_special"] = True
        body["content"] = content
        try:
            r = self.http.post("/tokenize", json=body)
        except httpx.HTTPError as e:
            raise ServerError(f"server {self.name!r}: /tokenize failed: {e}") from None
        if r.status_code != 200:
            raise ServerError(f"server {self.name!r}: /tokenize answered {r.status_code}: {r.text[:200]}")
        data = as_json(r)
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise ServerError(f"server {self.name!r}: /tokenize answer has no 'tokens' list: {r.text[:200]}")
        return len(data["tokens"])

    def prefix_cache_hits(self) -> float | None:
        """Cumulative prefix-cache hit tokens from /metrics (None if not exposed).
        vLLM: `vllm:prefix_cache_hits_total`; llama.cpp (with --metrics):
        `llamacpp:prompt_tokens_cached_total`, the prompt tokens it reused."""
        return self.counters()[0]

    def counters(self) -> tuple[float | None, SpecCounts | None]:
        """One /metrics reading: (prefix-cache hit tokens, speculative-decoding
        counts; measure/spec.py), each None where the server does not expose it."""
        try:
            r = self.http.get("/metrics")
        except httpx.HTTPError:
            return None, None
        if r.status_code != 200:
            return None, None
        hits = (parse_llamacpp_cached_tokens(r.text) if self.engine == "llama.cpp"
                else parse_prefix_cache_hits(r.text))
        return hits, parse_spec_counters(r.text)

    def server_version(self) -> str | None:
        """The engine's own version where it tells (vLLM: GET /version;
        llama.cpp: `build_info` of GET /props, e.g. "b8012-0c1e57098")."""
        if self.engine == "llama.cpp":
            try:
                r = self.http.get("/props")
                if r.status_code == 200:
                    data = r.json()
                    return str(data.get("build_info") or data.get("version") or "") or None
            except (httpx.HTTPError, ValueError, AttributeError):
                pass
            return None
        try:
            r = self.http.get("/version")
            if r.status_code == 200:
                return str(r.json().get("version")) or None
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        return None

    def reset_prefix_cache(self) -> bool:
        """Reset the server's prefix cache where it offers that (vLLM needs
        VLLM_SERVER_DEV_MODE=1). Returns whether it did. vLLM only: llama.cpp
        has no such endpoint; every request sends `cache_prompt: false`
        instead (see `prefix_cache_note`)."""
        if self.engine == "llama.cpp":
            return False
        if self._reset_supported is False:
            return False
        try:
            r = self.http.post("/reset_prefix_cache")
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        self._reset_supported = ok
        return ok

    @property
    def prefix_cache_note(self) -> str:
        """Why no prefix-cache reset happened, worded for this engine."""
        if self.engine == "llama.cpp":
            return ("prefix-cache reset is vLLM-only; llama.cpp requests send cache_prompt: false instead, and the "
                    "hit check reads llamacpp:prompt_tokens_cached_total where --metrics is on (start llama-server "
                    "with --cache-ram 0 so no host-RAM prompt-cache save lands in TTFT)")
        return ("server offers no /reset_prefix_cache; relying on unique prompts "
                "(vLLM: set VLLM_SERVER_DEV_MODE=1 to enable it)")

    def latency_s(self, mode: str, repeats: int = 3) -> float:
        """Round-trip latency subtracted from ttfr (llama-benchy's latency modes)."""
        if mode == "none":
            return 0.0
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            if mode == "api":
                try:
                    self.http.get("/v1/models").raise_for_status()
                except httpx.HTTPError as e:
                    raise ServerError(f"server {self.name!r}: /v1/models failed while measuring latency: {e}") from None
                samples.append(time.perf_counter() - t0)
            else:  # generation: time to first response of a 1-token request
                t = self.stream(RequestSpec("hello", 1), exact=False)
                samples.append((t.first_response or t.end or t0) - t.start)
        return sum(samples) / len(samples)

    # -- the measured request ---------------------------------------------------

    def _create_kwargs(self, spec: RequestSpec, exact: bool) -> dict:
        extra: dict = {}
        if exact:
            # exactly max_tokens: vLLM honours min_tokens + ignore_eos; llama.cpp
            # ignores min_tokens and stops at n_predict (= max_tokens) with ignore_eos
            extra["ignore_eos"] = True
            if self.engine == "vllm":
                extra["min_tokens"] = spec.max_tokens
            elif self.engine == "llama.cpp":
                extra["n_predict"] = spec.max_tokens
        if self.engine == "vllm":
            extra["return_token_ids"] = True
        elif self.engine == "llama.cpp":
            # no reuse of an earlier request's KV: every sample prefills its whole prompt
            extra["cache_prompt"] = False
        kw = dict(model=self.model, max_tokens=spec.max_tokens, stream=True,
                  stream_options={"include_usage": True}, temperature=0.0, extra_body=extra)
        if self.api == "chat":
            kw["messages"] = [{"role": "user", "content": spec.prompt}]
        else:
            kw["prompt"] = spec.prompt
        return kw

    def _request_body(self, spec: RequestSpec, exact: bool) -> bytes:
        """The body the `openai` package would send for these kwargs."""
        kw = dict(self._create_kwargs(spec, exact))
        extra = kw.pop("extra_body", None) or {}
        return json.dumps({**kw, **extra}).encode()

    def stream(self, spec: RequestSpec, exact: bool = True) -> StreamTiming:
        """One streamed request, timed on the socket (see rawstream.py)."""
        return self.send(self.open_stream(spec, exact))

    def open_stream(self, spec: RequestSpec, exact: bool = True) -> "OpenStream":
        """Connect and build the request, sending nothing: N concurrent streams
        connect first and are then released together (measure/concurrent.py),
        so connection setup never staggers their start."""
        path = "/v1/chat/completions" if self.api == "chat" else "/v1/completions"
        body = self._request_body(spec, exact)
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream",
                   "User-Agent": "pytest-mxfp4", "Authorization": f"Bearer {self.openai.api_key}"}
        try:
            sock, host, base_path = rawstream.connect(self.base_url, min(self.idle_timeout_s, self.total_timeout_s))
        except OSError as e:
            raise MeasurementError(f"server {self.name!r}: connection failed: {e}") from None
        return OpenStream(sock, rawstream.request_bytes("POST", base_path + path, host, body, headers))

    def send(self, opened: "OpenStream", busy_poll_s: float | None = None, parse: bool = True):
        """Send an opened request and read its stream to the end (the socket is
        closed after); its StreamTiming, or with parse=False what was read
        (`timing(raw)` later: concurrent streams parse after every stream has
        ended, so no stream's parsing holds the GIL while another reads)."""
        sock = opened.sock
        try:
            start = time.perf_counter()
            try:
                sock.sendall(opened.request)
            except OSError as e:
                raise MeasurementError(f"server {self.name!r}: connection failed: {e}") from None
            resp = rawstream.read_response(sock, start, self.total_timeout_s, self.idle_timeout_s,
                                           self.busy_poll_s if busy_poll_s is None else busy_poll_s)
        except rawstream.StreamTimeout as e:
            what = ("the streamed request was not over in time; if it is only slow, raise "
                    "workloads.request_timeout_s" if e.which == "total" else
                    "not a byte arrived for that long (a stalled engine?); if its first token is only slow, "
                    "raise workloads.idle_timeout_s")
            raise StreamTimeout(f"server {self.name!r}: {e.which} timeout ({e.limit_s:g} s): {what}") from None
        except OSError as e:  # closed under it (an interrupted concurrent round)
            raise MeasurementError(f"server {self.name!r}: connection failed: {e}") from None
        finally:
            sock.close()
        return self._timing(resp) if parse else resp

    def timing(self, raw: rawstream.RawResponse) -> StreamTiming:
        """The StreamTiming of a response read by send(parse=False)."""
        return self._timing(raw)

    def _timing(self, resp: rawstream.RawResponse) -> StreamTiming:
        """Parse what was read, after the fact; stamps come from the reads
        (the kernel's receive stamp where there is one, else the client's)."""
        t0 = time.perf_counter()
        timing = StreamTiming(start=resp.start)
        if resp.body_start < 0:
            why = resp.broken or "connection closed"
            raise MeasurementError(f"server {self.name!r}: no HTTP response ({why})")
        if resp.status != 200:
            raise MeasurementError(f"server {self.name!r} answered {resp.status}: "
                                   f"{_short(rawstream.error_message(resp))}")
        try:
            lines = rawstream.data_lines(resp)
        except ValueError as e:
            raise MeasurementError(f"server {self.name!r}: bad chunked framing: {e}") from None
        kernel = [rawstream.kernel_stamp(resp, k) for k in range(len(resp.reads))]
        stamps = [ks if ks is not None else r[0] for ks, r in zip(kernel, resp.reads)]
        timing.reads = len(resp.reads)
        timing.kernel_stamps = any(ks is not None for ks in kernel)
        timing.max_read_bytes = max((len(r[1]) for r in resp.reads), default=0)
        timing.rcvbuf = resp.rcvbuf
        content_read, in_read = -1, 0
        for line in lines:
            now = stamps[line.read]
            if line.payload == "[DONE]":
                timing.end = now
                break
            if timing.first_response is None:
                timing.first_response = now
            n = timing.content_chunks
            _absorb_chunk(timing, line.payload, now, self.name)
            if timing.content_chunks > n:  # a content event: group it by read
                if line.read != content_read:
                    if in_read:
                        timing.content_reads.append(_read_info(resp, kernel, content_read, in_read))
                    content_read, in_read = line.read, 0
                in_read += 1
        if in_read:
            timing.content_reads.append(_read_info(resp, kernel, content_read, in_read))
        if timing.first_content is not None and timing.last_content is not None:
            lo, hi = timing.first_content, timing.last_content
            if timing.kernel_stamps:  # how long arrived data waited for the client to read it
                timing.stall_s = max((r[0] - ks for r, ks in zip(resp.reads, kernel)
                                      if ks is not None and lo <= ks <= hi), default=0.0)
            else:  # busy-polling: the client not running between two polls
                timing.stall_s = max((min(b, hi) - max(a, lo) for a, b in resp.stalls if b > lo and a < hi),
                                     default=0.0)
        timing.parse_s = time.perf_counter() - t0
        if timing.end is None:
            ctype = resp.headers.get("content-type", "")
            if not lines and "event-stream" not in ctype:
                # not a broken stream: no stream at all (a server or proxy that ignores `stream`)
                raise MeasurementError(
                    f"server {self.name!r} answered a streamed request (stream: true) with a plain "
                    f"{ctype.split(';')[0] or 'non-SSE'} body, not a text/event-stream; time-to-first-token "
                    "and decode speed cannot be measured. Does this endpoint support streaming?")
            # a dying engine, a reset, or a close-delimited body that just stops
            why = resp.broken or "connection closed before [DONE]"
            raise MeasurementError(f"server {self.name!r}: stream broke after {timing.content_chunks} chunks ({why})")
        return timing


class StreamTimeout(MeasurementError):
    """A request hit request_timeout_s or idle_timeout_s: the engine stalled
    (the runner stops the case rather than wait that long once per run)."""


def _read_info(resp: rawstream.RawResponse, kernel: list, k: int, m: int) -> ReadInfo:
    """How late read k's stamp may be for its first and its last content event
    (StreamTiming.content_reads)."""
    now, _, before, spun, _ = resp.reads[k]
    prev = resp.reads[k - 1][0] if k > 0 else resp.start
    ks = kernel[k]
    if ks is not None:  # stamped at its last packet's arrival: exact for the read's last event
        if m == 1:
            return ReadInfo(1, 0.0, 0.0)
        if spun:  # the earlier events arrived after the socket was last seen empty
            return ReadInfo(m, max(0.0, ks - before), 0.0)
        if ks <= before:  # all of it waited for the client: it arrived after the previous read
            return ReadInfo(m, max(0.0, ks - prev), 0.0)
        return ReadInfo(m, max(0.0, before - prev), 0.0, first_estimated=True)
    if spun:
        late = max(0.0, now - before)
        return ReadInfo(m, late, late)
    busy = max(0.0, before - prev)
    return ReadInfo(m, busy, busy, first_estimated=True, last_estimated=True)


def _short(s: str, n: int = 300) -> str:
    return s if len(s) <= n else s[:n] + "…"


def _absorb_chunk(t: StreamTiming, payload: str, now: float, server: str) -> None:
    try:
        chunk = json.loads(payload)
    except json.JSONDecodeError:
        raise MeasurementError(f"server {server!r} sent a malformed SSE data line: {_short(payload, 120)!r}") from None
    if not isinstance(chunk, dict):
        raise MeasurementError(f"server {server!r} sent a non-object SSE chunk: {_short(payload, 120)!r}")
    if "error" in chunk:
        raise MeasurementError(f"server {server!r} reported an error mid-stream: {_short(str(chunk['error']))}")
    if chunk.get("system_fingerprint"):
        t.system_fingerprint = chunk["system_fingerprint"]
    if isinstance(chunk.get("timings"), dict):  # llama.cpp: the server's own times, final chunk
        t.server_timings = chunk["timings"]
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        t.prompt_tokens = usage.get("prompt_tokens", t.prompt_tokens)
        t.completion_tokens = usage.get("completion_tokens", t.completion_tokens)
    for choice in chunk.get("choices") or []:
        text = choice.get("text")
        if text is None:
            delta = choice.get("delta") or {}
            text = delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
        ids = choice.get("token_ids")
        n_ids = len(ids) if isinstance(ids, list) else 0
        t.token_ids_seen += n_ids
        if text or n_ids:
            if t.first_content is None:
                t.first_content = now
            t.last_content = now
            t.content_chunks += 1
            t.chunk_times.append(now)
        if choice.get("finish_reason"):
            t.finish_reason = choice["finish_reason"]


_HITS = re.compile(r"^(?:vllm:)?(?:gpu_)?prefix_cache_hits(?:_total)?(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.M)


def parse_prefix_cache_hits(metrics_text: str) -> float | None:
    """Sum of prefix-cache hit counters (vLLM V1 `vllm:prefix_cache_hits_total`,
    older `vllm:gpu_prefix_cache_hits`). External (KV-connector) caches are not ours."""
    values = [float(m.group(1)) for m in _HITS.finditer(metrics_text)]
    return sum(values) if values else None


_LLAMACPP_CACHED = re.compile(r"^llamacpp:prompt_tokens_cached_total(?:\{[^}]*\})?\s+([0-9.eE+-]+)\s*$", re.M)


def parse_llamacpp_cached_tokens(metrics_text: str) -> float | None:
    """llama-server's counter of prompt tokens reused from its cache (None if absent)."""
    m = _LLAMACPP_CACHED.search(metrics_text)
    return float(m.group(1)) if m else None
