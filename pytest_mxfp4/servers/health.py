"""Wait for a server's health endpoint, showing progress, failing fast.

Loading a 120B model takes minutes: the user sees elapsed time and the last
log line. If the server dies while we wait we fail at once with its exit code
and log tail instead of sitting out the timeout.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from ..errors import ServerError
from ..redact import redact_text

Progress = Callable[[str], None]


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


def wait_until_healthy(
    name: str,
    url: str,
    timeout_s: float,
    exited: Callable[[], int | None],
    log_path: Path | None,
    progress: Progress | None = None,
    poll_s: float = 0.5,
    report_every_s: float = 5.0,
) -> float:
    """Poll `url` until 2xx. `exited()` returns an exit code once the server
    has died. Returns seconds to healthy; raises ServerError otherwise."""
    start = time.monotonic()
    next_report = start + report_every_s
    while True:
        elapsed = time.monotonic() - start
        code = exited()
        if code is not None:
            raise ServerError(
                f"server {name!r} exited with code {code} after {elapsed:.1f}s during startup "
                f"(log: {log_path}). Last log lines:\n{log_tail(log_path)}"
            )
        if http_ok(url):
            if progress:
                progress(f"[{name}] healthy after {elapsed:.1f}s")
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
