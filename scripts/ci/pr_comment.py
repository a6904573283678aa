#!/usr/bin/env python3
"""Post or update the one sticky perf comment on a PR (perf-pr-comment.yml).

    python3 scripts/ci/pr_comment.py --dir perf-pr-out

Runs in the default branch's checkout with `pull-requests: write`; the
artifact of the perf-pr run is only *data*: `comment.md` (the A/B page the
gate wrote) and `pr.json` (which PR, which head). It comments only if that PR's
head is still the head the run measured (a newer push gets its own run), and
edits its own earlier comment (found by a hidden marker, written by a bot)
instead of adding one per push. No artifact (the gate did not run): nothing
to post, exit 0.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ghapi import GitHub, GitHubError  # noqa: E402

MARKER = "<!-- pytest-mxfp4:perf-pr -->"
MAX_BODY = 60000  # GitHub's limit is 65536 characters


def render_body(comment_md: str, run_url: str | None) -> str:
    text = comment_md.replace(MARKER, "")
    if len(text) > MAX_BODY:
        text = text[:MAX_BODY] + "\n\n… (cut; the full page is in the run's artifact)"
    foot = f"\n\n<sub>[perf-pr run]({run_url}) · updated on every run of this PR</sub>" if run_url else ""
    return f"{MARKER}\n{text.rstrip()}{foot}\n"


def find_sticky(comments: list[dict]) -> dict | None:
    mine = [c for c in comments if MARKER in (c.get("body") or "")
            and (c.get("user") or {}).get("type") == "Bot"]
    return mine[-1] if mine else None


def post(gh: GitHub, pr: int, head_sha: str, body: str) -> str:
    info = gh.request("GET", f"/repos/{gh.repo}/pulls/{pr}")
    now = ((info or {}).get("head") or {}).get("sha")
    if head_sha and now != head_sha:
        return f"skipped: PR #{pr} head is now {str(now)[:12]}, this run measured {head_sha[:12]}"
    existing = find_sticky(gh.paged(f"/repos/{gh.repo}/issues/{pr}/comments"))
    if existing:
        gh.request("PATCH", f"/repos/{gh.repo}/issues/comments/{existing['id']}", {"body": body})
        return f"updated comment {existing['id']} on PR #{pr}"
    c = gh.request("POST", f"/repos/{gh.repo}/issues/{pr}/comments", {"body": body})
    return f"posted comment {c.get('id')} on PR #{pr}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default="perf-pr-out")
    args = ap.parse_args(argv)
    d = Path(args.dir)
    if not (d / "pr.json").exists() or not (d / "comment.md").exists():
        print("::notice::no perf-pr comment to post (the gate did not run or wrote no comment)")
        return 0
    try:
        meta = json.loads((d / "pr.json").read_text())
        pr = int(meta["pr"])
        head = str(meta.get("pr_head_sha") or "")
        if head and not re.fullmatch(r"[0-9a-f]{40}", head):
            raise ValueError("pr_head_sha")
    except (ValueError, KeyError, TypeError) as e:
        print(f"::error::perf-pr artifact: pr.json is malformed ({e})")
        return 2
    body = render_body((d / "comment.md").read_text(errors="replace"), os.environ.get("RUN_URL"))
    try:
        said = post(GitHub(), pr, head, body)
    except GitHubError as e:
        print(f"::error::perf-pr comment: {e}")
        return 1
    print(said)
    return 0


if __name__ == "__main__":
    sys.exit(main())
