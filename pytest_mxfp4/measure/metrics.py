"""llama-benchy's metric definitions, applied to one request's timestamps.

- ttfr        time to first response: request sent -> first SSE data line
- e2e_ttft    time to first token: request sent -> first chunk with content
- est_ppt     estimated prompt processing time = ttfr - latency, where
              latency is the round trip measured before the runs
- pp t/s      prompt_tokens / est_ppt (prompt_tokens = the new tokens this
              request had to prefill; at depth d the d cached ones don't count)
- tg t/s      (n - 1) / (t_last_token - t_first_token): the first token is
              produced by prefill, so n tokens give n - 1 decode intervals.
Token counts come from `usage`, never from counting chunks.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import MeasurementError
from .timing import StreamTiming


@dataclass(frozen=True)
class RequestMetrics:
    ttfr_ms: float
    e2e_ttft_ms: float
    est_ppt_ms: float
    pp_tps: float | None
    tg_tps: float | None

    def get(self, name: str) -> float | None:
        return getattr(self, name)


def compute_metrics(t: StreamTiming, latency_s: float, new_prompt_tokens: int, completion_tokens: int) -> RequestMetrics:
    if t.first_response is None or t.first_content is None:
        raise MeasurementError("stream ended before any content arrived")
    ttfr = t.first_response - t.start
    e2e_ttft = t.first_content - t.start
    est_ppt = max(0.0, ttfr - latency_s)
    pp_tps = new_prompt_tokens / est_ppt if est_ppt > 0 else None
    tg_tps = None
    if completion_tokens > 1 and t.last_content is not None:
        decode_s = t.last_content - t.first_content
        if decode_s > 0:
            tg_tps = (completion_tokens - 1) / decode_s
    return RequestMetrics(
        ttfr_ms=ttfr * 1000.0,
        e2e_ttft_ms=e2e_ttft * 1000.0,
        est_ppt_ms=est_ppt * 1000.0,
        pp_tps=pp_tps,
        tg_tps=tg_tps,
    )


def burst_fraction(t: StreamTiming) -> float | None:
    """How compressed the stream's delivery was: the shortest window holding
    half of the content chunks, as a fraction of the whole request.

    Each decode step yields at least one chunk, so in an honest stream half
    the chunks span a good part of the request (tens of percent, also for
    fast engines and speculative decoding). A server process starved of CPU
    holds tokens back and then flushes them together: half the chunks land
    within a few ms and tg t/s becomes a fiction. None when too short to tell.
    """
    times = t.chunk_times
    if len(times) < 8 or t.end is None or t.end <= t.start:
        return None
    k = (len(times) + 1) // 2
    window = min(times[i + k - 1] - times[i] for i in range(len(times) - k + 1))
    return window / (t.end - t.start)
