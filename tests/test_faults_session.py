"""Fault suite, whole runs: `pytest -m perf` in a subprocess against the FAKE
fault server (tests/fakes/fault_server.py) started by the process runner.
Each case asserts the exit code, the one line that says why, and that nothing
was lost or left behind (reports written, no server process left); one case
plants secrets through every output and greps every file and the terminal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "fakes" / "fault_server.py"

SECRETS = ("sk-plantedARGsecret0001", "hf_plantedEQsecret0002", "plainplantedsecret0003",
           "ghp_plantedSHAPEsecret0004", "plantedBEARERsecret0005")


def write_matrix(d: Path, mode: str = "ok", workloads: str = "", gates: str = "gates:\n  tg8: fail\n",
                 server: str = "", args: tuple[str, ...] = ()) -> Path:
    extra = "".join(f', "{a}"' for a in args)
    text = f"""\
servers:
  fake:
    engine: openai
    model: fake
    command: ["{{python}}", "{FAKE}", "--port", "{{port}}", "--mode", "{mode}"{extra}]
    startup_timeout_s: 30
{server}workloads:
  prefill: {{pp: [64]}}
  decode: {{tg: [8], pp: 32}}
  runs: 2
  warmup: 0
  latency_mode: none
  reset_prefix_cache: false
{workloads}{gates}"""
    path = d / "m.yaml"
    path.write_text(text)
    return path


def run(d: Path, matrix: Path, *extra: str, env: dict | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_STEP_SUMMARY")}
    e["PYTEST_MXFP4_LOCK"] = str(d / "machine.lock")
    e.update(env or {})
    cmd = [sys.executable, "-m", "pytest", "-m", "perf", "tests/perf/test_perf.py", "-p", "no:cacheprovider",
           "-o", "addopts=", f"--perf-config={matrix}", f"--perf-baselines={d / 'baselines'}",
           f"--perf-output={d / 'out'}", f"--perf-json={d / 'results.json'}", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=e)


def one_line(out: str, marker: str) -> str:
    lines = [ln for ln in out.splitlines() if marker in ln]
    assert lines, out[-3000:]
    return lines[0]


def no_server_left(d: Path) -> bool:
    """No record of a started server is left, and no process runs our fake from this dir."""
    if list((d / "out" / "logs" / ".running").glob("*.json")):
        return False
    ps = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return not [ln for ln in ps.splitlines() if str(FAKE) in ln and str(d) in ln or f"--perf-output={d}" in ln]


def results(d: Path) -> dict:
    return json.loads((d / "results.json").read_text())


# -- secrets --------------------------------------------------------------------------


def _grep_secrets(d: Path, *texts: str) -> list[str]:
    found = []
    for p in d.rglob("*"):
        if p.is_file() and p.name != "m.yaml":
            data = p.read_bytes()
            found += [f"{p}: {s}" for s in SECRETS if s.encode() in data]
    for t in texts:
        found += [f"terminal: {s}" for s in SECRETS if s in t]
    return found


def test_planted_secrets_reach_no_file_log_or_terminal(tmp_path):
    server = ("    env: {HF_TOKEN: plainplantedsecret0003, FAKE_VISIBLE: ghp_plantedSHAPEsecret0004,\n"
              "          AUTHORIZATION_HEADER_VALUE: \"Bearer plantedBEARERsecret0005\"}\n")
    m = write_matrix(tmp_path, args=("--api-key", SECRETS[0], f"--hf-token={SECRETS[1]}"), server=server)
    r = run(tmp_path, m, "--perf-update-baselines", f"--perf-report={tmp_path / 'page.md'}",
            f"--perf-benchmark-json={tmp_path / 'bench.json'}", f"--junitxml={tmp_path / 'junit.xml'}",
            env={"GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")})
    assert r.returncode == 0, r.stdout[-3000:]
    written = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert {"results.json", "page.md", "bench.json", "junit.xml", "summary.md", "fake.log", "fake.yaml",
            "run_log.jsonl"} <= written, written
    log = (tmp_path / "out" / "logs" / "fake.log").read_text()
    assert "non-default args" in log and "--api-key" in log and "***" in log  # the echo is there, masked
    assert _grep_secrets(tmp_path, r.stdout, r.stderr) == []
    assert no_server_left(tmp_path)


def test_planted_secrets_stay_out_of_a_startup_failure(tmp_path):
    m = write_matrix(tmp_path, mode="exit_at_start", args=("--api-key", SECRETS[0]),
                     server="    env: {HF_TOKEN: plainplantedsecret0003}\n")
    r = run(tmp_path, m, f"--junitxml={tmp_path / 'junit.xml'}")
    assert r.returncode == 1
    assert "exited with code 3" in one_line(r.stdout, "exited with code")
    assert "HF_TOKEN='***'" in r.stdout  # the log tail is shown, masked
    assert _grep_secrets(tmp_path, r.stdout, r.stderr) == []


# -- no silent green --------------------------------------------------------------------


def test_in_ci_a_run_without_any_baseline_fails_unless_told_it_is_the_first(tmp_path):
    m = write_matrix(tmp_path)
    r = run(tmp_path, m, env={"CI": "true"})
    assert r.returncode == 1, r.stdout[-3000:]
    line = one_line(r.stdout, "NO BASELINE")
    assert "FAILED" in line and "--perf-first-run" in line
    assert results(tmp_path)["results"], "the measurements are still written"
    r = run(tmp_path, m, "--perf-first-run", env={"CI": "true"})
    assert r.returncode == 0, r.stdout[-3000:]
    assert "WARNING" in one_line(r.stdout, "NO BASELINE")


def test_outside_ci_a_run_without_any_baseline_says_so_loudly(tmp_path):
    r = run(tmp_path, write_matrix(tmp_path))
    assert r.returncode == 0
    assert "WARNING" in one_line(r.stdout, "NO BASELINE")


def test_a_run_where_every_server_is_skipped_fails_with_the_reason(tmp_path):
    m = write_matrix(tmp_path, server="    requires: {accelerator: nvidia, sm: \"12.1\"}\n")
    r = run(tmp_path, m)
    assert r.returncode == 1, r.stdout[-3000:]
    line = one_line(r.stdout, "no fail-gated metric was measured")
    assert "skipped" in line and "NVIDIA" in line and "--perf-allow-partial" in line
    r = run(tmp_path, m, "--perf-allow-partial")
    assert r.returncode == 0
    assert "WARNING" in one_line(r.stdout, "no fail-gated metric was measured")


def test_a_matrix_with_no_fail_gate_fails_the_run(tmp_path):
    r = run(tmp_path, write_matrix(tmp_path, gates="gates:\n  default: warn\n  tg8: warn\n"))
    assert r.returncode == 1
    assert "FAILED" in one_line(r.stdout, "no fail-gated metric was measured")


def test_usage_that_overstates_the_stream_fails_the_gated_case(tmp_path):
    r = run(tmp_path, write_matrix(tmp_path, mode="usage_overstates"))
    assert r.returncode == 1
    assert "token ids were streamed" in r.stdout
    assert "no fail-gated metric was measured" in r.stdout
    res = results(tmp_path)
    assert res["runs"] and all(s["error"] for run_ in res["runs"] for s in run_["samples"]
                               if run_["workload"] == "tg8")


def test_cases_beyond_the_context_length_fail_at_start(tmp_path):
    m = write_matrix(tmp_path, mode="ctx_small")
    m.write_text(m.read_text().replace("prefill: {pp: [64]}", "prefill: {pp: [1024]}"))
    r = run(tmp_path, m)
    assert r.returncode == 1
    line = one_line(r.stdout, "context length is 600")
    assert "pp1024" in line and "1025 tokens" in line
    assert no_server_left(tmp_path)


# -- server faults over a whole run -----------------------------------------------------


def test_a_server_that_dies_mid_run_fails_with_exit_code_and_log_tail(tmp_path):
    r = run(tmp_path, write_matrix(tmp_path, mode="die_after_first"))
    assert r.returncode == 1
    assert "exited with code 7" in one_line(r.stdout, "exited with code 7")
    assert "listening on 127.0.0.1" in r.stdout  # the log tail
    assert results(tmp_path)["servers"]["fake"]["error"]
    assert no_server_left(tmp_path)


@pytest.mark.parametrize("mode,limit", [("stall", "idle_timeout_s: 2"), ("no_close", "request_timeout_s: 3")])
def test_a_stalled_or_never_closing_stream_is_bounded(tmp_path, mode, limit):
    m = write_matrix(tmp_path, mode=mode, workloads=f"  {limit}\n")
    m.write_text(m.read_text().replace("runs: 2", "runs: 1"))
    r = run(tmp_path, m, timeout=240)
    assert r.returncode == 1, r.stdout[-3000:]
    res = results(tmp_path)
    errors = [s["error"] for run_ in res["runs"] if run_["workload"] == "tg8" for s in run_["samples"]]
    assert errors and all(errors) and all("timeout" in e for e in errors), errors
    assert "FAILED" in one_line(r.stdout, "no fail-gated metric was measured")
    assert no_server_left(tmp_path)


# -- signals -------------------------------------------------------------------------------


@pytest.mark.parametrize("signals", [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM,)], ids=["ctrl-c-twice", "sigterm"])
def test_interrupting_a_run_leaves_no_server(tmp_path, signals):
    m = write_matrix(tmp_path, mode="stall")
    e = {k: v for k, v in os.environ.items() if k != "CI"}
    e["PYTEST_MXFP4_LOCK"] = str(tmp_path / "machine.lock")
    p = subprocess.Popen([sys.executable, "-m", "pytest", "-m", "perf", "tests/perf/test_perf.py", "-p",
                          "no:cacheprovider", f"--perf-config={m}", f"--perf-baselines={tmp_path / 'b'}",
                          f"--perf-output={tmp_path / 'out'}"], cwd=ROOT, env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        log = tmp_path / "out" / "logs" / "fake.log"
        for _ in range(300):  # wait until the fake server is up and a request hangs in it
            if log.exists() and "listening on" in log.read_text(errors="replace"):
                break
            time.sleep(0.1)
        time.sleep(1.0)
        for sig in signals:
            p.send_signal(sig)
            time.sleep(0.3)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if len(signals) == 1:
        assert p.returncode == pytest.ExitCode.INTERRUPTED, out[-3000:]
        assert "Traceback" not in out
    else:  # a second Ctrl-C may land in pytest's own interrupt handling: it then dies of SIGINT
        assert p.returncode in (pytest.ExitCode.INTERRUPTED, -signal.SIGINT), out[-3000:]
    assert no_server_left(tmp_path), out[-3000:]


def test_a_sigkilled_run_leaves_a_record_and_the_next_start_sweeps_its_server(tmp_path):
    from pytest_mxfp4.servers.process import group_pids, sweep_leftovers

    m = write_matrix(tmp_path, mode="stall", args=("--spawn-child",))
    e = {k: v for k, v in os.environ.items() if k != "CI"}
    e["PYTEST_MXFP4_LOCK"] = str(tmp_path / "machine.lock")
    p = subprocess.Popen([sys.executable, "-m", "pytest", "-m", "perf", "tests/perf/test_perf.py", "-p",
                          "no:cacheprovider", f"--perf-config={m}", f"--perf-baselines={tmp_path / 'b'}",
                          f"--perf-output={tmp_path / 'out'}"], cwd=ROOT, env=e,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    records = tmp_path / "out" / "logs" / ".running"
    leader = None
    try:
        log = tmp_path / "out" / "logs" / "fake.log"
        for _ in range(300):
            if log.exists() and "listening on" in log.read_text(errors="replace") and list(records.glob("*.json")):
                break
            time.sleep(0.1)
        (rec,) = list(records.glob("*.json"))
        leader = int(json.loads(rec.read_text())["pid"])
        p.kill()  # SIGKILL: no teardown runs in pytest at all
        p.wait(30)
        for _ in range(50):  # the parent-death signal takes the leader; its child stays
            if len(group_pids(leader)) == 1:
                break
            time.sleep(0.1)
        left = group_pids(leader)
        assert len(left) == 1 and leader not in left, left
        assert rec.exists(), "the record outlives the killed session"
        assert sweep_leftovers(records) == [leader]
        for _ in range(50):
            if not group_pids(leader):
                break
            time.sleep(0.1)
        assert not group_pids(leader) and not rec.exists()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if leader is not None:
            for pid in group_pids(leader):
                os.kill(pid, signal.SIGKILL)
