"""Results as a pytest-benchmark JSON file, so `pytest-benchmark compare FILE`
(and `--between`, `--csv`, histograms) work on our numbers.

pytest-benchmark measures time per operation and shows OPS = 1 / Mean. One
benchmark per (server, case, metric), grouped by metric:

* throughput metrics (tok/s) are stored as seconds per token: every sample
  x tok/s becomes 1/x s. `mean` is 1 / (mean tok/s), so the OPS column is
  exactly the mean tok/s of the Markdown page and the `--perf-json` file
  (pytest-benchmark prints it in Kops/s once a group's slowest value is
  above 1000, e.g. prefill 4340.70 tok/s -> 4.3407 Kops/s).
* latency metrics (ms) are stored in seconds (the table then shows ms).

`extra_info` keeps the number in its own unit, the verdict and the baseline.
Results without trusted samples (errors) are left out, as pytest-benchmark
leaves out benchmarks that errored.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_mxfp4.formats.fileio import write_atomic
from pytest_mxfp4.formats.results import MetricResult, RunEnvironment, SessionResults

PROJECT = "pytest-mxfp4"


def _stats(data: list[float], mean: float, ops: float) -> dict[str, Any]:
    """pytest-benchmark's stats block for `data` (seconds), with `mean` set
    so that OPS = 1 / mean. Quantiles and outlier counts are computed by
    pytest-benchmark's own Stats class, so they read as its users expect."""
    from pytest_benchmark.stats import Stats

    st = Stats()
    for x in data:
        st.update(x)
    out = st.as_dict()
    out["mean"] = mean
    out["ops"] = ops  # == 1 / mean, passed in so that a tok/s mean is kept bit for bit
    out["total"] = mean * len(data)  # rounds / total == ops, as pytest-benchmark computes it
    out["data"] = list(data)
    out["iterations"] = 1
    return out


def _benchmark(r: MetricResult, matrix: str) -> dict[str, Any] | None:
    if r.summary is None or not r.samples:
        return None
    if r.unit not in ("tok/s", "ms"):
        return None  # not a time (speculative acceptance: %, tokens per step): pytest-benchmark has no column for it
    throughput = r.unit == "tok/s"
    if throughput:
        if any(x <= 0 for x in r.samples) or r.summary.mean <= 0:
            return None  # a rate of 0 has no time per token
        data = [1.0 / x for x in r.samples]
        mean, ops = 1.0 / r.summary.mean, r.summary.mean
        stored = "seconds per token (OPS = tok/s)"
    else:
        data = [x / 1000.0 for x in r.samples]
        mean = r.summary.mean / 1000.0
        ops = 1.0 / mean if mean else 0.0
        stored = "seconds (the table shows ms)"
    b, c = r.baseline, r.comparison
    extra = {
        "server": r.server,
        "workload": r.case.id,
        "metric": r.metric,
        "unit": r.unit,
        "stored_as": stored,
        "mean": r.summary.mean,
        "stdev": r.summary.stdev,
        "median": r.summary.median,
        "cv": r.summary.cv,
        "n": r.summary.n,
        "verdict": r.verdict.value,
        "gate": r.gate,
        "baseline_mean": b.mean if b else None,
        "baseline_stdev": b.stdev if b else None,
        "delta_pct": c.delta_pct if c else None,
        "flagged_samples": r.flagged_samples,
    }
    return {
        "group": f"{r.metric} ({r.unit})",
        "name": f"{r.case.id}[{r.server}]",
        "fullname": f"{matrix or PROJECT}::{r.server}::{r.key}",
        "params": {"server": r.server, "workload": r.case.id, "metric": r.metric},
        "param": r.server,
        "extra_info": extra,
        "options": {"disable_gc": False, "timer": "time.perf_counter (per streamed request)", "min_rounds": r.summary.n,
                    "max_time": 0, "min_time": 0, "warmup": False},
        "stats": _stats(data, mean, ops),
    }


def _machine_info(env: RunEnvironment) -> dict[str, Any]:
    os_name, _, release = (env.os or "").partition(" ")
    return {
        "node": env.hostname or "",
        "processor": env.arch or "",
        "machine": env.arch or "",
        "python_compiler": platform.python_compiler(),
        "python_implementation": platform.python_implementation(),
        "python_implementation_version": env.python or platform.python_version(),
        "python_version": env.python or platform.python_version(),
        "python_build": list(platform.python_build()),
        "release": release,
        "system": os_name,
        "cpu": {"brand_raw": env.cpu_model or "", "count": env.cpu_count, "arch": env.arch or ""},
        "memory_gib": env.memory_gib,
        "gpus": [asdict(g) for g in env.gpus],
        "hardware_key": env.hardware_key,
        "plugin_version": env.plugin_version,
    }


def _commit_info(env: RunEnvironment, matrix: str) -> dict[str, Any]:
    sha = env.git_sha
    return {
        "id": sha or "unversioned",
        "time": None,
        "author_time": None,
        "dirty": None,  # not recorded by the session
        "project": PROJECT,
        "branch": "(unknown)",
        "matrix": matrix,
    }


def to_pytest_benchmark(session: SessionResults) -> dict[str, Any]:
    """The pytest-benchmark (5.x storage format) document for `session`."""
    try:
        from pytest_benchmark import __version__ as pb_version
    except ImportError:  # pragma: no cover - pytest-benchmark is a dependency
        pb_version = "5.0.0"
    env = session.environment
    benchmarks = [b for b in (_benchmark(r, session.matrix) for r in session.results) if b is not None]
    doc = {
        "machine_info": _machine_info(env),
        "commit_info": _commit_info(env, session.matrix),
        "benchmarks": benchmarks,
        "datetime": env.captured_at or datetime.now(timezone.utc).isoformat(),
        "version": pb_version,
    }
    if session.interrupted:  # additive: pytest-benchmark ignores keys it does not know
        doc["interrupted"] = session.interrupted
    return doc


def write(session: SessionResults, path: str | Path) -> Path:
    """Write the pytest-benchmark JSON atomically; returns the path."""
    path, data = Path(path), to_pytest_benchmark(session)
    write_atomic(path, json.dumps(data, indent=2, default=str) + "\n")
    return path
