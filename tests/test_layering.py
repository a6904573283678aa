"""The layers stay where the design puts them: offline tools never pull in
the network stack, domain modules import without pytest."""

import subprocess
import sys

import pytest

OFFLINE = ["pytest_mxfp4.cli", "pytest_mxfp4.doctor", "pytest_mxfp4.compare", "pytest_mxfp4.report.regenerate",
           "pytest_mxfp4.observe.cli", "pytest_mxfp4.results", "pytest_mxfp4.report.writer"]
NETWORK = ("openai", "httpx", "docker")


def _loaded_after(modules: list[str], watch: tuple[str, ...]) -> list[str]:
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            f"print(','.join(w for w in {watch!r} if w in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [w for w in out.strip().split(",") if w]


@pytest.mark.parametrize("module", OFFLINE + ["pytest_mxfp4.merge"])
def test_offline_tools_import_no_network_stack(module):
    try:
        __import__(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            pytest.skip(f"{module} does not exist in this version")
        raise
    assert _loaded_after([module], NETWORK) == []


def test_domain_modules_import_without_pytest():
    mods = ["pytest_mxfp4.session", "pytest_mxfp4.config", "pytest_mxfp4.stats", "pytest_mxfp4.judge",
            "pytest_mxfp4.baselines", "pytest_mxfp4.measure.runner", "pytest_mxfp4.results"]
    assert _loaded_after(mods, ("pytest", "_pytest")) == []


def test_plain_plugin_import_does_not_load_the_engine_client():
    # `pytest` without -m perf loads the plugin; it must not pay for openai/httpx
    assert _loaded_after(["pytest_mxfp4.plugin"], ("openai", "httpx", "docker")) == []
