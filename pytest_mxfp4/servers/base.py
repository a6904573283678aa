"""The interface every server backend implements.

A server is started once per pytest session per config and stopped on
teardown, on failure and on Ctrl-C. Backends: local process, docker
container, external URL.
"""

from __future__ import annotations

import abc
from pathlib import Path

from pytest_mxfp4.formats.results import ServerInfo  # noqa: F401  (the record every backend's start returns)


class Server(abc.ABC):
    """Start/stop a serving engine reachable over HTTP on 127.0.0.1."""

    @abc.abstractmethod
    def start(self) -> ServerInfo:
        """Start and block until healthy. Raises ServerError with the log tail."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop and clean up. Idempotent; safe to call after a failed start."""

    def identity_problem(self) -> str | None:
        """None when the server we started is alive and is the one answering
        on its port; otherwise one message saying what is wrong (exit code,
        log tail). Backends that cannot tell return None."""
        return None

    def process_groups(self) -> tuple[int, ...]:
        """Process groups whose CPU time is the server's own (to tell it from
        other processes' while a start measures); () where unknown."""
        return ()

    def log_text(self) -> str:
        """The server's log so far ('' if unknown)."""
        info = getattr(self, "info", None)
        path = getattr(info, "log_path", None)
        if path and Path(path).exists():
            return Path(path).read_text(errors="replace")
        return ""

    def __enter__(self) -> "Server":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
