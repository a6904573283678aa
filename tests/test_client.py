"""The streaming client against a FAKE server (misbehaviour on demand) and
the /metrics parser against real vLLM output."""

import pytest

from pytest_mxfp4.formats.config import Case, Workloads
from pytest_mxfp4.errors import MeasurementError
from pytest_mxfp4.measure.client import EngineClient, RequestSpec, parse_prefix_cache_hits
from pytest_mxfp4.measure.runner import CaseRunner

from .fakes.fake_sse_server import FakeBehaviour, FakeSSEServer


def client(url):
    return EngineClient("fake", url, "m", engine="vllm")


def test_well_formed_stream_is_timed_on_raw_lines():
    with FakeSSEServer(FakeBehaviour(tokens=6)) as url:
        t = client(url).stream(RequestSpec("a b c", 6))
    assert t.completion_tokens == 6 and t.prompt_tokens == 4
    assert t.content_chunks == 6
    assert t.start < t.first_response <= t.first_content <= t.last_content <= t.end


@pytest.mark.parametrize(
    "behaviour,words",
    [
        (FakeBehaviour(tokens=10, break_after=3), "stream broke after 3 chunks"),
        (FakeBehaviour(malformed=True), "malformed SSE data line"),
        (FakeBehaviour(error_event=True), "error mid-stream: {'message': 'engine died'}"),
        (FakeBehaviour(status=503), "answered 503"),
    ],
)
def test_misbehaving_server_gives_one_clear_error(behaviour, words):
    with FakeSSEServer(behaviour) as url:
        with pytest.raises(MeasurementError) as e:
            client(url).stream(RequestSpec("a b", 10))
    assert "'fake'" in str(e.value) and words in str(e.value)


def test_wrong_token_count_makes_an_error_sample_not_a_number():
    # the server claims 7 completion tokens for a tg8 request
    with FakeSSEServer(FakeBehaviour(tokens=8, usage_completion=7)) as url:
        runner = CaseRunner(client(url), Case("decode", 16, 8), Workloads(cases=(), runs=2, warmup=0))
        runner.measure(2)
    run = runner.result
    assert len(run.samples) == 2 and all(s.error and "completion_tokens 7 != 8" in s.error for s in run.samples)
    assert run.values("tg_tps") == []
    assert any("reset_prefix_cache" in n for n in run.notes)


def test_connection_refused_is_clear():
    with pytest.raises(MeasurementError, match="connection failed"):
        client("http://127.0.0.1:9").stream(RequestSpec("x", 2))


VLLM_METRICS = """\
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="tiny"} 1024.0
vllm:prefix_cache_hits_created{engine="0",model_name="tiny"} 1.7956806658281493e+09
vllm:external_prefix_cache_hits_total{engine="0",model_name="tiny"} 77.0
vllm:prefix_cache_queries_total{engine="0",model_name="tiny"} 4096.0
"""


def test_prefix_cache_counter_parsing():
    assert parse_prefix_cache_hits(VLLM_METRICS) == 1024.0
    assert parse_prefix_cache_hits('vllm:gpu_prefix_cache_hits{model_name="x"} 5\n') == 5.0
    assert parse_prefix_cache_hits("# nothing\n") is None
