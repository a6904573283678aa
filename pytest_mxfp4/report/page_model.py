"""The results page's view model: one entry per server config, with its
numbers from this run or, where the run did not measure it, from the stored
baseline. Built from SessionResults + matrix + baselines; rendered by
markdown.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..baselines import BaselineFile
from ..config import METRICS, Case, Matrix, ServerConfig
from ..results import MetricResult, ServerRecord, SessionResults
from ..stats import Summary
from ..stats import cv as cv_of

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
    environment: dict[str, Any] = field(default_factory=dict)
    pending: str | None = None
    skipped: str | None = None
    error: str | None = None
    results: list[MetricResult] = field(default_factory=list)


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
            env = (c.record.info.get("environment") if c.record else None) or session.environment or {}
            c.source, c.environment, c.date = "run", env, str(env.get("captured_at") or "")
            for r in measured:
                s = r.summary
                hist = r.baseline.history_cv if r.baseline is not None else ()
                if not hist and c.baseline is not None:
                    hist = history_cvs(c.baseline, r.key, exclude_latest=False)
                c.stats[r.key] = StatView(s.mean, s.stdev, s.n, s.median if s.n else None, r.unit, "run", c.date,
                                       tuple(hist), r, r.flagged_samples)
        elif c.baseline is not None and c.baseline.metrics:
            bf = c.baseline
            c.source, c.environment, c.date = "baseline", dict(bf.environment), bf.updated
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
    return (case.depth, case.pp if case.kind == "prefill" else case.tg)


def cases_of(configs: list[ConfigView], matrix: Matrix | None, kind: str) -> list[Case]:
    ids: list[str] = []
    if matrix is not None:
        ids += [c.id for c in matrix.workloads.cases]
    for c in configs:
        ids += [k.partition("/")[0] for k in c.stats]
    cases = [case_for(i, matrix) for i in dict.fromkeys(ids)]
    return sorted((c for c in cases if c is not None and c.kind == kind), key=case_order)


