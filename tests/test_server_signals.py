"""A server that dies by a signal is named by the signal, with the one next
step, in one line: during start-up and mid-run, for real processes killed by
real signals (SIGILL, SIGSEGV, SIGKILL); the docker runner's 128+N codes read
the same. The wording lives in pytest_mxfp4/servers/exits.py only."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from pytest_mxfp4.formats.config import ServerConfig
from pytest_mxfp4.errors import ServerError
from pytest_mxfp4.servers.exits import ENGINE_REINSTALL, IMAGE_REBUILD, describe_exit, exit_parts
from pytest_mxfp4.servers.process import ProcessServer, group_pids

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "fakes" / "fault_server.py"

# what the first line must say for each signal: its name, what it is, the next step
EXPECT = {
    signal.SIGILL: ("killed by SIGILL (illegal instruction)", "CPU instructions this machine refuses",
                    "rebuild with scripts/build_llama_server.sh"),
    signal.SIGSEGV: ("killed by SIGSEGV (segmentation fault)", "CPU-feature mismatch",
                     "rebuild with scripts/build_llama_server.sh"),
    signal.SIGKILL: ("killed by SIGKILL (out of memory?)", "OOM killer", "dmesg"),
}


def llama_named(tmp_path: Path, body: str) -> str:
    """A 'llama-server' that is a shell script (so the next step is the llama.cpp
    rebuild); core dumps off so a crash leaves no file behind."""
    path = tmp_path / "bin" / "llama-server"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f"#!/bin/sh\nulimit -c 0\n{body}\n")
    path.chmod(0o755)
    return str(path)


def cfg(command: tuple[str, ...]) -> ServerConfig:
    return ServerConfig(name="crashy", engine="openai", model="fake", command=command, startup_timeout_s=20)


@pytest.mark.parametrize("sig", list(EXPECT), ids=lambda s: signal.Signals(s).name)
def test_a_server_killed_by_a_signal_during_startup_says_which_and_what_to_do(tmp_path, sig):
    prog = llama_named(tmp_path, f'echo "loading model"\nexec {sys.executable} -c '
                                 f'"import os; os.kill(os.getpid(), {int(sig)})"')
    s = ProcessServer(cfg((prog,)), tmp_path / "logs", ROOT)
    t0 = time.monotonic()
    with pytest.raises(ServerError) as e:
        s.start()
    assert time.monotonic() - t0 < 10, "fails when the process dies, not at the timeout"
    first = str(e.value).splitlines()[0]
    name_what, meaning, step = EXPECT[sig]
    assert first.startswith(f"server 'crashy' {name_what} after ")
    assert "during startup" in first and meaning in first and step in first
    assert "exited with code" not in first
    assert "loading model" in str(e.value).split("Last log lines:")[1]  # the tail is still there
    assert s.proc is None and not list((tmp_path / "logs" / ".running").glob("*.json"))


@pytest.mark.parametrize("sig", list(EXPECT), ids=lambda s: signal.Signals(s).name)
def test_a_server_killed_by_a_signal_mid_run_says_which_and_what_to_do(tmp_path, sig):
    prog = llama_named(tmp_path, f'exec {sys.executable} {FAKE} "$@"')
    s = ProcessServer(cfg((prog, "--port", "{port}", "--mode", "ok")), tmp_path / "logs", ROOT)
    s.start()
    try:
        pid = s.proc.pid
        assert s.identity_problem() is None
        os.kill(pid, sig)  # the crash, by a real signal
        for _ in range(100):
            if not s.alive():
                break
            time.sleep(0.05)
        assert s.proc.returncode == -sig
        problem = s.identity_problem()
        first = problem.splitlines()[0]
        name_what, meaning, step = EXPECT[sig]
        assert first.startswith(f"server 'crashy' {name_what} (pid {pid}) while running")
        assert meaning in first and step in first
    finally:
        s.stop()
    assert not group_pids(pid)


def test_the_next_step_fits_the_program():
    assert "scripts/setup.sh" in describe_exit(-signal.SIGILL, rebuild=ENGINE_REINSTALL)
    # a plain exit code stays a plain exit code, with no advice
    assert describe_exit(3) == "exited with code 3" and describe_exit(0) == "exited with code 0"
    # SIGABRT: the engine's own reason is in the log, a rebuild would not help
    assert "rebuild" not in describe_exit(-signal.SIGABRT) and "SIGABRT" in describe_exit(-signal.SIGABRT)


@pytest.mark.parametrize("code,name", [(132, "SIGILL"), (139, "SIGSEGV"), (137, "SIGKILL")])
def test_docker_exit_codes_128_plus_n_name_the_signal(code, name):
    head, detail = exit_parts(code, rebuild=IMAGE_REBUILD, shell_convention=True)
    assert head.startswith(f"killed by {name}")
    if name != "SIGKILL":
        assert "docker/build.sh" in detail
    # without the convention (a local process), 139 is just an exit code
    assert exit_parts(code) == (f"exited with code {code}", "")
    # docker's -1 (state unknown, container gone) is not a signal
    assert exit_parts(-1, shell_convention=True) == ("exited with code -1", "")


def test_the_plugin_reports_a_sigill_at_startup_in_one_line(pytester, tmp_path):
    prog = llama_named(tmp_path, f'exec {sys.executable} -c "import os; os.kill(os.getpid(), 4)"')
    pytester.makepyfile(test_perf="import pytest\npytestmark = pytest.mark.perf\n"
                                  "def test_workload(perf_measure):\n    perf_measure()\n")
    pytester.makefile(".yaml", matrix=f"""
defaults: {{engine: openai, runner: process}}
servers:
  crashy: {{model: m, startup_timeout_s: 30, command: [{prog}]}}
workloads: {{decode: {{tg: [32]}}, runs: 2, restarts: 1}}
""")
    r = pytester.runpytest_subprocess("-m", "perf", "--perf-config", "matrix.yaml", "--perf-output", "out",
                                      "--perf-lock", str(tmp_path / "lock"))
    out = r.stdout.str()
    lines = [l for l in out.splitlines() if "killed by SIGILL (illegal instruction)" in l]
    assert lines, out[-3000:]
    assert all("rebuild with scripts/build_llama_server.sh" in l for l in lines)
    assert "exited with code -4" not in out and "Traceback" not in out
