"""`pytest-mxfp4 report`: rebuild the results page (and trend plots) from
stored results and baselines. Runs nothing, measures nothing.

    pytest-mxfp4 report [RESULTS.json ...] --baselines baselines/ [--config configs/x.yaml]
                        [--out BENCHMARK_RESULTS.md] [--plots DIR]

Result files are merged in the order given: for a config measured in several
files, the last file wins; every file's configs go to the run log section.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pytest_mxfp4.formats.baselines import BaselineFile, read_baseline
from pytest_mxfp4.formats.config import Matrix, load_matrix
from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.formats import results as results_file
from pytest_mxfp4.formats.results import SessionResults
from pytest_mxfp4.formats.runlog import RUN_LOG_NAME, read_run_log
from pytest_mxfp4.report.history import run_log_records


def merge_sessions(sessions: list[SessionResults]) -> SessionResults:
    """One session from several: per server config, the last session that
    measured (or mentioned) it wins. Each server record keeps its own
    session's environment (`ServerRecord.environment`) when they differ."""
    if not sessions:
        return SessionResults(matrix="")
    if len(sessions) == 1:
        return sessions[0]
    last = sessions[-1]
    merged = SessionResults(matrix=last.matrix, environment=replace(last.environment), starts=last.starts,
                            interrupted="; ".join(s.interrupted for s in sessions if s.interrupted) or None)
    owner: dict[str, SessionResults] = {}
    for s in sessions:
        for name in list(s.servers) + [r.server for r in s.metrics]:
            if s.for_server(name) or name not in owner:
                owner[name] = s
    for name, s in owner.items():
        rec = s.servers.get(name)
        if rec is not None:
            if s is not last and s.environment != last.environment:
                rec.environment = s.environment
            merged.servers[name] = rec
        merged.metrics += s.for_server(name)
    return merged


def load_baselines(baselines_dir: Path, matrix: Matrix | None, hardware_key: str | None) -> dict[str, BaselineFile]:
    """Server name -> baseline file, for one machine. `baselines_dir` may be
    the root (baselines/) or one machine's folder (baselines/<key>/)."""
    from pytest_mxfp4.formats.baselines import check_place
    from pytest_mxfp4.run.shard import COST_FILE

    files = sorted(p for p in baselines_dir.rglob("*.yaml") if not p.name.startswith(".") and p.name != COST_FILE)
    found: list[BaselineFile] = []
    for p in files:
        b = read_baseline(p)
        rel = p.relative_to(baselines_dir).parts  # <hardware>/<model>/<server>.yaml, or <model>/<server>.yaml
        if len(rel) in (2, 3):  # a file judges only what its place says (as the store refuses otherwise)
            hw = rel[0] if len(rel) == 3 else baselines_dir.name
            check_place(b, p, hw, p.parent.name, p.stem)
        found.append(b)
    if matrix is not None:
        wanted = {s.name: s.model_name for s in matrix.servers}
        found = [b for b in found if b.server in wanted and b.model == wanted[b.server]]
    if hardware_key:
        found = [b for b in found if b.hardware_key == hardware_key]
    keys = sorted({b.hardware_key for b in found})
    if len(keys) > 1:
        raise PerfUserError(
            f"{baselines_dir}: holds baselines of several machines ({', '.join(keys)}); pass a result JSON "
            f"measured on the one you want, or point --baselines at one machine's folder, e.g. {baselines_dir / keys[0]}")
    out: dict[str, BaselineFile] = {}
    for b in found:
        if b.server in out:
            raise PerfUserError(f"{baselines_dir}: two baselines for server {b.server!r} on {b.hardware_key} "
                                f"(models {out[b.server].model!r} and {b.model!r}); pass --config to pick by model")
        out[b.server] = b
    return out


def report_command(results_json: list[str], baselines_dir: str, config: str | None, out_md: str,
                   plots_dir: str | None, force: bool = False) -> int:
    """Regenerate the Markdown page (and trend PNGs when `plots_dir` is set)
    from stored data. Returns the exit status; user mistakes raise
    PerfUserError with a message naming the file."""
    matrix = load_matrix(config) if config else None
    sessions = [results_file.load(p) for p in results_json]
    session = merge_sessions(sessions)
    if not session.matrix and matrix is not None:
        session.matrix = matrix.name

    bdir = Path(baselines_dir)
    if not bdir.is_dir():
        raise PerfUserError(f"{bdir}: baseline directory not found (pass --baselines DIR; default baselines/)")
    hw = session.hardware_key
    baselines = load_baselines(bdir, matrix, hw)

    # the run log lives in the baselines root; --baselines may name one machine's folder below it
    log_dir = bdir.parent if not (bdir / RUN_LOG_NAME).exists() and (bdir.parent / RUN_LOG_NAME).exists() else bdir
    run_log = read_run_log(log_dir)
    page_hw = hw or next((b.hardware_key for b in baselines.values()), None)
    if page_hw:
        run_log = [r for r in run_log if r.hardware_key in (None, page_hw)]
    seen = {r.run_id for r in run_log}
    for s in sessions:  # every result file is a run, also those whose numbers a later file replaced
        for rec in run_log_records(s):
            if rec.run_id not in seen:
                seen.add(rec.run_id)
                run_log.append(rec)

    if not session.results and not baselines and not (matrix and matrix.servers):
        raise PerfUserError(f"nothing to report: no result JSON given and no baseline under {bdir}"
                            + (f" for hardware {hw}" if hw else ""))

    out = Path(out_md)
    from pytest_mxfp4.options import ReportPaths
    from pytest_mxfp4.report.ownership import check_may_overwrite
    from pytest_mxfp4.report.writer import write_reports

    check_may_overwrite(out, force)  # before any work is written (plots included)
    written = write_reports(session, matrix, baselines,
                            ReportPaths(page=out, plots=Path(plots_dir) if plots_dir else None), None,
                            current_baselines=lambda: baselines, run_log=run_log, force=force, step_summary=False,
                            page_flag="--out")
    for line in written.lines:
        print(line)
    if written.errors:
        raise PerfUserError("; ".join(written.errors))
    return 0
