#!/usr/bin/env python3
"""The PR gate job's work (perf-pr.yml step "Base vs head A/B"; rehearsed on
the CPU engine by scripts/ci/perf-pr-rehearsal, which calls this same file).

    perf-pr-gate --base SHA --head SHA --pr N --config MATRIX --out DIR [--repo DIR]
                 [--restarts R] [-- EXTRA PYTEST ARGS]

1. Check out base and head as detached worktrees of --repo.
2. Read the matrix and the baselines from the **base** worktree (a PR cannot
   loosen its own gate), and the perf tests from it too.
3. The head arm: `scripts/ci/perf-pr-arms BASE_DIR HEAD_DIR` *of the base*
   prints the step-6 overrides (`--perf-ab-head`), one per line: e.g.
   `python=<head>/engine/python` (a process-runner engine that lives in the
   repo), `image=<tag>` (a head image it built). None printed: the PR does not
   change the engine, so the run is an A/A that checks the measurement
   (`env.PYTEST_MXFP4_ARM=head`, a no-op difference).
4. `pytest -m perf --perf-ab-head ...`: base and head side by side on this box,
   starts interleaved (A B B A), the machine lock held throughout.
5. Write DIR/results.json, page.md, comment.md (the PR comment), junit.xml,
   logs/, verdict.json, and the step summary.

verdict.json: the worst fail-gated outcome of the head arm:
error > regressed (confirmed) > inconclusive > pass/improved/no-baseline.
Exit 0 for pass/improved/inconclusive, 1 for regressed or error (the required
check, scripts/ci/perf_verdict.py, decides from verdict.json either way).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARMS_HOOK = "scripts/ci/perf-pr-arms"
HEAD_SUFFIX = "@head"
ORDER = {"error": 4, "regressed": 3, "inconclusive": 2, "pass": 1, "improved": 0, "no-baseline": 0}


def _git(repo: Path, *args: str) -> str:
    r = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise GateError(f"git {' '.join(args)}: {(r.stderr.strip().splitlines() or ['failed'])[-1]}")
    return r.stdout.strip()


class GateError(Exception):
    pass


def worktree(repo: Path, sha: str, where: Path) -> Path:
    if where.exists():
        _git(repo, "worktree", "remove", "--force", str(where))
    _git(repo, "worktree", "add", "--detach", "--force", str(where), sha)
    return where


def head_overrides(base_dir: Path, head_dir: Path) -> list[str]:
    hook = base_dir / ARMS_HOOK
    if hook.exists():
        r = subprocess.run(["bash", str(hook), str(base_dir), str(head_dir)], capture_output=True, text=True)
        if r.returncode != 0:
            raise GateError(f"{ARMS_HOOK} (from the base) failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        found = [line.strip() for line in r.stdout.splitlines() if line.strip() and not line.startswith("#")]
    else:
        found = []
    return found or ["env.PYTEST_MXFP4_ARM=head"]


def gate_verdict(results_path: Path, pytest_rc: int) -> dict:
    """The PR's verdict from the A/B result file (through pytest_mxfp4.formats.results)."""
    if not results_path.exists():
        return {"verdict": "error", "reason": f"the A/B wrote no results (pytest exit {pytest_rc}); see the log"}
    sys.path.insert(0, str(ROOT))
    from pytest_mxfp4.formats import results as results_file
    from pytest_mxfp4.errors import PerfUserError

    try:
        session = results_file.load(results_path)
    except PerfUserError as e:
        return {"verdict": "error", "reason": str(e)}
    if session.interrupted:  # cut short: an error of the gate, never a regression or a pass
        return {"verdict": "error", "interrupted": True,
                "reason": f"the A/B was interrupted ({session.interrupted}); no verdict, run it again"}
    gated = [r for r in session.metrics if r.gate == "fail"]
    head = [r for r in gated if r.server.endswith(HEAD_SUFFIX)] or gated
    errors = [f"{name}: {rec.error}" for name, rec in session.servers.items() if rec.error]
    if errors:
        return {"verdict": "error", "reason": "; ".join(errors)[:500]}
    if not head:
        return {"verdict": "error", "reason": "no fail-gated metric was measured (check the matrix's gates)"}
    worst = max(head, key=lambda r: ORDER.get(r.verdict.value, 4))
    v = worst.verdict.value
    if v not in ORDER:
        v = "error"
    c = worst.comparison
    # A/B verdicts are final: the sequential rule over starts has already
    # confirmed a regression (Bonferroni over its looks) before saying so.
    out = {"verdict": v, "confirmed": True,
           "metric": f"{worst.server.removesuffix(HEAD_SUFFIX)} {worst.key}",
           "delta_pct": getattr(c, "delta_pct", None), "reason": getattr(c, "reason", None) or worst.error or "",
           "metrics": [{"server": r.server, "metric": r.key, "verdict": r.verdict.value,
                        "delta_pct": getattr(r.comparison, "delta_pct", None)} for r in head]}
    if pytest_rc not in (0, 1) and v != "error":
        out.update(verdict="error", reason=f"pytest exit {pytest_rc} (usage error or interrupted): see the log")
    return out


def _pct(x) -> str:
    return "" if x is None else f"{x:+.2f}%"


def fallback_comment(verdict: dict, base: str, head: str) -> str:
    """Only when the A/B wrote no comment itself (e.g. it never ran)."""
    rows = "\n".join(f"| {m['server']} | {m['metric']} | {m['verdict']} | {_pct(m['delta_pct'])} |"
                     for m in verdict.get("metrics", []))
    return (f"### pytest-mxfp4 perf gate: **{verdict['verdict'].upper()}**\n\n"
            f"base `{base[:12]}` vs head `{head[:12]}`. {verdict.get('reason') or ''}\n\n"
            + (f"| config | metric | verdict | Δ |\n|---|---|---|---|\n{rows}\n" if rows else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="perf-pr-gate")
    ap.add_argument("--base", required=True)
    ap.add_argument("--head", required=True)
    ap.add_argument("--pr", default="0")
    ap.add_argument("--config", required=True, help="matrix file, relative to the repo (read from the base)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--repo", default=".")
    ap.add_argument("--restarts", type=int, default=None, help="server starts per arm (default: the matrix's)")
    ap.add_argument("--tests", default=os.environ.get("PERF_TESTS", "tests/perf"),
                    help="perf tests, relative to the base worktree")
    ap.add_argument("extra", nargs="*")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    repo = Path(args.repo).resolve()
    work = Path(os.environ.get("RUNNER_TEMP") or tempfile.gettempdir()) / f"perf-pr-{os.getpid()}"
    verdict: dict
    try:
        base_dir = worktree(repo, args.base, work / "base")
        head_dir = worktree(repo, args.head, work / "head")
        matrix = base_dir / args.config
        if not matrix.is_file():
            raise GateError(f"{args.config}: not in the base commit {args.base[:12]}")
        overrides = head_overrides(base_dir, head_dir)
        py = os.environ.get("PERF_PYTHON") or (str(ROOT / ".venv/bin/python") if (ROOT / ".venv/bin/python").exists()
                                              else sys.executable)
        cmd = [py, "-m", "pytest", args.tests, "-m", "perf", "-p", "no:cacheprovider", "-rfEs",
               "-o", "junit_family=xunit1",
               f"--perf-config={matrix}", f"--perf-baselines={base_dir / 'baselines'}",
               f"--perf-json={out / 'results.json'}", f"--perf-report={out / 'page.md'}",
               f"--perf-pr-comment={out / 'comment.md'}", f"--perf-output={out / 'logs'}",
               f"--junitxml={out / 'junit.xml'}"]
        cmd += [f"--perf-ab-head={o}" for o in overrides]
        if args.restarts:
            cmd.append(f"--perf-restarts={args.restarts}")
        cmd += args.extra
        print(f"perf-pr-gate: PR #{args.pr}: base {args.base[:12]} vs head {args.head[:12]}; "
              f"matrix and baselines from the base; head arm: {' '.join(overrides)}", flush=True)
        rc = subprocess.run(cmd, cwd=base_dir).returncode
        verdict = gate_verdict(out / "results.json", rc)
    except GateError as e:
        verdict = {"verdict": "error", "reason": str(e)}
    finally:
        for wt in ("base", "head"):
            if (work / wt).exists():
                subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(work / wt)],
                               capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    verdict.update(base=args.base, head=args.head, pr=args.pr)
    (out / "verdict.json").write_text(json.dumps(verdict, indent=2, default=str) + "\n")
    if not (out / "comment.md").exists():
        (out / "comment.md").write_text(fallback_comment(verdict, args.base, args.head))
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        with open(summary, "a") as f:
            f.write((out / "comment.md").read_text() + "\n")
    print(f"perf-pr-gate: verdict {verdict['verdict']}: {verdict.get('metric') or ''} {verdict.get('reason') or ''}")
    return 1 if verdict["verdict"] in ("regressed", "error") else 0


if __name__ == "__main__":
    sys.exit(main())
