#!/usr/bin/env python3
"""Which commits the PR gate compares (perf-pr.yml, step "Resolve base and head").

  pull_request:       base = the PR's base SHA, head = the merge commit GitHub
                      made (GITHUB_SHA), so the A/B sees exactly the PR's change.
  workflow_dispatch:  a maintainer runs a reviewed fork PR: head = the SHA they
                      reviewed, and it must still be the PR's head (refs/pull/N/head)
                      or we stop (time-of-check/time-of-use); base = its merge
                      base with origin/main.

Inputs from env (never from ${{ }} in a shell): EVENT_NAME, PR_NUMBER,
PR_BASE_SHA, PR_HEAD_SHA, MERGE_SHA, REVIEWED_SHA. Writes step outputs base,
head, pr, head_kind and $PERF_PR_OUT/pr.json (read by perf-pr-comment.yml to
check that it comments on the PR this run measured). Exit 2 with one line on
any problem.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ghapi import set_output  # noqa: E402

SHA = re.compile(r"^[0-9a-f]{40}$")


class RefError(Exception):
    pass


def git(*args: str, cwd: str | None = None) -> str:
    r = subprocess.run(["git", *args], capture_output=True, text=True, cwd=cwd)
    if r.returncode != 0:
        raise RefError(f"git {' '.join(args)}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return r.stdout.strip()


def _commit(sha: str, what: str, cwd: str | None) -> str:
    if not SHA.match(sha or ""):
        raise RefError(f"{what}: expected a full 40-hex commit SHA, got {sha!r}")
    try:
        git("cat-file", "-e", f"{sha}^{{commit}}", cwd=cwd)
    except RefError:
        raise RefError(f"{what} {sha} is not in this checkout (fetch-depth: 0?)") from None
    return sha


def resolve(env: dict[str, str], cwd: str | None = None) -> dict[str, str]:
    event = env.get("EVENT_NAME", "")
    pr = env.get("PR_NUMBER", "")
    if not re.fullmatch(r"[1-9][0-9]{0,9}", pr or ""):
        raise RefError(f"PR number: expected a positive integer, got {pr!r}")
    if event == "pull_request":
        base = _commit(env.get("PR_BASE_SHA", ""), "PR base", cwd)
        head = _commit(env.get("MERGE_SHA", ""), "merge commit", cwd)
        return {"pr": pr, "base": base, "head": head, "head_kind": "merge commit",
                "pr_head_sha": env.get("PR_HEAD_SHA", "")}
    if event == "workflow_dispatch":
        reviewed = env.get("REVIEWED_SHA", "").strip().lower()
        if not SHA.match(reviewed):
            raise RefError(f"sha input: give the full 40-hex head SHA you reviewed, got {reviewed!r}")
        git("fetch", "--no-tags", "origin", f"+refs/pull/{pr}/head:refs/remotes/origin/pr/{pr}",
            "+refs/heads/main:refs/remotes/origin/main", cwd=cwd)
        now = git("rev-parse", f"refs/remotes/origin/pr/{pr}", cwd=cwd)
        if now != reviewed:
            raise RefError(f"PR #{pr} head is now {now[:12]}, you reviewed {reviewed[:12]}: review the new "
                           f"commits and dispatch again with that SHA")
        base = git("merge-base", "refs/remotes/origin/main", reviewed, cwd=cwd)
        return {"pr": pr, "base": base, "head": reviewed, "head_kind": "PR head (reviewed)", "pr_head_sha": reviewed}
    raise RefError(f"event {event!r}: perf-pr runs on pull_request or workflow_dispatch only")


def main() -> int:
    try:
        refs = resolve(dict(os.environ))
    except RefError as e:
        print(f"::error::perf-pr refs: {e}")
        return 2
    out = Path(os.environ.get("PERF_PR_OUT", "perf-pr-out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "pr.json").write_text(json.dumps(refs, indent=2) + "\n")
    set_output(**{k: refs[k] for k in ("pr", "base", "head", "head_kind")})
    print(f"PR #{refs['pr']}: base {refs['base'][:12]} vs head {refs['head'][:12]} ({refs['head_kind']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
