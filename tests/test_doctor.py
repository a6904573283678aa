"""`pytest-mxfp4 doctor`: the box, the engines (llama.cpp smoke-tested for
real on the matrix's GGUFs), and each row's fate with its reason, in under
5 s, leaving no server behind. A llama-server dying by SIGILL is named."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAKE_SERVER = ROOT / "tests" / "fakes" / "fake_llama_server.py"


def script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\nulimit -c 0\n{body}\n")
    path.chmod(0o755)
    return path


def left_over(marker: str) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def run_doctor(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "pytest_mxfp4.cli.main", "doctor", *args], cwd=cwd, capture_output=True,
                       text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return r, time.monotonic() - t0


def test_doctor_says_what_runs_what_is_skipped_and_what_fails_and_why(tmp_path):
    good = script(tmp_path / "good" / "llama-server", f'exec {sys.executable} {FAKE_SERVER} "$@"')
    crash = script(tmp_path / "crash" / "llama-server", "kill -ILL $$")
    for m in ("good.gguf", "crash.gguf"):
        (tmp_path / m).write_bytes(b"GGUF")
    args = '-m, "{model}", --port, "{port}"'
    (tmp_path / "matrix.yaml").write_text(f"""
defaults: {{engine: llama.cpp, runner: process}}
servers:
  later: {{pending: "no recipe yet"}}
  gb10: {{model: good.gguf, requires: {{accelerator: nvidia, sm: "12.1"}}, command: [{good}, {args}]}}
  unbuilt: {{model: good.gguf, command: [nowhere/llama-server, {args}]}}
  no-model: {{model: models/missing.gguf, command: [{good}, {args}]}}
  good: {{model: good.gguf, command: [{good}, {args}]}}
  crashy: {{model: crash.gguf, command: [{crash}, {args}]}}
workloads: {{decode: {{tg: [8]}}}}
""")
    r, took = run_doctor(tmp_path, "--config", "matrix.yaml")
    out = r.stdout
    assert r.returncode == 1, out + r.stderr  # rows will fail
    assert took < 5, f"doctor took {took:.1f}s"
    rows = {l.split()[0]: l for l in out.split("\nmatrix ", 1)[1].splitlines()[1:] if l.startswith("  ")}
    assert "skipped" in rows["later"] and "pending: no recipe yet" in rows["later"]
    assert "skipped" in rows["gb10"] and "needs NVIDIA GPU SM 12.1" in rows["gb10"]
    assert "will FAIL" in rows["unbuilt"] and "scripts/build_llama_server.sh builds it" in rows["unbuilt"]
    assert "will FAIL" in rows["no-model"] and "models/missing.gguf not found" in rows["no-model"]
    assert "will run" in rows["good"]
    assert "will FAIL" in rows["crashy"] and "failed its smoke test" in rows["crashy"]
    assert "smoke test good.gguf: ok (" in out
    assert "smoke test FAILED crash.gguf: llama-server killed by SIGILL (illegal instruction)" in out
    for part in ("this box", "  cpu ", "  flags ", "  memory ", "  docker ", "  nvidia ", "engines", "  vllm "):
        assert part in out
    assert not left_over(str(FAKE_SERVER)), "the smoke test's servers are stopped"
    assert "Traceback" not in r.stderr


def test_doctor_on_a_broken_matrix_is_one_clear_line(tmp_path):
    (tmp_path / "matrix.yaml").write_text("servers: {a: {model: m, command: [x], startup_timeout_s: soon}}\n")
    r, _ = run_doctor(tmp_path, "--config", "matrix.yaml")
    assert r.returncode == 2
    assert "startup_timeout_s" in r.stderr and "matrix.yaml" in r.stderr and "Traceback" not in r.stderr
