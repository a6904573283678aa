"""What one case measured: samples with the reasons they can't be trusted.

Pure data (no HTTP stack), so results, reports and offline tools can use it
without importing the client."""

from __future__ import annotations

from dataclasses import dataclass, field

from pytest_mxfp4.formats.config import Case

FLAG_CLIENT_BEHIND = "client-behind"  # measure/metrics.py says when
FLAG_PREFIX_CACHE_HIT = "prefix-cache-hit"
FLAG_CLIENT_LAG = "client-lag"
FLAG_GPU_THROTTLED = "gpu-throttled"
FLAG_BURST = "burst-delivery"
# the metric measured per round of N concurrent streams, not per stream
ROUND_METRIC = "agg_tps"


@dataclass(frozen=True)
class RequestMetrics:
    ttfr_ms: float
    e2e_ttft_ms: float
    est_ppt_ms: float
    pp_tps: float | None
    tg_tps: float | None
    # speculative decoding (measure/spec.py): None where the server drafted nothing
    accept_pct: float | None = None  # accepted / drafted tokens, %
    accept_len: float | None = None  # mean acceptance length: tokens per target step

    def get(self, name: str) -> float | None:
        return getattr(self, name)


@dataclass
class Sample:
    """One measured request. `error` set means no numbers, never a guess."""

    run: int
    start: int = 0  # which server start of this config measured it (0-based)
    stream: int = 0  # a concurrent case: which of the round's N streams (0-based)
    metrics: RequestMetrics | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    content_chunks: int = 0
    client_lag_ms: float = 0.0
    cache_hit_tokens: float | None = None
    telemetry: list[dict] = field(default_factory=list)  # per GPU, see telemetry.GpuTelemetry
    server_timings: dict | None = None  # llama.cpp: the server's own `timings` of this request
    server_decode_ratio: float | None = None  # client tg / server tg (measure/fidelity.py)
    spec: dict | None = None  # speculative decoding: {drafted, accepted, drafts, source} (measure/spec.py)
    flags: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def clean(self) -> bool:
        return self.error is None and not self.flags and self.metrics is not None


@dataclass
class Round:
    """One round of a concurrent case: N streams released together. Its
    streams are the samples with the same `run` and `start`."""

    run: int
    streams: int
    start: int = 0
    wall_ms: float | None = None  # first request sent -> last token of any stream
    tokens: int = 0  # generated tokens of all streams (usage)
    agg_tps: float | None = None  # tokens / wall
    release_spread_ms: float | None = None  # last send stamp - first: how together the release was
    peak_streams: int = 0  # most streams decoding at one instant (N: they ran together)
    together_ms: float = 0.0  # how long all N were decoding at once
    error: str | None = None


@dataclass
class CaseRun:
    """Everything measured for one (server, case)."""

    server: str
    case: Case
    latency_ms: float
    samples: list[Sample] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    system_fingerprint: str | None = None
    rounds: list[Round] = field(default_factory=list)  # a concurrent case only

    def values(self, metric: str) -> list[float]:
        """Numbers of the trusted samples only (per stream); the aggregate of
        a concurrent case: one per round whose every stream is trusted."""
        if metric == ROUND_METRIC:
            return [rd.agg_tps for rd in self.rounds if rd.agg_tps is not None and rd.error is None
                    and all(s.clean for s in self.round_samples(rd))]
        out = []
        for s in self.samples:
            if s.clean:
                v = s.metrics.get(metric)
                if v is not None:
                    out.append(v)
        return out

    def round_samples(self, rd: Round) -> list[Sample]:
        return [s for s in self.samples if s.run == rd.run and s.start == rd.start]

    @property
    def errors(self) -> list[str]:
        return [f"run {s.run}: {s.error}" for s in self.samples if s.error]

    @property
    def flagged(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None and s.flags]


def flag_counts(samples: list[Sample]) -> dict[str, int]:
    """Flag name -> how many of `samples` carried it (errors not counted)."""
    out: dict[str, int] = {}
    for smp in samples:
        if smp.error is None:
            for f in smp.flags:
                out[f] = out.get(f, 0) + 1
    return dict(sorted(out.items()))
