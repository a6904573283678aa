"""N streams started together: one round of a concurrent case (tg32@c4).

Each stream is measured exactly as a single stream (same client, same
llama-benchy definitions, its own exact-length prompt with its own nonce, so
prefix caching can't share work between streams). What is added here:

- release: all N connections are opened first, then N threads wait on a
  barrier and send at once (connection setup never staggers the start); the
  spread of the N send stamps is kept (`Round.release_spread_ms`);
- the aggregate: generated tokens of all N streams / wall from the first
  request sent to the last token of any stream;
- the check that the server really ran them together: the most streams
  decoding at the same instant (`Round.peak_streams`); fewer than N means the
  server queued some (its slots or --max-num-seqs are fewer than N), and the
  round is an error, not a number.
"""

from __future__ import annotations

import sys
import threading

from pytest_mxfp4.errors import MeasurementError
from pytest_mxfp4.measure.timing import StreamTiming

# A blocking read stamped by the kernel (SO_TIMESTAMPNS) is as exact as a busy
# poll; N threads spinning would fight over the GIL and the client's core.
CONCURRENT_BUSY_POLL_S = 0.0
SWITCH_INTERVAL_S = 0.0002


def run_round(client, specs: list, exact: bool = True, release_timeout_s: float = 30.0
              ) -> list[StreamTiming | BaseException]:
    """Send `specs` (RequestSpec) as concurrent streams released together;
    per stream its StreamTiming or the exception it ended with. Every socket
    is closed on the way out (an interrupt closes them under their readers)."""
    opened = []
    try:
        for spec in specs:
            opened.append(client.open_stream(spec, exact))
    except BaseException:
        for o in opened:
            o.sock.close()
        raise
    n = len(opened)
    out: list[StreamTiming | BaseException | None] = [None] * n
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        try:
            barrier.wait(release_timeout_s)
            out[i] = client.send(opened[i], busy_poll_s=CONCURRENT_BUSY_POLL_S, parse=False)
        except threading.BrokenBarrierError:
            out[i] = MeasurementError(f"the {n} streams were not released together (a thread did not reach "
                                      f"the start within {release_timeout_s:g} s)")
            opened[i].sock.close()
        except BaseException as e:  # kept per stream; the round decides
            out[i] = e
            opened[i].sock.close()

    # a woken reader waits for the GIL at most this long while another thread runs
    # Python (default 5 ms: longer than a token interval of a fast stream)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    threads = [threading.Thread(target=one, args=(i,), name=f"pytest-mxfp4-stream-{i}", daemon=True)
               for i in range(n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():  # short waits: an interrupt is acted on at once
                t.join(0.1)
    except BaseException:  # Ctrl-C: end the streams now, not when the server finishes them
        barrier.abort()
        for o in opened:
            try:
                o.sock.shutdown(2)
            except OSError:
                pass
            o.sock.close()
        for t in threads:
            t.join(5.0)
        raise
    finally:
        sys.setswitchinterval(switch)
    # parsed only now: a stream that ended early must not hold the GIL (parsing
    # is pure Python) while the others are still reading their tokens
    timings: list[StreamTiming | BaseException] = []
    for x in out:
        if x is None:
            x = MeasurementError("stream ended without a result")
        elif not isinstance(x, BaseException):
            try:
                x = client.timing(x)
            except MeasurementError as e:
                x = e
        timings.append(x)
    return timings


def peak_streams(intervals: list[tuple[float, float]]) -> int:
    """The most intervals (start, end) open at one instant."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], 
                    key=lambda e: (e[0], e[1]))  # at one instant an end comes before a start
    peak = cur = 0
    for _, d in events:
        cur += d
        peak = max(peak, cur)
    return peak


def all_together_s(intervals: list[tuple[float, float]]) -> float:
    """How long all intervals were open at once (0 if never)."""
    if not intervals:
        return 0.0
    return max(0.0, min(b for _, b in intervals) - max(a for a, _ in intervals))


def aggregate(timings: list[StreamTiming]) -> tuple[float, float, int]:
    """(wall s from the first request sent to the last token of any stream,
    generated tokens of all streams, their tok/s = tokens / wall). Token counts from usage, as per stream."""
    start = min(t.start for t in timings)
    last = max(t.last_content for t in timings)
    tokens = sum(t.completion_tokens or 0 for t in timings)
    wall = last - start
    if wall <= 0:
        raise MeasurementError("concurrent round: no time between the first request and the last token")
    return wall, tokens, tokens / wall
