"""One sequential start rule: the plugin's controller and the benchmark that
calibrates it (benchmarks/gate_quality.py --learned) ask the same function,
and on the same start means they take the same decisions."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pytest_mxfp4.stats import starts as startstats
from pytest_mxfp4.run.ab import parse_override
from pytest_mxfp4.formats.baselines import BaselineStore
from pytest_mxfp4.formats.config import load_matrix
from pytest_mxfp4.observe.environment import Environment
from pytest_mxfp4.formats.samples import RequestMetrics
from pytest_mxfp4.formats.samples import CaseRun, Sample
from pytest_mxfp4.run.session import PerfSession

ROOT = Path(__file__).resolve().parent.parent


def gate_quality():
    spec = importlib.util.spec_from_file_location("gate_quality", ROOT / "benchmarks" / "gate_quality.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gate_quality"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def session(tmp_path: Path) -> PerfSession:
    (tmp_path / "m.yaml").write_text(textwrap.dedent("""
        name: one-rule
        servers:
          s: {engine: openai, runner: process, model: m, command: [never-started, "{port}"]}
        workloads:
          decode: {tg: [16]}
          runs: 1
          warmup: 0
          restarts: 3
          max_restarts: 6
        gates: {tg16: fail}
        """))
    env = Environment(hostname="h", os="linux", arch="x86_64", cpu_model="test cpu", cpu_count=2, memory_gib=1.0,
                      python="3", plugin_version="0", git_sha=None)
    return PerfSession(load_matrix(tmp_path / "m.yaml"), env, BaselineStore(tmp_path / "bl"), tmp_path / "out",
                       tmp_path, restarts=3, max_restarts=6, ab_overrides=(parse_override("env.X=1"),))


def run_of(server: str, start: int, case, tps: float) -> CaseRun:
    m = RequestMetrics(ttfr_ms=10.0, e2e_ttft_ms=10.0, est_ppt_ms=10.0, pp_tps=None, tg_tps=tps)
    return CaseRun(server, case, 0.0, samples=[Sample(run=0, start=start, metrics=m)])


def drive_session(tmp_path: Path, base: list[float], head: list[float]):
    """The plugin's controller, slot by slot, with start means given."""
    ps = session(tmp_path)
    ctl = ps.controller
    (case,) = ps.matrix.workloads.cases
    draws = {"s": base, "s@head": head}
    for slot in ctl.slots:
        if ctl.slot_skip_reason(slot):
            continue
        ctl.record_start(slot.server, case, slot.start, run_of(slot.server, slot.start, case, draws[slot.server][slot.start]))
    ctl.finish_starts()
    (entry,) = [e for e in ctl.ab if e.metric == "tg_tps"]
    return entry.verdict, len(entry.head_starts)


SCENARIOS = {
    "a/a quiet": (1.0, 0.004, 0.0),
    "a/a noisy": (1.0, 0.05, 0.0),
    "2% drop, quiet": (1.0, 0.004, 0.02),
    "3% drop in 10% noise": (1.0, 0.10, 0.03),
    "30% drop": (1.0, 0.05, 0.30),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_the_plugin_and_the_benchmark_take_the_same_decisions(tmp_path, monkeypatch, name):
    gq = gate_quality()
    calls: list[tuple] = []
    real = startstats.next_action

    def spy(c, budget, *a, **k):
        action = real(c, budget, *a, **k)
        calls.append((c.verdict.value, c.n_base, c.n_head, round(c.delta, 12), action))
        return action

    monkeypatch.setattr(startstats, "next_action", spy)
    _, cv, drop = SCENARIOS[name]
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    base = (1000.0 * np.exp(rng.standard_normal(8) * cv)).tolist()
    head = (1000.0 * (1 - drop) * np.exp(rng.standard_normal(8) * cv)).tolist()

    bi, hi = iter(base), iter(head)
    verdict, n = gq.rule_trial(lambda: next(bi), lambda: next(hi), floor=0.01, r=3, r_max=6, history=[],
                               prior=startstats.DEFAULT_PRIOR, rule="new")
    bench_calls, calls[:] = list(calls), []
    p_verdict, p_n = drive_session(tmp_path, base, head)
    plugin_calls = list(calls)

    assert bench_calls, "the benchmark never asked the rule"
    assert plugin_calls, "the plugin's controller never asked the rule"
    assert (p_verdict, p_n) == (verdict.value, n)
    # the same questions, the same answers (the plugin may ask once more per look: each slot asks)
    assert sorted(set(plugin_calls)) == sorted(set(bench_calls))


def test_the_same_function_object():
    gq = gate_quality()
    import pytest_mxfp4.run.controller as controller_mod

    src_controller = Path(controller_mod.__file__).read_text()
    src_bench = (ROOT / "benchmarks" / "gate_quality.py").read_text()
    assert "startstats.next_action(" in src_controller and "ss.next_action(" in src_bench
    assert "ss.compare_starts(" in src_bench
    # both resolve the name on the one module at call time: replacing it replaces it for both
    assert gq.rule_trial.__module__ == "gate_quality"
    assert startstats.next_action is __import__("pytest_mxfp4.stats.starts", fromlist=["x"]).next_action
