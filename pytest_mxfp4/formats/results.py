"""Result objects and the one home of the result file format.

What was measured and what was decided, as typed objects; numbers stay
numbers here and every report formats from these same objects. The JSON
written by `--perf-json` (and read back by `compare`, `report` and `merge`)
is defined only here: `save`/`load` with a schema version, migration of
older files, and one clear error naming the file and the key for anything
malformed (never a KeyError traceback).

Schema history:
  1  first release: results, runs (samples), servers, environment.
  2  every sample carries `start` (which server start measured it; 0 for
     files of schema 1, which had one start per config); top-level `kind`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pytest_mxfp4.formats.config import METRICS, Case, Target
from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.formats.samples import CaseRun, RequestMetrics, Round, Sample
from pytest_mxfp4.stats.samples import BaselineStats, Comparison, StatsError, Summary, Verdict, Why

SCHEMA = 2
KIND = "pytest-mxfp4-results"


@dataclass
class MetricResult:
    server: str
    case: Case
    metric: str
    gate: str  # fail | warn | off
    samples: list[float] = field(default_factory=list)  # trusted samples only
    summary: Summary | None = None
    baseline: BaselineStats | None = None
    comparison: Comparison | None = None
    targets: list[Target] = field(default_factory=list)
    error: str | None = None
    flagged_samples: int = 0
    flags: dict[str, int] = field(default_factory=dict)  # flag -> samples that carried it
    error_samples: int = 0
    runs_to_verdict: int = 0
    confirmed: bool = False  # a regression seen twice, on fresh samples
    incomparable: str | None = None  # why the baseline can't judge this run (different backend ran)

    @property
    def key(self) -> str:
        return f"{self.case.id}/{self.metric}"

    @property
    def unit(self) -> str:
        return METRICS[self.metric].unit

    @property
    def higher_is_better(self) -> bool:
        return METRICS[self.metric].higher_is_better

    @property
    def verdict(self) -> Verdict:
        if self.error:
            return Verdict.ERROR
        if self.incomparable:
            return Verdict.INCOMPARABLE
        if self.comparison is None:
            return Verdict.NO_BASELINE
        return self.comparison.verdict

    @property
    def fails(self) -> bool:
        return self.gate == "fail" and self.verdict in (Verdict.REGRESSED, Verdict.ERROR)

    @property
    def warns(self) -> bool:
        return self.gate != "off" and not self.fails and self.verdict in (Verdict.REGRESSED, Verdict.ERROR)


@dataclass
class ServerRecord:
    """One server config in this session: ran, skipped, or failed to start."""

    name: str
    runner: str
    model: str
    description: str = ""
    skipped: str | None = None
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)  # ServerInfo as dict
    observed: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class SessionResults:
    matrix: str
    environment: dict[str, Any]
    servers: dict[str, ServerRecord] = field(default_factory=dict)
    metrics: list[MetricResult] = field(default_factory=list)
    case_runs: list[CaseRun] = field(default_factory=list)  # every sample, flagged and failed ones too
    # Why and where the run was cut short (SIGINT/SIGTERM), None for a run that
    # finished. Every output shows it: an interrupted run is never a pass, and
    # its verdicts are only those of looks it completed.
    interrupted: str | None = None

    def for_server(self, name: str) -> list[MetricResult]:
        return [r for r in self.metrics if r.server == name]

    @property
    def results(self) -> list[MetricResult]:
        """Older name of `metrics`."""
        return self.metrics

    @results.setter
    def results(self, value: list[MetricResult]) -> None:
        self.metrics = value

    @property
    def failed(self) -> list[MetricResult]:
        return [r for r in self.metrics if r.fails]

    @property
    def hardware_key(self) -> str | None:
        hw = self.environment.get("hardware_key")
        return str(hw) if hw else None


def interrupted_line(session: SessionResults) -> str | None:
    """The one sentence every output carries for an interrupted run."""
    if not session.interrupted:
        return None
    return (f"INTERRUPTED: {session.interrupted}; the run was cut short, so it is not a pass and carries "
            "no verdict it did not reach")


# --------------------------------------------------------------------------
# Writing


def _case_dict(case: Case) -> dict[str, Any]:
    return {"kind": case.kind, "pp": case.pp, "tg": case.tg, "depth": case.depth,
            **({"concurrency": case.concurrency} if case.concurrency > 1 else {})}


def _comparison_dict(c: Comparison) -> dict[str, Any]:
    return {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(c).items()}


def metric_dict(r: MetricResult) -> dict[str, Any]:
    s, b, c = r.summary, r.baseline, r.comparison
    return {
        "server": r.server,
        "workload": r.case.id,
        "metric": r.metric,
        "unit": r.unit,
        "case": _case_dict(r.case),
        "samples": r.samples,
        "mean": s.mean if s else None,
        "stdev": s.stdev if s else None,
        "cv": s.cv if s else None,
        "n": s.n if s else 0,
        "baseline": {"mean": b.mean, "stdev": b.stdev, "n": b.n, "history_cv": list(b.history_cv)} if b else None,
        "delta_pct": c.delta_pct if c else None,
        "comparison": _comparison_dict(c) if c else None,
        "verdict": r.verdict.value,
        "gate": r.gate,
        "error": r.error,
        "flagged_samples": r.flagged_samples,
        "flags": r.flags,
        "error_samples": r.error_samples,
        "runs_to_verdict": r.runs_to_verdict,
        "confirmed": r.confirmed,
        "incomparable": r.incomparable,
        "targets": [asdict(t) for t in r.targets],
    }


def sample_dict(s: Sample) -> dict[str, Any]:
    return {
        "run": s.run,
        "start": s.start,
        **({"stream": s.stream} if s.stream else {}),
        "metrics": asdict(s.metrics) if s.metrics else None,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "content_chunks": s.content_chunks,
        "client_lag_ms": round(s.client_lag_ms, 3),
        "cache_hit_tokens": s.cache_hit_tokens,
        "telemetry": s.telemetry,
        # llama.cpp: the server's own timings and client tg / server tg (measure/fidelity.py)
        **({"server_timings": s.server_timings, "server_decode_ratio": s.server_decode_ratio}
           if s.server_timings is not None else {}),
        "flags": s.flags,
        "error": s.error,
    }


def run_dict(run: CaseRun) -> dict[str, Any]:
    return {
        "server": run.server,
        "workload": run.case.id,
        "case": _case_dict(run.case),
        "latency_ms": run.latency_ms,
        "notes": run.notes,
        "samples": [sample_dict(s) for s in run.samples],
        **({"rounds": [asdict(rd) for rd in run.rounds]} if run.rounds else {}),
    }


def to_dict(session: SessionResults) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "kind": KIND,
        "matrix": session.matrix,
        "interrupted": session.interrupted,
        "environment": session.environment,
        "servers": {n: asdict(rec) for n, rec in session.servers.items()},
        "results": [metric_dict(r) for r in session.metrics],
        "runs": [run_dict(run) for run in session.case_runs],
    }


def save(session: SessionResults, path: Path | str) -> None:
    from pytest_mxfp4.formats.fileio import write_atomic

    write_atomic(Path(path), json.dumps(to_dict(session), indent=2, default=str) + "\n")


# --------------------------------------------------------------------------
# Reading


class _Reader:
    """Typed access to one result file; every failure names file and key."""

    def __init__(self, path: Path | str):
        self.path = str(path)

    def fail(self, where: str, msg: str) -> PerfUserError:
        return PerfUserError(f"{self.path}: {where}: {msg}")

    def get(self, d: dict, key: str, where: str, kind: type | tuple[type, ...], required: bool = True,
            default: Any = None) -> Any:
        if key not in d or d[key] is None:
            if required:
                raise self.fail(f"{where}.{key}".lstrip("."), "missing")
            return default
        v = d[key]
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if isinstance(v, bool) and kind in (int, float):
            raise self.fail(f"{where}.{key}".lstrip("."), f"expected a number, got {v!r}")
        if not isinstance(v, kind):
            names = "/".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
            raise self.fail(f"{where}.{key}".lstrip("."), f"expected {names}, got {type(v).__name__} {v!r:.60}")
        if kind is float and not math.isfinite(v):
            raise self.fail(f"{where}.{key}".lstrip("."), f"expected a finite number, got {v!r}")
        return v

    def floats(self, d: dict, key: str, where: str) -> list[float]:
        xs = self.get(d, key, where, list, required=False, default=[])
        out = []
        for i, x in enumerate(xs):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise self.fail(f"{where}.{key}[{i}]", f"expected a finite number, got {x!r:.60}")
            out.append(float(x))
        return out

    def case(self, d: dict, where: str) -> Case:
        c = self.get(d, "case", where, dict)
        kind = self.get(c, "kind", f"{where}.case", str)
        if kind not in ("prefill", "decode"):
            raise self.fail(f"{where}.case.kind", f"expected prefill or decode, got {kind!r}")
        conc = self.get(c, "concurrency", f"{where}.case", int, required=False, default=1)
        if conc < 1 or (conc > 1 and kind != "decode"):
            raise self.fail(f"{where}.case.concurrency", f"expected 1, or more on a decode case, got {conc!r}")
        return Case(kind, self.get(c, "pp", f"{where}.case", int), self.get(c, "tg", f"{where}.case", int),
                    self.get(c, "depth", f"{where}.case", int, required=False, default=0), concurrency=conc)


def migrate(data: dict, path: Path | str) -> dict:
    """Bring an older result file up to `SCHEMA` (in place; returns it)."""
    schema = data.get("schema")
    if schema == 1:
        for i, run in enumerate(data.get("runs") or []):
            if isinstance(run, dict):
                for s in run.get("samples") or []:
                    if isinstance(s, dict):
                        s.setdefault("start", 0)
        data["schema"] = 2
        data.setdefault("kind", KIND)
        schema = 2
    if schema != SCHEMA:
        raise PerfUserError(f"{path}: result schema {schema!r} is not one this version reads (1..{SCHEMA}); "
                            "upgrade pytest-mxfp4 or re-run with this version")
    return data


def read_json(path: Path | str) -> dict:
    """The raw, migrated dict of a result file (for tools that pass it on)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise PerfUserError(f"{p}: not found") from None
    except IsADirectoryError:
        raise PerfUserError(f"{p}: is a directory, expected a result JSON file") from None
    except UnicodeDecodeError:
        raise PerfUserError(f"{p}: not a text file; expected a result JSON written by --perf-json") from None
    except json.JSONDecodeError as e:
        raise PerfUserError(f"{p}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(data, dict) or "schema" not in data or not isinstance(data.get("results"), list):
        raise PerfUserError(f"{p}: not a pytest-mxfp4 result file (expected an object with schema and a results "
                            "list, as written by --perf-json)")
    return migrate(data, p)


def load(path: Path | str) -> SessionResults:
    """A result file read back as SessionResults, with the verdicts the
    session gave (nothing is re-judged) and every sample."""
    return from_dict(read_json(path), path)


def from_dict(data: dict, path: Path | str = "<results>") -> SessionResults:
    r = _Reader(path)
    env = r.get(data, "environment", "", dict, required=False, default={})
    session = SessionResults(matrix=str(data.get("matrix") or ""), environment=env,
                             interrupted=r.get(data, "interrupted", "", str, required=False))
    known = {f.name for f in fields(ServerRecord)}
    for name, rec in r.get(data, "servers", "", dict, required=False, default={}).items():
        where = f"servers.{name}"
        if not isinstance(rec, dict):
            raise r.fail(where, f"expected an object, got {type(rec).__name__}")
        kw = {k: v for k, v in rec.items() if k in known}
        kw.update(name=str(name), runner=str(rec.get("runner") or ""), model=str(rec.get("model") or ""))
        session.servers[str(name)] = ServerRecord(**kw)
    for i, item in enumerate(data["results"]):
        mr = _metric_result(r, item, f"results[{i}]")
        session.metrics.append(mr)
        session.servers.setdefault(mr.server, ServerRecord(name=mr.server, runner="", model=""))
    for i, item in enumerate(r.get(data, "runs", "", list, required=False, default=[])):
        session.case_runs.append(_case_run(r, item, f"runs[{i}]"))
    return session


def _metric_result(r: _Reader, d: Any, where: str) -> MetricResult:
    if not isinstance(d, dict):
        raise r.fail(where, f"expected an object, got {type(d).__name__}")
    server = r.get(d, "server", where, str)
    metric = r.get(d, "metric", where, str)
    if metric not in METRICS:
        raise r.fail(f"{where}.metric", f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    case = r.case(d, where)
    gate = r.get(d, "gate", where, str, required=False, default="warn")
    if gate not in ("fail", "warn", "off"):
        raise r.fail(f"{where}.gate", f"expected fail, warn or off, got {gate!r}")
    samples = r.floats(d, "samples", where)
    mr = MetricResult(server=server, case=case, metric=metric, gate=gate, samples=samples,
                      error=r.get(d, "error", where, str, required=False))
    try:
        if samples:
            mr.summary = Summary.from_samples(samples, metric=mr.key)
        b = r.get(d, "baseline", where, dict, required=False)
        if b is not None:
            bw = f"{where}.baseline"
            mr.baseline = BaselineStats.from_summary(
                r.get(b, "mean", bw, float), r.get(b, "stdev", bw, float), r.get(b, "n", bw, int),
                history_cv=r.floats(b, "history_cv", bw))
    except StatsError as e:
        raise r.fail(where, f"unreadable numbers: {e}") from None
    c = r.get(d, "comparison", where, dict, required=False)
    if c is not None:
        mr.comparison = _comparison(r, c, f"{where}.comparison")
    for j, t in enumerate(r.get(d, "targets", where, list, required=False, default=[])):
        tw = f"{where}.targets[{j}]"
        if not isinstance(t, dict):
            raise r.fail(tw, "expected an object")
        mr.targets.append(Target(engine=r.get(t, "engine", tw, str), metric=r.get(t, "metric", tw, str),
                                 value=r.get(t, "value", tw, float), unit=str(t.get("unit") or ""),
                                 note=str(t.get("note") or "")))
    mr.flagged_samples = r.get(d, "flagged_samples", where, int, required=False, default=0)
    mr.flags = {str(k): int(v) for k, v in r.get(d, "flags", where, dict, required=False, default={}).items()
                if isinstance(v, int) and not isinstance(v, bool)}
    mr.error_samples = r.get(d, "error_samples", where, int, required=False, default=0)
    mr.runs_to_verdict = r.get(d, "runs_to_verdict", where, int, required=False, default=0)
    mr.confirmed = bool(r.get(d, "confirmed", where, bool, required=False, default=False))
    if d.get("verdict") == Verdict.INCOMPARABLE.value and mr.error is None:
        mr.incomparable = str(d.get("incomparable") or "the stored baseline ran another configuration")
    return mr


def _comparison(r: _Reader, c: dict, where: str) -> Comparison:
    verdict = r.get(c, "verdict", where, str)
    try:
        v = Verdict(verdict)
    except ValueError:
        raise r.fail(f"{where}.verdict", f"unknown verdict {verdict!r}; known: "
                     + ", ".join(x.value for x in Verdict)) from None
    why = c.get("why")
    num = lambda k: r.get(c, k, where, float, required=False)  # noqa: E731
    return Comparison(
        verdict=v, delta_pct=num("delta_pct"), effect_pct=num("effect_pct"), ci_low_pct=num("ci_low_pct"),
        ci_high_pct=num("ci_high_pct"), p_value=num("p_value"), tolerance_pct=num("tolerance_pct"),
        n_current=r.get(c, "n_current", where, int, required=False, default=0),
        n_baseline=r.get(c, "n_baseline", where, int, required=False, default=0),
        reason=str(c.get("reason") or ""),
        dropped_current=r.get(c, "dropped_current", where, int, required=False, default=0),
        dropped_baseline=r.get(c, "dropped_baseline", where, int, required=False, default=0),
        why=Why(why) if why in {w.value for w in Why} else None,
        method=str(c.get("method") or ""), p_worse=num("p_worse"))


def _case_run(r: _Reader, d: Any, where: str) -> CaseRun:
    if not isinstance(d, dict):
        raise r.fail(where, f"expected an object, got {type(d).__name__}")
    server = r.get(d, "server", where, str)
    if "case" in d:
        case = r.case(d, where)
    else:  # schema 1 runs named the case only by id
        try:
            case = Case.parse(r.get(d, "workload", where, str))
        except ValueError as e:
            raise r.fail(f"{where}.workload", str(e)) from None
    run = CaseRun(server=server, case=case, latency_ms=r.get(d, "latency_ms", where, float, required=False,
                                                             default=0.0),
                  notes=[str(n) for n in r.get(d, "notes", where, list, required=False, default=[])])
    metric_names = {f.name for f in fields(RequestMetrics)}
    for j, s in enumerate(r.get(d, "samples", where, list, required=False, default=[])):
        sw = f"{where}.samples[{j}]"
        if not isinstance(s, dict):
            raise r.fail(sw, "expected an object")
        m = r.get(s, "metrics", sw, dict, required=False)
        metrics = None
        if m is not None:
            missing = metric_names - set(m)
            if missing:
                raise r.fail(f"{sw}.metrics", f"missing {', '.join(sorted(missing))}")
            metrics = RequestMetrics(**{k: r.get(m, k, f"{sw}.metrics", float, required=False)
                                        for k in metric_names})
        run.samples.append(Sample(
            run=r.get(s, "run", sw, int), start=r.get(s, "start", sw, int, required=False, default=0),
            stream=r.get(s, "stream", sw, int, required=False, default=0),
            metrics=metrics, prompt_tokens=r.get(s, "prompt_tokens", sw, int, required=False),
            completion_tokens=r.get(s, "completion_tokens", sw, int, required=False),
            content_chunks=r.get(s, "content_chunks", sw, int, required=False, default=0),
            client_lag_ms=r.get(s, "client_lag_ms", sw, float, required=False, default=0.0),
            cache_hit_tokens=r.get(s, "cache_hit_tokens", sw, float, required=False),
            telemetry=list(s.get("telemetry") or []), flags=[str(f) for f in s.get("flags") or []],
            server_timings=s["server_timings"] if isinstance(s.get("server_timings"), dict) else None,
            server_decode_ratio=r.get(s, "server_decode_ratio", sw, float, required=False),
            error=r.get(s, "error", sw, str, required=False)))
    for j, rd in enumerate(r.get(d, "rounds", where, list, required=False, default=[])):
        rw = f"{where}.rounds[{j}]"
        if not isinstance(rd, dict):
            raise r.fail(rw, "expected an object")
        num = {k: r.get(rd, k, rw, float, required=False)
               for k in ("wall_ms", "agg_tps", "release_spread_ms", "together_ms")}
        run.rounds.append(Round(
            run=r.get(rd, "run", rw, int), streams=r.get(rd, "streams", rw, int),
            start=r.get(rd, "start", rw, int, required=False, default=0),
            tokens=r.get(rd, "tokens", rw, int, required=False, default=0),
            peak_streams=r.get(rd, "peak_streams", rw, int, required=False, default=0),
            together_ms=num["together_ms"] or 0.0, wall_ms=num["wall_ms"], agg_tps=num["agg_tps"],
            release_spread_ms=num["release_spread_ms"], error=r.get(rd, "error", rw, str, required=False)))
    return run
