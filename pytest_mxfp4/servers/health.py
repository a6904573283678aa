"""Wait for a server's health endpoint, showing progress, failing fast.

Loading a 120B model takes minutes: the user sees elapsed time and the last
log line. If the server dies while we wait we fail at once with its exit code
and log tail instead of sitting out the timeout.
"""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from pytest_mxfp4.errors import ServerError
from pytest_mxfp4.redact import redact_text
from pytest_mxfp4.servers.exits import TAIL_LINES, TAIL_LINES_AFTER_SIGNAL, exit_parts

Progress = Callable[[str], None]
ExitWords = Callable[[int], "tuple[str, str]"]  # exit code -> (head, detail), see exits.exit_parts


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def last_log_line(path: Path | None, width: int = 100) -> str:
    if not path or not Path(path).exists():
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = [l for l in f.read().decode(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return redact_text(lines[-1].strip()[:width]) if lines else ""


def log_tail(path: Path | None, n: int = 25) -> str:
    if not path or not Path(path).exists():
        return "(no log)"
    try:
        with open(path, "rb") as f:  # the tail only: a server log can be large
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError as e:
        return f"(log unreadable: {e.strerror})"
    return redact_text("\n".join(lines[-n:]))


def progress_interval_s() -> float:
    """Seconds between `[name] starting… 35s <last log line>` lines while a
    server loads: a quick start shows only its one `healthy after` line.
    PYTEST_MXFP4_PROGRESS_S overrides (default 15)."""
    try:
        return max(0.5, float(os.environ.get("PYTEST_MXFP4_PROGRESS_S", "15")))
    except ValueError:
        return 15.0


def wait_until_healthy(
    name: str,
    url: str,
    timeout_s: float,
    exited: Callable[[], int | None],
    log_path: Path | None,
    progress: Progress | None = None,
    poll_s: float = 0.5,
    report_every_s: float | None = None,
    exit_words: ExitWords = exit_parts,
) -> float:
    """Poll `url` until 2xx. `exited()` returns an exit code once the server
    has died; `exit_words` puts it into words (a signal is named with the
    next step). Returns seconds to healthy; raises ServerError otherwise.
    The caller says when the server is up (one line per start)."""
    start = time.monotonic()
    if report_every_s is None:
        report_every_s = progress_interval_s()
    next_report = start + report_every_s
    while True:
        elapsed = time.monotonic() - start
        code = exited()
        if code is not None:
            raise ServerError(died_message(name, code, f"after {elapsed:.1f}s during startup", log_path, exit_words))
        if http_ok(url):
            return elapsed
        if elapsed > timeout_s:
            raise ServerError(
                f"server {name!r} not healthy at {url} after {timeout_s:.0f}s "
                f"(raise startup_timeout_s in the config if the model is big; log: {log_path}). "
                f"Last log lines:\n{log_tail(log_path)}"
            )
        if progress and time.monotonic() >= next_report:
            progress(f"[{name}] starting… {elapsed:.0f}s  {last_log_line(log_path)}")
            next_report += report_every_s
        time.sleep(poll_s)


def died_message(name: str, code: int, when: str, log_path: Path | None, exit_words: ExitWords = exit_parts) -> str:
    """First line: the server, how it ended (a signal named, with the next
    step), when, and its log; then the last log lines."""
    head, detail = exit_words(code)
    n = TAIL_LINES_AFTER_SIGNAL if detail else TAIL_LINES
    return (f"server {name!r} {head} {when}{detail} (log: {log_path}). "
            f"Last log lines:\n{log_tail(log_path, n)}")
