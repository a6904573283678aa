"""Concurrent streams (tg32@c4): the case ids and the matrix's sweep, the
server's stream limit as a config error, N streams released together and
measured each as one stream, the aggregate, a serialized round refused,
Ctrl-C ending the streams, results and reports. Against the paced FAKE server
(measure the client, never an engine); no timing goals here (those are
benchmarks/client_ceiling.py --concurrency 4)."""

import _thread
import copy
import threading
import time
from pathlib import Path

import pytest

from pytest_mxfp4.formats import results as results_mod
from pytest_mxfp4.formats.config import Case, Workloads, parse_matrix, stream_limit
from pytest_mxfp4.errors import ConfigError
from pytest_mxfp4.measure.client import EngineClient, RequestSpec
from pytest_mxfp4.measure.concurrent import aggregate, all_together_s, peak_streams, run_round
from pytest_mxfp4.measure.runner import CaseRunner
from pytest_mxfp4.formats.samples import CaseRun, RequestMetrics, Round, Sample
from pytest_mxfp4.stats.samples import StatsError, percentile

from .fakes.paced_sse_server import PacedServer

MATRIX = {
    "servers": {
        "v": {"model": "m", "command": ["serve"], "args": ["--max-num-seqs", "4"]},
        "l": {"engine": "llama.cpp", "model": "m", "command": ["llama-server", "-np", "1"], "concurrency": [1]},
    },
    "workloads": {"prefill": {"pp": [512]}, "decode": {"tg": [32, 128], "pp": 256}, "concurrency": [1, 4]},
    "gates": {"tg32": "fail", "tg32@c4": "warn", "tg32@c4/agg_tps": "fail"},
}


def parse(d):
    return parse_matrix(d, Path("m.yaml"))


# -- ids and the matrix ----------------------------------------------------------


def test_case_ids_carry_the_concurrency_and_one_stream_keeps_the_old_id():
    assert Case("decode", 256, 32).id == "tg32"  # c1: ids and baselines from before stay valid
    assert Case("decode", 256, 32, concurrency=4).id == "tg32@c4"
    assert Case("decode", 256, 32, depth=4096, concurrency=4).id == "tg32@d4096@c4"
    assert Case.parse("tg32@d4096@c4") == Case("decode", 0, 32, 4096, 4)
    assert Case.parse("tg32").concurrency == 1
    for bad in ("tg32@c1", "tg32@c0", "pp512@c2"):
        with pytest.raises(ValueError):
            Case.parse(bad)
    assert Case("decode", 256, 32, concurrency=4).metrics == ("tg_tps", "e2e_ttft_ms", "accept_pct", "accept_len",
                                                             "agg_tps")  # acceptance only where a server drafts
    assert "agg_tps" not in Case("decode", 256, 32).metrics


def test_sweep_expands_decode_cases_and_a_row_states_its_own():
    m = parse(copy.deepcopy(MATRIX))
    assert [c.id for c in m.workloads.cases] == ["pp512", "tg32", "tg32@c4", "tg128", "tg128@c4"]
    assert [c.id for c in m.cases_for(m.server("v"))] == ["pp512", "tg32", "tg32@c4", "tg128", "tg128@c4"]
    assert [c.id for c in m.cases_for(m.server("l"))] == ["pp512", "tg32", "tg128"]
    assert m.gates.policy(Case("decode", 256, 32, concurrency=4), "agg_tps") == "fail"
    assert m.gates.policy(Case("decode", 256, 32, concurrency=4), "tg_tps") == "warn"
    # a row's own levels become cases even where the workloads' sweep is [1]
    d = copy.deepcopy(MATRIX)
    del d["workloads"]["concurrency"]
    d["servers"]["v"]["concurrency"] = [2, 4]
    m = parse(d)
    assert [c.id for c in m.cases_for(m.server("v"))] == ["pp512", "tg32@c2", "tg32@c4", "tg128@c2", "tg128@c4"]
    assert [c.id for c in m.cases_for(m.server("l"))] == ["pp512", "tg32", "tg128"]


@pytest.mark.parametrize("edit,field,words", [
    (lambda d: d["servers"]["v"].update(args=["--max-num-seqs", "2"]), "workloads.concurrency",
     ["'v'", "4 concurrent streams", "--max-num-seqs 2", "servers.v.concurrency: [1, 2]"]),
    (lambda d: d["servers"]["v"].update(args=["--max-num-seqs=2"], concurrency=[1, 2, 4]), "servers.v.concurrency",
     ["'v'", "allows 2", "[1, 2]"]),
    (lambda d: d["servers"]["l"].pop("concurrency"), "workloads.concurrency", ["'l'", "-np 1", "concurrency: [1]"]),
    (lambda d: d["workloads"].update(concurrency=[1, 0]), "workloads.concurrency[1]", [">= 1"]),
    (lambda d: d["workloads"].update(concurrency=[2, 2]), "workloads.concurrency[1]", ["twice"]),
    (lambda d: d["workloads"].pop("decode"), "workloads.concurrency", ["decode cases"]),
    (lambda d: d["gates"].update({"tg32@c1": "fail"}), "gates.tg32@c1", ["@c2 or more"]),
    (lambda d: d["gates"].update({"tg32@c8": "fail"}), "gates.tg32@c8", ["names no case"]),
    (lambda d: d["gates"].update({"tg32/agg_tps": "fail"}), "gates.tg32/agg_tps", ["unknown metric"]),
])
def test_bad_sweeps_are_one_config_error_naming_the_field(edit, field, words):
    d = copy.deepcopy(MATRIX)
    edit(d)
    with pytest.raises(ConfigError) as e:
        parse(d)
    msg = str(e.value)
    assert msg.startswith(f"m.yaml: {field}:"), msg
    for w in words:
        assert w in msg, msg


def test_stream_limit_reads_the_engines_flags():
    m = parse(copy.deepcopy(MATRIX))
    assert stream_limit(m.server("v")) == (4, "--max-num-seqs")
    assert stream_limit(m.server("l")) == (1, "-np")
    d = copy.deepcopy(MATRIX)
    d["servers"]["l"]["command"] = ["llama-server", "--parallel", "-1"]  # automatic: not known here
    d["servers"]["l"].pop("concurrency")
    d["servers"]["v"]["args"] = []  # the engine's default: not known here
    m = parse(d)
    assert stream_limit(m.server("l")) is None and stream_limit(m.server("v")) is None


# -- the round --------------------------------------------------------------------


def test_overlap_and_aggregate_arithmetic():
    assert peak_streams([(0, 1), (0.5, 2), (1.5, 3)]) == 2
    assert peak_streams([(0, 1), (1, 2)]) == 1  # one ends as the next begins: never together
    assert all_together_s([(0, 2), (1, 3), (0.5, 2.5)]) == 1.0
    assert all_together_s([(0, 1), (2, 3)]) == 0.0

    class T:
        def __init__(self, start, last, n):
            self.start, self.last_content, self.completion_tokens = start, last, n

    wall, tokens, tps = aggregate([T(10.0, 11.0, 32), T(10.001, 12.0, 32)])
    assert (round(wall, 6), tokens) == (2.0, 64) and tps == pytest.approx(32.0)
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([1, 2, 3, 4], 100) == 4
    assert percentile(range(101), 99) == 99
    with pytest.raises(StatsError):
        percentile([], 50)


@pytest.fixture(scope="module")
def paced():
    with PacedServer() as srv:
        yield srv


def runner(srv, case, runs=2):
    client = EngineClient("paced-fake", srv.url, "m")
    return CaseRunner(client, case, Workloads(cases=(case,), runs=runs, warmup=1, max_client_lag_ms=1e9), seed=3)


def test_four_streams_released_together_each_measured_as_one(paced):
    paced.pace(rate=500, ttft_s=0.002, batch=4)
    case = Case("decode", 16, 32, concurrency=4)
    r = runner(paced, case, runs=2)
    r.measure(2)
    run = r.result
    measured = [s for s in run.samples if s.error is None]
    assert len(run.samples) >= 8 and not run.errors, run.errors
    # each stream a sample of its own, with the exact token counts a single stream has
    assert {(s.run, s.stream) for s in run.samples} >= {(0, 0), (0, 1), (0, 2), (0, 3), (1, 3)}
    assert all(s.prompt_tokens == 16 and s.completion_tokens == 32 for s in measured)
    # per stream tg near the fake's per-stream rate (wide margins: a shared box)
    assert all(0.8 * 500 < s.metrics.tg_tps < 1.25 * 500 for s in measured)
    assert len(run.rounds) == len({s.run for s in run.samples})
    for rd in run.rounds:
        assert rd.error is None and rd.streams == 4 and rd.peak_streams == 4 and rd.tokens == 128
        assert rd.together_ms > 0 and rd.release_spread_ms < 50
        # 4 streams x 32 tokens over ~(2 ms + 31 / 500 s): near 4 x the per-stream rate
        assert 0.6 * 4 * 500 < rd.agg_tps < 1.25 * 4 * 500
    (note,) = [x for x in run.notes if x.startswith("tg32@c4: 4 streams released within")]
    assert "all 4 decoding at once for" in note
    assert len(run.values("agg_tps")) == sum(
        1 for rd in run.rounds if all(s.clean for s in run.round_samples(rd)))
    assert len(run.values("tg_tps")) == sum(1 for s in run.samples if s.clean)


def test_a_server_that_serializes_the_streams_gives_an_error_not_a_number(paced):
    paced.pace(rate=2000, ttft_s=0.001, serial=True)
    case = Case("decode", 16, 16, concurrency=2)
    r = runner(paced, case, runs=2)
    r.measure(2)
    assert r.result.values("tg_tps") == [] and r.result.values("agg_tps") == []
    assert r.result.errors and "decoded at most 1 of the 2 streams at once" in r.result.errors[0]
    assert "serialized" in r.result.errors[0] and "-np" in r.result.errors[0]
    assert all(rd.peak_streams == 1 for rd in r.result.rounds)


def test_ctrl_c_ends_a_stalled_round_at_once_and_leaves_no_thread(paced):
    paced.pace(rate=1000, ttft_s=0.001, stall_after=3)  # every stream goes silent, connections open
    client = EngineClient("paced-fake", paced.url, "m", timeout_s=60)
    threading.Timer(0.5, _thread.interrupt_main).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_round(client, [RequestSpec(f"s{k} a", 16) for k in range(3)], exact=False)
    assert time.monotonic() - t0 < 10
    time.sleep(0.2)
    assert not [t for t in threading.enumerate() if t.name.startswith("pytest-mxfp4-stream")]


# -- results and reports -------------------------------------------------------------


def _run_with_rounds() -> CaseRun:
    case = Case("decode", 16, 32, concurrency=2)
    run = CaseRun(server="v", case=case, latency_ms=0.1)
    m = RequestMetrics(ttfr_ms=5.0, e2e_ttft_ms=5.0, est_ppt_ms=4.9, pp_tps=None, tg_tps=100.0)
    for k in range(2):
        run.samples.append(Sample(run=0, stream=k, metrics=m, prompt_tokens=16, completion_tokens=32))
    run.samples.append(Sample(run=1, stream=0, metrics=m, prompt_tokens=16, completion_tokens=32))
    run.samples.append(Sample(run=1, stream=1, metrics=m, flags=["client-behind"]))
    run.rounds += [Round(run=0, streams=2, wall_ms=330.0, tokens=64, agg_tps=194.0, peak_streams=2),
                   Round(run=1, streams=2, wall_ms=320.0, tokens=64, agg_tps=200.0, peak_streams=2)]
    return run


def test_results_keep_streams_and_rounds_and_old_files_read_as_one_stream():
    run = _run_with_rounds()
    assert run.values("agg_tps") == [194.0]  # round 1 has a flagged stream: its aggregate is not trusted
    assert run.values("tg_tps") == [100.0, 100.0, 100.0]
    d = results_mod.run_dict(run)
    assert d["workload"] == "tg32@c2" and d["case"]["concurrency"] == 2
    back = results_mod._case_run(results_mod._Reader("r.json"), d, "runs[0]")
    assert back.case == run.case and [s.stream for s in back.samples] == [0, 1, 0, 1]
    assert back.rounds == run.rounds
    old = results_mod.run_dict(CaseRun(server="v", case=Case("decode", 16, 32), latency_ms=0.1))
    assert "concurrency" not in old["case"] and "rounds" not in old
    assert results_mod._case_run(results_mod._Reader("r.json"), old, "runs[0]").case.concurrency == 1


def test_terminal_and_page_say_per_stream_and_aggregate():
    from pytest_mxfp4.report import markdown, terminal
    from pytest_mxfp4.formats.results import MetricResult, SessionResults
    from pytest_mxfp4.stats.samples import Summary

    case = Case("decode", 16, 32, concurrency=2)
    rs = []
    for metric, xs in (("tg_tps", [100.0, 98.0, 102.0, 99.0]), ("e2e_ttft_ms", [5.0, 6.0, 5.5, 9.0]),
                       ("agg_tps", [190.0, 194.0])):
        r = MetricResult(server="v", case=case, metric=metric, gate="warn", samples=xs)
        r.summary = Summary.from_samples(xs)
        rs.append(r)
    line = terminal.case_lines(rs)[0]
    assert line.startswith("[v] tg32@c2 (2 streams)  per stream tg_tps 99.75")
    assert "per stream e2e_ttft_ms" in line and "p99" in line and "| aggregate agg_tps 192.0" in line
    session = SessionResults(matrix="m")
    one = MetricResult(server="v", case=Case("decode", 16, 32), metric="tg_tps", gate="fail", samples=[100.0, 101.0])
    one.summary = Summary.from_samples(one.samples)
    session.metrics = [one, *rs]
    rows = terminal.rows(session)
    assert [r[1] for r in rows] == ["tg32/tg_tps", "tg32@c2/tg_tps (per stream)", "tg32@c2/e2e_ttft_ms (per stream)",
                                    "tg32@c2/agg_tps (aggregate)"]
    page = markdown.render(session, None)
    assert "#### Concurrent streams" in page and "per stream vs aggregate" in page
    row = next(ln for ln in page.splitlines() if ln.startswith("| `tg32@c2`"))
    assert "99.75" in row and "192.0" in row and "1.91×" in row  # aggregate over the one-stream tg32



# -- through the plugin (pytester, the FAKE rate server: threaded, so streams run together) --

pytest_plugins = ["pytester"]

PERF_TEST = """
import pytest
pytestmark = pytest.mark.perf
def test_workload(perf_measure):
    perf_measure()
"""


def _plugin_matrix() -> str:
    import sys
    import textwrap

    fake = str(Path(__file__).parent / "fakes" / "rate_server.py")
    return textwrap.dedent(f"""
        name: conc
        defaults:
          engine: openai
          runner: process
          command: ["{sys.executable}", "{fake}", "--port", "{{port}}"]
          env: {{FAKE_TPS: "1000"}}
          startup_timeout_s: 20
        servers:
          fake: {{model: m}}
          one: {{model: m, concurrency: [1]}}
        workloads:
          decode: {{tg: [16], pp: 8}}
          concurrency: [1, 2]
          runs: 3
          warmup: 0
          restarts: 2
          reset_prefix_cache: false
          leave_out_disturbed: false
          max_client_lag_ms: 1000000
        gates: {{tg16: fail, tg16@c2/agg_tps: warn}}
        """)


def test_plugin_measures_the_sweep_per_row_stores_it_and_k_selects_it(pytester, monkeypatch):
    import json
    import os

    # the subprocess imports this checkout's package (not another one an editable install points at)
    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))

    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=_plugin_matrix())
    args = ["-m", "perf", "--perf-config=matrix.yaml", "--perf-baselines=bl", "-p", "no:cacheprovider"]
    r = pytester.runpytest_subprocess(*args, "--perf-json=out/r.json", "--perf-report=out/page.md",
                                      "--perf-update-baselines")
    out = r.stdout.str()
    assert r.ret == 0, out
    # row `one` states [1]: its tg16@c2 items (2 starts + 2 spares) are deselected, not run or skipped
    assert "4 deselected" in out
    assert "[fake] tg16@c2 (2 streams)  per stream tg_tps" in out and "| aggregate agg_tps" in out
    data = json.loads((pytester.path / "out" / "r.json").read_text())
    keys = {(x["server"], x["workload"], x["metric"]) for x in data["results"] if x["samples"]}
    assert {("fake", "tg16@c2", "tg_tps"), ("fake", "tg16@c2", "agg_tps"), ("fake", "tg16", "tg_tps"),
            ("one", "tg16", "tg_tps")} <= keys
    assert not any(w == "tg16@c2" for s, w, _ in keys if s == "one")
    run = next(x for x in data["runs"] if x["server"] == "fake" and x["workload"] == "tg16@c2")
    assert {s["stream"] for s in run["samples"] if "stream" in s} == {1} and len(run["rounds"]) >= 3
    assert all(rd["peak_streams"] == 2 for rd in run["rounds"] if not rd["error"])
    per_stream = next(x for x in data["results"] if x["workload"] == "tg16@c2" and x["metric"] == "tg_tps")
    agg = next(x for x in data["results"] if x["workload"] == "tg16@c2" and x["metric"] == "agg_tps")
    # a sample per trusted stream, one aggregate per round whose every stream is trusted
    rounds = [rd for r_ in data["runs"] if r_["server"] == "fake" and r_["workload"] == "tg16@c2" for rd in r_["rounds"]]
    assert 1 <= len(agg["samples"]) <= len(rounds) and len(agg["samples"]) * 2 <= len(per_stream["samples"])
    assert len(per_stream["samples"]) <= 2 * len(rounds)
    assert "per stream vs aggregate" in (pytester.path / "out" / "page.md").read_text()
    stored = next((pytester.path / "bl").rglob("*fake*.yaml")).read_text()
    assert "tg16@c2/agg_tps" in stored and "tg16/tg_tps" in stored
    # judged against those baselines; -k spells the id with '-' for '@'
    r2 = pytester.runpytest_subprocess(*args, "--perf-json=out/r2.json", "-k", "tg16-c2", "--perf-allow-partial")
    assert r2.ret == 0, r2.stdout.str()
    res = json.loads((pytester.path / "out" / "r2.json").read_text())["results"]
    assert {x["workload"] for x in res} == {"tg16@c2"}
    assert all(x["baseline"] is not None for x in res if x["metric"] in ("tg_tps", "agg_tps"))
