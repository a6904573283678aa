"""Offline comparison: the same decision the plugin makes, on stored results.

For bisecting, CI re-checks, and numbers measured elsewhere:
`pytest-mxfp4 compare REFERENCE... CURRENT.json` where each reference is a
baseline YAML or an earlier `--perf-json` result.
"""

from __future__ import annotations

import json
from pathlib import Path

from .baselines import read_baseline
from .config import METRIC_UNITS, Case, Gates, load_matrix
from .errors import PerfUserError
from .judge import judge_metric
from .report import terminal
from .results import SessionResults
from .stats import BaselineStats, Summary


def _load_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PerfUserError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise PerfUserError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("results"), list):
        raise PerfUserError(f"{path}: not a pytest-mxfp4 result file (expected schema 1 with a results list)")
    return data


def _case(r: dict, path: Path) -> Case:
    c = r.get("case")
    if isinstance(c, dict):
        return Case(c["kind"], int(c["pp"]), int(c["tg"]), int(c.get("depth", 0)))
    raise PerfUserError(f"{path}: result {r.get('server')}/{r.get('workload')} has no 'case' block")


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
            for r in _load_json(p)["results"]:
                if r.get("samples"):
                    pooled.setdefault((r["server"], f"{r['workload']}/{r['metric']}"), []).append(
                        [float(x) for x in r["samples"]])
    for key, runs in pooled.items():
        flat = [x for run in runs for x in run]
        cvs = tuple(Summary.from_samples(run).cv for run in runs if len(run) > 1) if len(runs) > 1 else ()
        refs[key] = BaselineStats.from_samples(flat, history_cv=cvs)
    return refs


def compare_results(reference_paths: list[str], current_path: str, config_path: str | None) -> SessionResults:
    from dataclasses import replace

    gates = load_matrix(config_path).gates if config_path else Gates()
    refs = load_references(reference_paths)
    current = _load_json(Path(current_path))
    session = SessionResults(matrix=str(current.get("matrix", "")), environment=current.get("environment", {}))
    for r in current["results"]:
        case = _case(r, Path(current_path))
        metric = r["metric"]
        if metric not in METRIC_UNITS:
            raise PerfUserError(f"{current_path}: unknown metric {metric!r}")
        values = [float(x) for x in r.get("samples") or []]
        key = (r["server"], f"{case.id}/{metric}")
        # the matrix here only supplies gates and targets
        fake_matrix = _GateOnly(gates)
        mr = judge_metric(r["server"], case, metric, values, refs.get(key), fake_matrix)  # type: ignore[arg-type]
        if not values and r.get("error"):
            mr = replace(mr, error=r["error"])
        session.results.append(mr)
    return session


class _GateOnly:
    """The slice of a Matrix that judging needs."""

    def __init__(self, gates: Gates):
        self.gates = gates

    def targets_for(self, case, metric):
        return []


def compare_command(reference_paths: list[str], current_path: str, config_path: str | None) -> int:
    session = compare_results(reference_paths, current_path, config_path)
    for line in terminal.render(session):
        print(line)
    failed = session.failed
    if failed:
        print(f"\nFAILED: {len(failed)} gated metric(s) regressed: " + ", ".join(f"{r.server} {r.key}" for r in failed))
        return 1
    return 0
