"""What the act test puts in its throwaway repository on top of the snapshot:
CPU matrices (llama.cpp: the fastest real engine to start here), the engine
launcher an engine project ships (`engine/python`), and a planted slowdown
of it (a busy neighbour, with_neighbour.py). Paths to the machine's llama-server and
model are absolute: the jobs run in act's own folders.

The model is models/small (110M) as an f16 GGUF, made once into .perf/act/
(9 s): models/tiny decodes ~1200 tok/s, faster than the Python client
reads on 2 busy cores, so its samples come back flagged `client-behind`.
`requires: any` skips the CPU pre-flight: this suite checks the workflows'
wiring on whatever else the box runs, not the box."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LLAMA = ROOT / ".venv" / "bin" / "llama-server"
SMALL = ROOT / "models" / "small"
GGUF = ROOT / ".perf" / "act" / "small-f16.gguf"
PY = sys.executable
# `{python} -c EXEC llama-server ...`: the interpreter slot is where an A/B
# puts the head's launcher (scripts/ci/perf-pr-arms: python=<head>/engine/python)
EXEC = "import os, sys; os.execv(sys.argv[1], sys.argv[1:])"
DUTY = 0.9


def have_engine() -> bool:
    return LLAMA.exists() and (SMALL / "config.json").exists()


def make_model() -> Path:
    """The f16 GGUF of models/small (scripts/make_moe_gguf.py keeps an existing one)."""
    if not GGUF.exists():
        GGUF.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([PY, str(ROOT / "scripts/make_moe_gguf.py"), "--dense-from", str(SMALL), "--dense", str(GGUF)],
                       check=True, capture_output=True, timeout=300)
    return GGUF


def _server(launcher: str, requires: str = "any") -> dict:
    cmd = [launcher, "-c", EXEC, str(LLAMA), "-m", "{model}", "-a", "{served_model_name}", "--host", "{host}",
           "--port", "{port}", "-c", "2048", "-np", "1", "-t", "1", "--metrics", "--no-webui",
           "--cache-ram", "0", "-lv", "4"]
    return {"engine": "llama.cpp", "model": str(GGUF), "served_model_name": "small", "cpu_cores": 1,
            "command": cmd, "requires": {"accelerator": requires}, "startup_timeout_s": 60}


def matrix(name: str, servers: dict, restarts: int) -> str:
    # JSON is YAML: one tg32 case, fail-gated; few starts (the act suite's budget)
    return json.dumps({
        "name": name,
        "defaults": {"runner": "process", "health_path": "/health"},
        "servers": servers,
        "workloads": {"decode": {"tg": [32], "pp": 64}, "runs": 3, "warmup": 1,
                      "restarts": restarts, "max_restarts": restarts + 1, "max_restart_minutes": 3},
        "gates": {"default": "warn", "tg32": "fail"},
    }, indent=1) + "\n"


# PR gate: one config; the head arm runs the head's engine/python
PR_MATRIX = matrix("act-pr", {"llamacpp-small": _server("{python}")}, restarts=2)
# nightly: two configs (one per shard), started through the checkout's engine/python
NIGHTLY_MATRIX = matrix("act-nightly", {"small-a": _server("engine/python"), "small-b": _server("engine/python")},
                        restarts=2)
# a night on runners that lost their GPU: every config skipped
NOTHING_MATRIX = matrix("act-nothing", {"small-a": _server("engine/python", "nvidia"),
                                        "small-b": _server("engine/python", "nvidia")}, restarts=2)

ENGINE = f"""#!/usr/bin/env bash
# the engine launcher this project ships
exec {PY} "$@"
"""
# Two neighbours at duty 0.9 leave the engine about a third of its core: -60%
# or so, far beyond how much a shared 2-core box drifts between the stored
# baseline and the night (one neighbour at 0.6, -30%, drowned in that drift once).
NEIGHBOUR = f"{ROOT}/scripts/with_neighbour.py --duty {DUTY} --"
SLOW_ENGINE = f"""#!/usr/bin/env bash
# an innocent-looking change (planted slowdown: busy neighbours on the engine's core)
exec {PY} {NEIGHBOUR} {PY} {NEIGHBOUR} {PY} "$@"
"""
