"""`--perf-json`: the machine-readable result (schema 1)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..baselines import write_atomic
from ..measure.runner import CaseRun, Sample
from ..results import MetricResult, SessionResults

SCHEMA = 1


def metric_dict(r: MetricResult) -> dict[str, Any]:
    s, b, c = r.summary, r.baseline, r.comparison
    return {
        "server": r.server,
        "workload": r.case.id,
        "metric": r.metric,
        "unit": r.unit,
        "case": {"kind": r.case.kind, "pp": r.case.pp, "tg": r.case.tg, "depth": r.case.depth},
        "samples": r.samples,
        "mean": s.mean if s else None,
        "stdev": s.stdev if s else None,
        "cv": s.cv if s else None,
        "n": s.n if s else 0,
        "baseline": {"mean": b.mean, "stdev": b.stdev, "n": b.n} if b else None,
        "delta_pct": c.delta_pct if c else None,
        "comparison": {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(c).items()} if c else None,
        "verdict": r.verdict.value,
        "gate": r.gate,
        "error": r.error,
        "flagged_samples": r.flagged_samples,
        "error_samples": r.error_samples,
        "runs_to_verdict": r.runs_to_verdict,
        "confirmed": r.confirmed,
        "incomparable": r.incomparable,
        "targets": [asdict(t) for t in r.targets],
    }


def to_dict(session: SessionResults) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "matrix": session.matrix,
        "environment": session.environment,
        "servers": {n: asdict(rec) for n, rec in session.servers.items()},
        "results": [metric_dict(r) for r in session.results],
        "runs": [run_dict(run) for run in session.case_runs],
    }


def sample_dict(s: Sample) -> dict[str, Any]:
    return {
        "run": s.run,
        "metrics": asdict(s.metrics) if s.metrics else None,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "content_chunks": s.content_chunks,
        "client_lag_ms": round(s.client_lag_ms, 3),
        "cache_hit_tokens": s.cache_hit_tokens,
        "telemetry": s.telemetry,
        "flags": s.flags,
        "error": s.error,
    }


def run_dict(run: CaseRun) -> dict[str, Any]:
    return {
        "server": run.server,
        "workload": run.case.id,
        "latency_ms": run.latency_ms,
        "notes": run.notes,
        "samples": [sample_dict(s) for s in run.samples],
    }


def write(session: SessionResults, path: Path) -> None:
    write_atomic(Path(path), json.dumps(to_dict(session), indent=2, default=str) + "\n")
