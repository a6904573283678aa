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

from pytest_mxfp4.errors import MeasurementError
from pytest_mxfp4.formats.samples import FLAG_CLIENT_BEHIND, RequestMetrics  # noqa: F401  (the record lives with the samples)
from pytest_mxfp4.measure.timing import ReadInfo, StreamTiming


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


# A sample is flagged `client-behind` when the client's own lateness may
# have moved tg t/s by more than this (the tg gate floor is 1%).
CLIENT_BEHIND_BOUND = 0.01
# A read returning more than this share of the receive buffer: the client let
# the data pile up until TCP's window (about half the buffer) nearly closed,
# which holds the server's sends back; arrivals then say more about the client.
BACKPRESSURE_SHARE = 1 / 3
# A blocking read cannot see its own wake-up delay; it shows only as several
# events arriving in one read. Beyond this many seconds, a group of events
# that arrived together is the server's doing, not a late wake-up.
WAKE_ALLOWANCE_S = 0.0005
# At least this many content events in one read, arriving faster than the
# stream's own pace allows, is a held-back-and-flushed group.
BURST_GROUP = 4


def _late_first(r: ReadInfo, delta: float) -> float:
    """How late a read's stamp may be for its first content event: measured,
    or (a blocking read) the larger of the client's busy time and what the
    events that piled up in the read imply."""
    return max(r.late_first, (r.content - 1) * delta) if r.first_estimated else r.late_first


def _late_last(r: ReadInfo, delta: float) -> float:
    return max(r.late_last, (r.content - 1) * delta) if r.last_estimated else r.late_last


def client_behind(t: StreamTiming) -> float | None:
    """How much tg t/s may be off because the client was late, as a fraction:
    (late(first content event) + late(last content event)) / decode span.
    tg uses only those two stamps; every other read may be late without harm.
    Or, where larger, the longest the client left arrived data unread while
    content arrived, over the span: a client that does not read sends no ACKs
    (loopback TCP acknowledges small segments as they are read), so the
    server's sends wait and even exact arrival stamps are late.
    inf when all content came in one read whose arrival nobody measured, or
    when a read shows that the client let TCP's window close (BACKPRESSURE_SHARE);
    None when there is nothing to judge (fewer than 2 content events)."""
    reads = t.content_reads
    if t.content_chunks < 2 or not reads or t.first_content is None or t.last_content is None:
        return None
    if t.rcvbuf and t.max_read_bytes > BACKPRESSURE_SHARE * t.rcvbuf:
        return float("inf")  # it held the server back: no stamp of it can be trusted
    span = t.last_content - t.first_content
    if span <= 0:
        return float("inf") if reads[0].first_estimated else None  # arrived at once: the burst check's case
    delta = span / (t.content_chunks - 1)
    stamps = (_late_first(reads[0], delta) + _late_last(reads[-1], delta)) / span
    return max(stamps, t.stall_s / span)  # a stall may have delayed the arrivals themselves


def _held(r: ReadInfo, delta: float) -> bool:
    """A group of events that arrived together faster than the stream's pace
    allows, beyond what the client's lateness can explain."""
    window = r.late_first + WAKE_ALLOWANCE_S if r.first_estimated else r.late_first
    return r.content >= BURST_GROUP and (r.content - 1) * delta > 2 * window


def held_back_fraction(t: StreamTiming) -> float | None:
    """Share of content events that the server delivered together, faster
    than the stream's own pace allows: groups of >= BURST_GROUP in one read
    that arrived within less than half of (m - 1) stream intervals, beyond
    what the client's lateness (measured, or for a blocking read
    WAKE_ALLOWANCE_S) can explain. A server process starved of CPU holds
    tokens back and flushes them together; its tg t/s is then a fiction.
    Unlike a share of the request's time, this does not fire on a fast decode
    after a long prefill, nor on a client that fell behind (`client_behind`)."""
    reads = t.content_reads
    if t.content_chunks < 2 * BURST_GROUP or not reads or t.first_content is None or t.last_content is None:
        return None
    span = t.last_content - t.first_content
    if span <= 0:
        return None if reads[0].first_estimated else 1.0
    delta = span / (t.content_chunks - 1)
    return sum(r.content for r in reads if _held(r, delta)) / t.content_chunks


def burst_delivery(t: StreamTiming) -> bool:
    """Held back and flushed by the server: half of the events, or the first
    content read (which moves tg t/s)."""
    share = held_back_fraction(t)
    if share is None:
        return False
    if share >= 0.5:
        return True
    delta = (t.last_content - t.first_content) / (t.content_chunks - 1)
    return _held(t.content_reads[0], delta)
