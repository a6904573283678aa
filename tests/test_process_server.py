"""The local-process server with real processes: fail fast, stop everything."""

import os
import sys
import time
from pathlib import Path

import pytest

from pytest_mxfp4.formats.config import ServerConfig
from pytest_mxfp4.errors import ServerError
from pytest_mxfp4.servers.process import ProcessServer


def cfg(code: str, timeout=20.0, **kw) -> ServerConfig:
    return ServerConfig(name="p", model="m", command=(sys.executable, "-c", code), startup_timeout_s=timeout, **kw)


def test_crash_during_startup_fails_fast_with_exit_code_and_log(tmp_path):
    s = ProcessServer(cfg("import sys, time; print('loading weights'); time.sleep(0.5); sys.exit(3)"), tmp_path, tmp_path)
    t0 = time.monotonic()
    with pytest.raises(ServerError) as e:
        s.start()
    assert time.monotonic() - t0 < 10, "must not wait for the startup timeout"
    msg = str(e.value)
    assert "exited with code 3" in msg and "loading weights" in msg and "'p'" in msg


def test_never_healthy_times_out_with_advice(tmp_path):
    s = ProcessServer(cfg("import time; print('stuck'); time.sleep(60)", timeout=2), tmp_path, tmp_path)
    with pytest.raises(ServerError, match=r"not healthy .* after 2s .*startup_timeout_s"):
        s.start()
    assert s.proc is None


def test_missing_executable_is_clear(tmp_path):
    c = ServerConfig(name="p", model="m", command=("/nonexistent/vllm",))
    with pytest.raises(ServerError, match="cannot run '/nonexistent/vllm'.*command"):
        ProcessServer(c, tmp_path, tmp_path).start()


SERVE_AND_FORK = r"""
import http.server, os, subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
open(os.environ["CHILD_PID_FILE"], "w").write(str(child.pid))
port = int(sys.argv[1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); check its state
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_stop_kills_the_whole_process_group(tmp_path):
    pid_file = tmp_path / "child.pid"
    c = ServerConfig(name="p", model="m", command=(sys.executable, "-c", SERVE_AND_FORK, "{port}"),
                     env={"CHILD_PID_FILE": str(pid_file)}, startup_timeout_s=20)
    s = ProcessServer(c, tmp_path, tmp_path)
    info = s.start()
    assert info.base_url.startswith("http://127.0.0.1:") and info.startup_s is not None
    leader, child = s.proc.pid, int(pid_file.read_text())
    assert _alive(leader) and _alive(child)
    s.stop()
    deadline = time.monotonic() + 5
    while (_alive(child) or _alive(leader)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(leader) and not _alive(child), "engine children must not outlive the server"
    s.stop()  # idempotent
    assert (tmp_path / "p.log").exists()
