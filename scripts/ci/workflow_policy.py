#!/usr/bin/env python3
"""The project's own rules for .github/workflows (README "CI gate").

    python3 scripts/ci/workflow_policy.py [WORKFLOW.yml | DIR]...

Prints one line per violation (`file: where: rule`) and exits 1 if any.
actionlint, zizmor and check-jsonschema check what they know; these rules are
the ones only we know:

  trigger        never `pull_request_target`, nor comment/review triggers
  permissions    workflow level is exactly `contents: read`; `write-all` never;
                 `pull-requests: write` only in perf-pr-comment.yml
  checkout       every actions/checkout has `persist-credentials: false`
  pin            every non-local action is pinned by a full 40-hex commit SHA
  injection      no `${{ ... }}` inside `run:` (values reach scripts via `env:`)
  concurrency    a pull_request workflow cancels superseded runs of the same PR
                 (group names the PR number, cancel-in-progress true); every
                 group starts with the workflow's own file name, so no group
                 is shared between workflows (a PR must never cancel a nightly)
  timeout        every job has `timeout-minutes`
  secrets        no job on a self-hosted runner reads `secrets.*` or the token
  self-hosted    `self-hosted` comes first in such a job's `runs-on`; a
                 `runs-on` from an expression (a repository variable) carries
                 its default labels as a JSON list literal, which obeys the
                 same rule, and counts as self-hosted for `secrets` (a
                 variable can point it at any runner)
  paths          no `paths`/`paths-ignore` filter on pull_request (a skipped
                 required check blocks merging)
  workflow_run   a workflow_run workflow checks out only the default branch
                 (no `ref:`), i.e. never the PR's code
  perf-pr        perf-pr.yml has a `perf-verdict` job with `if: always()` that
                 needs the gate job and runs the base's scripts, not the PR's

Pure: reads YAML, runs nothing. Imported by tests/test_workflows.py.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

SHA_RE = re.compile(r"^[^@]+@[0-9a-f]{40}$")
COMMENT_TRIGGERS = {"pull_request_target", "issue_comment", "pull_request_review_comment",
                    "pull_request_review", "discussion_comment"}
PR_NUMBER_EXPR = ("github.event.pull_request.number", "inputs.pr", "github.event.number")
DEFAULT_LABELS_RE = re.compile(r"'(\[[^']*\])'")
SECRET_RE = re.compile(r"\$\{\{[^}]*\b(secrets\.|github\.token)")


def _load(path: Path) -> dict:
    # PyYAML reads the key `on` as True (YAML 1.1); normalise it back.
    doc = yaml.safe_load(path.read_text()) or {}
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def _triggers(doc: dict) -> dict:
    on = doc.get("on") or {}
    if isinstance(on, str):
        return {on: {}}
    if isinstance(on, list):
        return {t: {} for t in on}
    return {k: (v or {}) for k, v in on.items()}


def _walk_strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for k, v in node.items():
            yield from _walk_strings(k)
            yield from _walk_strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk_strings(v)


def check_workflow(path: Path) -> list[str]:
    """Violations of one workflow file, one line each."""
    name = path.name
    stem = path.name.rsplit(".", 1)[0]
    try:
        doc = _load(path)
    except yaml.YAMLError as e:
        return [f"{name}: not valid YAML: {str(e).splitlines()[0]}"]
    out: list[str] = []

    def bad(where: str, msg: str) -> None:
        out.append(f"{name}: {where}: {msg}")

    triggers = _triggers(doc)
    for t in triggers:
        if t in COMMENT_TRIGGERS:
            bad("on", f"trigger `{t}` is forbidden (it can run PR code with write access/secrets)")
    pr = triggers.get("pull_request")
    if isinstance(pr, dict) and ("paths" in pr or "paths-ignore" in pr):
        bad("on.pull_request", "no `paths`/`paths-ignore` filter: a skipped required check blocks merging")

    # permissions
    perms = doc.get("permissions")
    if perms != {"contents": "read"}:
        bad("permissions", f"workflow-level permissions must be exactly `contents: read`, got {perms!r}")
    jobs = doc.get("jobs") or {}
    if not jobs:
        bad("jobs", "no jobs")
    for where, p in [("permissions", perms)] + [(f"jobs.{j}.permissions", (jd or {}).get("permissions"))
                                                for j, jd in jobs.items()]:
        if isinstance(p, str) and p != "read-all":
            bad(where, f"`{p}` is forbidden; list the scopes a job needs")
        if isinstance(p, dict) and p.get("pull-requests") == "write" and stem != "perf-pr-comment":
            bad(where, "`pull-requests: write` only in perf-pr-comment.yml")

    # concurrency
    def check_group(where: str, conc) -> None:
        group = conc.get("group") if isinstance(conc, dict) else conc
        if not isinstance(group, str):
            bad(where, "concurrency needs a `group`")
            return
        if not group.startswith(f"{stem}-"):
            bad(where, f"concurrency group must start with `{stem}-` (never shared with another workflow)")

    conc = doc.get("concurrency")
    if conc is not None:
        check_group("concurrency", conc)
    if "pull_request" in triggers:
        group = conc.get("group", "") if isinstance(conc, dict) else (conc or "")
        if not any(e in group for e in PR_NUMBER_EXPR):
            bad("concurrency", "a pull_request workflow needs a workflow-level concurrency group per PR number")
        if not (isinstance(conc, dict) and conc.get("cancel-in-progress") is True):
            bad("concurrency", "a pull_request workflow needs `cancel-in-progress: true`")

    is_workflow_run = "workflow_run" in triggers
    for job_id, job in jobs.items():
        job = job or {}
        jw = f"jobs.{job_id}"
        if "uses" not in job and "timeout-minutes" not in job:
            bad(jw, "every job needs `timeout-minutes`")
        if "concurrency" in job:
            check_group(f"{jw}.concurrency", job["concurrency"])
        runs_on = job.get("runs-on")
        labels = runs_on if isinstance(runs_on, list) else [runs_on]
        self_hosted = "self-hosted" in labels
        if isinstance(runs_on, str) and "${{" in runs_on:
            m = DEFAULT_LABELS_RE.search(runs_on)
            try:
                labels = json.loads(m.group(1)) if m else None
            except ValueError:
                labels = None
            if not isinstance(labels, list) or not labels:
                bad(f"{jw}.runs-on", "a `runs-on` expression needs its default labels as a JSON list literal, "
                                     "e.g. fromJSON(vars.X || '[\"self-hosted\", \"gb10\"]')")
                labels = ["self-hosted"]
            self_hosted = True
        if self_hosted:
            if "self-hosted" in labels and labels[0] != "self-hosted":
                bad(f"{jw}.runs-on", "`self-hosted` must come first")
            if any(SECRET_RE.search(s) for s in _walk_strings(job)) or job.get("secrets") == "inherit":
                bad(jw, "no secrets (nor the token) in a job on a self-hosted runner")
        for i, step in enumerate(job.get("steps") or []):
            sw = f"{jw}.steps[{i}]"
            run = step.get("run")
            if isinstance(run, str) and "${{" in run:
                bad(sw, "no `${{ }}` in `run:`; pass values through `env:`")
            uses = step.get("uses")
            if not isinstance(uses, str):
                continue
            if uses.startswith("actions/github-script") and "${{" in str((step.get("with") or {}).get("script", "")):
                bad(sw, "no `${{ }}` in a github-script `script:`; pass values through `env:`")
            if not (uses.startswith("./") or uses.startswith("docker://")) and not SHA_RE.match(uses):
                bad(sw, f"`{uses}` must be pinned by a full commit SHA")
            if uses.split("@")[0] == "actions/checkout":
                w = step.get("with") or {}
                if w.get("persist-credentials") not in (False, "false"):
                    bad(sw, "actions/checkout needs `persist-credentials: false`")
                if is_workflow_run and "ref" in w:
                    bad(sw, "a workflow_run workflow must not check out another ref (PR code)")
    if stem == "perf-pr":
        v = jobs.get("perf-verdict") or {}
        if not v:
            bad("jobs", "perf-pr.yml needs the `perf-verdict` job (the one required check)")
        else:
            if "always()" not in str(v.get("if", "")):
                bad("jobs.perf-verdict", "needs `if: always()`")
            needs = v.get("needs") or []
            if "gate" not in (needs if isinstance(needs, list) else [needs]):
                bad("jobs.perf-verdict", "must need the `gate` job")
            refs = [str((st.get("with") or {}).get("ref", "")) for st in v.get("steps") or []
                    if str(st.get("uses", "")).startswith("actions/checkout@")]
            if not refs or not all("pull_request.base.sha" in r for r in refs):
                bad("jobs.perf-verdict", "must check out the base (`ref: ${{ github.event.pull_request.base.sha "
                                         "|| github.sha }}`): the required check's logic never comes from the PR")
    return out


def check_paths(paths: list[Path]) -> list[str]:
    files: list[Path] = []
    for p in paths:
        files += sorted(p.glob("*.y*ml")) if p.is_dir() else [p]
    out: list[str] = []
    for f in files:
        out += check_workflow(f)
    return out


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or [Path(".github/workflows")]
    problems = check_paths(paths)
    for line in problems:
        print(line)
    if not problems:
        print(f"workflow policy: ok ({', '.join(str(p) for p in paths)})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
