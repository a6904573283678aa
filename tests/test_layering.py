"""The layers stay where the design puts them.

Data flows one way, config -> server -> samples -> verdict -> report, and the
package's wings are stacked in that order: a module imports from its own wing
or from a wing below it, never from one above. Offline tools never pull in the
network stack; domain modules import without pytest."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pytest_mxfp4"

# Lowest first. A wing may import any wing on an earlier line (or its own).
LAYERS = [
    {"__init__", "errors", "redact", "options"},  # what every wing may use
    {"stats"},                                    # numbers in, numbers out
    {"formats"},                                  # typed records and every on-disk format
    {"observe"},                                  # what the engine and the machine say
    {"measure"},                                  # the client: samples from a stream
    {"servers"},                                  # start, watch and stop an engine
    {"run"},                                      # the controller: session, plan, judge
    {"report"},                                   # words only
    {"cli", "plugin"},                            # the faces: offline commands, pytest glue
]
MAX_TOP_LEVEL = 16

OFFLINE = ["pytest_mxfp4.cli.main", "pytest_mxfp4.cli.doctor", "pytest_mxfp4.cli.compare", "pytest_mxfp4.cli.report",
           "pytest_mxfp4.cli.observe", "pytest_mxfp4.cli.trend", "pytest_mxfp4.formats.results",
           "pytest_mxfp4.report.writer"]
NETWORK = ("openai", "httpx", "docker")


def _module(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _runtime_nodes(tree):
    """Every node except those under `if TYPE_CHECKING:` (annotations only, never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def _imports() -> dict[str, set[str]]:
    """module -> package modules it imports (at any depth in the file)."""
    modules = {_module(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found = set()
        for node in _runtime_nodes(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{name}: relative import (the package imports by full name)")
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pytest_mxfp4"):
                for alias in node.names:  # `from pytest_mxfp4.x import module`
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("pytest_mxfp4")}
        graph[name] = found - {name}
    return graph


def _rank(wing: str) -> int:
    for i, layer in enumerate(LAYERS):
        if wing in layer:
            return i
    raise AssertionError(f"wing {wing!r} is on no layer of tests/test_layering.py: place it")


def test_top_level_shows_the_wings():
    entries = [p for p in PKG.iterdir() if p.name != "__pycache__" and (p.suffix == ".py" or p.is_dir())]
    assert len(entries) <= MAX_TOP_LEVEL, sorted(p.name for p in entries)
    for p in entries:
        _rank(p.stem)


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return [f"{m} -> {t}" for m, targets in graph.items() for t in targets if _rank(_wing(t)) > _rank(_wing(m))]


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for t in sorted(graph.get(m, ())):
            if state.get(t) == 1:
                return path[path.index(t):] + [t]
            if t not in state and (found := visit(t, path + [t])):
                return found
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return []


def test_no_import_runs_up_a_layer():
    assert _upward(_imports()) == []


def test_no_import_cycle():
    assert _cycle(_imports()) == []


def test_the_checks_catch_what_they_forbid():
    planted = {"pytest_mxfp4.run.judge": {"pytest_mxfp4.report.markdown"},
               "pytest_mxfp4.report.markdown": {"pytest_mxfp4.formats.results"},
               "pytest_mxfp4.formats.results": {"pytest_mxfp4.run.judge"}}
    assert _upward(planted) == ["pytest_mxfp4.run.judge -> pytest_mxfp4.report.markdown",
                                "pytest_mxfp4.formats.results -> pytest_mxfp4.run.judge"]
    assert _cycle(planted)[0] == _cycle(planted)[-1]


def _loaded_after(modules: list[str], watch: tuple[str, ...]) -> list[str]:
    code = ("import importlib, sys\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            f"print(','.join(w for w in {watch!r} if w in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return [w for w in out.strip().split(",") if w]


@pytest.mark.parametrize("module", OFFLINE + ["pytest_mxfp4.cli.merge"])
def test_offline_tools_import_no_network_stack(module):
    assert _loaded_after([module], NETWORK) == []


def test_domain_modules_import_without_pytest():
    mods = ["pytest_mxfp4.run.session", "pytest_mxfp4.formats.config", "pytest_mxfp4.stats.samples",
            "pytest_mxfp4.stats.starts", "pytest_mxfp4.run.judge", "pytest_mxfp4.formats.baselines",
            "pytest_mxfp4.measure.runner", "pytest_mxfp4.formats.results"]
    assert _loaded_after(mods, ("pytest", "_pytest")) == []


def test_plain_plugin_import_does_not_load_the_engine_client():
    # `pytest` without -m perf loads the plugin; it must not pay for openai/httpx
    assert _loaded_after(["pytest_mxfp4.plugin"], ("openai", "httpx", "docker")) == []
