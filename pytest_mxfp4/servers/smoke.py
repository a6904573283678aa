"""Smoke-test a llama-server binary: for each GGUF, start it on 127.0.0.1,
make one real short generation (a prompt of a few hundred tokens, so the
batched mat-mul kernels run, then 8 decoded tokens), stop it.

    python scripts/smoke_llama_server.py BIN/llama-server MODEL.gguf [MODEL.gguf ...]
    python -m pytest_mxfp4.servers.smoke BIN/llama-server MODEL.gguf [...]   (the same)

Used by scripts/build_llama_server.sh before it stamps a build and by
`pytest-mxfp4 doctor`.

Exit 0: every model generated. Exit 3: the server died by a signal (SIGILL,
SIGSEGV ...): a build/CPU mismatch, the caller may rebuild with the safe
feature set. Exit 4: any other failure (no health, a bad answer, a timeout).
One line per model either way; the crash line is worded by
pytest_mxfp4/servers/exits.py, as in the plugin. Stdlib only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from pytest_mxfp4.servers.exits import describe_exit, exit_signal

CRASHED, FAILED = 3, 4
# a crash here is answered by the build script itself (it rebuilds with the safe set once)
NEXT_STEP = "a build with fewer CPU features is needed (scripts/build_llama_server.sh with LLAMA_CPU_FEATURES=safe)"
HEALTH_TIMEOUT_S = float(os.environ.get("LLAMA_SMOKE_TIMEOUT_S", "60"))
PROMPT = "the licence grants permission to copy, modify and share the work " * 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def tail(path: Path, n: int = 3) -> str:
    lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
    return " | ".join(l.strip()[:160] for l in lines[-n:])


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM the group, SIGKILL what is left; always reaps."""
    for sig, wait_s in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            pass


def smoke(server: str, model: str, log: Path) -> tuple[int, str]:
    """(status, one line) for one model."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [server, "-m", model, "--host", "127.0.0.1", "--port", str(port), "-c", "2048", "-np", "1",
           "-t", str(min(2, os.cpu_count() or 1)), "--no-webui", "--cache-ram", "0"]
    t0 = time.monotonic()
    with open(log, "wb") as out:
        try:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        except OSError as e:
            return FAILED, f"{Path(model).name}: cannot run {server}: {e.strerror}"
    name = Path(model).name

    def died() -> tuple[int, str] | None:
        code = proc.poll()
        if code is None:
            return None
        status = CRASHED if exit_signal(code) else FAILED
        return status, (f"{name}: llama-server {describe_exit(code, rebuild=NEXT_STEP)} "
                        f"({time.monotonic() - t0:.1f}s after start; log {log}: {tail(log)})")

    try:
        while not healthy(url):
            if (d := died()) is not None:
                return d
            if time.monotonic() - t0 > HEALTH_TIMEOUT_S:
                return FAILED, f"{name}: llama-server not healthy after {HEALTH_TIMEOUT_S:.0f}s (log {log}: {tail(log)})"
            time.sleep(0.1)
        try:
            answer = post(url + "/completion", {"prompt": PROMPT, "n_predict": 8, "ignore_eos": True,
                                                "cache_prompt": False, "temperature": 0}, timeout=60)
        except (urllib.error.URLError, OSError, ValueError) as e:
            time.sleep(0.5)  # a crash mid-request shows as a reset connection: let the exit land
            if (d := died()) is not None:
                return d
            return FAILED, f"{name}: the generation request failed: {e}"
        got = answer.get("tokens_predicted")
        if got != 8:
            return FAILED, f"{name}: asked for 8 tokens, the server answered {got!r}"
        ms = (answer.get("timings") or {}).get("prompt_per_second")
        rate = f", prompt {ms:.0f} tok/s" if isinstance(ms, (int, float)) else ""
        return 0, f"{name}: ok ({answer.get('tokens_evaluated')} prompt + 8 generated tokens{rate}, " \
                  f"{time.monotonic() - t0:.1f}s)"
    finally:
        stop(proc)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: smoke_llama_server.py LLAMA_SERVER MODEL.gguf [MODEL.gguf ...]", file=sys.stderr)
        return 2
    server, models = argv[0], argv[1:]
    missing = [m for m in models if not Path(m).is_file()]
    if missing:
        print(f"smoke test: no such model file: {missing[0]}", file=sys.stderr)
        return FAILED
    worst = 0
    log_dir = Path(os.environ.get("LLAMA_SMOKE_LOG_DIR") or tempfile.mkdtemp(prefix="llama-smoke-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    for m in models:
        status, line = smoke(server, m, log_dir / (Path(m).stem + ".log"))
        print(f"smoke test: {line}", file=sys.stderr if status else sys.stdout, flush=True)
        if status == CRASHED:
            return CRASHED  # the build is wrong for this CPU; the other models say nothing new
        worst = worst or status
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
