"""Samples -> verdicts. Measures more where the statistics ask for it:
an inconclusive gated metric gets more samples (up to a cap), and a gated
metric that looks regressed is re-measured on fresh samples before failing."""

from __future__ import annotations

from .baselines import BaselineFile
from .config import Case, Matrix
from .measure.runner import CaseRun, CaseRunner
from .results import MetricResult
from .stats import BaselineStats, StatsError, Summary, compare, next_step, policy_for


def judge_metric(server: str, case: Case, metric: str, values: list[float], baseline: BaselineStats | None,
                 matrix: Matrix, run: CaseRun | None = None) -> MetricResult:
    from .config import HIGHER_IS_BETTER

    r = MetricResult(server=server, case=case, metric=metric, gate=matrix.gates.policy(case, metric),
                     samples=list(values), baseline=baseline, targets=matrix.targets_for(case, metric))
    if run is not None:
        r.flagged_samples = len(run.flagged)
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
            r.comparison = compare(values, baseline, higher_is_better=HIGHER_IS_BETTER[metric],
                                   policy=policy_for(metric))
    except StatsError as e:
        r.error = str(e)
    return r


def baseline_for(bf: BaselineFile | None, key: str) -> BaselineStats | None:
    if bf is None or key not in bf.metrics:
        return None
    return bf.metrics[key].stats()


def measure_and_judge(runner: CaseRunner, matrix: Matrix, bf: BaselineFile | None) -> list[MetricResult]:
    case, w = runner.case, matrix.workloads
    runner.measure(w.runs)
    primary = case.primary_metric
    base = baseline_for(bf, f"{case.id}/{primary}")
    confirmed = False
    if base is not None and matrix.gates.policy(case, primary) == "fail":
        policy = policy_for(primary)
        while True:
            values = runner.result.values(primary)
            if not values:
                break
            head = judge_metric(runner.client.name, case, primary, values, base, matrix)
            if head.comparison is None:
                break
            step = next_step(head.comparison, len(values), policy)
            if step == "more" and len(runner.result.samples) < policy.max_runs:
                runner.measure(min(w.runs, policy.max_runs - len(runner.result.samples)))
                continue
            if step == "confirm" and not confirmed:
                # Fresh samples only: the first look may have been a warm-state fluke.
                runner.result.superseded += runner.result.samples
                runner.result.samples.clear()
                runner.measure(w.runs)
                confirmed = True
                continue
            break
    results = []
    for metric in case.metrics:
        key = f"{case.id}/{metric}"
        values = runner.result.values(metric)
        if metric == "pp_tps" or metric == "tg_tps" or values:
            r = judge_metric(runner.client.name, case, metric, values, baseline_for(bf, key), matrix, runner.result)
            r.confirmed = confirmed and metric == primary
            results.append(r)
    return results
