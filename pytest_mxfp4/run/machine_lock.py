"""One GPU, one run: a machine-wide lock around every `pytest -m perf` session
that measures, so a local run and a CI job never measure at the same time.

Built on `filelock` (an OS-level `flock`/`fcntl` lock: released by the kernel
when the holder exits, even on SIGKILL, so a crashed run never wedges the
box). Next to the lock file, `<lock>.holder` says who holds it (pid, host,
command, since when, CI run), so the one that waits can say why.

    lock = MachineLock(path, timeout_s=None, say=print)   # None: wait forever; 0: fail at once
    lock.acquire()      # prints one line if it has to wait; MachineLockTimeout after timeout_s
    ...
    lock.release()

Path: `--perf-lock PATH`, else `$PYTEST_MXFP4_LOCK`, else
`/tmp/pytest-mxfp4-machine.lock`. All users of one box (you, the CI runner's
user) must point at the same file; it is created world-writable (0666).
No pytest import: the plugin wires it in.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from filelock import FileLock, Timeout

from pytest_mxfp4.errors import PerfUserError

DEFAULT_PATH = "/tmp/pytest-mxfp4-machine.lock"
ENV_PATH = "PYTEST_MXFP4_LOCK"


class MachineLockTimeout(PerfUserError):
    """The machine lock was held by another run for longer than the user allowed."""


def default_path() -> Path:
    return Path(os.environ.get(ENV_PATH) or DEFAULT_PATH)


@dataclass(frozen=True)
class Holder:
    pid: int
    host: str
    command: str
    since: float
    ci_run: str | None = None

    def describe(self, now: float | None = None) -> str:
        age = max(0.0, (now or time.time()) - self.since)
        where = f" ({self.ci_run})" if self.ci_run else ""
        return f"pid {self.pid} on {self.host}{where}, for {age:.0f}s: {self.command}"


def _me() -> Holder:
    ci = None
    if os.environ.get("GITHUB_RUN_ID"):
        ci = (f"GitHub run {os.environ.get('GITHUB_REPOSITORY', '?')}#{os.environ['GITHUB_RUN_ID']}"
              f" job {os.environ.get('GITHUB_JOB', '?')}")
    cmd = " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv))
    return Holder(pid=os.getpid(), host=socket.gethostname(), command=cmd[:200], since=time.time(), ci_run=ci)


class MachineLock:
    def __init__(self, path: Path | str | None = None, timeout_s: float | None = None,
                 say: Callable[[str], None] = print, poll_s: float = 0.25) -> None:
        if timeout_s is not None and timeout_s < 0:
            raise PerfUserError(f"--perf-lock-timeout: expected seconds >= 0 (or none to wait), got {timeout_s}")
        self.path = Path(path) if path else default_path()
        self.timeout_s = timeout_s
        self.say = say
        self.waited_s = 0.0
        self._lock = FileLock(str(self.path), mode=0o666, poll_interval=poll_s, thread_local=False)

    @property
    def holder_path(self) -> Path:
        return self.path.with_name(self.path.name + ".holder")

    @property
    def held(self) -> bool:
        return self._lock.is_locked

    def holder(self) -> Holder | None:
        """Who holds the lock now, as it wrote down (None if unknown)."""
        try:
            d = json.loads(self.holder_path.read_text())
            return Holder(**d)
        except (OSError, ValueError, TypeError):
            return None

    def acquire(self) -> None:
        if self.held:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock.acquire(timeout=0)
        except Timeout:
            self._wait()
        except OSError as e:
            raise PerfUserError(f"machine lock {self.path}: cannot open it ({e.strerror}); "
                                f"set --perf-lock or ${ENV_PATH} to a file every user of this box can write") from None
        self._write_holder()

    def _wait(self) -> None:
        h = self.holder()
        for _ in range(10):  # the holder takes the lock first and writes who it is just after
            if h is not None:
                break
            time.sleep(0.05)
            h = self.holder()
        who = h.describe() if h else "another run"
        limit = "until it is free" if self.timeout_s is None else f"up to {self.timeout_s:g}s (--perf-lock-timeout)"
        self.say(f"pytest-mxfp4: machine lock {self.path} is held by {who}; waiting {limit}")
        t0 = time.monotonic()
        try:
            self._lock.acquire(timeout=-1 if self.timeout_s is None else self.timeout_s)
        except Timeout:
            raise MachineLockTimeout(
                f"machine lock {self.path}: still held after {self.timeout_s:g}s by {who}; "
                f"another perf run is measuring on this machine. Wait for it, or raise --perf-lock-timeout") from None
        finally:
            self.waited_s = time.monotonic() - t0
        self.say(f"pytest-mxfp4: machine lock taken after waiting {self.waited_s:.0f}s")

    def _write_holder(self) -> None:
        try:
            tmp = self.holder_path.with_name(self.holder_path.name + f".{os.getpid()}")
            tmp.write_text(json.dumps(_me().__dict__))
            os.chmod(tmp, 0o666)
            os.replace(tmp, self.holder_path)
        except OSError:
            pass  # who holds it is a courtesy; the lock itself is what counts

    def release(self) -> None:
        if not self.held:
            return
        try:
            self.holder_path.unlink()
        except OSError:
            pass
        self._lock.release(force=True)

    def __enter__(self) -> "MachineLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
