"""llama-benchy's metric definitions on recorded timestamps."""

import pytest

from pytest_mxfp4.formats.config import Case
from pytest_mxfp4.errors import MeasurementError
from pytest_mxfp4.measure.metrics import (
    CLIENT_BEHIND_BOUND,
    burst_delivery,
    client_behind,
    compute_metrics,
    held_back_fraction,
)
from pytest_mxfp4.measure.runner import check_token_counts
from pytest_mxfp4.measure.timing import ReadInfo, StreamTiming


def timing(**kw):
    return StreamTiming(start=10.0, **kw)


def test_definitions_match_llama_benchy():
    # request at 10.0, first SSE line at 10.250, first text at 10.300,
    # last of 32 tokens at 11.300, latency 50 ms
    t = timing(first_response=10.250, first_content=10.300, last_content=11.300)
    m = compute_metrics(t, latency_s=0.050, new_prompt_tokens=2048, completion_tokens=32)
    assert m.ttfr_ms == pytest.approx(250.0)
    assert m.e2e_ttft_ms == pytest.approx(300.0)
    assert m.est_ppt_ms == pytest.approx(200.0)
    assert m.pp_tps == pytest.approx(2048 / 0.200)
    assert m.tg_tps == pytest.approx(31 / 1.0)  # n-1 intervals over first->last token


def test_chunk_count_does_not_matter_only_usage():
    # 30 chunks for 32 tokens (seen on vLLM) must give the same tg as 32 chunks
    a = timing(first_response=10.1, first_content=10.1, last_content=11.1, content_chunks=30)
    b = timing(first_response=10.1, first_content=10.1, last_content=11.1, content_chunks=32)
    ma = compute_metrics(a, 0.0, 512, 32)
    mb = compute_metrics(b, 0.0, 512, 32)
    assert ma.tg_tps == mb.tg_tps == pytest.approx(31.0)


def test_latency_larger_than_ttfr_gives_no_pp_number():
    t = timing(first_response=10.01, first_content=10.02, last_content=10.5)
    m = compute_metrics(t, latency_s=0.5, new_prompt_tokens=512, completion_tokens=1)
    assert m.est_ppt_ms == 0.0 and m.pp_tps is None and m.tg_tps is None


def test_no_content_is_an_error():
    with pytest.raises(MeasurementError, match="before any content"):
        compute_metrics(timing(first_response=10.1), 0.0, 512, 32)


def test_token_count_checks():
    case = Case("decode", 512, 32, depth=1024)
    check_token_counts("s", case, 1536, 32)
    with pytest.raises(MeasurementError, match="prompt_tokens 1535 != 1536"):
        check_token_counts("s", case, 1535, 32)
    with pytest.raises(MeasurementError, match="completion_tokens 31 != 32"):
        check_token_counts("s", case, 1536, 31)
    with pytest.raises(MeasurementError, match="no usage"):
        check_token_counts("s", case, None, None)


def stream(groups, start=0.0):
    """A stream from reads: groups = [(time, events in that read, late, measured)];
    not measured = a blocking read without a kernel stamp (late = busy time)."""
    times, reads = [], []
    for t, m, late, bounded in groups:
        times += [t] * m
        reads.append(ReadInfo(m, late, late, not bounded, not bounded))
    return StreamTiming(start=start, first_response=times[0], first_content=times[0], last_content=times[-1],
                        end=times[-1] + 0.001, content_chunks=len(times), chunk_times=times, content_reads=reads)


def paced(n, step, t0=0.5, late=2e-6, bounded=True):
    return [(t0 + i * step, 1, late, bounded) for i in range(n)]


def test_honest_streams_pass_both_checks():
    gb10 = stream(paced(32, 1 / 31, t0=0.555))  # TTFT 555 ms then 31 tok/s
    firehose = stream(paced(1024, 1 / 100000))  # 100k tok/s, one event per read
    spec = stream(paced(11, 0.03))  # speculative decoding: ~3 tokens per event, one event per step
    long_prefill = stream(paced(128, 1 / 5000, t0=2.0))  # fast decode after a 2 s prefill
    blocking = stream(paced(1024, 1 / 20000, late=0.0, bounded=False))
    for t in (gb10, firehose, spec, long_prefill, blocking):
        assert client_behind(t) <= CLIENT_BEHIND_BOUND
        assert not burst_delivery(t) and held_back_fraction(t) in (None, 0.0)


def test_client_behind_from_its_own_reads():
    # busy-polled, but the first read could be 80 us late on a 6.35 ms span
    late_first = stream([(0.5, 1, 80e-6, True)] + paced(127, 1 / 20000, t0=0.5 + 1 / 20000))
    assert client_behind(late_first) == pytest.approx((80e-6 + 2e-6) / (127 / 20000))  # + the last read's 2 us
    assert client_behind(late_first) > CLIENT_BEHIND_BOUND
    # blocking reads: the last 30 events piled up in one read, so it woke >= 29 intervals late
    piled = stream(paced(98, 1e-5) + [(0.5 + 98e-5 + 29e-5, 30, 0.0, False)])
    assert client_behind(piled) > CLIENT_BEHIND_BOUND and not burst_delivery(piled)
    # all content in one read that nobody watched arrive: cannot be trusted
    assert client_behind(stream([(0.7, 64, 0.0, False)])) == float("inf")
    assert client_behind(stream([(0.7, 1, 0.0, True)])) is None  # too short to tell


def test_held_back_and_flushed_is_a_burst_not_the_client():
    # 8 tokens at 1 ms, then 120 held back and flushed together (arrival measured within 5 us)
    flushed = stream(paced(8, 1e-3) + [(0.63, 120, 5e-6, True)])
    assert held_back_fraction(flushed) > 0.9 and burst_delivery(flushed)
    assert client_behind(flushed) <= CLIENT_BEHIND_BOUND
    # the first 30 held back then paced: the first read moves tg, flagged though < half
    head = stream([(0.53, 30, 5e-6, True)] + paced(98, 1e-3, t0=0.531))
    assert held_back_fraction(head) < 0.5 and burst_delivery(head)
    # a blocking client that woke 0.3 ms late at 100k tok/s: 30 events in a read, explained by the wake
    woke_late = stream(paced(64, 1e-5) + [(0.5 + 64e-5 + 29e-5, 30, 0.0, False)] + paced(64, 1e-5, t0=0.5 + 94e-5))
    assert held_back_fraction(woke_late) == 0.0


def test_a_client_that_let_the_window_close_is_behind_however_exact_its_stamps():
    # kernel-stamped reads (exact arrivals), but one read took 100 KB of a 128 KB buffer:
    # the server's sends were held back by TCP flow control, so arrivals were late
    t = stream(paced(1024, 1e-5))
    t.rcvbuf, t.max_read_bytes = 131072, 100_000
    assert client_behind(t) == float("inf")
    t.max_read_bytes = 600  # two events a read: nowhere near
    assert client_behind(t) <= CLIENT_BEHIND_BOUND


def test_a_stall_while_content_arrived_counts_even_with_exact_stamps():
    t = stream(paced(128, 1 / 50000))  # 2.54 ms of decode, every stamp exact
    assert client_behind(t) <= CLIENT_BEHIND_BOUND
    t.stall_s = 0.0005  # the client did not run for 0.5 ms: no ACKs, the server's sends waited
    assert client_behind(t) == pytest.approx(0.0005 / (127 / 50000))
