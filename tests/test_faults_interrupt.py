"""Fault suite, interruption: a run stopped by SIGTERM or Ctrl-C, between
starts or while extending starts, writes every output with one marker,
"interrupted", and no verdict it did not reach; CI's verdict step calls it an
error, never a regression. Runs `pytest -m perf` in a subprocess against the
FAKE rate server (tests/fakes/rate_server.py: a set decode rate and a count
of its starts, which a real engine cannot give on demand)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pytest_mxfp4.formats.results import RunEnvironment

ROOT = Path(__file__).resolve().parents[1]
FAKE = ROOT / "tests" / "fakes" / "rate_server.py"
sys.path.insert(0, str(ROOT / "scripts" / "ci"))


def write_matrix(d: Path, restarts: int, jitter: float = 0.0) -> Path:
    text = f"""\
name: intr
defaults:
  engine: openai
  runner: process
  command: ["{{python}}", "{FAKE}", "--port", "{{port}}"]
  env: {{FAKE_TPS: "150", FAKE_STARTS_FILE: "{d / 'starts.txt'}", FAKE_ARM: base, FAKE_JITTER: "{jitter}"}}
  startup_timeout_s: 20
servers:
  fake: {{model: m}}
workloads:
  decode: {{tg: [16]}}
  runs: 3
  warmup: 0
  restarts: {restarts}
  latency_mode: none
  reset_prefix_cache: false
  max_replacements: 0         # the start count is what this test steers by
  leave_out_disturbed: false  # a busy box reports, never replaces
gates: {{tg16: fail}}
"""
    path = d / "m.yaml"
    path.write_text(text)
    return path


def starts(d: Path) -> int:
    p = d / "starts.txt"
    return len(p.read_text().split()) if p.exists() else 0


def interrupt_when(d: Path, matrix: Path, ready, sig: int, *extra: str) -> tuple[int, str]:
    """Run pytest -m perf; send `sig` once ready(d) is true; (exit code, output)."""
    e = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_STEP_SUMMARY")}
    e["PYTEST_MXFP4_LOCK"] = str(d / "machine.lock")
    e["PYTEST_MXFP4_STATE_DIR"] = str(d / "state")
    e["GITHUB_STEP_SUMMARY"] = str(d / "summary.md")
    p = subprocess.Popen([sys.executable, "-m", "pytest", "-m", "perf", "tests/perf/test_perf.py", "-p",
                          "no:cacheprovider", "-o", "addopts=", f"--perf-config={matrix}",
                          f"--perf-baselines={d / 'b'}", f"--perf-output={d / 'out'}",
                          f"--perf-json={d / 'r.json'}", f"--perf-report={d / 'page.md'}",
                          f"--junitxml={d / 'junit.xml'}", f"--perf-pr-comment={d / 'comment.md'}",
                          f"--perf-benchmark-json={d / 'bench.json'}", *extra],
                         cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(1200):
            if ready(d) or p.poll() is not None:
                break
            time.sleep(0.05)
        if p.poll() is not None:
            raise AssertionError("the run ended before the interruption point:\n" + p.communicate()[0][-4000:])
        p.send_signal(sig)
        out, _ = p.communicate(timeout=90)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, out


def no_fake_left(d: Path) -> bool:
    """No fake server of this test (its environment names `d`) is running."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(FAKE) in (proc / "cmdline").read_text(errors="replace") \
                    and str(d) in (proc / "environ").read_text(errors="replace"):
                return False
        except OSError:
            continue
    return True


def assert_marked_everywhere(d: Path, out: str, signame: str) -> dict:
    data = json.loads((d / "r.json").read_text())
    assert data["interrupted"] and signame in data["interrupted"], data["interrupted"]
    assert "INTERRUPTED" in (d / "page.md").read_text()
    assert "INTERRUPTED" in (d / "summary.md").read_text()
    assert "pytest_mxfp4.interrupted" in (d / "junit.xml").read_text()
    assert signame in json.loads((d / "bench.json").read_text())["interrupted"]
    lines = [ln for ln in out.splitlines() if "pytest-mxfp4: INTERRUPTED" in ln]
    assert len(lines) == 1 and signame in lines[0], out[-3000:]
    assert "Traceback" not in out
    return data


def test_sigterm_during_an_extension_says_interrupted_and_judges_no_partial_look(tmp_path):
    # as test_ab's extension case: starts alternate +-10%, head 3% slower ->
    # inconclusive at 2 starts per arm, so starts 3 and 4 per arm follow; the
    # run is stopped during the first extra start
    m = write_matrix(tmp_path, restarts=2, jitter=0.1)
    rc, out = interrupt_when(tmp_path, m, lambda d: starts(d) >= 5, signal.SIGTERM,
                             "--perf-max-restarts=4", "--perf-ab-head", "env.FAKE_TPS=145")
    assert rc == pytest.ExitCode.INTERRUPTED, out[-3000:]
    data = assert_marked_everywhere(tmp_path, out, "SIGTERM")
    assert "extra start" in data["interrupted"], data["interrupted"]
    # nothing lost: every sample measured before the signal is in the JSON
    assert {s["start"] for run in data["runs"] for s in run["samples"]} >= {0, 1}
    # only the completed first look is judged (its 2 + 2 starts; fewer where a busy box flagged
    # every sample of one), nothing on the partial extension
    (tg,) = [e for e in data["environment"]["starts"]["ab"] if e["metric"] == "tg_tps"]
    assert len(tg["base_starts"]) <= 2 and len(tg["head_starts"]) <= 2 and tg["verdict"] == "inconclusive", tg
    comment = (tmp_path / "comment.md").read_text()
    first = comment.splitlines()[0]
    assert "interrupted" in first and "❌" not in comment and "regression" not in first
    # CI: the gate's verdict.json is an error, and the required check says interrupted, not regression
    import perf_pr_gate
    import perf_verdict

    v = perf_pr_gate.gate_verdict(tmp_path / "r.json", rc)
    assert v["verdict"] == "error" and v["interrupted"]
    d = perf_verdict.decide("failure", {**v, "verdict": "regressed"}, [])
    assert not d.ok and d.level == "error" and "interrupted" in d.message and "regression" not in d.message
    assert no_fake_left(tmp_path), out[-3000:]


def test_ctrl_c_between_starts_says_interrupted_and_keeps_what_was_measured(tmp_path):
    m = write_matrix(tmp_path, restarts=3)
    rc, out = interrupt_when(tmp_path, m, lambda d: starts(d) >= 2, signal.SIGINT)
    assert rc == pytest.ExitCode.INTERRUPTED, out[-3000:]
    data = assert_marked_everywhere(tmp_path, out, "SIGINT")
    assert 0 in {s["start"] for run in data["runs"] for s in run["samples"]}, "start 0's samples are kept"
    assert not [r for r in data["results"] if r["gate"] == "fail" and r["verdict"] not in ("error",)
                and r["comparison"]], "no verdict on 1-2 of 3 starts"
    assert no_fake_left(tmp_path), out[-3000:]


def test_merge_of_an_interrupted_shard_is_not_complete(tmp_path):
    from pytest_mxfp4.cli.merge import merge
    from pytest_mxfp4.formats.results import SessionResults, save

    for k, cut in ((1, None), (2, "stopped by SIGTERM during start 2 of b")):
        s = SessionResults(matrix="m", environment=RunEnvironment.from_dict({"hardware_key": "hw", "shard": {
            "index": k, "count": 2, "matrix_servers": ["a", "b"], "plan": [["a"], ["b"]]}}), interrupted=cut)
        save(s, tmp_path / f"s{k}.json")
    m = merge([tmp_path / "s1.json", tmp_path / "s2.json"])
    assert not m.complete and any("interrupted" in p and "s2.json" in p for p in m.problems), m.problems
    assert "SIGTERM" in m.session.interrupted
