"""Result objects: what was measured and what was decided. Numbers stay
numbers here; every report formats from these same objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .config import HIGHER_IS_BETTER, METRIC_UNITS, Case, Target
from .measure.runner import CaseRun
from .stats import BaselineStats, Comparison, Summary, Verdict


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
    error_samples: int = 0
    runs_to_verdict: int = 0
    confirmed: bool = False  # a regression seen twice, on fresh samples
    incomparable: str | None = None  # why the baseline can't judge this run (different backend ran)

    @property
    def key(self) -> str:
        return f"{self.case.id}/{self.metric}"

    @property
    def unit(self) -> str:
        return METRIC_UNITS[self.metric]

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.metric]

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
    results: list[MetricResult] = field(default_factory=list)
    case_runs: list[CaseRun] = field(default_factory=list)  # every sample, flagged and failed ones too

    def for_server(self, name: str) -> list[MetricResult]:
        return [r for r in self.results if r.server == name]

    @property
    def failed(self) -> list[MetricResult]:
        return [r for r in self.results if r.fails]
