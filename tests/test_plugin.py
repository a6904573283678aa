"""Plugin glue, run through pytester in a subprocess like a user would."""

import textwrap

import pytest

pytest_plugins = ["pytester"]

PERF_TEST = """
import pytest
pytestmark = pytest.mark.perf
def test_workload(perf_measure):
    perf_measure()
"""


def config(body: str) -> str:
    return textwrap.dedent(body)


def test_plain_pytest_deselects_perf_and_starts_nothing(pytester):
    pytester.makepyfile(test_perf=PERF_TEST, test_unit="def test_ok(): assert True")
    # a matrix that would start a server if anything read it
    pytester.makefile(".yaml", matrix="servers: {x: {model: m, command: [/bin/false]}}\nworkloads: {decode: {tg: [32]}}")
    r = pytester.runpytest_subprocess("--perf-config", "matrix.yaml", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, deselected=1)
    assert "performance summary" not in r.stdout.str()
    for expr in ("not perf", "not engine"):
        r = pytester.runpytest_subprocess("--perf-config", "matrix.yaml", "-m", expr, "-p", "no:cacheprovider")
        r.assert_outcomes(passed=1, deselected=1)
        assert "performance summary" not in r.stdout.str()


def test_bad_config_is_one_clear_line(pytester):
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix="servers: {x: {model: m, command: [serve], startup_timeout_s: soon}}\n"
                                      "workloads: {decode: {tg: [32]}}")
    r = pytester.runpytest_subprocess("-m", "perf", "--perf-config", "matrix.yaml")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    err = r.stderr.str()
    assert "matrix.yaml: servers.x.startup_timeout_s: expected a number, got 'soon'" in err
    assert "Traceback" not in err + r.stdout.str()


def test_unknown_server_filter_is_clear(pytester):
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix="servers: {x: {model: m, command: [serve]}}\nworkloads: {decode: {tg: [32]}}")
    r = pytester.runpytest_subprocess("-m", "perf", "--perf-config", "matrix.yaml", "--perf-server", "y")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "--perf-server: no server 'y'" in r.stderr.str() and "known: x" in r.stderr.str()


def test_pending_and_unrunnable_configs_are_skipped_with_reasons(pytester, tmp_path):
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=config("""
        servers:
          later: {pending: "no recipe yet"}
          gb10: {model: m, command: [serve], requires: {accelerator: nvidia, sm: "12.1"}}
        workloads: {decode: {tg: [32]}, runs: 2}
    """))
    r = pytester.runpytest_subprocess("-m", "perf", "--perf-config", "matrix.yaml", "-rs",
                                      "--perf-json", str(tmp_path / "r.json"))
    r.assert_outcomes(skipped=2)
    out = r.stdout.str()
    assert "pending: no recipe yet" in out
    assert "needs NVIDIA GPU SM 12.1; this machine has no NVIDIA GPU" in out
    import json

    data = json.loads((tmp_path / "r.json").read_text())
    assert data["schema"] == 1 and data["results"] == []
    assert data["servers"]["gb10"]["skipped"].startswith("needs NVIDIA GPU")


def test_server_that_crashes_fails_its_tests_without_traceback(pytester):
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=config("""
        servers:
          broken: {model: m, command: [python3, -c, "import sys; print('CUDA out of memory'); sys.exit(7)"]}
        workloads: {decode: {tg: [32, 64]}, runs: 2}
    """))
    r = pytester.runpytest_subprocess("-m", "perf", "--perf-config", "matrix.yaml", "--perf-output", "out")
    r.assert_outcomes(errors=2)
    out = r.stdout.str()
    assert "exited with code 7" in out and "CUDA out of memory" in out
    assert "Traceback" not in out
