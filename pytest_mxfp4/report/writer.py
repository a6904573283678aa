"""Write a session's record, then every report of it, each on its own.

The one place that turns a failed write into a message: a broken run log,
an unwritable directory or a plot that cannot be drawn costs that output
only, never the others. The record goes first (`save_record`: the JSON
every report can be rebuilt from, and the baselines); the reports
(`write_reports`) are rendered from the results alone. The caller makes the
run non-zero when `Written.errors` is not empty."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mxfp4.formats.baselines import BaselineFile
from pytest_mxfp4.formats.config import Matrix
from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.formats.fileio import write_atomic
from pytest_mxfp4.options import ReportPaths
from pytest_mxfp4.formats.results import SessionResults
from pytest_mxfp4.formats.runlog import RunLogRecord


@dataclass
class Written:
    lines: list[str] = field(default_factory=list)  # what was written, one line each
    errors: list[str] = field(default_factory=list)  # what could not be, one line each


_FAILED = object()


def _attempt(written: Written, what: str, fn: Callable[[], object]) -> object:
    """fn() or `_FAILED` (with one line in `written.errors`)."""
    try:
        return fn()
    except PerfUserError as e:
        written.errors.append(f"{what}: {e}")
    except OSError as e:
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        written.errors.append(f"{what}: cannot write{where}: {e.strerror or e}")
    except Exception as e:  # a report bug must not cost the other reports
        written.errors.append(f"{what}: {type(e).__name__}: {e}")
    return _FAILED


def save_record(session: SessionResults, paths: ReportPaths, baselines_root: Path | None,
                update_baselines: Callable[[], list[Path]] | None = None, out: Written | None = None) -> Written:
    """The run's record, before any report: the results JSON (every report can
    be rebuilt from it) and, when `update_baselines` is given, the new
    baselines and their run log records."""
    from pytest_mxfp4.formats import results as results_file

    out = out if out is not None else Written()
    if paths.json and _attempt(out, "--perf-json", lambda: results_file.save(session, paths.json)) is not _FAILED:
        out.lines.append(f"perf-json: {paths.json}")
    if update_baselines is not None:
        stored = _attempt(out, "baselines", update_baselines)
        if stored is not _FAILED and stored:
            out.lines += [f"baseline written: {p}" for p in stored]
            if baselines_root is not None:
                _attempt(out, "run log", lambda: _append_run_log_locked(baselines_root, session))
    return out


def write_reports(session: SessionResults, matrix: Matrix | None, judged: dict[str, BaselineFile],
                  paths: ReportPaths, baselines_root: Path | None,
                  current_baselines: Callable[[], dict[str, BaselineFile]] | None = None,
                  run_log: list[RunLogRecord] | None = None, force: bool = False, step_summary: bool = True,
                  page_flag: str = "--perf-report", out: Written | None = None) -> Written:
    """Render and write the reports of `paths` from the results. The page is
    rendered against the baselines this run was judged by (`judged`), not
    the ones it may have stored. The plugin, `report` and `merge --report`
    all write the page here: `run_log` given (the offline tools gather it
    from several files) is used as it is; `force` replaces a page
    pytest-mxfp4 did not write; `page_flag` is the option that named the
    page, for the message when it cannot be written."""
    from pytest_mxfp4.formats import runlog
    from pytest_mxfp4.report import benchmark_json
    from pytest_mxfp4.report import github
    from pytest_mxfp4.report import markdown

    out = out if out is not None else Written()
    if run_log is None:
        run_log = []
        if baselines_root is not None:
            read = _attempt(out, "run log", lambda: runlog.read_run_log(baselines_root))
            run_log = [] if read is _FAILED else read
    page = _attempt(out, "results page", lambda: markdown.render(session, matrix, judged, run_log))
    if paths.benchmark_json and _attempt(
            out, "--perf-benchmark-json", lambda: benchmark_json.write(session, paths.benchmark_json)) is not _FAILED:
        out.lines.append(f"perf-benchmark-json: {paths.benchmark_json}")
    if paths.plots and current_baselines is not None:
        from pytest_mxfp4.report import plots

        made = _attempt(out, "--perf-plots",
                        lambda: plots.trend_plots(list(current_baselines().values()), paths.plots))
        if made is not _FAILED:
            out.lines.append(f"plots: {len(made)} PNG in {paths.plots}" + (
                "" if made else " (no baseline history yet: plots come from --perf-update-baselines runs)"))
            if page is not _FAILED and paths.page:
                page += "\n" + markdown.plots_section(made, paths.page)
    if page is not _FAILED:
        if paths.page and _attempt(out, page_flag, lambda: _write_page(paths.page, page, force)) is not _FAILED:
            out.lines.append(f"results page: {paths.page}")
        if step_summary and _attempt(out, "GitHub step summary",
                                     lambda: github.write_step_summary(session, page)) not in (None, _FAILED):
            out.lines.append("GitHub step summary written")
    return out


def _write_page(path: Path, page: str, force: bool = False) -> None:
    """The page, unless `path` is a page pytest-mxfp4 did not write (hand-kept)."""
    from pytest_mxfp4.report.ownership import check_may_overwrite, mark

    check_may_overwrite(path, force, how="delete it or write the page elsewhere")
    write_atomic(path, mark(page))


def _append_run_log_locked(root: Path, session: SessionResults):
    """The run log is read-modified-written: under the baselines lock, so two
    runs at once both keep their records."""
    from pytest_mxfp4.formats.baselines import BaselineStore
    from pytest_mxfp4.report import history

    with BaselineStore(root).lock():
        return history.append_run_log(root, session)
