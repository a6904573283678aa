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


FLAG_CLIENT_BEHIND = "client-behind"
# A sample is flagged `client-behind` when the client's own lateness may
# have moved tg t/s by more than this (the tg gate floor is 1%).
CLIENT_BEHIND_BOUND = 0.01
# A blocking read cannot see its own wake-up delay; it shows only as several
# events arriving in one read. Beyond this many seconds, a group of events
# that arrived together is the server's doing, not a late wake-up.
WAKE_ALLOWANCE_S = 0.0005
# At least this many content events in one read, arriving faster than the
# stream's own pace allows, is a held-back-and-flushed group.
BURST_GROUP = 4


def _late_s(entry: tuple[int, float, bool], delta: float) -> float:
    """How late a read's stamp may be. Busy-polled: the measured bound (now -
    last time the socket was seen empty). Blocking: the time the client was
    busy before asking, or what the events that piled up in the read imply
    ((m - 1) stream intervals), whichever is larger."""
    m, late, spun = entry
    return late if spun else max(late, (m - 1) * delta)


def client_behind(t: StreamTiming) -> float | None:
    """How much tg t/s may be off because the client was late, as a fraction:
    (late(first content read) + late(last content read)) / decode span.
    tg uses only those two stamps; every other read may be late without harm.
    inf when all content came in one read the client did not watch arrive;
    None when there is nothing to judge (fewer than 2 content events)."""
    reads = t.content_reads
    if t.content_chunks < 2 or not reads or t.first_content is None or t.last_content is None:
        return None
    span = t.last_content - t.first_content
    if span <= 0:
        return None if reads[0][2] else float("inf")  # busy-polled: it arrived at once (burst check)
    delta = span / (t.content_chunks - 1)
    return (_late_s(reads[0], delta) + _late_s(reads[-1], delta)) / span


def held_back_fraction(t: StreamTiming) -> float | None:
    """Share of content events that the server delivered together, faster
    than the stream's own pace allows: groups of >= BURST_GROUP in one read
    that arrived within less time than (m - 1) stream intervals, beyond what
    the client's lateness (busy-polled: measured; blocking: WAKE_ALLOWANCE_S)
    can explain. A server process starved of CPU holds tokens back and flushes
    them together; its tg t/s is then a fiction. Unlike a share of the
    request's time, this does not fire on fast decodes after a long prefill,
    nor on a client that fell behind (that is `client_behind`)."""
    reads = t.content_reads
    if t.content_chunks < 2 * BURST_GROUP or not reads or t.first_content is None or t.last_content is None:
        return None
    span = t.last_content - t.first_content
    if span <= 0:
        return 1.0 if reads[0][2] else None
    delta = span / (t.content_chunks - 1)
    held = 0
    for m, late, spun in reads:
        window = late if spun else late + WAKE_ALLOWANCE_S
        if m >= BURST_GROUP and (m - 1) * delta > 2 * window:
            held += m
    return held / t.content_chunks


def burst_delivery(t: StreamTiming) -> bool:
    """Held back and flushed by the server: half of the events, or the first
    content read (which moves tg t/s)."""
    share = held_back_fraction(t)
    if share is None:
        return False
    if share >= 0.5:
        return True
    m, late, spun = t.content_reads[0]
    delta = (t.last_content - t.first_content) / (t.content_chunks - 1)
    window = late if spun else late + WAKE_ALLOWANCE_S
    return m >= BURST_GROUP and (m - 1) * delta > 2 * window


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
