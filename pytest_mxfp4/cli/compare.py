"""Offline comparison: the same decision the plugin makes, on stored results.

For bisecting, CI re-checks, and numbers measured elsewhere:
`pytest-mxfp4 compare REFERENCE... CURRENT.json` where each reference is a
baseline YAML or an earlier `--perf-json` result. Returns data; the CLI
prints it (cli.py) with the report layer's words.
"""

from __future__ import annotations

from pathlib import Path

from pytest_mxfp4.formats import results as results_file
from pytest_mxfp4.formats.baselines import read_baseline
from pytest_mxfp4.formats.config import Gates, load_matrix
from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.run.judge import judge_metric
from pytest_mxfp4.formats.results import SessionResults
from pytest_mxfp4.stats.samples import BaselineStats, Summary


def start_means(res: SessionResults) -> dict[tuple[str, str], list[float]]:
    """(server, 'case/metric') -> the mean of each server start, from the
    samples' `start` index (trusted samples only), in start order; a start
    the run left out as disturbed while it measured is left out here too."""
    acc: dict[tuple[str, str], dict[int, list[float]]] = {}
    windows = res.starts.windows if res.starts else []
    left_out = {(w.server, w.start, w.case) for w in windows if w.disturbed}
    leave_out = not any(w.kept for w in windows)
    for run in res.case_runs:
        for metric in run.case.metrics:
            for smp in run.samples:
                if leave_out and (run.server, smp.start, run.case.id) in left_out:
                    continue
                v = smp.metrics.get(metric) if smp.clean else None
                if v is not None:
                    acc.setdefault((run.server, f"{run.case.id}/{metric}"), {}).setdefault(smp.start, []).append(v)
    return {k: [sum(v) / len(v) for _, v in sorted(d.items())] for k, d in acc.items()}


def load_reference_starts(paths: list[str]) -> dict[tuple[str, str], tuple[list[float], tuple]]:
    """(server, 'case/metric') -> (start means, ((between-start CV, df), ...) of
    the history), for references that know their starts."""
    out: dict[tuple[str, str], tuple[list[float], tuple]] = {}
    for p in map(Path, paths):
        if p.suffix in (".yaml", ".yml"):
            bf = read_baseline(p)
            for key, m in bf.metrics.items():
                out[(bf.server, key)] = m.start_evidence()
        else:
            for key, means in start_means(results_file.load(p)).items():
                old, hist = out.get(key, ([], ()))
                out[key] = (old + means, hist)
    return out


def load_references(paths: list[str]) -> dict[tuple[str, str], BaselineStats]:
    """(server, 'case/metric') -> baseline stats, from baseline YAMLs and/or result JSONs.
    Several result files are pooled; each file's CV feeds the noise history."""
    pooled: dict[tuple[str, str], list[list[float]]] = {}
    refs: dict[tuple[str, str], BaselineStats] = {}
    for p in map(Path, paths):
        if p.suffix in (".yaml", ".yml"):
            if not p.exists():
                raise PerfUserError(f"{p}: not found")
            bf = read_baseline(p)
            for key, m in bf.metrics.items():
                refs[(bf.server, key)] = m.stats()
        else:
            for r in results_file.load(p).metrics:
                if r.samples:
                    pooled.setdefault((r.server, r.key), []).append(r.samples)
    for key, runs in pooled.items():
        flat = [x for run in runs for x in run]
        cvs = tuple(Summary.from_samples(run).cv for run in runs if len(run) > 1) if len(runs) > 1 else ()
        refs[key] = BaselineStats.from_samples(flat, history_cv=cvs)
    return refs


def reference_hardware_keys(paths: list[str]) -> dict[str, str]:
    """Reference file -> the hardware key it was measured on (where it says)."""
    out = {}
    for p in map(Path, paths):
        if p.suffix in (".yaml", ".yml"):
            key = read_baseline(p).hardware_key
        else:
            key = results_file.load(p).hardware_key
        if key:
            out[str(p)] = key
    return out


def check_same_hardware(reference_paths: list[str], current_path: str, current_key: str | None) -> None:
    """A baseline from other hardware judges nothing ("GB10 vs CPU: +900%"): refuse."""
    keys = reference_hardware_keys(reference_paths)
    if current_key:
        for ref, key in keys.items():
            if key != current_key:
                raise PerfUserError(f"{ref}: measured on {key}, but {current_path} on {current_key}; "
                                    "compare results of the same hardware only")
    elif len(set(keys.values())) > 1:
        raise PerfUserError(f"the references were measured on different hardware ({', '.join(sorted(set(keys.values())))}); "
                            "compare results of the same hardware only")


def compare_results(reference_paths: list[str], current_path: str, config_path: str | None) -> SessionResults:
    """Re-judge every metric of `current_path` against the references with
    the gates of `config_path` (default: tg32 fails, others warn)."""
    matrix = load_matrix(config_path) if config_path else None
    gates = matrix.gates if matrix else Gates()
    refs = load_references(reference_paths)
    current = results_file.load(current_path)
    if not current.metrics:
        raise PerfUserError(f"{current_path}: holds no results (did the run measure anything?); nothing to compare")
    check_same_hardware(reference_paths, current_path, current.hardware_key)
    matched = [r for r in current.metrics if (r.server, r.key) in refs]
    if not matched:
        mine = sorted({r.server for r in current.metrics})
        theirs = sorted({s for s, _ in refs})
        raise PerfUserError(f"{current_path}: none of its {len(current.metrics)} results matches a reference "
                            f"(servers here: {', '.join(mine)}; in the references: {', '.join(theirs) or 'none'}); "
                            "nothing would be judged")
    session = SessionResults(matrix=current.matrix, environment=current.environment, servers=current.servers,
                             interrupted=current.interrupted, starts=current.starts)
    cur_starts = start_means(current)
    st = current.starts
    looks = 2 if st is not None and (st.max_restarts or 1) > (st.restarts or 1) else 1
    ref_starts = load_reference_starts(reference_paths)
    for r in current.metrics:
        mr = judge_metric(r.server, r.case, r.metric, r.samples, refs.get((r.server, r.key)), gates.rule(r.case, r.metric),
                          r.targets)
        if not r.samples and r.error:
            mr.error = r.error
        # several server starts on either side: the plugin judged start means; so does compare
        mine, (theirs, hist) = cur_starts.get((r.server, r.key), []), ref_starts.get((r.server, r.key), ([], ()))
        if mr.comparison is not None and mine and theirs and (len(mine) > 1 or len(theirs) > 1):
            from pytest_mxfp4.run.ab import judge_starts
            from pytest_mxfp4.stats import starts as startstats
            from pytest_mxfp4.stats.samples import StatsError

            rule = gates.rule(r.case, r.metric)
            try:
                mr.comparison, _ = judge_starts(
                    theirs, mine, higher_is_better=mr.higher_is_better, floor_pct=rule.floor_pct,
                    history_cvs=hist, label=r.key, what_base="reference", looks=looks,
                    prior=matrix.start_prior(r.server) if matrix else startstats.DEFAULT_PRIOR,
                    max_regression_pct=rule.max_regression_pct,
                    arms_label="baseline and this run's starts")
            except StatsError as e:
                mr.error = str(e)
        session.metrics.append(mr)
    return session
