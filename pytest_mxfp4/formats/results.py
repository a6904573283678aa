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

from pytest_mxfp4.formats.facts import ObservedFacts
from pytest_mxfp4.formats.config import METRICS, Case, Target
from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.formats.samples import CaseRun, RequestMetrics, Round, Sample
from pytest_mxfp4.stats.samples import BaselineStats, Comparison, StatsError, Summary, Verdict, Why

SCHEMA = 2
KIND = "pytest-mxfp4-results"
# per-sample metrics added after schema 2 (additive): absent in older files
OPTIONAL_METRICS = frozenset({"accept_pct", "accept_len"})


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
    def short_key(self) -> str:
        """'tg32' for a case's primary metric, 'pp2048/e2e_ttft_ms' otherwise."""
        return self.case.id if self.metric == self.case.primary_metric else self.key

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


@dataclass(frozen=True)
class GpuRecord:
    name: str
    sm: str  # compute capability "12.1"
    memory_mib: int | None = None
    driver: str | None = None


@dataclass
class RunEnvironment:
    """Where a run ran (JSON: environment; captured by observe.environment).
    The hardware key is stored as captured: a file read on another machine
    keeps the key it was measured under."""

    hardware_key: str | None = None
    hostname: str | None = None
    os: str | None = None
    arch: str | None = None
    cpu_model: str | None = None
    cpu_count: int | None = None
    memory_gib: float | None = None
    python: str | None = None
    plugin_version: str | None = None
    git_sha: str | None = None
    gpus: list[GpuRecord] = field(default_factory=list)
    captured_at: str | None = None
    cpu_affinity: list[int] = field(default_factory=list)
    run_id: str | None = None  # the session's own id (two runs in one second stay two)
    telemetry: str | None = None  # "nvml", or why there is none
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as read

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "gpus")}
        d["gpus"] = [asdict(g) for g in self.gpus]
        return {**self.extra, **{k: v for k, v in d.items() if v is not None}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunEnvironment:
        """Lenient: a field of the wrong type is kept under `extra`, never guessed."""
        known = {f.name for f in fields(cls)} - {"extra", "gpus"}
        kw: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, v in d.items():
            if k in known and (v is None or isinstance(v, _ENV_TYPES[k])) and not isinstance(v, bool):
                kw[k] = v
            elif k == "gpus" and isinstance(v, list):
                kw["gpus"] = [GpuRecord(name=str(g.get("name") or "?"), sm=str(g.get("sm") or "?"),
                                        memory_mib=g.get("memory_mib") if isinstance(g.get("memory_mib"), int) else None,
                                        driver=g.get("driver") if isinstance(g.get("driver"), str) else None)
                              for g in v if isinstance(g, dict)]
            else:
                extra[k] = v
        if isinstance(kw.get("cpu_affinity"), list):
            kw["cpu_affinity"] = [x for x in kw["cpu_affinity"] if isinstance(x, int)]
        return cls(**kw, extra=extra)


_ENV_TYPES: dict[str, type | tuple[type, ...]] = {
    "hardware_key": str, "hostname": str, "os": str, "arch": str, "cpu_model": str, "cpu_count": int,
    "memory_gib": (int, float), "python": str, "plugin_version": str, "git_sha": str, "captured_at": str,
    "cpu_affinity": list, "run_id": str, "telemetry": str}


@dataclass
class ServerInfo:
    """What we know about the running server, for results and baselines."""

    name: str
    kind: str  # "process" | "docker" | "external"
    base_url: str  # e.g. http://127.0.0.1:8000 (no /v1)
    log_path: Path | None = None
    startup_s: float | None = None
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # redacted
    details: dict[str, Any] = field(default_factory=dict)  # image id, engine version ...


@dataclass
class ServerRecord:
    """One server config in this session: ran, skipped, or failed to start."""

    name: str
    runner: str
    model: str
    description: str = ""
    skipped: str | None = None
    error: str | None = None
    info: ServerInfo | None = None  # what the started server said about itself; None: it never started
    observed: ObservedFacts | None = None  # what its log showed; None: no log was read
    notes: list[str] = field(default_factory=list)
    # where this config ran, when a page is built from several runs' files (`report`)
    environment: RunEnvironment | None = None
    shard: str | None = None  # "K/N" and the runner, in a merged sharded run
    shard_runner: str | None = None


@dataclass
class SecondOpinion:
    """The head arm against the stored baseline: shown beside an A/B, warn only."""

    verdict: str
    delta_pct: float | None = None
    reason: str = ""


@dataclass
class ABEntry:
    """One (config, case, metric) of an A/B run, judged on start means."""

    server: str  # the base arm's config
    head: str
    case: str
    metric: str
    base_starts: list[float] = field(default_factory=list)  # start means used, start order
    head_starts: list[float] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)  # head = base + these
    verdict: str | None = None
    gate: str | None = None
    error: str | None = None
    delta_pct: float | None = None
    ci_low_pct: float | None = None
    ci_high_pct: float | None = None
    tolerance_pct: float | None = None
    p_value: float | None = None
    looks: int | None = None
    between_start_cv_pct: float | None = None  # measured, never the prior
    noise_cv_pct: float | None = None  # what the verdict used
    noise_df: float | None = None
    noise: str = ""  # where the noise figure came from
    calibrating: bool = False
    worst_pct: float | None = None  # how bad the interval still admits (- = worse)
    threshold_pct: float | None = None  # what a pass must rule out
    starts_to_decide: int | None = None
    outliers: list[str] = field(default_factory=list)
    reason: str = ""
    disturbed: str | None = None  # starts left out, with why
    baseline_second_opinion: SecondOpinion | None = None


@dataclass
class StartWindow:
    """What one start saw: before it (pre-flight, `case` None) or while one case measured."""

    server: str
    start: int
    case: str | None = None
    disturbed: str | None = None
    kept: bool = False  # disturbed but kept in the verdict (leave_out_disturbed: false)
    facts: dict[str, Any] = field(default_factory=dict)  # what was measured, as measured


@dataclass
class StartsRecord:
    """How the servers were started: the plan, what each start saw, the A/B."""

    restarts: int = 1
    max_restarts: int | None = None
    replacements: int = 0
    order: list[str] = field(default_factory=list)  # "config#start", as run
    ab_head: list[str] = field(default_factory=list)
    between_start: str | None = None  # one start (server elsewhere): where that term comes from
    ab: list[ABEntry] = field(default_factory=list)
    preflight: list[StartWindow] = field(default_factory=list)
    windows: list[StartWindow] = field(default_factory=list)
    start_errors: dict[str, list[str]] = field(default_factory=dict)
    start_seconds: list[float] = field(default_factory=list)
    budget_notes: list[str] = field(default_factory=list)


@dataclass
class ShardInfo:
    """What one shard's result file says about the split (`--perf-shard K/N`)."""

    index: int | None  # None only for merge's stand-in for a file that is no shard
    count: int | None
    servers: list[str] = field(default_factory=list)  # this shard's configs
    matrix_servers: list[str] = field(default_factory=list)  # every config of the matrix
    plan: list[list[str]] = field(default_factory=list)  # the configs of each shard
    costs_from: str | None = None
    runner: str | None = None


@dataclass
class ShardEntry:
    """One shard of a merged run, as the merged page lists it."""

    index: int | None
    count: int | None
    runner: str | None
    host: str | None
    servers: list[str]
    file: str


@dataclass
class SessionResults:
    matrix: str
    environment: RunEnvironment = field(default_factory=RunEnvironment)
    servers: dict[str, ServerRecord] = field(default_factory=dict)
    metrics: list[MetricResult] = field(default_factory=list)
    case_runs: list[CaseRun] = field(default_factory=list)  # every sample, flagged and failed ones too
    # Why and where the run was cut short (SIGINT/SIGTERM), None for a run that
    # finished. Every output shows it: an interrupted run is never a pass, and
    # its verdicts are only those of looks it completed.
    interrupted: str | None = None
    starts: StartsRecord | None = None  # several starts or an A/B (JSON: environment.starts)
    shard: ShardInfo | None = None  # this file is one shard of a run (JSON: environment.shard)
    shards: list[ShardEntry] = field(default_factory=list)  # a merged run's shards (environment.shards)
    incomplete: list[str] = field(default_factory=list)  # why a merged run is not whole (environment.incomplete)

    def for_server(self, name: str) -> list[MetricResult]:
        return [r for r in self.metrics if r.server == name]

    def by_server(self) -> dict[str, list[MetricResult]]:
        """Server name -> its results, in the order measured (one pass, for every server at once)."""
        out: dict[str, list[MetricResult]] = {}
        for r in self.metrics:
            out.setdefault(r.server, []).append(r)
        return out

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
        hw = self.environment.hardware_key
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
    return {"kind": case.kind, "pp": case.pp, "tg": case.tg, "depth": case.depth, "prompt": case.prompt,
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
        **({"spec": s.spec} if s.spec is not None else {}),
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


def _window_dict(w: StartWindow) -> dict[str, Any]:
    d: dict[str, Any] = {"server": w.server, "start": w.start}
    if w.case is not None:
        d["case"] = w.case
    d.update(w.facts)
    d["disturbed"] = w.disturbed
    if w.kept:
        d["kept"] = True
    return d


def starts_dict(st: StartsRecord) -> dict[str, Any]:
    d: dict[str, Any] = {"restarts": st.restarts}
    if st.between_start:
        d["between_start"] = st.between_start
    else:
        d.update(max_restarts=st.max_restarts, replacements=st.replacements, order=st.order, ab_head=st.ab_head)
    d.update(ab=[asdict(e) for e in st.ab], preflight=[_window_dict(w) for w in st.preflight],
             windows=[_window_dict(w) for w in st.windows], start_errors=st.start_errors,
             start_seconds=st.start_seconds, budget_notes=st.budget_notes)
    return d


def _server_dict(rec: ServerRecord) -> dict[str, Any]:
    d = asdict(rec)
    d["observed"] = rec.observed.to_dict() if rec.observed is not None else {}
    d["info"] = {} if rec.info is None else {**asdict(rec.info), "log_path": str(rec.info.log_path or "") or None}
    for k in ("environment", "shard", "shard_runner"):
        if d[k] is None:
            del d[k]
    if rec.environment is not None:
        d["environment"] = rec.environment.to_dict()
    return d


def _environment_dict(session: SessionResults) -> dict[str, Any]:
    env = session.environment.to_dict()
    if session.starts is not None:
        env["starts"] = starts_dict(session.starts)
    if session.shard is not None:
        env["shard"] = asdict(session.shard)
    if session.shards:
        env["shards"] = [asdict(sh) for sh in session.shards]
    if session.incomplete:
        env["incomplete"] = list(session.incomplete)
    return env


def to_dict(session: SessionResults) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "kind": KIND,
        "matrix": session.matrix,
        "interrupted": session.interrupted,
        "environment": _environment_dict(session),
        "servers": {n: _server_dict(rec) for n, rec in session.servers.items()},
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

    def typed(self, d: dict, key: str, where: str, kind: type | tuple[type, ...], required: bool = True,
              default: Any = None) -> Any:
        """d[key] checked to be a `kind` (missing: `default`, or an error when `required`)."""
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
        xs = self.typed(d, key, where, list, required=False, default=[])
        out = []
        for i, x in enumerate(xs):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise self.fail(f"{where}.{key}[{i}]", f"expected a finite number, got {x!r:.60}")
            out.append(float(x))
        return out

    def case(self, d: dict, where: str) -> Case:
        c = self.typed(d, "case", where, dict)
        kind = self.typed(c, "kind", f"{where}.case", str)
        if kind not in ("prefill", "decode"):
            raise self.fail(f"{where}.case.kind", f"expected prefill or decode, got {kind!r}")
        conc = self.typed(c, "concurrency", f"{where}.case", int, required=False, default=1)
        if conc < 1 or (conc > 1 and kind != "decode"):
            raise self.fail(f"{where}.case.concurrency", f"expected 1, or more on a decode case, got {conc!r}")
        return Case(kind, self.typed(c, "pp", f"{where}.case", int), self.typed(c, "tg", f"{where}.case", int),
                    self.typed(c, "depth", f"{where}.case", int, required=False, default=0), concurrency=conc,
                    prompt=self.typed(c, "prompt", f"{where}.case", str, required=False, default="random"))


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
    env = dict(r.typed(data, "environment", "", dict, required=False, default={}))
    starts, shard, shards = env.pop("starts", None), env.pop("shard", None), env.pop("shards", None)
    incomplete = env.pop("incomplete", None)
    session = SessionResults(matrix=str(data.get("matrix") or ""), environment=RunEnvironment.from_dict(env),
                             interrupted=r.typed(data, "interrupted", "", str, required=False),
                             starts=None if starts is None else _starts(r, starts, "environment.starts"),
                             shard=None if shard is None else _shard(r, shard, "environment.shard"),
                             shards=[_shard_entry(r, x, f"environment.shards[{i}]")
                                     for i, x in enumerate(shards if isinstance(shards, list) else [])],
                             incomplete=[str(x) for x in incomplete] if isinstance(incomplete, list) else [])
    known = {f.name for f in fields(ServerRecord)}
    for name, rec in r.typed(data, "servers", "", dict, required=False, default={}).items():
        where = f"servers.{name}"
        if not isinstance(rec, dict):
            raise r.fail(where, f"expected an object, got {type(rec).__name__}")
        kw = {k: v for k, v in rec.items() if k in known}
        kw.update(name=str(name), runner=str(rec.get("runner") or ""), model=str(rec.get("model") or ""))
        env_, observed = kw.pop("environment", None), kw.pop("observed", None)
        kw["environment"] = RunEnvironment.from_dict(env_) if isinstance(env_, dict) else None
        kw["observed"] = ObservedFacts.from_dict(observed) if isinstance(observed, dict) and observed else None
        kw["info"] = _server_info(r, rec.get("info"), f"{where}.info", str(name))
        session.servers[str(name)] = ServerRecord(**kw)
    for i, item in enumerate(data["results"]):
        mr = _metric_result(r, item, f"results[{i}]")
        session.metrics.append(mr)
        session.servers.setdefault(mr.server, ServerRecord(name=mr.server, runner="", model=""))
    for i, item in enumerate(r.typed(data, "runs", "", list, required=False, default=[])):
        session.case_runs.append(_case_run(r, item, f"runs[{i}]"))
    return session


def _server_info(r: _Reader, d: Any, where: str, name: str) -> ServerInfo | None:
    if not isinstance(d, dict) or not d:
        return None  # the server never started (skipped, failed)
    return ServerInfo(name=str(d.get("name") or name), kind=str(d.get("kind") or ""),
                      base_url=str(d.get("base_url") or ""), log_path=r.typed(d, "log_path", where, str, required=False),
                      startup_s=r.typed(d, "startup_s", where, float, required=False),
                      command=[str(x) for x in r.typed(d, "command", where, list, required=False, default=[])],
                      env={str(k): str(v) for k, v in r.typed(d, "env", where, dict, required=False, default={}).items()},
                      details=dict(r.typed(d, "details", where, dict, required=False, default={})))


def _shard(r: _Reader, d: Any, where: str) -> ShardInfo:
    if not isinstance(d, dict):
        raise r.fail(where, f"expected an object, got {type(d).__name__}")
    names = lambda k: [str(x) for x in r.typed(d, k, where, list, required=False, default=[])]  # noqa: E731
    return ShardInfo(index=r.typed(d, "index", where, int), count=r.typed(d, "count", where, int),
                     servers=names("servers"), matrix_servers=names("matrix_servers"),
                     plan=[[str(x) for x in sh] for sh in r.typed(d, "plan", where, list, required=False, default=[])
                           if isinstance(sh, list)],
                     costs_from=r.typed(d, "costs_from", where, str, required=False),
                     runner=r.typed(d, "runner", where, str, required=False))


def _shard_entry(r: _Reader, d: Any, where: str) -> ShardEntry:
    if not isinstance(d, dict):
        raise r.fail(where, f"expected an object, got {type(d).__name__}")
    return ShardEntry(index=r.typed(d, "index", where, int, required=False),
                      count=r.typed(d, "count", where, int, required=False),
                      runner=r.typed(d, "runner", where, str, required=False),
                      host=r.typed(d, "host", where, str, required=False),
                      servers=[str(x) for x in r.typed(d, "servers", where, list, required=False, default=[])],
                      file=str(d.get("file") or ""))


_WINDOW_KEYS = {"server", "start", "case", "disturbed", "kept"}


def _window(r: _Reader, d: Any, where: str) -> StartWindow:
    if not isinstance(d, dict):
        raise r.fail(where, f"expected an object, got {type(d).__name__}")
    return StartWindow(server=r.typed(d, "server", where, str), start=r.typed(d, "start", where, int),
                       case=r.typed(d, "case", where, str, required=False),
                       disturbed=r.typed(d, "disturbed", where, str, required=False),
                       kept=bool(r.typed(d, "kept", where, bool, required=False, default=False)),
                       facts={k: v for k, v in d.items() if k not in _WINDOW_KEYS})


def _ab_entry(r: _Reader, d: Any, where: str) -> ABEntry:
    if not isinstance(d, dict):
        raise r.fail(where, f"expected an object, got {type(d).__name__}")
    known = {f.name: f for f in fields(ABEntry)}
    kw = {k: v for k, v in d.items() if k in known and k != "baseline_second_opinion"}
    for k in ("server", "head", "case", "metric"):
        kw[k] = r.typed(d, k, where, str)
    for k in ("base_starts", "head_starts"):
        kw[k] = r.floats(d, k, where)
    so = r.typed(d, "baseline_second_opinion", where, dict, required=False)
    if so is not None:
        kw["baseline_second_opinion"] = SecondOpinion(
            verdict=r.typed(so, "verdict", f"{where}.baseline_second_opinion", str),
            delta_pct=r.typed(so, "delta_pct", f"{where}.baseline_second_opinion", float, required=False),
            reason=str(so.get("reason") or ""))
    return ABEntry(**kw)


def _starts(r: _Reader, d: Any, where: str) -> StartsRecord:
    if not isinstance(d, dict):
        raise r.fail(where, f"expected an object, got {type(d).__name__}")
    lst = lambda k: r.typed(d, k, where, list, required=False, default=[])  # noqa: E731
    return StartsRecord(
        restarts=r.typed(d, "restarts", where, int, required=False, default=1),
        max_restarts=r.typed(d, "max_restarts", where, int, required=False),
        replacements=r.typed(d, "replacements", where, int, required=False, default=0),
        order=[str(x) for x in lst("order")], ab_head=[str(x) for x in lst("ab_head")],
        between_start=r.typed(d, "between_start", where, str, required=False),
        ab=[_ab_entry(r, e, f"{where}.ab[{i}]") for i, e in enumerate(lst("ab"))],
        preflight=[_window(r, w, f"{where}.preflight[{i}]") for i, w in enumerate(lst("preflight"))],
        windows=[_window(r, w, f"{where}.windows[{i}]") for i, w in enumerate(lst("windows"))],
        start_errors={str(k): [str(x) for x in v] for k, v in
                      r.typed(d, "start_errors", where, dict, required=False, default={}).items()
                      if isinstance(v, list)},
        start_seconds=r.floats(d, "start_seconds", where),
        budget_notes=[str(x) for x in lst("budget_notes")])


def _metric_result(r: _Reader, d: Any, where: str) -> MetricResult:
    if not isinstance(d, dict):
        raise r.fail(where, f"expected an object, got {type(d).__name__}")
    server = r.typed(d, "server", where, str)
    metric = r.typed(d, "metric", where, str)
    if metric not in METRICS:
        raise r.fail(f"{where}.metric", f"unknown metric {metric!r}; known: {', '.join(METRICS)}")
    case = r.case(d, where)
    gate = r.typed(d, "gate", where, str, required=False, default="warn")
    if gate not in ("fail", "warn", "off"):
        raise r.fail(f"{where}.gate", f"expected fail, warn or off, got {gate!r}")
    samples = r.floats(d, "samples", where)
    mr = MetricResult(server=server, case=case, metric=metric, gate=gate, samples=samples,
                      error=r.typed(d, "error", where, str, required=False))
    try:
        if samples:
            mr.summary = Summary.from_samples(samples, metric=mr.key)
        b = r.typed(d, "baseline", where, dict, required=False)
        if b is not None:
            bw = f"{where}.baseline"
            mr.baseline = BaselineStats.from_summary(
                r.typed(b, "mean", bw, float), r.typed(b, "stdev", bw, float), r.typed(b, "n", bw, int),
                history_cv=r.floats(b, "history_cv", bw))
    except StatsError as e:
        raise r.fail(where, f"unreadable numbers: {e}") from None
    c = r.typed(d, "comparison", where, dict, required=False)
    if c is not None:
        mr.comparison = _comparison(r, c, f"{where}.comparison")
    for j, t in enumerate(r.typed(d, "targets", where, list, required=False, default=[])):
        tw = f"{where}.targets[{j}]"
        if not isinstance(t, dict):
            raise r.fail(tw, "expected an object")
        mr.targets.append(Target(engine=r.typed(t, "engine", tw, str), metric=r.typed(t, "metric", tw, str),
                                 value=r.typed(t, "value", tw, float), unit=str(t.get("unit") or ""),
                                 note=str(t.get("note") or "")))
    mr.flagged_samples = r.typed(d, "flagged_samples", where, int, required=False, default=0)
    mr.flags = {str(k): int(v) for k, v in r.typed(d, "flags", where, dict, required=False, default={}).items()
                if isinstance(v, int) and not isinstance(v, bool)}
    mr.error_samples = r.typed(d, "error_samples", where, int, required=False, default=0)
    mr.runs_to_verdict = r.typed(d, "runs_to_verdict", where, int, required=False, default=0)
    mr.confirmed = bool(r.typed(d, "confirmed", where, bool, required=False, default=False))
    if d.get("verdict") == Verdict.INCOMPARABLE.value and mr.error is None:
        mr.incomparable = str(d.get("incomparable") or "the stored baseline ran another configuration")
    return mr


def _comparison(r: _Reader, c: dict, where: str) -> Comparison:
    verdict = r.typed(c, "verdict", where, str)
    try:
        v = Verdict(verdict)
    except ValueError:
        raise r.fail(f"{where}.verdict", f"unknown verdict {verdict!r}; known: "
                     + ", ".join(x.value for x in Verdict)) from None
    why = c.get("why")
    num = lambda k: r.typed(c, k, where, float, required=False)  # noqa: E731
    return Comparison(
        verdict=v, delta_pct=num("delta_pct"), effect_pct=num("effect_pct"), ci_low_pct=num("ci_low_pct"),
        ci_high_pct=num("ci_high_pct"), p_value=num("p_value"), tolerance_pct=num("tolerance_pct"),
        n_current=r.typed(c, "n_current", where, int, required=False, default=0),
        n_baseline=r.typed(c, "n_baseline", where, int, required=False, default=0),
        reason=str(c.get("reason") or ""),
        dropped_current=r.typed(c, "dropped_current", where, int, required=False, default=0),
        dropped_baseline=r.typed(c, "dropped_baseline", where, int, required=False, default=0),
        why=Why(why) if why in {w.value for w in Why} else None,
        method=str(c.get("method") or ""), p_worse=num("p_worse"))


def _case_run(r: _Reader, d: Any, where: str) -> CaseRun:
    if not isinstance(d, dict):
        raise r.fail(where, f"expected an object, got {type(d).__name__}")
    server = r.typed(d, "server", where, str)
    if "case" in d:
        case = r.case(d, where)
    else:  # schema 1 runs named the case only by id
        try:
            case = Case.parse(r.typed(d, "workload", where, str))
        except ValueError as e:
            raise r.fail(f"{where}.workload", str(e)) from None
    run = CaseRun(server=server, case=case, latency_ms=r.typed(d, "latency_ms", where, float, required=False,
                                                             default=0.0),
                  notes=[str(n) for n in r.typed(d, "notes", where, list, required=False, default=[])])
    metric_names = {f.name for f in fields(RequestMetrics)}
    for j, s in enumerate(r.typed(d, "samples", where, list, required=False, default=[])):
        sw = f"{where}.samples[{j}]"
        if not isinstance(s, dict):
            raise r.fail(sw, "expected an object")
        m = r.typed(s, "metrics", sw, dict, required=False)
        metrics = None
        if m is not None:
            missing = metric_names - set(m) - OPTIONAL_METRICS
            if missing:
                raise r.fail(f"{sw}.metrics", f"missing {', '.join(sorted(missing))}")
            metrics = RequestMetrics(**{k: r.typed(m, k, f"{sw}.metrics", float, required=False)
                                        for k in metric_names})
        run.samples.append(Sample(
            run=r.typed(s, "run", sw, int), start=r.typed(s, "start", sw, int, required=False, default=0),
            stream=r.typed(s, "stream", sw, int, required=False, default=0),
            metrics=metrics, prompt_tokens=r.typed(s, "prompt_tokens", sw, int, required=False),
            completion_tokens=r.typed(s, "completion_tokens", sw, int, required=False),
            content_chunks=r.typed(s, "content_chunks", sw, int, required=False, default=0),
            client_lag_ms=r.typed(s, "client_lag_ms", sw, float, required=False, default=0.0),
            cache_hit_tokens=r.typed(s, "cache_hit_tokens", sw, float, required=False),
            telemetry=list(s.get("telemetry") or []), flags=[str(f) for f in s.get("flags") or []],
            server_timings=s["server_timings"] if isinstance(s.get("server_timings"), dict) else None,
            server_decode_ratio=r.typed(s, "server_decode_ratio", sw, float, required=False),
            spec=r.typed(s, "spec", sw, dict, required=False),
            error=r.typed(s, "error", sw, str, required=False)))
    for j, rd in enumerate(r.typed(d, "rounds", where, list, required=False, default=[])):
        rw = f"{where}.rounds[{j}]"
        if not isinstance(rd, dict):
            raise r.fail(rw, "expected an object")
        num = {k: r.typed(rd, k, rw, float, required=False)
               for k in ("wall_ms", "agg_tps", "release_spread_ms", "together_ms")}
        run.rounds.append(Round(
            run=r.typed(rd, "run", rw, int), streams=r.typed(rd, "streams", rw, int),
            start=r.typed(rd, "start", rw, int, required=False, default=0),
            tokens=r.typed(rd, "tokens", rw, int, required=False, default=0),
            peak_streams=r.typed(rd, "peak_streams", rw, int, required=False, default=0),
            together_ms=num["together_ms"] or 0.0, wall_ms=num["wall_ms"], agg_tps=num["agg_tps"],
            release_spread_ms=num["release_spread_ms"], error=r.typed(rd, "error", rw, str, required=False)))
    return run
