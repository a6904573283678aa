#!/usr/bin/env python3
"""The one required check of perf-pr.yml (`perf-verdict`, `if: always()`).

    python3 scripts/ci/perf_verdict.py --gate-result RESULT --dir perf-pr-out

Fails (exit 1) only on a confirmed fail-gated regression or a gate error; a
gate that did not run is a gate error (it says what starts it). An
`inconclusive` A/B passes with a warning annotation: the machine, not the PR,
was in doubt. A maintainer's `perf-regression-accepted` label (PR_LABELS, JSON
list from env) lets a known regression pass, with a warning that says so.

Reads $DIR/verdict.json written by scripts/ci/perf-pr-gate:
  {"verdict": "pass|improved|regressed|inconclusive|error|no-baseline",
   "confirmed": true, "reason": "...", "metric": "...", "delta_pct": -4.2}
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ACCEPT_LABEL = "perf-regression-accepted"
NOT_RUN = ("perf gate did not run: it needs the `perf` label on a same-repo PR, or a maintainer's "
           "workflow_dispatch of perf-pr with the PR number and the reviewed SHA")


@dataclass(frozen=True)
class Decision:
    ok: bool
    level: str  # error | warning | notice (the annotation)
    message: str


def decide(gate_result: str, verdict: dict | None, labels: list[str]) -> Decision:
    if gate_result == "skipped":
        return Decision(False, "error", NOT_RUN)
    if verdict is None:
        return Decision(False, "error", f"perf gate error: the gate job ended `{gate_result}` without a verdict "
                                        f"(see its log)")
    v = str(verdict.get("verdict", ""))
    why = verdict.get("reason") or ""
    if verdict.get("interrupted"):  # whatever verdict it carries, the run did not reach it
        return Decision(False, "error", f"perf gate error: interrupted: {why or 'the run was cut short'}")
    what = " ".join(str(x) for x in (verdict.get("metric"), _pct(verdict.get("delta_pct"))) if x)
    if v == "regressed" and verdict.get("confirmed", True):
        if ACCEPT_LABEL in labels:
            return Decision(True, "warning", f"perf regression accepted by the `{ACCEPT_LABEL}` label: {what} {why}")
        return Decision(False, "error", f"perf regression (confirmed): {what} {why}".strip())
    if v == "error":
        return Decision(False, "error", f"perf gate error: {why or 'see the gate log'}")
    if gate_result not in ("success",):
        return Decision(False, "error", f"perf gate error: the gate job ended `{gate_result}` (verdict {v or '?'})")
    if v in ("inconclusive", "regressed"):  # an unconfirmed regression is not a verdict either
        return Decision(True, "warning", f"perf gate inconclusive: {why or 'the A/B could not decide'} "
                                         f"(passes; re-run the job to try again)")
    if v in ("pass", "improved", "no-baseline"):
        return Decision(True, "notice", f"perf gate {v}: {what} {why}".strip())
    return Decision(False, "error", f"perf gate error: unknown verdict {v!r} in verdict.json")


def _pct(x) -> str:
    return f"{x:+.2f}%" if isinstance(x, (int, float)) else ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gate-result", required=True)
    ap.add_argument("--dir", default="perf-pr-out")
    args = ap.parse_args(argv)
    verdict = None
    p = Path(args.dir) / "verdict.json"
    if p.exists():
        try:
            verdict = json.loads(p.read_text())
            if not isinstance(verdict, dict):
                verdict = None
        except ValueError:
            verdict = None
    try:
        labels = json.loads(os.environ.get("PR_LABELS") or "[]") or []
    except ValueError:
        labels = []
    d = decide(args.gate_result, verdict, [str(x) for x in labels if x])
    print(f"::{d.level}::{d.message}")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write(f"### perf-verdict: {'✅' if d.ok else '❌'} {d.message}\n")
    return 0 if d.ok else 1


if __name__ == "__main__":
    sys.exit(main())
