"""Samples -> verdicts, including sequential sampling and confirmation runs,
driven by a scripted runner (the statistics are real)."""

import random
from pathlib import Path

from pytest_mxfp4.formats.facts import ObservedFacts
from pytest_mxfp4.formats.baselines import BaselineEnvironment, BaselineFile, MetricBaseline
from pytest_mxfp4.formats.config import parse_matrix
from pytest_mxfp4.run.judge import incomparable_reason, judge_metric, measure_and_judge
from pytest_mxfp4.formats.samples import RequestMetrics
from pytest_mxfp4.measure.runner import CaseRun, Sample
from pytest_mxfp4.stats.samples import Verdict

MATRIX = parse_matrix({
    "servers": {"s": {"model": "m", "command": ["x"]}},
    "workloads": {"decode": {"tg": [32, 64], "pp": 128}, "runs": 5},
    "targets": [{"engine": "llama.cpp", "metric": "tg32", "value": 57.85}],
}, Path("m.yaml"))
TG32, TG64 = MATRIX.workloads.cases


class ScriptedRunner:
    """Stands in for CaseRunner: yields tg_tps values from a generator."""

    def __init__(self, case, values):
        self.case = case
        self.values = iter(values)
        self.result = CaseRun(server="s", case=case, latency_ms=1.0)
        self.calls = []

    def measure(self, n):
        self.calls.append(n)
        before = len(self.result.samples)
        for _ in range(n):
            v = next(self.values)
            m = RequestMetrics(ttfr_ms=10, e2e_ttft_ms=11, est_ppt_ms=9, pp_tps=1000, tg_tps=v)
            self.result.samples.append(Sample(run=len(self.result.samples), metrics=m, prompt_tokens=128,
                                              completion_tokens=32))
        return self.result.samples[before:]


def baseline(mean, sd, n=10, observed=None):
    bf = BaselineFile("k", "m", "s", environment=BaselineEnvironment(observed=ObservedFacts.from_dict(observed or {})))
    bf.metrics["tg32/tg_tps"] = MetricBaseline("tok/s", mean, sd, n)
    bf.metrics["tg64/tg_tps"] = MetricBaseline("tok/s", mean, sd, n)
    return bf


def noisy(mean, cv, seed=0):
    rng = random.Random(seed)
    while True:
        yield rng.gauss(mean, mean * cv)


def test_same_performance_passes_with_gate_fail():
    r = ScriptedRunner(TG32, noisy(31.58, 0.002))
    results = measure_and_judge(r, MATRIX, baseline(31.58, 0.06))
    tg = next(x for x in results if x.metric == "tg_tps")
    assert tg.verdict in (Verdict.PASS, Verdict.INCONCLUSIVE) and tg.gate == "fail" and not tg.fails
    assert [t.engine for t in tg.targets] == ["llama.cpp"]


def test_clear_regression_is_confirmed_on_fresh_samples_then_fails():
    r = ScriptedRunner(TG32, noisy(31.58 * 0.95, 0.002))
    results = measure_and_judge(r, MATRIX, baseline(31.58, 0.06))
    tg = next(x for x in results if x.metric == "tg_tps")
    assert tg.verdict == Verdict.REGRESSED and tg.fails and tg.confirmed
    assert sum(r.calls) > 5, "confirmation samples were measured before failing"
    assert tg.summary.n == len(r.result.samples)


def test_regression_on_warn_metric_only_warns_and_is_not_reconfirmed():
    r = ScriptedRunner(TG64, noisy(31.58 * 0.9, 0.002))
    results = measure_and_judge(r, MATRIX, baseline(31.58, 0.06))
    tg = next(x for x in results if x.metric == "tg_tps")
    assert tg.verdict == Verdict.REGRESSED and tg.warns and not tg.fails
    assert r.calls == [5], "only fail-gated metrics get extra runs"


def test_noisy_run_takes_more_samples_up_to_the_cap():
    r = ScriptedRunner(TG32, noisy(31.58 * 0.985, 0.02, seed=0))
    measure_and_judge(r, MATRIX, baseline(31.58, 0.06))
    assert len(r.calls) > 1 and sum(r.calls) <= 15


def test_no_baseline_and_errors():
    r = judge_metric("s", TG32, "tg_tps", [30.0, 31.0], None, MATRIX.gates.rule(TG32, "tg_tps"), MATRIX.targets_for(TG32, "tg_tps"))
    assert r.verdict == Verdict.NO_BASELINE and not r.fails
    run = CaseRun(server="s", case=TG32, latency_ms=0)
    run.samples.append(Sample(run=0, error="completion_tokens 31 != 32 requested"))
    e = judge_metric("s", TG32, "tg_tps", [], None, MATRIX.gates.rule(TG32, "tg_tps"), run=run)
    assert e.verdict == Verdict.ERROR and e.fails and "31 != 32" in e.error


def test_baseline_from_another_backend_is_incomparable():
    bf = baseline(31.58, 0.06, observed={"attention_backend": "TRITON_ATTN", "moe_backend": "MARLIN"})
    why = incomparable_reason(bf, ObservedFacts.from_dict({"attention_backend": "FLASHINFER", "moe_backend": "MARLIN"}))
    assert "attention_backend: baseline 'TRITON_ATTN', now 'FLASHINFER'" in why
    assert incomparable_reason(bf, ObservedFacts.from_dict({"attention_backend": "triton_attn"})) is None
    r = ScriptedRunner(TG32, noisy(20.0, 0.002))
    results = measure_and_judge(r, MATRIX, bf, incomparable=why)
    tg = next(x for x in results if x.metric == "tg_tps")
    assert tg.verdict == Verdict.INCOMPARABLE and not tg.fails


def test_config_floor_widens_the_practical_threshold():
    wide = parse_matrix({
        "servers": {"s": {"model": "m", "command": ["x"]}},
        "workloads": {"decode": {"tg": [32], "pp": 128}, "runs": 5},
        "gates": {"tg32": {"policy": "fail", "floor_pct": 20}},
    }, Path("m.yaml"))
    values = [31.58 * 0.9 + 0.001 * i for i in range(5)]  # 10% slower, very quiet
    strict = judge_metric("s", TG32, "tg_tps", values, baseline(31.58, 0.06).metrics["tg32/tg_tps"].stats(), MATRIX.gates.rule(TG32, "tg_tps"))
    lenient = judge_metric("s", wide.workloads.cases[0], "tg_tps", values,
                           baseline(31.58, 0.06).metrics["tg32/tg_tps"].stats(),
                           wide.gates.rule(wide.workloads.cases[0], "tg_tps"))
    assert strict.verdict == Verdict.REGRESSED and lenient.verdict != Verdict.REGRESSED
    assert lenient.comparison.tolerance_pct >= 20
