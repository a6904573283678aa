"""From resolved options to a session's plan: which configs, which shard,
how many starts, the A/B head. Every check here is a user's mistake named
by its option (`PerfUserError`), before anything starts."""

from __future__ import annotations

from dataclasses import replace

from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.formats.config import Matrix
from pytest_mxfp4.options import PerfOptions


def starts_options(opts: PerfOptions, matrix: Matrix) -> tuple[int, int, tuple]:
    """(starts per config, the most starts the sequential rule may reach,
    A/B head overrides), checked: R >= 1; an A/B needs servers this run starts."""
    from pytest_mxfp4.run.ab import ABError, parse_override

    if opts.restarts is not None and opts.restarts < 1:
        raise ABError(f"--perf-restarts {opts.restarts}: must be >= 1 (server starts per config)")
    restarts = opts.restarts if opts.restarts is not None else matrix.workloads.restarts
    max_r = opts.max_restarts if opts.max_restarts is not None else matrix.workloads.max_restarts
    if opts.max_restarts is not None and opts.max_restarts < restarts:
        raise ABError(f"--perf-max-restarts {opts.max_restarts}: must be >= the starts per config ({restarts})")
    max_r = max(restarts, max_r or restarts)
    overrides = tuple(parse_override(s) for s in opts.ab_head)
    from pytest_mxfp4.run.ab import check_programs

    check_programs(overrides, opts.base_dir)
    if overrides and opts.base_url:
        raise ABError("--perf-ab-head needs servers this run starts (two arms); it cannot be combined with "
                      "--perf-base-url, a server started elsewhere")
    if opts.base_url:
        return 1, 1, overrides
    return restarts, max_r, overrides


def shard_of(matrix: Matrix, opts: PerfOptions, hardware_key: str):
    """--perf-shard K/N: (this shard's matrix, what the results record about the split)."""
    if not opts.shard:
        return matrix, None
    from pytest_mxfp4.run import shard

    spec = shard.parse_shard(opts.shard)
    costs_path = opts.shard_costs or shard.default_costs_path(opts.baselines, hardware_key)
    known = shard.read_costs(costs_path) if (opts.shard_costs or costs_path.exists()) else {}
    mine, plan, full = shard.select(matrix, spec, opts.base_dir, known)
    return mine, shard.shard_record(spec, plan, full, str(costs_path) if known else None)


def select(matrix: Matrix, names: tuple[str, ...], base_url: str | None) -> Matrix:
    servers = matrix.servers
    if names:
        unknown = [n for n in names if n not in {s.name for s in servers}]
        if unknown:
            raise PerfUserError(f"--perf-server: no server {unknown[0]!r} in {matrix.path}; "
                                f"known: {', '.join(s.name for s in servers)}")
        servers = tuple(s for s in servers if s.name in names)
    if base_url:
        runnable = [s for s in servers if not s.pending]
        if len(runnable) != 1:
            raise PerfUserError(f"--perf-base-url measures one server, but {len(runnable)} configs are selected in "
                                f"{matrix.path}; pick the one it runs with --perf-server NAME")
        servers = tuple(runnable)
    return replace(matrix, servers=servers)
