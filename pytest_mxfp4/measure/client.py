"""Talks to an OpenAI-compatible server.

Requests and their errors go through the `openai` package, but times are
stamped on the raw SSE lines (`with_streaming_response` + `iter_lines`): the
package's per-chunk objects cost ~60 us more per chunk than reading the lines
ourselves, which caps an honest measurement near 5k tok/s. Side endpoints
(/tokenize, /metrics, /reset_prefix_cache) are plain httpx calls.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass

import httpx
import openai

from ..errors import MeasurementError, ServerError
from .timing import StreamTiming


@dataclass(frozen=True)
class RequestSpec:
    prompt: str  # for api "chat" this is the user message
    max_tokens: int


class EngineClient:
    def __init__(self, name: str, base_url: str, model: str, engine: str = "vllm", api: str = "completions",
                 timeout_s: float = 600.0):
        self.name = name
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

    def prefix_cache_hits(self) -> float | None:
        """Cumulative prefix-cache hit tokens from /metrics (None if not exposed)."""
        try:
            r = self.http.get("/metrics")
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        return parse_prefix_cache_hits(r.text)

    def server_version(self) -> str | None:
        """The engine's own version where it tells (vLLM: GET /version)."""
        try:
            r = self.http.get("/version")
            if r.status_code == 200:
                return str(r.json().get("version")) or None
        except (httpx.HTTPError, ValueError, AttributeError):
            pass
        return None

    def reset_prefix_cache(self) -> bool:
        """Reset the server's prefix cache where it offers that (vLLM needs
        VLLM_SERVER_DEV_MODE=1). Returns whether it did."""
        if self._reset_supported is False:
            return False
        try:
            r = self.http.post("/reset_prefix_cache")
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        self._reset_supported = ok
        return ok

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
            # exactly max_tokens: vLLM honours min_tokens + ignore_eos; llama.cpp ignore_eos
            extra["ignore_eos"] = True
            if self.engine == "vllm":
                extra["min_tokens"] = spec.max_tokens
        if self.engine == "vllm":
            extra["return_token_ids"] = True
        kw = dict(model=self.model, max_tokens=spec.max_tokens, stream=True,
                  stream_options={"include_usage": True}, temperature=0.0, extra_body=extra)
        if self.api == "chat":
            kw["messages"] = [{"role": "user", "content": spec.prompt}]
        else:
            kw["prompt"] = spec.prompt
        return kw

    def stream(self, spec: RequestSpec, exact: bool = True) -> StreamTiming:
        endpoint = self.openai.chat.completions if self.api == "chat" else self.openai.completions
        kwargs = self._create_kwargs(spec, exact)
        timing = StreamTiming(start=time.perf_counter())
        try:
            with endpoint.with_streaming_response.create(**kwargs) as response:
                for line in response.iter_lines():
                    now = time.perf_counter()
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        timing.end = now
                        break
                    if timing.first_response is None:
                        timing.first_response = now
                    _absorb_chunk(timing, payload, now, self.name)
        except openai.APIStatusError as e:
            raise MeasurementError(f"server {self.name!r} answered {e.status_code}: {_short(e.message)}") from None
        except openai.APIConnectionError as e:
            raise MeasurementError(f"server {self.name!r}: connection failed: {e.__cause__ or e}") from None
        except httpx.HTTPError as e:  # e.g. RemoteProtocolError: the stream broke mid-way
            raise MeasurementError(f"server {self.name!r}: stream broke after {timing.content_chunks} chunks: {e!r}") from None
        if timing.end is None:
            # HTTP/1.0-style close or a dying engine: the body just stops.
            raise MeasurementError(f"server {self.name!r}: stream broke after {timing.content_chunks} chunks "
                                   "(connection closed before [DONE])")
        return timing


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
