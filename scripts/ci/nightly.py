#!/usr/bin/env python3
"""The nightly's small steps (perf-nightly.yml):

  plan --shards N              step outputs: shards=[1..N] (the matrix), count=N
  fetch-history --out DIR      the latest `perf-history` artifact (history of
                               nightly means) into DIR; none yet: an empty DIR
  tracking-issue --dir DIR     open, or comment on, the one open issue labelled
                               `perf-nightly` with DIR/summary.md and the run URL
  shard-costs --shards-dir DIR --baselines DIR
                               refresh baselines/<hw>/shard-costs.yaml from the
                               shards' startup times (needs PyYAML)
  open-baseline-pr --branch B --run-id N
                               open the baseline-update PR (label `baseline-update`)

GitHub API via scripts/ci/ghapi.py ($GH_TOKEN, $REPO); stdlib only, except
shard-costs (PyYAML, which the baseline-pr job installs).
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


def shard_costs(shards_dir: Path, baselines: Path) -> str:
    """Startup seconds per config from the shards' results, into
    <baselines>/<hw>/shard-costs.yaml. Keeps the split stable: only configs
    without a cost yet, or whose startup moved by more than 25%, change."""
    import yaml  # the baseline-pr job installs PyYAML; nothing else here needs it

    costs: dict[str, float] = {}
    hw = None
    for f in sorted(shards_dir.glob("*/results-*.json")):
        d = json.loads(f.read_text())
        hw = hw or d.get("environment", {}).get("hardware_key")
        for name, rec in d.get("servers", {}).items():
            s = (rec.get("info") or {}).get("startup_s")
            if isinstance(s, (int, float)) and s > 0:
                costs[name] = round(float(s), 1)
    if not (hw and costs):
        return "shard costs: no startup time in the shards' results"
    p = baselines / hw / "shard-costs.yaml"
    old = (yaml.safe_load(p.read_text()) if p.exists() else {}) or {}
    for k, v in costs.items():
        if k not in old or abs(v - old[k]) > 0.25 * max(old[k], 1):
            old[k] = v
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("# Startup seconds per server config, read by --perf-shard to balance shards.\n"
                 "# Changes only through the reviewed baseline PR, so shards stay stable.\n"
                 + yaml.safe_dump(dict(sorted(old.items()))))
    return f"shard costs: {p} ({len(costs)} config(s) measured)"


def open_baseline_pr(gh: GitHub, branch: str, run_id: str) -> str:
    pr = gh.request("POST", f"/repos/{gh.repo}/pulls", {
        "title": f"Baselines from nightly run {run_id}", "head": branch, "base": "main",
        "body": f"Baselines measured by nightly run {run_id}. A CODEOWNER of baselines/ must approve; "
                "compare with the run's results page before merging."})
    gh.request("POST", f"/repos/{gh.repo}/issues/{pr['number']}/labels", {"labels": ["baseline-update"]})
    return f"opened PR #{pr['number']} from {branch}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("plan")
    p.add_argument("--shards", required=True)
    f = sub.add_parser("fetch-history")
    f.add_argument("--out", required=True)
    t = sub.add_parser("tracking-issue")
    t.add_argument("--dir", required=True)
    c = sub.add_parser("shard-costs")
    c.add_argument("--shards-dir", required=True)
    c.add_argument("--baselines", required=True)
    o = sub.add_parser("open-baseline-pr")
    o.add_argument("--branch", required=True)
    o.add_argument("--run-id", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "plan":
        set_output(**plan(args.shards))
        return 0
    if args.cmd == "shard-costs":
        print(shard_costs(Path(args.shards_dir), Path(args.baselines)))
        return 0
    try:
        gh = GitHub()
        if args.cmd == "fetch-history":
            print(fetch_history(gh, Path(args.out)))
            return 0
        if args.cmd == "open-baseline-pr":
            print(open_baseline_pr(gh, args.branch, args.run_id))
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
