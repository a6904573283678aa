"""llama-benchy's metric definitions on recorded timestamps."""

import pytest

from pytest_mxfp4.config import Case
from pytest_mxfp4.errors import MeasurementError
from pytest_mxfp4.measure.metrics import burst_fraction, compute_metrics
from pytest_mxfp4.measure.runner import check_token_counts
from pytest_mxfp4.measure.timing import StreamTiming


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


def stream(chunk_times, start=0.0, end=None):
    t = StreamTiming(start=start, first_response=chunk_times[0], first_content=chunk_times[0],
                     last_content=chunk_times[-1], end=end or chunk_times[-1] + 0.001)
    t.chunk_times = list(chunk_times)
    return t


def test_burst_detection_separates_flushes_from_honest_streams():
    # GB10-like: TTFT 555 ms then 31 tok/s for 32 tokens
    gb10 = stream([0.555 + i / 31 for i in range(32)])
    # a 20k tok/s firehose is fast but honest: one chunk per step
    firehose = stream([0.005 + i / 20000 for i in range(1024)])
    # speculative decoding: ~3 tokens per chunk, one chunk per step
    spec = stream([0.05 + i * 0.03 for i in range(11)])
    # starved server: 128 tokens held back, flushed within 3 ms
    flushed = stream([0.70 + i * 0.00002 for i in range(128)], end=0.71)
    assert burst_fraction(gb10) > 0.2 and burst_fraction(firehose) > 0.2 and burst_fraction(spec) > 0.2
    assert burst_fraction(flushed) < 0.01
    assert burst_fraction(stream([0.1, 0.2])) is None  # too short to tell
