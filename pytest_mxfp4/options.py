"""The plugin's options, resolved once into a frozen object.

Built by plugin.py from the command line and ini (option > ini > default)
the moment pytest is configured; everything after that reads this object,
never `config.getoption`. Pure Python: domain code and tests build it
directly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ReportPaths:
    """Where each report goes; None = not written."""

    json: Path | None = None
    page: Path | None = None  # the Markdown results page
    benchmark_json: Path | None = None
    plots: Path | None = None


@dataclass(frozen=True)
class PerfOptions:
    config: Path | None  # the matrix file; None = none given (a clear error if perf is selected)
    baselines: Path
    output: Path  # server logs and artifacts
    base_dir: Path  # relative model paths resolve here (where pytest was invoked)
    update_baselines: bool = False
    base_url: str | None = None
    servers: tuple[str, ...] = ()  # empty = every server config of the matrix
    reports: ReportPaths = ReportPaths()
    first_run: bool = False  # --perf-first-run: no baseline anywhere is expected (CI does not fail)
    allow_partial: bool = False  # --perf-allow-partial: nothing fail-gated measured is a warning only
    shard: str | None = None  # --perf-shard K/N (parsed by shard.parse_shard)
    shard_costs: Path | None = None  # startup seconds per config; default <baselines>/<hw>/shard-costs.yaml
    lock_path: Path | None = None  # machine lock; default $PYTEST_MXFP4_LOCK or /tmp/pytest-mxfp4-machine.lock
    lock_timeout_s: float | None = None  # None: wait for the other run; 0: fail at once
    restarts: int | None = None  # --perf-restarts R: server starts per config (None: workloads.restarts)
    max_restarts: int | None = None  # --perf-max-restarts N: sequential budget (None: workloads.max_restarts)
    ab_head: tuple[str, ...] = ()  # --perf-ab-head OVERRIDE (repeatable): an A/B run, head arm = base + these
    pr_comment: Path | None = None  # --perf-pr-comment PATH: a ready-to-post PR comment (Markdown)


def parse_server_list(value: str) -> tuple[str, ...]:
    """`--perf-server a,b` -> ('a', 'b'); empty names are dropped."""
    return tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
