"""Test-suite policy: in CI (PYTEST_MXFP4_REQUIRE_DOCKER=1, set by
scripts/test after it started dockerd and built the images) a skipped
docker, engine or act test is a failure: a green run must have exercised them."""

import os

import pytest

REQUIRED_MARKERS = {"docker"} if os.environ.get("PYTEST_MXFP4_REQUIRE_DOCKER") == "1" else set()
if os.environ.get("CI"):
    REQUIRED_MARKERS |= {"engine", "act"}


def pytest_configure(config):
    config.addinivalue_line("markers", "rehearsal: the PR gate rehearsed outside Actions (7 min; the act suite "
                            "runs the same gate under a real Actions engine, so CI leaves this out: "
                            "scripts/test -m rehearsal)")
    config.addinivalue_line("markers", "act: runs the workflow files under nektos/act on the host (minutes; "
                                       "tests/test_act_workflows.py, scripts/act-rehearse)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and any(item.get_closest_marker(m) for m in REQUIRED_MARKERS):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"required test was skipped ({reason}); CI must run it"
