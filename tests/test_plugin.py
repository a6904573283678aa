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
    assert data["schema"] == 2 and data["results"] == []
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


def test_start_progress_reaches_the_terminal_without_dash_s(pytester, monkeypatch):
    # No -s: pytest captures output during fixture set-up, where the server
    # loads; the progress lines must get past that capture.
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=config("""
        servers:
          slow: {model: m, startup_timeout_s: 60,
                 command: [python3, -u, -c, "import time,sys; print('loading weights 42%'); time.sleep(6.5); sys.exit(3)"]}
        workloads: {decode: {tg: [32]}, runs: 2}
    """))
    # a line every PYTEST_MXFP4_PROGRESS_S (default 15 s; 5 here to keep the test short)
    monkeypatch.setenv("PYTEST_MXFP4_PROGRESS_S", "5")
    r = pytester.runpytest_subprocess("-m", "perf", "--perf-config", "matrix.yaml", "--perf-output", "out")
    out = r.stdout.str()
    assert "[slow] starting… 5s  loading weights 42%" in out
    assert "exited with code 3" in out


def test_no_matrix_named_says_what_to_pass(pytester):
    # installed in another project: no ini perf_config there
    pytester.makepyfile(test_perf=PERF_TEST)
    r = pytester.runpytest_subprocess("-m", "perf")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "needs a matrix file: pass --perf-config=PATH" in r.stderr.str()
    assert "Traceback" not in r.stderr.str() + r.stdout.str()


def test_an_unwritable_report_fails_the_run_and_keeps_the_others(pytester, tmp_path):
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=config("""
        servers:
          later: {pending: "no recipe yet"}
        workloads: {decode: {tg: [32]}, runs: 2}
    """))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = pytester.runpytest_subprocess("-m", "perf", "--perf-config", "matrix.yaml",
                                      f"--perf-report={blocker / 'page.md'}", f"--perf-json={tmp_path / 'r.json'}")
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    assert "report not written: --perf-report" in r.stdout.str()
    assert (tmp_path / "r.json").exists()
    assert oct((tmp_path / "r.json").stat().st_mode & 0o777) == "0o644"
