"""The results page's view model: one entry per server config, with its
numbers from this run or, where the run did not measure it, from the stored
baseline. Built from SessionResults + matrix + baselines; rendered by
markdown.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pytest_mxfp4.formats.baselines import BaselineEnvironment, BaselineFile
from pytest_mxfp4.formats.config import METRICS, Case, Matrix, ServerConfig
from pytest_mxfp4.formats.results import MetricResult, RunEnvironment, ServerRecord, SessionResults
from pytest_mxfp4.stats.samples import Summary
from pytest_mxfp4.report.format import when as _when
from pytest_mxfp4.stats.samples import cv as cv_of

METRIC_UNIT_OF = {m.name: m.unit for m in METRICS.values()}


@dataclass
class StatView:
    mean: float
    stdev: float
    n: int
    median: float | None  # only where samples are known
    unit: str
    source: str  # "run" | "baseline"
    date: str
    history_cv: tuple[float, ...] = ()  # CVs of earlier runs of this metric
    result: MetricResult | None = None
    flagged: int = 0

    @property
    def cv(self) -> float | None:
        """None where the spread is unknown (n < 2) or undefined (mean 0)."""
        if self.n < 2 or self.mean == 0:
            return None
        return cv_of(self.mean, self.stdev)


@dataclass
class ConfigView:
    name: str
    description: str = ""
    cfg: ServerConfig | None = None
    record: ServerRecord | None = None
    baseline: BaselineFile | None = None
    stats: dict[str, StatView] = field(default_factory=dict)
    source: str | None = None  # "run" | "baseline" | None
    date: str = ""
    environment: RunEnvironment | None = None  # where this run measured it (source "run")
    pending: str | None = None
    skipped: str | None = None
    error: str | None = None
    results: list[MetricResult] = field(default_factory=list)
    # built once with the view (the page's sections only format them)
    cases: dict[str, Case] = field(default_factory=dict)  # the cases of its stats, prefill first, in order
    environment_block: dict[str, Any] = field(default_factory=dict)
    server_block: dict[str, Any] = field(default_factory=dict)
    observed: dict[str, Any] = field(default_factory=dict)  # what the log showed (or the stored baseline's)
    observed_source: str = ""
    expect: dict[str, Any] = field(default_factory=dict)
    expect_ok: dict[str, bool] = field(default_factory=dict)  # fact -> does the observed value satisfy expect


@dataclass
class Page:
    """The whole results page's view, built once from the results, matrix and baselines."""

    configs: list[ConfigView]
    decode: list[Case]  # every decode case of the matrix or the stats, in order
    prefill: list[Case]


def build(session: SessionResults, matrix: Matrix | None, baselines: dict[str, BaselineFile]) -> Page:
    configs = collect(session, matrix, baselines)
    for c in configs:
        found = {case.id: case for case in (case_for(k.partition("/")[0], matrix) for k in c.stats) if case}
        c.cases = {cs.id: cs for cs in sorted(found.values(), key=lambda x: (x.kind != "prefill", case_order(x)))}
        c.environment_block = environment_block(c)
        c.server_block = server_config_block(c)
        c.observed, c.observed_source = _observed(c)
        c.expect = dict(c.cfg.expect) if c.cfg is not None else {}
        c.expect_ok = expect_status(c.expect, c.observed) if (c.observed or c.expect) else {}
    return Page(configs=configs, decode=cases_of(configs, matrix, "decode"), prefill=cases_of(configs, matrix, "prefill"))


def _observed(c: ConfigView) -> tuple[dict[str, Any], str]:
    observed = dict(c.record.observed) if c.record and c.record.observed else {}
    src = "from the server log"
    stored = c.baseline.environment.observed if c.baseline is not None else None
    if not observed and isinstance(stored, dict):
        observed, src = dict(stored), "from the stored baseline"
    return {k: v for k, v in observed.items() if v not in (None, [], {}, "")}, src


def history_cvs(bf: BaselineFile, key: str, exclude_latest: bool) -> tuple[float, ...]:
    m = bf.metrics.get(key)
    if m is None:
        return ()
    hist = list(m.history)
    if exclude_latest and hist and hist[-1].date == bf.updated:
        hist = hist[:-1]  # that entry is the baseline itself
    return tuple(h.cv for h in hist if h.n > 1)


def collect(session: SessionResults, matrix: Matrix | None, baselines: dict[str, BaselineFile]) -> list[ConfigView]:
    names: list[str] = []
    if matrix is not None:
        names += [s.name for s in matrix.servers]
    names += list(session.servers) + [r.server for r in session.results] + list(baselines)
    configs = []
    for name in dict.fromkeys(names):
        c = ConfigView(name=name)
        c.cfg = server_config(matrix, name)
        c.record = session.servers.get(name)
        c.baseline = baselines.get(name)
        c.description = (c.cfg.description if c.cfg else "") or (c.record.description if c.record else "")
        if c.cfg is not None and c.cfg.pending:
            c.pending = c.cfg.pending
        if c.record is not None:
            if c.record.skipped and c.record.skipped.startswith("pending: "):
                c.pending = c.pending or c.record.skipped[len("pending: "):]
            elif c.record.skipped:
                c.skipped = c.record.skipped
            c.error = c.record.error
        c.results = session.for_server(name)
        measured = [r for r in c.results if r.summary is not None]
        if measured:
            env = (c.record.environment if c.record else None) or session.environment
            c.source, c.environment, c.date = "run", env, env.captured_at or ""
            for r in measured:
                s = r.summary
                hist = r.baseline.history_cv if r.baseline is not None else ()
                if not hist and c.baseline is not None:
                    hist = history_cvs(c.baseline, r.key, exclude_latest=False)
                c.stats[r.key] = StatView(s.mean, s.stdev, s.n, s.median if s.n else None, r.unit, "run", c.date,
                                       tuple(hist), r, r.flagged_samples)
        elif c.baseline is not None and c.baseline.metrics:
            bf = c.baseline
            c.source, c.date = "baseline", bf.updated
            for key, m in bf.metrics.items():
                median = Summary.from_samples(m.samples).median if m.samples else None
                unit = m.unit or METRIC_UNIT_OF.get(key.partition("/")[2], "")
                c.stats[key] = StatView(m.mean, m.stdev, m.n, median, unit, "baseline", bf.updated,
                                     history_cvs(bf, key, exclude_latest=True))
        configs.append(c)
    return configs


def server_config(matrix: Matrix | None, name: str) -> ServerConfig | None:
    if matrix is None:
        return None
    try:
        return matrix.server(name)
    except KeyError:
        return None


# --------------------------------------------------------------------------
# Keys and cases


def case_for(case_id: str, matrix: Matrix | None) -> Case | None:
    """'tg32' / 'pp2048@d4096' -> Case (pp of a decode case from the matrix, when known)."""
    if matrix is not None:
        for c in matrix.workloads.cases:
            if c.id == case_id:
                return c
    try:
        return Case.parse(case_id)
    except ValueError:
        return None


def case_order(case: Case) -> tuple:
    return (case.depth, case.pp if case.kind == "prefill" else case.tg, case.concurrency)


def cases_of(configs: list[ConfigView], matrix: Matrix | None, kind: str) -> list[Case]:
    ids: list[str] = []
    if matrix is not None:
        ids += [c.id for c in matrix.workloads.cases]
    for c in configs:
        ids += [k.partition("/")[0] for k in c.stats]
    cases = [case_for(i, matrix) for i in dict.fromkeys(ids)]
    return sorted((c for c in cases if c is not None and c.kind == kind), key=case_order)


def environment_block(c: ConfigView) -> dict[str, Any]:
    """The config's environment block: this run's where it measured, else the baseline's."""
    out: dict[str, Any] = {}
    if c.source == "run" and c.environment is not None:
        env = c.environment
        out["date"] = _when(env.captured_at or "")
        for k in ("hardware_key", "git_sha", "plugin_version"):
            if getattr(env, k) is not None:
                out[k] = getattr(env, k)
        if env.gpus:
            names = [f"{g.name} (SM {g.sm}" + (f", driver {g.driver}" if g.driver else "")
                     + (f", {g.memory_mib} MiB" if g.memory_mib else "") + ")" for g in env.gpus]
            out["gpu"] = names[0] if len(names) == 1 else names
        if env.cpu_model:
            out["cpu"] = f"{env.cpu_model} ({env.cpu_count if env.cpu_count is not None else '?'} cores)"
        for k in ("memory_gib", "os", "python", "telemetry"):
            if getattr(env, k) not in (None, ""):
                out[k] = getattr(env, k)
        details = c.record.info.details if c.record and c.record.info else {}
        for k in ("image", "image_id", "engine_version"):
            if details.get(k):
                out[k] = details[k]
    elif c.baseline is not None:
        bf = c.baseline
        out["date"] = _when(bf.updated)
        out["hardware_key"] = bf.hardware_key
        if bf.source:
            out["source"] = bf.source
        for k, v in bf.environment.run_dict().items():
            if k not in ("observed", "server_command", "server_env", "hostname"):
                out[k] = v
        for k, v in bf.engine.to_dict().items():
            out.setdefault(k, v)
    return out


def server_config_block(c: ConfigView) -> dict[str, Any]:
    """How the server was started: from the run, else the baseline, else the matrix."""
    out: dict[str, Any] = {}
    cfg, info = c.cfg, c.record.info if c.record else None
    bf_env = c.baseline.environment if c.baseline is not None else BaselineEnvironment()
    if cfg is not None:
        out["runner"] = cfg.runner
        if cfg.docker is not None:
            out["image"] = cfg.docker.image
        out["model"] = cfg.model
        if cfg.served_model_name:
            out["served_model"] = cfg.served_model_name
        out["api"] = cfg.api
    elif c.record is not None and c.record.runner:
        out["runner"] = c.record.runner
        out["model"] = c.record.model
    elif c.baseline is not None:
        out["model"] = c.baseline.model
        if c.baseline.engine.runner:
            out["runner"] = c.baseline.engine.runner
    command = (info.command if info else None) or bf_env.server_command
    if not command and cfg is not None:
        command = [*cfg.command, *cfg.args]
    if command:
        out["command"] = " ".join(str(x) for x in command)
    env = (info.env if info else None) or bf_env.server_env or (dict(cfg.env) if cfg is not None else {})
    if env:
        out["env_vars"] = dict(env)
    return out


def expect_status(expect: dict[str, Any], observed: dict[str, Any]) -> dict[str, bool]:
    """fact -> does the observed value satisfy `expect:`? The plugin's own
    rule (observe.check_expectations: lists = any of, null = absent)."""
    from pytest_mxfp4.observe.facts import ObservedFacts, check_expectations

    known = set(ObservedFacts.fact_names())
    try:
        facts = ObservedFacts(**{k: v for k, v in observed.items() if k in known})
        bad = {m.fact for m in check_expectations({k: v for k, v in expect.items() if k in known}, facts)}
    except (TypeError, ValueError):
        return {k: expect[k] == observed.get(k) for k in expect}
    return {k: k in known and k not in bad for k in expect}
