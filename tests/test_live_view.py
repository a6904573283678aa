"""The live view of `pytest -m perf` without -v: one line per server start
(with its wall time) and one per case, written past capture, with neither
pytest's `.` nor its file-name echo between them."""

import sys
from pathlib import Path

pytest_plugins = ["pytester"]

FAKE = Path(__file__).resolve().parent / "fakes" / "fault_server.py"
PERF_TEST = """
import pytest
pytestmark = pytest.mark.perf
def test_workload(perf_measure):
    perf_measure()
"""


def test_one_line_per_start_and_per_case_and_no_file_echo(pytester, tmp_path):
    cmd = f"[{sys.executable}, {FAKE}, --port, '{{port}}', --mode, ok]"
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=f"""
defaults: {{engine: openai, runner: process}}
servers:
  fake-a: {{model: fake, startup_timeout_s: 30, command: {cmd}}}
  fake-b: {{model: fake, startup_timeout_s: 30, command: {cmd}}}
workloads: {{prefill: {{pp: [16, 32]}}, runs: 2, warmup: 0, restarts: 1}}
gates: {{default: warn}}
""")
    r = pytester.runpytest_subprocess("-m", "perf", "--perf-config", "matrix.yaml", "--perf-output", "out",
                                      "--perf-lock", str(tmp_path / "lock"), "-p", "no:cacheprovider")
    lines = r.stdout.str().splitlines()
    live = lines[next(i for i, l in enumerate(lines) if l.startswith("test_perf.py")):
                 next(i for i, l in enumerate(lines) if "[100%]" in l)]
    assert live[0].strip() == "test_perf.py", "the file name once, as pytest opens it"
    starts = [l for l in live if "healthy after" in l]
    assert [l.split("]")[0] for l in starts] == ["[fake-a", "[fake-b"]
    assert all("s: pid " in l for l in starts)  # the wall time of the start, then where it runs
    cases = [l for l in live[1:] if l not in starts]
    assert [c.split("  ")[0] for c in cases] == ["[fake-a] pp16", "[fake-a] pp32", "[fake-b] pp16", "[fake-b] pp32"]
    assert not any("test_perf.py" in l or l.strip(". ") == "" for l in live[1:]), live


def test_with_v_pytests_own_lines_stay(pytester, tmp_path):
    cmd = f"[{sys.executable}, {FAKE}, --port, '{{port}}', --mode, ok]"
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=f"""
defaults: {{engine: openai, runner: process}}
servers:
  fake-a: {{model: fake, startup_timeout_s: 30, command: {cmd}}}
workloads: {{prefill: {{pp: [16]}}, runs: 2, warmup: 0, restarts: 1}}
gates: {{default: warn}}
""")
    r = pytester.runpytest_subprocess("-v", "-m", "perf", "--perf-config", "matrix.yaml", "--perf-output", "out",
                                      "--perf-lock", str(tmp_path / "lock"), "-p", "no:cacheprovider")
    out = r.stdout.str()
    assert "test_workload[fake-a-pp16] PASSED" in out and "[fake-a] pp16  pp_tps" in out


def test_a_case_with_nothing_measured_says_why_on_its_line():
    from pytest_mxfp4.formats.config import Case
    from pytest_mxfp4.report.terminal import case_lines
    from pytest_mxfp4.formats.results import MetricResult

    r = MetricResult(server="tiny", case=Case("decode", pp=512, tg=32), metric="tg_tps", gate="fail",
                     error="every sample was flagged (client-behind)")
    (line,) = case_lines([r])
    assert line == "[tiny] tg32  tg_tps error: every sample was flagged (client-behind)"
