"""The logic the workflows call (scripts/ci/*), run as the workflows run it.

GitHub's API cannot be reached from here, so the comment / issue / history
steps talk to a FAKE GitHub (tests/fakes/fake_github.py, 127.0.0.1) over real
HTTP; git steps use real throwaway repositories."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from pytest_mxfp4.formats import results as results_file
from pytest_mxfp4.formats.config import Case
from pytest_mxfp4.formats.results import MetricResult, ServerRecord, SessionResults
from pytest_mxfp4.formats.results import RunEnvironment
from pytest_mxfp4.stats.samples import Summary

from .fakes.fake_github import FakeGitHub

ROOT = Path(__file__).resolve().parents[1]
CI = ROOT / "scripts" / "ci"


def run(script: str, *args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    path = CI / script
    cmd = [sys.executable, str(path), *args] if script.endswith(".py") else ["bash", str(path), *args]
    full = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    full.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=full, cwd=cwd, timeout=120)


# ---------------------------------------------------------------- verdict (the one required check)

sys.path.insert(0, str(CI))
import perf_verdict  # noqa: E402


@pytest.mark.parametrize("gate,verdict,labels,ok,level", [
    ("success", {"verdict": "pass"}, [], True, "notice"),
    ("success", {"verdict": "improved"}, [], True, "notice"),
    ("success", {"verdict": "inconclusive", "reason": "disturbed starts"}, [], True, "warning"),
    ("success", {"verdict": "regressed", "confirmed": True, "metric": "tg32/tg_tps", "delta_pct": -6.1}, [], False, "error"),
    ("success", {"verdict": "regressed", "confirmed": False}, [], True, "warning"),
    ("success", {"verdict": "regressed", "confirmed": True}, ["perf-regression-accepted"], True, "warning"),
    ("success", {"verdict": "error", "reason": "head arm failed to start"}, [], False, "error"),
    ("failure", None, [], False, "error"),
    ("failure", {"verdict": "pass"}, [], False, "error"),
    ("cancelled", None, [], False, "error"),
    ("skipped", None, [], False, "error"),
    ("success", {"verdict": "what"}, [], False, "error"),
])
def test_verdict_fails_only_on_a_confirmed_regression_or_a_gate_error(gate, verdict, labels, ok, level):
    d = perf_verdict.decide(gate, verdict, labels)
    assert (d.ok, d.level) == (ok, level), d


def test_verdict_script_annotates_and_exits(tmp_path):
    (tmp_path / "verdict.json").write_text(json.dumps({"verdict": "regressed", "confirmed": True,
                                                       "metric": "tg32/tg_tps", "delta_pct": -6.1}))
    summary = tmp_path / "summary.md"
    r = run("perf_verdict.py", "--gate-result", "success", "--dir", str(tmp_path),
            env={"GITHUB_STEP_SUMMARY": str(summary), "PR_LABELS": '["perf"]'})
    assert r.returncode == 1
    assert "::error::perf regression (confirmed): tg32/tg_tps -6.10%" in r.stdout
    assert "❌" in summary.read_text()
    (tmp_path / "verdict.json").write_text(json.dumps({"verdict": "inconclusive", "reason": "load 1.9 > 0.5"}))
    r = run("perf_verdict.py", "--gate-result", "success", "--dir", str(tmp_path))
    assert r.returncode == 0 and r.stdout.startswith("::warning::perf gate inconclusive: load 1.9 > 0.5")
    r = run("perf_verdict.py", "--gate-result", "skipped", "--dir", str(tmp_path / "none"))
    assert r.returncode == 1 and "needs the `perf` label" in r.stdout


# ---------------------------------------------------------------- base and head


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}).stdout.strip()


@pytest.fixture
def origin_and_clone(tmp_path):
    origin = tmp_path / "origin"
    origin.mkdir()
    git(origin, "init", "-q", "-b", "main")
    (origin / "f").write_text("base\n")
    git(origin, "add", "f")
    git(origin, "commit", "-q", "-m", "base")
    base = git(origin, "rev-parse", "HEAD")
    git(origin, "checkout", "-q", "-b", "feature")
    (origin / "f").write_text("head\n")
    git(origin, "commit", "-qam", "head")
    head = git(origin, "rev-parse", "HEAD")
    git(origin, "update-ref", "refs/pull/7/head", head)
    git(origin, "checkout", "-q", "main")
    (origin / "g").write_text("main moved on\n")
    git(origin, "add", "g")
    git(origin, "commit", "-q", "-m", "main moves")
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(origin), str(clone))
    return origin, clone, base, head


def test_refs_for_a_dispatched_fork_pr_use_the_reviewed_sha_and_its_merge_base(origin_and_clone, tmp_path):
    origin, clone, base, head = origin_and_clone
    out, gh_out = tmp_path / "out", tmp_path / "gh_output"
    env = {"EVENT_NAME": "workflow_dispatch", "PR_NUMBER": "7", "REVIEWED_SHA": head,
           "PERF_PR_OUT": str(out), "GITHUB_OUTPUT": str(gh_out)}
    r = run("perf_pr_refs.py", env=env, cwd=clone)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"base={base}\n" in gh_out.read_text() and f"head={head}\n" in gh_out.read_text()
    meta = json.loads((out / "pr.json").read_text())
    assert meta["head_kind"] == "PR head (reviewed)" and meta["pr_head_sha"] == head
    # the PR moved after the review: stop, say so
    git(origin, "checkout", "-q", "feature")
    (origin / "f").write_text("sneaky\n")
    git(origin, "commit", "-qam", "after review")
    git(origin, "update-ref", "refs/pull/7/head", git(origin, "rev-parse", "HEAD"))
    r = run("perf_pr_refs.py", env=env, cwd=clone)
    assert r.returncode == 2 and f"you reviewed {head[:12]}" in r.stdout


def test_refs_reject_bad_input(origin_and_clone):
    _, clone, base, head = origin_and_clone
    for env, says in [
        ({"EVENT_NAME": "workflow_dispatch", "PR_NUMBER": "7", "REVIEWED_SHA": "abc"}, "full 40-hex head SHA"),
        ({"EVENT_NAME": "workflow_dispatch", "PR_NUMBER": "7; rm -rf /", "REVIEWED_SHA": head}, "positive integer"),
        ({"EVENT_NAME": "pull_request_target", "PR_NUMBER": "7"}, "pull_request or workflow_dispatch only"),
        ({"EVENT_NAME": "pull_request", "PR_NUMBER": "7", "PR_BASE_SHA": base, "MERGE_SHA": "f" * 40},
         "not in this checkout"),
    ]:
        r = run("perf_pr_refs.py", env=env, cwd=clone)
        assert r.returncode == 2 and says in r.stdout, (env, r.stdout)


def test_refs_for_a_pull_request_compare_the_merge_commit_with_the_base(origin_and_clone, tmp_path):
    _, clone, base, head = origin_and_clone
    gh_out = tmp_path / "gh_output"
    r = run("perf_pr_refs.py", env={"EVENT_NAME": "pull_request", "PR_NUMBER": "7", "PR_BASE_SHA": base,
                                    "MERGE_SHA": head, "PR_HEAD_SHA": head, "PERF_PR_OUT": str(tmp_path / "o"),
                                    "GITHUB_OUTPUT": str(gh_out)}, cwd=clone)
    assert r.returncode == 0, r.stdout
    assert "head_kind=merge commit" in gh_out.read_text()


# ---------------------------------------------------------------- sticky PR comment


def _artifact(tmp_path: Path, head: str, text: str = "### perf: tg32 -6.1% REGRESSED") -> Path:
    d = tmp_path / "perf-pr-out"
    d.mkdir(exist_ok=True)
    (d / "comment.md").write_text(text)
    (d / "pr.json").write_text(json.dumps({"pr": "7", "pr_head_sha": head}))
    return d


def test_comment_is_posted_once_then_updated(tmp_path):
    head = "a" * 40
    with FakeGitHub() as gh:
        gh.pulls[7] = {"head": {"sha": head}}
        gh.comments[7] = [{"id": 1, "body": "LGTM", "user": {"type": "User"}},
                          {"id": 2, "body": "<!-- pytest-mxfp4:perf-pr --> forged by a person", "user": {"type": "User"}}]
        env = {"GH_TOKEN": "ghs_secret_token_value", "REPO": "o/r", "GITHUB_API_URL": gh.url, "RUN_URL": "https://run/1"}
        d = _artifact(tmp_path, head)
        r = run("pr_comment.py", "--dir", str(d), env=env)
        assert r.returncode == 0 and "posted comment" in r.stdout, r.stdout + r.stderr
        r = run("pr_comment.py", "--dir", str(_artifact(tmp_path, head, "### perf: pass")), env=env)
        assert "updated comment" in r.stdout
        bot = [c for c in gh.comments[7] if c["user"]["type"] == "Bot"]
        assert len(bot) == 1 and "### perf: pass" in bot[0]["body"] and "https://run/1" in bot[0]["body"]
        assert all(h == "Bearer ghs_secret_token_value" for h in gh.auth_headers)
        assert "ghs_secret" not in r.stdout + r.stderr


def test_comment_skips_a_pr_that_moved_on_and_a_run_without_artifact(tmp_path):
    with FakeGitHub() as gh:
        gh.pulls[7] = {"head": {"sha": "b" * 40}}
        env = {"GH_TOKEN": "t", "REPO": "o/r", "GITHUB_API_URL": gh.url}
        r = run("pr_comment.py", "--dir", str(_artifact(tmp_path, "a" * 40)), env=env)
        assert r.returncode == 0 and "skipped: PR #7 head is now bbbbbbbbbbbb" in r.stdout
        assert gh.comments.get(7, []) == []
        r = run("pr_comment.py", "--dir", str(tmp_path / "nothing"), env=env)
        assert r.returncode == 0 and "no perf-pr comment to post" in r.stdout
        d = _artifact(tmp_path, "a" * 40)
        (d / "pr.json").write_text(json.dumps({"pr": "7; DROP", "pr_head_sha": "a" * 40}))
        assert run("pr_comment.py", "--dir", str(d), env=env).returncode == 2


# ---------------------------------------------------------------- nightly steps


def test_nightly_plan_outputs_the_shard_matrix(tmp_path):
    out = tmp_path / "o"
    r = run("nightly.py", "plan", "--shards", "3", env={"GITHUB_OUTPUT": str(out)})
    assert r.returncode == 0 and out.read_text() == "shards=[1, 2, 3]\ncount=3\n"
    for bad in ("0", "99", "two"):
        assert run("nightly.py", "plan", "--shards", bad).returncode != 0


def test_tracking_issue_is_opened_once_then_commented(tmp_path):
    d = tmp_path / "n"
    d.mkdir()
    (d / "summary.md").write_text("## Nightly perf: FAILED\n- missing shard 2/2")
    with FakeGitHub() as gh:
        env = {"GH_TOKEN": "t", "REPO": "o/r", "GITHUB_API_URL": gh.url, "RUN_URL": "https://run/9"}
        r = run("nightly.py", "tracking-issue", "--dir", str(d), env=env)
        assert r.returncode == 0 and "opened issue #1" in r.stdout, r.stdout + r.stderr
        r = run("nightly.py", "tracking-issue", "--dir", str(d), env=env)
        assert "commented on issue #1" in r.stdout
        assert len(gh.issues) == 1 and gh.issues[0]["labels"] == ["perf-nightly"]
        assert "missing shard 2/2" in gh.comments[1][0]["body"] and "https://run/9" in gh.comments[1][0]["body"]


def test_fetch_history_takes_the_newest_live_artifact(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("nightly.jsonl", '{"kind": "pytest-mxfp4-nightly"}\n')
        z.writestr("../evil.jsonl", "x")
    with FakeGitHub() as gh:
        gh.artifacts = [{"id": 1, "expired": False, "created_at": "2026-12-01", "archive_download_url": f"{gh.url}/zip/1"},
                        {"id": 2, "expired": False, "created_at": "2026-12-03", "archive_download_url": f"{gh.url}/zip/2"},
                        {"id": 3, "expired": True, "created_at": "2026-12-04", "archive_download_url": f"{gh.url}/zip/3"}]
        gh.zips = {"1": b"", "2": buf.getvalue()}
        env = {"GH_TOKEN": "t", "REPO": "o/r", "GITHUB_API_URL": gh.url}
        r = run("nightly.py", "fetch-history", "--out", str(tmp_path / "h"), env=env)
        assert r.returncode == 0 and "history from artifact 2" in r.stdout, r.stdout + r.stderr
        assert (tmp_path / "h/nightly.jsonl").read_text().startswith('{"kind"')
        assert not (tmp_path / "evil.jsonl").exists()
        gh.artifacts = []
        r = run("nightly.py", "fetch-history", "--out", str(tmp_path / "h2"), env=env)
        assert "no earlier nightly history" in r.stdout


def _shard_file(d: Path, k: int, servers: list[str], tg: float) -> None:
    env = {"hardware_key": "cpu-x86_64-test-2c", "hostname": f"box{k}",
           "shard": {"index": k, "count": 2, "servers": servers, "matrix_servers": ["a", "b"],
                     "plan": [["a"], ["b"]], "costs_from": None, "runner": f"gb10-shard-{k}"}}
    s = SessionResults(matrix="cpu", environment=RunEnvironment.from_dict(env))
    for srv in servers:
        s.servers[srv] = ServerRecord(name=srv, runner="process", model="tiny")
        samples = [tg, tg * 1.01, tg * 0.99]
        s.metrics.append(MetricResult(server=srv, case=Case("decode", pp=512, tg=32), metric="tg_tps", gate="fail",
                                      samples=samples, summary=Summary.from_samples(samples)))
    (d / f"perf-nightly-shard-{k}").mkdir(parents=True)
    results_file.save(s, d / f"perf-nightly-shard-{k}" / f"results-{k}.json")


def test_nightly_merge_appends_history_and_reports_a_missing_shard(tmp_path):
    tool = str(Path(sys.executable).parent / "pytest-mxfp4")
    (tmp_path / "m.yaml").write_text("servers: {a: {model: tiny, command: [x]}, b: {model: tiny, command: [x]}}\n"
                                     "workloads: {decode: {tg: [32]}}\n")
    ins = tmp_path / "shards"
    _shard_file(ins, 1, ["a"], 100.0)
    _shard_file(ins, 2, ["b"], 90.0)
    env = {"PYTEST_MXFP4": tool, "PERF_REF": "vllm-nightly-001", "RUN_URL": "https://run/1",
           "GITHUB_STEP_SUMMARY": str(tmp_path / "step.md")}
    args = ["--shards", "2", "--in", str(ins), "--history", str(tmp_path / "hist"), "--config", str(tmp_path / "m.yaml"),
            "--out", str(tmp_path / "out")]
    r = run("nightly-merge", *args, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    hist = (tmp_path / "hist/nightly.jsonl").read_text().splitlines()
    assert len(hist) == 1 and json.loads(hist[0])["ref"] == "vllm-nightly-001"
    page = (tmp_path / "out/BENCHMARK_RESULTS.md").read_text()
    assert "## Shards" in page and "## Trend" in page
    assert "Nightly perf: passed" in (tmp_path / "step.md").read_text()
    # shard 2 lost tonight: reported, fails the job, shard 1's numbers still land in the history
    import shutil

    shutil.rmtree(ins / "perf-nightly-shard-2")
    r = run("nightly-merge", *args, env=env)
    assert r.returncode != 0
    summary = (tmp_path / "out/summary.md").read_text()
    assert "Nightly perf: FAILED" in summary and "missing shard 2/2: configs b not measured" in summary
    assert len((tmp_path / "hist/nightly.jsonl").read_text().splitlines()) == 2


def test_a_night_that_measured_nothing_is_a_failed_night(tmp_path):
    # every shard skipped its configs (the runners lost their GPUs): the merge
    # is complete, yet nothing was judged, so the night fails and says why
    tool = str(Path(sys.executable).parent / "pytest-mxfp4")
    (tmp_path / "m.yaml").write_text("servers: {a: {model: tiny, command: [x]}, b: {model: tiny, command: [x]}}\n"
                                     "workloads: {decode: {tg: [32]}}\n")
    ins = tmp_path / "shards"
    for k, srv in ((1, "a"), (2, "b")):
        _shard_file(ins, k, [srv], 100.0)
        f = ins / f"perf-nightly-shard-{k}" / f"results-{k}.json"
        s = results_file.load(f)
        s.metrics = []
        s.servers[srv].skipped = "requires gpu: no GPU found"
        results_file.save(s, f)
    env = {"PYTEST_MXFP4": tool, "GITHUB_STEP_SUMMARY": str(tmp_path / "step.md")}
    args = ["--shards", "2", "--in", str(ins), "--history", str(tmp_path / "hist"), "--config", str(tmp_path / "m.yaml"),
            "--out", str(tmp_path / "out")]
    r = run("nightly-merge", *args, env=env)
    assert r.returncode != 0, r.stdout + r.stderr
    summary = (tmp_path / "out/summary.md").read_text()
    assert summary.startswith("## Nightly perf: FAILED: nothing was measured"), summary
    assert "2 config(s) skipped (a: requires gpu" in summary and "passed" not in summary
    assert not (tmp_path / "hist/nightly.jsonl").exists()  # an empty night is no point of the trend
    # no shard wrote anything at all: the same wording
    r = run("nightly-merge", *args[:2], "--in", str(tmp_path / "none"), *args[4:], env=env)
    assert r.returncode != 0
    assert (tmp_path / "out/summary.md").read_text().startswith("## Nightly perf: FAILED: nothing was measured")


def test_the_tracking_issue_never_says_passed(tmp_path):
    # the issue is opened only on a failed run: a shard job failed while the
    # merge of the other shards passed reads FAILED, not "passed"
    d = tmp_path / "n"
    d.mkdir()
    (d / "summary.md").write_text("## Nightly perf: passed\n\n1 series\n")
    with FakeGitHub() as gh:
        env = {"GH_TOKEN": "t", "REPO": "o/r", "GITHUB_API_URL": gh.url, "RUN_URL": "https://run/9"}
        r = run("nightly.py", "tracking-issue", "--dir", str(d), env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        body = gh.issues[0]["body"]
        assert body.startswith("## Nightly perf: FAILED") and "passed" not in body.split("\n")[0]
        assert "1 series" in body


def test_baseline_pr_needs_no_gh_and_opens_a_labelled_pr(tmp_path):
    # the hosted job has git and python3 (+ PyYAML, which it installs): no gh
    import shutil

    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "scripts", repo / "scripts")
    (repo / "baselines/cpu-x/tiny").mkdir(parents=True)
    (repo / "baselines/cpu-x/tiny/a.json").write_text("{}\n")
    g = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*g, "add", "-A"], check=True)
    subprocess.run([*g, "commit", "-qm", "base"], check=True)
    subprocess.run([*g, "remote", "add", "origin", str(bare)], check=True)
    shards = tmp_path / "shards"
    (shards / "perf-nightly-shard-1/baselines/cpu-x/tiny").mkdir(parents=True)
    (shards / "perf-nightly-shard-1/baselines/cpu-x/tiny/a.json").write_text('{"new": 1}\n')
    (shards / "perf-nightly-shard-1/results-1.json").write_text(json.dumps(
        {"environment": {"hardware_key": "cpu-x"}, "servers": {"a": {"info": {"startup_s": 12.34}}}}))
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "python3").symlink_to(sys.executable)
    path = f"{shim}:/usr/bin:/bin"
    assert shutil.which("gh", path=path) is None
    with FakeGitHub() as gh:
        env = {"PATH": path, "GH_TOKEN": "app-token-xyz", "REPO": "o/r", "RUN_ID": "77", "GITHUB_API_URL": gh.url}
        r = subprocess.run(["bash", str(repo / "scripts/ci/baseline-pr"), "--shards-dir", str(shards)],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "opened PR #200 from bot/baselines-77" in r.stdout
        assert gh.created_pulls[0]["head"] == "bot/baselines-77" and gh.created_pulls[0]["labels"] == ["baseline-update"]
        assert "app-token-xyz" not in r.stdout + r.stderr
    pushed = subprocess.run(["git", "-C", str(bare), "show", "bot/baselines-77:baselines/cpu-x/shard-costs.yaml"],
                            capture_output=True, text=True)
    assert "a: 12.3" in pushed.stdout, pushed.stderr


# ---------------------------------------------------------------- the PR gate's own logic (no engine)

import perf_pr_gate  # noqa: E402

from pytest_mxfp4.stats.samples import Comparison, Verdict  # noqa: E402


def _ab_results(path: Path, head_verdict: Verdict | None, *, error: str | None = None) -> Path:
    s = SessionResults(matrix="m", environment=RunEnvironment.from_dict({"hardware_key": "cpu-x"}))
    for name in ("tiny", "tiny@head"):
        s.servers[name] = ServerRecord(name=name, runner="process", model="tiny",
                                       error=error if name.endswith("@head") else None)
        r = MetricResult(server=name, case=Case("decode", pp=128, tg=32), metric="tg_tps", gate="fail",
                         samples=[1.0, 1.0], summary=Summary.from_samples([1.0, 1.0]))
        if name.endswith("@head") and head_verdict is not None:
            r.comparison = Comparison(verdict=head_verdict, delta_pct=-30.8, effect_pct=-30.8, ci_low_pct=-40.0,
                                      ci_high_pct=-20.0, p_value=0.001, tolerance_pct=13.0, n_current=2,
                                      n_baseline=2, reason="2 starts vs 2")
        s.metrics.append(r)
    results_file.save(s, path)
    return path


@pytest.mark.parametrize("verdict,expect", [(Verdict.REGRESSED, "regressed"), (Verdict.INCONCLUSIVE, "inconclusive"),
                                            (Verdict.PASS, "pass"), (None, "no-baseline")])
def test_gate_verdict_reads_the_head_arm(tmp_path, verdict, expect):
    v = perf_pr_gate.gate_verdict(_ab_results(tmp_path / "r.json", verdict), 1 if verdict == Verdict.REGRESSED else 0)
    assert v["verdict"] == expect and v["metric"] == "tiny tg32/tg_tps"
    if expect == "regressed":
        assert v["confirmed"] and v["delta_pct"] == -30.8
        assert perf_verdict.decide("failure", v, []).ok is False


def test_gate_verdict_errors(tmp_path):
    assert perf_pr_gate.gate_verdict(tmp_path / "none.json", 4)["verdict"] == "error"
    v = perf_pr_gate.gate_verdict(_ab_results(tmp_path / "r.json", None, error="head arm exited with code 1"), 1)
    assert v["verdict"] == "error" and "head arm exited" in v["reason"]
    v = perf_pr_gate.gate_verdict(_ab_results(tmp_path / "r2.json", Verdict.PASS), 2)
    assert v["verdict"] == "error" and "pytest exit 2" in v["reason"]


def test_gate_reads_the_matrix_from_the_base_and_says_when_it_is_missing(origin_and_clone, tmp_path):
    _, clone, base, head = origin_and_clone
    out = tmp_path / "out"
    r = run("perf_pr_gate.py", "--repo", str(clone), "--base", base, "--head", head, "--pr", "7",
            "--config", "configs/x.yaml", "--out", str(out), env={"RUNNER_TEMP": str(tmp_path)})
    assert r.returncode == 1
    v = json.loads((out / "verdict.json").read_text())
    assert v["verdict"] == "error" and f"configs/x.yaml: not in the base commit {base[:12]}" in v["reason"]
    assert "ERROR" in (out / "comment.md").read_text()
    assert not list(tmp_path.glob("perf-pr-*")), "worktrees are cleaned up"
    assert "perf-pr-" not in git(clone, "worktree", "list")


def test_arms_hook_from_the_base_names_the_head_engine(tmp_path):
    base, head = tmp_path / "b", tmp_path / "h"
    (base / "scripts/ci").mkdir(parents=True)
    (base / "scripts/ci/perf-pr-arms").write_text((CI / "perf-pr-arms").read_text())
    (head / "engine").mkdir(parents=True)
    assert perf_pr_gate.head_overrides(base, head) == ["env.PYTEST_MXFP4_ARM=head"]  # no engine in the repo: A/A
    (head / "engine/python").write_text("#!/bin/sh\n")
    (head / "engine/python").chmod(0o755)
    assert perf_pr_gate.head_overrides(base, head) == [f"python={head}/engine/python"]


def test_nightly_shard_runs_its_slice_and_records_it(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("servers: {a: {pending: later}, b: {pending: later}, c: {pending: later}}\n"
                 "workloads: {decode: {tg: [32]}, runs: 2}\n")
    out = tmp_path / "shard"
    r = run("nightly-shard", "--shard", "2/2", "--config", str(m), "--out", str(out),
            env={"UPDATE_BASELINES": "1", "PYTEST_MXFP4_LOCK": str(tmp_path / "lock")})
    # nothing measurable in this slice (pending rows): the run says so and fails, its files still written
    assert r.returncode == 1 and "no fail-gated metric was measured" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    data = json.loads((out / "results-2.json").read_text())
    assert data["environment"]["shard"]["index"] == 2 and sorted(data["servers"]) == ["b"]
    assert (out / "junit-2.xml").exists() and (out / "page-2.md").exists()
    assert (out / "baselines").is_dir()  # the copy the bot PR would take; the checkout's baselines/ untouched
    r = run("nightly-shard", "--shard", "two", "--config", str(m), "--out", str(out))
    assert r.returncode == 2 and "--shard K/N" in r.stderr
