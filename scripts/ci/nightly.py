#!/usr/bin/env python3
"""The nightly's small steps (perf-nightly.yml):

  plan --shards N              step outputs: shards=[1..N] (the matrix), count=N
  fetch-history --out DIR      the latest `perf-history` artifact (history of
                               nightly means) into DIR; none yet: an empty DIR
  tracking-issue --dir DIR     open, or comment on, the one open issue labelled
                               `perf-nightly` with DIR/summary.md and the run URL

GitHub API via scripts/ci/ghapi.py ($GH_TOKEN, $REPO); stdlib only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ghapi import GitHub, GitHubError, set_output  # noqa: E402

MAX_SHARDS = 16
ISSUE_LABEL = "perf-nightly"
ISSUE_TITLE = "Nightly perf gate failing"
HISTORY_ARTIFACT = "perf-history"


def plan(shards: str) -> dict[str, str]:
    try:
        n = int(shards)
    except ValueError:
        raise SystemExit(f"::error::shards: expected a whole number, got {shards!r}") from None
    if not 1 <= n <= MAX_SHARDS:
        raise SystemExit(f"::error::shards: expected 1..{MAX_SHARDS}, got {n}")
    return {"shards": json.dumps(list(range(1, n + 1))), "count": str(n)}


def fetch_history(gh: GitHub, out: Path) -> str:
    out.mkdir(parents=True, exist_ok=True)
    arts = gh.request("GET", f"/repos/{gh.repo}/actions/artifacts?name={HISTORY_ARTIFACT}&per_page=20") or {}
    live = [a for a in arts.get("artifacts", []) if not a.get("expired")]
    if not live:
        return "no earlier nightly history: starting one"
    newest = max(live, key=lambda a: a.get("created_at") or "")
    data = gh.request("GET", newest["archive_download_url"], raw=True)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in z.namelist():
            if name.endswith(".jsonl") and "/" not in name.strip("/") and ".." not in name:
                (out / name).write_bytes(z.read(name))
    return f"history from artifact {newest.get('id')} ({newest.get('created_at')})"


def failed_summary(text: str) -> str:
    """The issue's text: this step runs only when the night failed, so it
    never says "passed" (e.g. a shard job failed while the merge of what the
    other shards wrote passed)."""
    if not text.strip():
        return "## Nightly perf: FAILED\n\nThe nightly failed before writing a summary: see the run's log."
    if text.lstrip().startswith("## Nightly perf: FAILED"):
        return text
    rest = text.split("\n", 1)[1] if text.lstrip().startswith("## Nightly perf:") else text
    return ("## Nightly perf: FAILED\n\nA job of the nightly failed (see the run's log); "
            "the merge of what the shards wrote said:\n" + rest)


def tracking_issue(gh: GitHub, summary: str, run_url: str) -> str:
    body = f"{summary.strip()}\n\nRun: {run_url}\n"
    issues = gh.request("GET", f"/repos/{gh.repo}/issues?state=open&labels={ISSUE_LABEL}&per_page=100") or []
    open_ = [i for i in issues if "pull_request" not in i]
    if open_:
        num = min(i["number"] for i in open_)
        gh.request("POST", f"/repos/{gh.repo}/issues/{num}/comments", {"body": body})
        return f"commented on issue #{num}"
    created = gh.request("POST", f"/repos/{gh.repo}/issues",
                         {"title": ISSUE_TITLE, "body": body, "labels": [ISSUE_LABEL]})
    return f"opened issue #{created.get('number')}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--shards", required=True)
    f = sub.add_parser("fetch-history")
    f.add_argument("--out", required=True)
    t = sub.add_parser("tracking-issue")
    t.add_argument("--dir", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "plan":
        set_output(**plan(args.shards))
        return 0
    try:
        gh = GitHub()
        if args.cmd == "fetch-history":
            print(fetch_history(gh, Path(args.out)))
            return 0
        s = Path(args.dir) / "summary.md"
        text = s.read_text() if s.exists() else ""
        print(tracking_issue(gh, failed_summary(text), os.environ.get("RUN_URL", "")))
        return 0
    except GitHubError as e:
        print(f"::error::{args.cmd}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
