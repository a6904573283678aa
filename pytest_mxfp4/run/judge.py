"""Samples -> verdicts. Measures more where the statistics ask for it:
an inconclusive gated metric gets more samples (up to a cap), and a gated
metric that looks regressed is re-measured on fresh samples before failing."""

from __future__ import annotations

from typing import Protocol

from pytest_mxfp4.formats.facts import ObservedFacts
from pytest_mxfp4.formats.baselines import BaselineFile
from pytest_mxfp4.formats.config import METRICS, Case, GateRule, Matrix, Target
from pytest_mxfp4.formats.samples import CaseRun, Sample, flag_counts
from pytest_mxfp4.formats.results import MetricResult
from pytest_mxfp4.stats.samples import BaselineStats, StatsError, Summary, Verdict, compare, decide, policy_for


class Measurer(Protocol):
    """What judging needs of a case runner (measure.runner.CaseRunner; a
    scripted one in tests): the case, everything measured so far, and more
    samples on demand."""

    case: Case
    result: CaseRun

    def measure(self, n: int) -> list[Sample]: ...


def _policy(rule: GateRule, metric: str):
    """The sample-level statistics' policy of one gated metric."""
    return policy_for(metric, floor_pct=rule.floor_pct) if rule.floor_given else policy_for(metric)


def judge_metric(server: str, case: Case, metric: str, values: list[float], baseline: BaselineStats | None,
                 rule: GateRule, targets: list[Target] | tuple[Target, ...] = (),
                 run: CaseRun | None = None) -> MetricResult:
    """One metric's verdict under its gate (`rule`: `Gates.rule(case, metric)`,
    resolved once by the caller)."""
    r = MetricResult(server=server, case=case, metric=metric, gate=rule.gate,
                     samples=list(values), baseline=baseline, targets=list(targets))
    if run is not None:
        r.flagged_samples = len(run.flagged)
        r.flags = flag_counts(run.flagged)
        r.error_samples = len(run.errors)
        r.runs_to_verdict = len(run.samples)
    if not values:
        why = "; ".join(run.errors[:3]) if run and run.errors else "no trusted sample"
        if run and not run.errors and run.flagged:
            why = f"every sample was flagged ({', '.join(sorted({f for s in run.flagged for f in s.flags}))})"
        r.error = why
        return r
    try:
        r.summary = Summary.from_samples(values, metric=r.key)
        if baseline is not None:
            r.comparison = compare(values, baseline, higher_is_better=METRICS[metric].higher_is_better,
                                   policy=_policy(rule, metric))
    except StatsError as e:
        r.error = str(e)
    return r


# Facts that change what is being measured: a baseline taken on another
# backend is not a reference for this run, whatever the numbers say.
BACKEND_FACTS = ("attention_backend", "moe_backend", "fp4_mode", "quantization", "kv_cache_dtype", "spec_decode",
                 "enforce_eager")


def incomparable_reason(bf: BaselineFile | None, observed: ObservedFacts | None) -> str | None:
    if bf is None or bf.environment.observed is None or observed is None:
        return None
    then = bf.environment.observed
    pairs = [(k, getattr(then, k), getattr(observed, k)) for k in BACKEND_FACTS]
    diffs = [f"{k}: baseline {was!r}, now {now!r}" for k, was, now in pairs
             if was is not None and now is not None and str(was).lower() != str(now).lower()]
    if diffs:
        return "baseline was taken on another backend (" + "; ".join(diffs) + "); update it or fix the config"
    return None


def baseline_for(bf: BaselineFile | None, key: str) -> BaselineStats | None:
    if bf is None or key not in bf.metrics:
        return None
    return bf.metrics[key].stats()


class _NothingMeasurable(Exception):
    """Every sample of a measuring step was an error or flagged."""


def measure_and_judge(runner: Measurer, matrix: Matrix, bf: BaselineFile | None,
                      incomparable: str | None = None) -> list[MetricResult]:
    """Measure `runs` samples; for a fail-gated primary metric with a baseline,
    follow stats.decide's sequential protocol (more samples while
    inconclusive, confirmation samples before a regression stands)."""
    case, w = runner.case, matrix.workloads
    primary = case.primary_metric
    rules = {metric: matrix.gates.rule(case, metric) for metric in case.metrics}  # each gate resolved once
    base = None if incomparable else baseline_for(bf, f"{case.id}/{primary}")
    if base is not None and rules[primary].gate == "fail":

        def measure(k: int) -> list[float]:
            taken = runner.measure(k)
            values = [s.metrics.get(primary) for s in taken if s.clean and s.metrics.get(primary) is not None]
            if not values:
                raise _NothingMeasurable
            return values

        try:
            decide(measure, base, higher_is_better=METRICS[primary].higher_is_better,
                   policy=_policy(rules[primary], primary),
                   initial_runs=w.runs)
        except (_NothingMeasurable, StatsError):
            pass  # judged below from what was measured; errors are reported there
    else:
        runner.measure(w.runs)
    results = []
    for metric in case.metrics:
        key = f"{case.id}/{metric}"
        values = runner.result.values(metric)
        if metric == primary or values:
            r = judge_metric(runner.result.server, case, metric, values,
                             None if incomparable else baseline_for(bf, key), rules[metric],
                             matrix.targets_for(case, metric), runner.result)
            r.confirmed = metric == primary and r.verdict is Verdict.REGRESSED and len(values) > w.runs
            r.incomparable = incomparable if bf is not None and key in bf.metrics else None
            results.append(r)
    return results
