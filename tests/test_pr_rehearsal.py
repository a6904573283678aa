"""The PR gate rehearsed end to end on the real CPU engine: the same gate
script and required check as perf-pr.yml, in a throwaway git repo. A head
that changes only docs passes; a head whose engine runs next to a busy
neighbour (the planted slowdown) fails, and its PR comment shows it.
Slow (about 7 minutes: 3 starts per arm, since 2 starts let an A/A read +23% here); needs scripts/setup.sh."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.engine_guard import engine_marks

ROOT = Path(__file__).resolve().parents[1]
pytestmark = engine_marks() + [pytest.mark.rehearsal]


def test_rehearsal_passes_base_equals_head_and_fails_a_planted_slowdown(tmp_path):
    r = subprocess.run(["bash", str(ROOT / "scripts/ci/perf-pr-rehearsal"), "--out", str(tmp_path), "--restarts", "3"],
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    same = json.loads((tmp_path / "same/verdict.json").read_text())
    slow = json.loads((tmp_path / "slow/verdict.json").read_text())
    assert same["verdict"] in ("pass", "improved", "inconclusive"), same
    assert slow["verdict"] == "regressed" and slow["delta_pct"] < 0, slow
    comment = (tmp_path / "slow/comment.md").read_text()
    assert "regress" in comment.lower() and "tg32" in comment
    assert (tmp_path / "slow.verdict").read_text().startswith("::error::perf regression (confirmed)")
