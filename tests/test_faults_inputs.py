"""Fault suite, round two: inputs that used to end green, wrong or in
a traceback. Each case asserts the exit code (or the error), one line naming
the file / field / server, that nothing was lost and nothing left running.
Whole runs use the FAKE fault server (tests/fakes/fault_server.py) where a
real engine cannot produce the fault on demand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from pytest_mxfp4.formats.config import load_matrix
from pytest_mxfp4.errors import ConfigError

from .test_faults_session import FAKE, no_server_left, one_line, results, run, write_matrix
from pytest_mxfp4.formats.results import RunEnvironment

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
servers:
  a: {model: m, command: [serve, "{model}"]}
workloads:
  prefill: {pp: [512]}
  decode: {tg: [32, 128], pp: 256}
"""


def refused(tmp_path: Path, text: str | bytes, *words: str) -> str:
    path = tmp_path / "matrix.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = path.read_bytes()
    with pytest.raises(ConfigError) as e:
        load_matrix(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    for w in words:
        assert w in msg, (w, msg)
    assert path.read_bytes() == before
    return msg


def usage_error(r: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 4 with one line (pytest's "ERROR: ...") holding `words`; no traceback."""
    out = r.stdout + r.stderr
    assert r.returncode == pytest.ExitCode.USAGE_ERROR, out[-3000:]
    assert "INTERNALERROR" not in out and "Traceback" not in out, out[-3000:]
    line = one_line(out, words[0])
    for w in words:
        assert w in line, (w, line)
    return line


# -- the matrix -------------------------------------------------------------------------


@pytest.mark.parametrize("text,field,words", [
    (BASE.replace("tg: [32, 128]", "tg: [32, 128, 32]"), "workloads.decode.tg[2]", "case tg32"),
    (BASE.replace("pp: [512]", "pp: [512, 512]"), "workloads.prefill.pp[1]", "case pp512"),
    (BASE.replace("workloads:\n", "workloads:\n  depth: [0, 4096, 4096]\n"), "workloads.depth[2]", "@d4096"),
], ids=["decode", "prefill", "depth"])
def test_the_same_case_twice_is_refused_naming_the_field(tmp_path, text, field, words):
    refused(tmp_path, text, f"{field}: ", "listed twice", words)


def test_max_restarts_below_restarts_is_an_error_in_the_matrix_as_on_the_command_line(tmp_path):
    text = BASE.replace("workloads:\n", "workloads:\n  restarts: 3\n  max_restarts: 2\n")
    refused(tmp_path, text, "workloads.max_restarts: ", "must be >= workloads.restarts (3)", "got 2")
    m = write_matrix(tmp_path, workloads="  restarts: 3\n")
    usage_error(run(tmp_path, m, "--perf-max-restarts=2"), "--perf-max-restarts 2", "must be >=")
    m = write_matrix(tmp_path, workloads="  restarts: 3\n  max_restarts: 2\n")
    usage_error(run(tmp_path, m), "workloads.max_restarts", str(m))
    assert not (tmp_path / "out").exists(), "nothing started"


def test_a_matrix_that_is_not_utf8_is_one_line_not_an_internal_error(tmp_path):
    text = BASE.replace("model: m", "model: m\u00e9").encode("latin-1")
    refused(tmp_path, text, "not UTF-8", "offset")
    m = tmp_path / "m.yaml"
    m.write_bytes(text)
    usage_error(run(tmp_path, m), "not UTF-8", str(m))


def test_extends_of_extends_inherits_everything_and_blames_the_server_that_wrote_the_field(tmp_path):
    text = ("servers:\n"
            "  a: {model: m, command: [serve], startup_timeout_s: 7}\n"
            "  b: {extends: a, args: [--b]}\n"
            "  c: {extends: b, description: third}\n"
            "workloads:\n  decode: {tg: [32]}\n")
    (tmp_path / "ok.yaml").write_text(text)
    c = load_matrix(tmp_path / "ok.yaml").server("c")
    assert (c.command, c.args, c.startup_timeout_s, c.description) == (("serve",), ("--b",), 7.0, "third")
    # a bad field written in `a` is `a`'s mistake, not that of the server two levels down
    refused(tmp_path, text.replace("startup_timeout_s: 7", "startup_timeout_s: soon").replace(
        "  a: {", "  c2: {extends: c}\n  a: {"), "servers.a.startup_timeout_s: ")
    refused(tmp_path, text.replace("a: {model", "a: {extends: c, model"), "servers.", ".extends: ", "a cycle")


def test_a_base_url_without_scheme_is_called_out(tmp_path):
    refused(tmp_path, "servers:\n  x: {runner: external, model: m, base_url: '127.0.0.1:8000'}\n"
                      "workloads:\n  decode: {tg: [32]}\n", "servers.x.base_url: ", "scheme", "http://127.0.0.1:8000")
    m = write_matrix(tmp_path)
    usage_error(run(tmp_path, m, "--perf-base-url=127.0.0.1:8000"), "--perf-base-url", "scheme",
                "http://127.0.0.1:8000")


# -- A/B head overrides -----------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["args+=--x 'a b", 'wrap=nice -n "5'])
def test_an_unclosed_quote_in_ab_head_is_a_usage_error(tmp_path, spec):
    m = write_matrix(tmp_path)
    usage_error(run(tmp_path, m, "--perf-ab-head", spec), "--perf-ab-head", "quote")
    assert not (tmp_path / "out").exists(), "nothing started"


def test_a_missing_wrap_program_is_found_before_the_base_arm_starts(tmp_path):
    m = write_matrix(tmp_path)
    line = usage_error(run(tmp_path, m, "--perf-ab-head", "wrap=scripts/no_such_wrapper.py --duty 0.2"),
                       "scripts/no_such_wrapper.py", "not found")
    assert str(ROOT) in line  # where relative paths are taken from
    assert not (tmp_path / "out" / "logs" / "fake.log").exists(), "the base arm never started"
    assert no_server_left(tmp_path)


# -- shards and merge ---------------------------------------------------------------------------


def test_an_empty_shard_names_the_shard(tmp_path):
    m = write_matrix(tmp_path)
    usage_error(run(tmp_path, m, "--perf-shard=2/2"), "--perf-shard 2/2", "shard 2/2", "no server config",
                "at most 1 shard")


def test_merge_json_pointed_at_an_input_shard_is_refused_and_the_shard_kept(tmp_path, capsys):
    from pytest_mxfp4.cli.main import main
    from pytest_mxfp4.formats.results import SessionResults, save

    for k in (1, 2):
        save(SessionResults(matrix="m", environment=RunEnvironment.from_dict({"hardware_key": "hw", "shard": {
            "index": k, "count": 2, "matrix_servers": ["a", "b"], "plan": [["a"], ["b"]]}})),
             tmp_path / f"s{k}.json")
    before = (tmp_path / "s2.json").read_bytes()
    rc = main(["merge", str(tmp_path / "s1.json"), str(tmp_path / "s2.json"), "--json",
               str(tmp_path / "." / "s2.json")])
    err = capsys.readouterr().err
    assert rc == 2
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert "--json" in line and "s2.json" in line and "input shard" in line
    assert (tmp_path / "s2.json").read_bytes() == before


# -- server answers ------------------------------------------------------------------------------


def test_a_stream_answered_with_plain_json_says_so(tmp_path):
    r = run(tmp_path, write_matrix(tmp_path, mode="plain_json"))
    assert r.returncode == 1, r.stdout[-3000:]
    line = one_line(r.stdout, "plain application/json body")
    assert "server 'fake'" in line and "stream: true" in line
    assert "stream broke after 0 chunks" not in r.stdout
    assert no_server_left(tmp_path)


def test_a_stalled_engine_stops_the_case_at_the_first_timeout_and_says_so(tmp_path):
    m = write_matrix(tmp_path, mode="stall", workloads="  idle_timeout_s: 2\n")
    m.write_text(m.read_text().replace("runs: 2", "runs: 4"))
    t0 = time.monotonic()
    r = run(tmp_path, m, timeout=240)
    assert r.returncode == 1, r.stdout[-3000:]
    line = one_line(r.stdout, "stalled:")
    assert "[fake] tg8" in line and "idle timeout" in line and "stopping this case" in line
    (run_,) = [x for x in results(tmp_path)["runs"] if x["workload"] == "tg8"]
    assert len(run_["samples"]) == 1, "one stall, not runs x idle_timeout_s"
    assert "stopped at this first stall" in run_["samples"][0]["error"]
    assert time.monotonic() - t0 < 60
    assert no_server_left(tmp_path)


# -- leftovers ---------------------------------------------------------------------------------------


def test_a_sigkilled_runs_server_is_swept_by_a_run_with_another_output_folder(tmp_path):
    from pytest_mxfp4.servers.process import group_pids

    state = tmp_path / "state"
    m = write_matrix(tmp_path, mode="stall", args=("--spawn-child",))
    e = {k: v for k, v in os.environ.items() if k != "CI"}
    e.update(PYTEST_MXFP4_LOCK=str(tmp_path / "machine.lock"), PYTEST_MXFP4_STATE_DIR=str(state))
    p = subprocess.Popen([sys.executable, "-m", "pytest", "-m", "perf", "tests/perf/test_perf.py", "-p",
                          "no:cacheprovider", f"--perf-config={m}", f"--perf-baselines={tmp_path / 'b'}",
                          f"--perf-output={tmp_path / 'first'}"], cwd=ROOT, env=e,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    leader = None
    try:
        log = tmp_path / "first" / "logs" / "fake.log"
        for _ in range(300):
            if log.exists() and "listening on" in log.read_text(errors="replace") and \
                    list((state / "running").glob("*.json")):
                break
            time.sleep(0.1)
        (rec,) = list((state / "running").glob("*.json"))
        leader = int(json.loads(rec.read_text())["pid"])
        p.kill()  # SIGKILL: no teardown at all
        p.wait(30)
        shutil_rm = subprocess.run(["rm", "-rf", str(tmp_path / "first")])  # as actions/checkout cleans
        assert shutil_rm.returncode == 0
        for _ in range(50):
            if len(group_pids(leader)) == 1:
                break
            time.sleep(0.1)
        assert group_pids(leader), "the killed run left its server's child running"
        ok = write_matrix(tmp_path)  # the next run: another --perf-output, the same user
        r = run(tmp_path, ok, env={"PYTEST_MXFP4_STATE_DIR": str(state)})
        assert "stopped a leftover server 'fake'" in r.stdout, r.stdout[-3000:]
        for _ in range(50):
            if not group_pids(leader):
                break
            time.sleep(0.1)
        assert not group_pids(leader) and not rec.exists()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if leader is not None:
            for pid in group_pids(leader):
                os.kill(pid, signal.SIGKILL)


def test_the_nightly_shard_output_is_outside_the_checkout():
    wf = yaml.safe_load((ROOT / ".github" / "workflows" / "perf-nightly.yml").read_text())
    steps = wf["jobs"]["shard"]["steps"]
    (runs,) = [s["run"] for s in steps if "nightly-shard" in str(s.get("run", ""))]
    out = runs.split("--out", 1)[1].split()[0].strip('"')
    assert out.startswith("$RUNNER_TEMP/"), out
    (up,) = [s for s in steps if "upload-artifact" in str(s.get("uses", ""))]
    assert up["with"]["path"].startswith("${{ runner.temp }}/")


# -- NVIDIA pre-flight (a stand-in NVML: no GPU here) ------------------------------------------------


class ScriptedNvml:
    """Utilization and other pids per poll; the SM clock stays at its maximum."""
    NVML_CLOCK_SM = 1

    def __init__(self, util, pids):
        self.util, self.pids, self.polls = list(util), list(pids), 0

    def _at(self, xs):
        return xs[min(self.polls, len(xs) - 1)]

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=self._at(self.util))

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        pids = self._at(self.pids)
        self.polls += 1
        return [SimpleNamespace(pid=p) for p in pids]

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        return 0

    def nvmlDeviceGetClockInfo(self, h, kind):
        return 1980  # still at max right after the previous start: not a disturbance


def _poll(nvml, wait_s=15.0):
    from pytest_mxfp4.observe.telemetry import preflight_poll

    clock = [0.0]
    sleeps = []

    def sleep(s):
        sleeps.append(s)
        clock[0] += s

    why, facts = preflight_poll(nvml, {0: object()}, wait_s=wait_s, sleep=sleep, clock=lambda: clock[0])
    return why, facts, sleeps


def test_nvidia_preflight_polls_and_does_not_wait_for_an_idle_gpu_with_a_high_sm_clock():
    why, facts, sleeps = _poll(ScriptedNvml(util=[0], pids=[[]]))
    assert why is None and sleeps == [] and facts["waited_s"] == 0.0
    assert facts["gpus"][0]["sm_clock_mhz"] == 1980  # recorded, not judged
    # busy for the first two polls (the previous start's tail), then idle: seconds, not 15 s
    why, facts, sleeps = _poll(ScriptedNvml(util=[80, 40, 0], pids=[[], [], []]))
    assert why is None and sum(sleeps) <= 2.0, sleeps


def test_nvidia_preflight_marks_a_gpu_busy_with_another_process_after_the_wait():
    why, facts, sleeps = _poll(ScriptedNvml(util=[60], pids=[[4242]]), wait_s=5.0)
    assert "other compute process" in why and "pid 4242" in why and "60% busy" in why
    assert 5.0 <= sum(sleeps) <= 6.0
