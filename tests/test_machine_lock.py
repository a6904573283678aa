"""The machine lock: two runs started together never hold it at the same time;
the second says who it waits for, or fails after the user's timeout; a killed
holder frees it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.run.machine_lock import MachineLock, MachineLockTimeout

ROOT = Path(__file__).resolve().parents[1]

# A stand-in for a perf session: take the lock, "measure" (hold it for a
# while), record when it held it.
HOLDER = textwrap.dedent("""
    import json, sys, time
    from pytest_mxfp4.run.machine_lock import MachineLock
    lock_path, out, hold_s, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
    lock = MachineLock(lock_path, timeout_s=None if timeout == "none" else float(timeout),
                       say=lambda m: print(m, flush=True), poll_s=0.02)
    try:
        lock.acquire()
    except Exception as e:
        print(f"ERR {type(e).__name__}: {e}", flush=True)
        sys.exit(3)
    t0 = time.time()
    print("HELD", flush=True)
    time.sleep(hold_s)
    t1 = time.time()
    lock.release()
    json.dump([t0, t1], open(out, "w"))
""")


def _spawn(tmp_path: Path, name: str, hold_s: float, timeout: str = "none") -> subprocess.Popen:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "m.lock"), str(tmp_path / f"{name}.json"),
                             str(hold_s), timeout], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)


def _wait_held(p: subprocess.Popen) -> None:
    line = p.stdout.readline()
    assert line.strip() == "HELD", line


def test_two_runs_started_together_never_hold_it_at_once(tmp_path):
    a = _spawn(tmp_path, "a", 1.0)
    b = _spawn(tmp_path, "b", 1.0)
    outs = [p.communicate(timeout=60)[0] for p in (a, b)]
    assert a.returncode == 0 and b.returncode == 0, outs
    ia = json.loads((tmp_path / "a.json").read_text())
    ib = json.loads((tmp_path / "b.json").read_text())
    first, second = sorted([ia, ib])
    assert second[0] >= first[1], f"overlap: {first} {second}"
    # exactly one of them had to wait, and said who held it and that it waits
    waited = [o for o in outs if "is held by pid" in o]
    assert len(waited) == 1, outs
    assert "waiting until it is free" in waited[0] and "holder.py" in waited[0]
    assert "machine lock taken after waiting" in waited[0]


def test_second_run_fails_after_the_user_timeout_naming_the_holder(tmp_path):
    a = _spawn(tmp_path, "a", 30.0)
    try:
        _wait_held(a)
        b = _spawn(tmp_path, "b", 0.1, timeout="0.3")
        out = b.communicate(timeout=60)[0]
        assert b.returncode == 3, out
        assert "ERR MachineLockTimeout" in out
        assert f"held by pid {a.pid}" in out and "--perf-lock-timeout" in out
        assert "Traceback" not in out
        assert not (tmp_path / "b.json").exists()
    finally:
        a.kill()
        a.wait()


def test_a_killed_holder_frees_the_lock(tmp_path):
    a = _spawn(tmp_path, "a", 60.0)
    _wait_held(a)
    os.kill(a.pid, signal.SIGKILL)
    a.wait()
    lock = MachineLock(tmp_path / "m.lock", timeout_s=5)
    lock.acquire()
    assert lock.held and lock.waited_s == 0.0
    lock.release()
    assert not lock.held


def test_holder_file_says_who_and_goes_away_on_release(tmp_path, monkeypatch):
    monkeypatch.setenv("GITHUB_RUN_ID", "77")
    monkeypatch.setenv("GITHUB_REPOSITORY", "o/r")
    monkeypatch.setenv("GITHUB_JOB", "gate")
    lock = MachineLock(tmp_path / "m.lock", timeout_s=0)
    with lock:
        h = lock.holder()
        assert h is not None and h.pid == os.getpid()
        assert "GitHub run o/r#77 job gate" in h.describe()
        assert oct(os.stat(tmp_path / "m.lock").st_mode & 0o777) == oct(0o666)
    assert lock.holder() is None


def test_in_process_second_lock_with_zero_timeout_fails_at_once(tmp_path):
    said = []
    first = MachineLock(tmp_path / "m.lock", timeout_s=0)
    first.acquire()
    try:
        second = MachineLock(tmp_path / "m.lock", timeout_s=0, say=said.append)
        with pytest.raises(MachineLockTimeout) as e:
            second.acquire()
        assert "still held after 0s" in str(e.value)
        assert said and "held by pid" in said[0]
    finally:
        first.release()


def test_bad_timeout_and_unwritable_path_are_user_errors(tmp_path, monkeypatch):
    with pytest.raises(PerfUserError, match="--perf-lock-timeout"):
        MachineLock(tmp_path / "m.lock", timeout_s=-1)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(PerfUserError, match="PYTEST_MXFP4_LOCK"):
        MachineLock(blocker / "sub" / "m.lock", timeout_s=0).acquire()
    monkeypatch.setenv("PYTEST_MXFP4_LOCK", str(tmp_path / "env.lock"))
    assert MachineLock().path == tmp_path / "env.lock"


# ---------------------------------------------------------------- through the plugin

pytest_plugins = ["pytester"]

PERF_TEST = """
import pytest
pytestmark = pytest.mark.perf
def test_workload(perf_measure):
    perf_measure()
"""

# The "server" records when it ran, holds 1.5 s, then exits (its tests error:
# this is about who runs when, not about measuring).
SERVER = ("import json,os,sys,time; t0=time.time(); time.sleep(1.5); "
          "print(json.dumps([t0,time.time()]), file=open(os.environ['SPAN_FILE'],'a')); sys.exit(3)")


def test_two_perf_runs_started_together_never_run_servers_at_once(pytester, tmp_path):
    pytester.makepyfile(test_perf=PERF_TEST)
    spans = tmp_path / "spans.jsonl"
    pytester.makefile(".yaml", matrix=textwrap.dedent(f"""
        servers:
          s: {{model: m, startup_timeout_s: 30, command: [{sys.executable}, -c, "{SERVER}"],
               env: {{SPAN_FILE: "{spans}"}}}}
        workloads: {{decode: {{tg: [32]}}, runs: 2}}
    """))
    lock = tmp_path / "box.lock"
    cmd = [sys.executable, "-m", "pytest", "-m", "perf", "--perf-config=matrix.yaml", f"--perf-lock={lock}",
           "-p", "no:cacheprovider", "--perf-output=out"]
    runs = [subprocess.Popen(cmd + [f"--perf-output=out{i}"], cwd=pytester.path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in runs]
    lines = spans.read_text().splitlines()
    assert len(lines) == 2, outs
    first, second = sorted(json.loads(x) for x in lines)
    assert second[0] >= first[1], f"servers overlapped: {first} {second}"
    waited = [o for o in outs if "is held by pid" in o]
    assert len(waited) == 1, outs
    assert "waiting until it is free" in waited[0]


def test_perf_run_gives_up_after_the_lock_timeout(pytester, tmp_path):
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=textwrap.dedent(f"""
        servers:
          s: {{model: m, command: [{sys.executable}, -c, "import sys; sys.exit(3)"]}}
        workloads: {{decode: {{tg: [32]}}, runs: 2}}
    """))
    lock = tmp_path / "box.lock"
    with MachineLock(lock, timeout_s=0):
        r = pytester.runpytest_subprocess("-m", "perf", "--perf-config=matrix.yaml", f"--perf-lock={lock}",
                                          "--perf-lock-timeout=0.5", "--perf-output=out")
    out = r.stdout.str()
    r.assert_outcomes(errors=1)
    assert "still held after 0.5s" in out and f"held by pid {os.getpid()}" in out
    assert "exited with code 3" not in out  # it never started its server
    assert "Traceback" not in out
