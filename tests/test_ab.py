"""Server starts and A/B runs through the plugin (pytester, a subprocess like a
user would run it), against the FAKE rate server (tests/fakes/rate_server.py):
what a real engine cannot do on demand is decode at a set rate, refuse to
start, or count its own starts. Statistics are tested in test_startstats.py."""

import json
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_mxfp4.run.ab import ABError, Slot, head_config, parse_override, plan_starts
from pytest_mxfp4.formats.config import DockerSpec, ServerConfig

pytest_plugins = ["pytester"]

FAKE = str(Path(__file__).parent / "fakes" / "rate_server.py")

PERF_TEST = """
import pytest
pytestmark = pytest.mark.perf
def test_workload(perf_measure):
    perf_measure()
"""


def matrix(restarts: int = 2, tps: int = 2000, extra_env: str = "", leave_out: str = "false",
           spares: int = 0) -> str:
    # leave_out_disturbed false, no spare starts: these tests count starts, and
    # the box they run on may be busy; test_disturbed_start_is_left_out_and_replaced
    # turns both on
    return textwrap.dedent(f"""
        name: ab
        defaults:
          engine: openai
          runner: process
          command: ["{sys.executable}", "{FAKE}", "--port", "{{port}}"]
          env: {{FAKE_TPS: "{tps}", FAKE_STARTS_FILE: starts.txt, FAKE_ARM: base{extra_env}}}
          startup_timeout_s: 20
        servers:
          fake: {{model: m}}
        workloads:
          decode: {{tg: [16]}}
          runs: 3
          warmup: 0
          restarts: {restarts}
          reset_prefix_cache: false
          leave_out_disturbed: {leave_out}
          max_replacements: {spares}
        gates: {{tg16: fail}}
        """)


# -- pure parts ---------------------------------------------------------------


def test_overrides_parse_and_apply():
    base = ServerConfig(name="x", runner="process", command=("{python}", "-m", "srv"), args=("--a",),
                        env={"K": "1"})
    h = head_config(base, (parse_override("python=/venv/bin/python"), parse_override("env.K=2"),
                           parse_override("args+=--b 3"), parse_override("wrap=scripts/with_neighbour.py --duty 0.2")))
    assert h.name == "x@head"
    assert h.command == ("scripts/with_neighbour.py", "--duty", "0.2", "/venv/bin/python", "-m", "srv")
    assert h.env == {"K": "2"} and h.args == ("--a", "--b", "3")
    d = ServerConfig(name="d", runner="docker", docker=DockerSpec(image="img:base"))
    assert head_config(d, (parse_override("image=img:head"),)).docker.image == "img:head"


@pytest.mark.parametrize("spec,msg", [
    ("nonsense", "expected <key>=<value>"),
    ("colour=red", "unknown key 'colour'"),
    ("env.=1", "valid variable name"),
    ("image=", "needs a value"),
])
def test_bad_override_is_one_clear_line(spec, msg):
    with pytest.raises(ABError, match=msg):
        parse_override(spec)


def test_arms_that_do_not_differ_or_do_not_apply_are_errors():
    base = ServerConfig(name="x", runner="process", command=("{python}",), env={"K": "1"})
    with pytest.raises(ABError, match="identical to the base arm"):
        head_config(base, (parse_override("env.K=1"),))
    with pytest.raises(ABError, match="needs the docker runner"):
        head_config(base, (parse_override("image=a:b"),))


def test_start_plan_interleaves_and_abba():
    assert [s.id for s in plan_starts(["a"], 1, False)] == ["a"]
    assert [s.id for s in plan_starts(["a", "b"], 2, False)] == ["a#0", "b#0", "b", "a"]
    ab = plan_starts(["a"], 2, True)
    assert [(s.server, s.arm, s.start) for s in ab] == [("a", "base", 0), ("a@head", "head", 0),
                                                         ("a@head", "head", 1), ("a", "base", 1)]
    assert Slot("a", None, 1, 2).last
    with pytest.raises(ABError, match=">= 1"):
        plan_starts(["a"], 0, False)


# -- through pytest ---------------------------------------------------------------


def run(pytester, *args):
    return pytester.runpytest_subprocess("-m", "perf", "--perf-config", "matrix.yaml", "--perf-output", "out",
                                         "-p", "no:cacheprovider", *args)


def test_restarts_below_one_is_a_clear_error(pytester):
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=matrix())
    r = run(pytester, "--perf-restarts", "0")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "--perf-restarts 0: must be >= 1" in r.stderr.str()
    assert "Traceback" not in r.stderr.str() + r.stdout.str()


def test_ab_whose_arms_do_not_differ_is_a_clear_error(pytester):
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=matrix())
    r = run(pytester, "--perf-ab-head", "env.FAKE_TPS=2000")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "identical to the base arm" in r.stderr.str()


def test_restarts_start_each_config_r_times_and_keep_start_means(pytester):
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=matrix(restarts=3))
    r = run(pytester, "--perf-json=out/r.json", "--perf-update-baselines", "--perf-baselines=bl")
    assert r.ret == 0, r.stdout.str()
    assert (pytester.path / "starts.txt").read_text().split() == ["base"] * 3
    data = json.loads((pytester.path / "out" / "r.json").read_text())
    starts = {s["start"] for run_ in data["runs"] for s in run_["samples"]}
    assert starts == {0, 1, 2}
    assert data["environment"]["starts"]["restarts"] == 3
    stored = next((pytester.path / "bl").rglob("*.yaml")).read_text()
    assert "starts:" in stored  # per-start means kept with the baseline
    # the next run is judged on start means against them: not a failure (the
    # fake's rate is exact only on a quiet machine, so pass or inconclusive)
    r2 = run(pytester, "--perf-json=out/r2.json", "--perf-baselines=bl")
    assert r2.ret == 0, r2.stdout.str()
    res = json.loads((pytester.path / "out" / "r2.json").read_text())["results"]
    tg = [x for x in res if x["metric"] == "tg_tps"]
    assert len(tg) == 1 and tg[0]["verdict"] in ("pass", "inconclusive", "improved")
    assert tg[0]["comparison"]["n_current"] == tg[0]["comparison"]["n_baseline"] == 3  # starts, not samples
    assert "start" in tg[0]["comparison"]["reason"]
    # pytest-mxfp4 compare makes the same decision offline, on start means
    from pytest_mxfp4.cli.compare import compare_results

    again = compare_results([str(next((pytester.path / "bl").rglob("*.yaml")))], str(pytester.path / "out" / "r2.json"),
                            str(pytester.path / "matrix.yaml"))
    (c,) = [m for m in again.metrics if m.metric == "tg_tps"]
    assert c.verdict.value == tg[0]["verdict"]
    assert c.comparison.delta_pct == pytest.approx(tg[0]["comparison"]["delta_pct"], rel=1e-4)
    assert c.comparison.tolerance_pct == pytest.approx(tg[0]["comparison"]["tolerance_pct"], rel=1e-4)


def test_ab_run_reports_both_arms_and_a_pr_comment(pytester):
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=matrix(restarts=3, tps=2000))
    r = run(pytester, "--perf-ab-head", "env.FAKE_TPS=1000", "--perf-ab-head", "env.FAKE_ARM=head",
            "--perf-json=out/r.json", "--perf-pr-comment=out/pr.md", "--perf-report=out/page.md")
    out = r.stdout.str()
    assert r.ret == pytest.ExitCode.TESTS_FAILED, out  # head decodes at half the rate: regressed
    assert (pytester.path / "starts.txt").read_text().split() == ["base", "head", "head", "base", "base", "head"]
    assert "A/B (head = base + env.FAKE_TPS=1000, env.FAKE_ARM=head)" in out
    assert "-> regressed" in out
    assert "NO BASELINE" not in out  # an A/B judges head by base; no stored baseline is needed
    data = json.loads((pytester.path / "out" / "r.json").read_text())
    ab = data["environment"]["starts"]["ab"]
    tg = [e for e in ab if e["metric"] == "tg_tps"][0]
    assert tg["verdict"] == "regressed" and len(tg["base_starts"]) == len(tg["head_starts"]) == 3
    assert -60 < tg["delta_pct"] < -40 and tg["ci_low_pct"] < tg["delta_pct"] < tg["ci_high_pct"]
    pr = (pytester.path / "out" / "pr.md").read_text()
    assert pr.startswith("❌ **pytest-mxfp4 A/B: regression**") and "| fake | tg16 | tg_tps |" in pr
    assert "## Server starts and A/B" in (pytester.path / "out" / "page.md").read_text()


def test_ab_arm_that_fails_to_start_keeps_the_other_and_errors(pytester):
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=matrix(restarts=2))
    r = run(pytester, "--perf-ab-head", "env.FAKE_FAIL=1", "--perf-json=out/r.json", "--perf-pr-comment=out/pr.md")
    assert r.ret == pytest.ExitCode.TESTS_FAILED
    data = json.loads((pytester.path / "out" / "r.json").read_text())
    ab = data["environment"]["starts"]["ab"]
    assert ab and all(e["verdict"] == "error" for e in ab)
    assert "head arm measured no start" in ab[0]["error"]
    base = [x for x in data["results"] if x["server"] == "fake" and x["metric"] == "tg_tps"]
    # the base arm's 2 starts x 3 runs are kept (on a busy box, samples flagged client-behind are not trusted)
    assert base and (base[0]["n"] == 6 or (base[0]["n"] >= 1 and base[0]["flagged_samples"] > 0)), base[0]
    assert (pytester.path / "out" / "pr.md").read_text().startswith("💥")


# -- the planted-slowdown knob ------------------------------------------------------


def _procs_with(marker: str) -> list[int]:
    import os

    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{p}/cmdline").read_bytes():
                    out.append(int(p))
            except OSError:
                pass
    return out


def test_with_neighbour_runs_cmd_and_its_neighbour_dies_with_it(tmp_path):
    import subprocess
    import uuid

    marker = f"nb-{uuid.uuid4().hex}"
    script = Path(__file__).parent.parent / "scripts" / "with_neighbour.py"
    code = "import sys,time; time.sleep(0.3); sys.exit(5)"
    p = subprocess.Popen([sys.executable, str(script), "--duty", "0.05", sys.executable, "-c", code, marker])
    import time

    time.sleep(0.15)
    assert len(_procs_with(marker)) == 3  # wrapper, neighbour, CMD
    assert p.wait(10) == 5  # CMD's exit status
    time.sleep(0.1)
    assert _procs_with(marker) == []
    # SIGTERM to the wrapper reaches CMD; nothing is left behind
    p = subprocess.Popen([sys.executable, str(script), "--duty", "0.05", "--", sys.executable, "-c",
                          "import time; time.sleep(30)", marker])
    time.sleep(0.3)
    p.terminate()
    assert p.wait(10) != 0
    time.sleep(0.1)
    assert _procs_with(marker) == []
    bad = subprocess.run([sys.executable, str(script), "--duty", "1.5", "true"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--duty must be in [0, 1)" in bad.stderr


def test_inconclusive_first_look_adds_starts_up_to_the_budget(pytester):
    # starts alternate +-10% (FAKE_JITTER), head 3% slower: beyond the 1% floor,
    # within the between-start noise -> inconclusive at 2 starts per arm, so the
    # budget's 2 more starts per arm run, and the verdict is taken on 4 + 4
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=matrix(restarts=2, extra_env=", FAKE_JITTER: '0.1'"))
    r = run(pytester, "--perf-max-restarts=4", "--perf-ab-head", "env.FAKE_TPS=1940", "--perf-json=out/r.json")
    assert r.ret == 0, r.stdout.str()  # inconclusive is never a failure
    assert len((pytester.path / "starts.txt").read_text().split()) == 8
    data = json.loads((pytester.path / "out" / "r.json").read_text())
    (tg,) = [e for e in data["environment"]["starts"]["ab"] if e["metric"] == "tg_tps"]
    # 4 + 4 starts ran; a start whose every sample a busy box flagged client-behind has no clean mean
    assert len(tg["base_starts"]) + len(tg["head_starts"]) >= 7 and max(len(tg["base_starts"]), len(tg["head_starts"])) == 4
    assert tg["verdict"] == "inconclusive" and tg["looks"] == 2
    # a clear first look does not spend the budget
    (pytester.path / "starts.txt").unlink()
    pytester.makefile(".yaml", matrix=matrix(restarts=1))
    r = run(pytester, "--perf-max-restarts=2", "--perf-ab-head", "env.FAKE_TPS=500", "-rs")
    assert r.ret == pytest.ExitCode.TESTS_FAILED  # regressed at the first look (-75%, prior-only noise)
    assert len((pytester.path / "starts.txt").read_text().split()) == 2
    assert "start 2 of the budget not needed" in r.stdout.str()


def test_nvidia_preflight_on_a_fake_nvml():
    from types import SimpleNamespace

    from pytest_mxfp4.observe.telemetry import gpu_busy

    from .fakes.fake_nvml import FakeNvml

    class Quiet(FakeNvml):
        def nvmlDeviceGetUtilizationRates(self, h):
            return SimpleNamespace(gpu=0, memory=0)

        def nvmlDeviceGetComputeRunningProcesses(self, h):
            return [SimpleNamespace(pid=p) for p in self.pids]

    n = Quiet(reasons=(0x1,), sm_clock=345)
    n.pids = []
    h = {0: n.nvmlDeviceGetHandleByIndex(0)}
    assert gpu_busy(n, h)[0] == []  # idle, idle clocks, nobody else
    n.pids = [4242]
    assert "1 other compute process(es) (pid 4242)" in gpu_busy(n, h)[0][0]
    n.pids, n.reasons, n.reads = [], [0x4], 0
    assert "sw_power_cap" in gpu_busy(n, h)[0][0]
    n.reasons, n.reads, n.sm_clock = [0x0], 0, 1980
    assert gpu_busy(n, h)[0] == []  # an SM clock still high after the last start disturbs nothing
    busy = FakeNvml()  # 97% utilisation
    assert "97% busy" in gpu_busy(busy, {0: busy.nvmlDeviceGetHandleByIndex(0)})[0][0]


def test_the_minutes_budget_stops_extra_starts(pytester):
    # inconclusive at the first look (as above), but 2 more starts per arm would
    # pass a 0.1-minute budget: no extra start runs, the verdict stays inconclusive
    pytester.makepyfile(test_perf=PERF_TEST)
    m = matrix(restarts=2, extra_env=", FAKE_JITTER: '0.1'").replace("  restarts: 2\n",
                                                                      "  restarts: 2\n  max_restart_minutes: 0.1\n")
    pytester.makefile(".yaml", matrix=m)
    r = run(pytester, "--perf-max-restarts=4", "--perf-ab-head", "env.FAKE_TPS=1940", "-rs", "--perf-json=out/r.json")
    assert r.ret == 0, r.stdout.str()
    assert len((pytester.path / "starts.txt").read_text().split()) == 4
    assert "would pass the 0.1-minute budget" in r.stdout.str()
    st = json.loads((pytester.path / "out" / "r.json").read_text())["environment"]["starts"]
    assert len(st["start_seconds"]) == 4 and st["budget_notes"]


def test_the_config_named_test_is_the_first_look_not_an_extra_start():
    # 3 starts judged first, up to 8: the JUnit name NAME carries the first
    # look's verdict (start 2); extra starts 3..7 are NAME#i (skipped when not needed)
    ids = [s.id for s in plan_starts(["a"], 8, False, first_look=3)]
    assert sorted(ids) == sorted(["a#0", "a#1", "a", "a#3", "a#4", "a#5", "a#6", "a#7"])
    assert [s.start for s in plan_starts(["a"], 8, False, first_look=3) if s.id == "a"] == [2]


def test_disturbed_start_is_left_out_and_replaced(pytester):
    # a neighbour spins a core for the whole of the base arm's second start:
    # that start is reported disturbed, left out of the verdict, and a spare
    # start of the base arm replaces it, so the verdict still has 3 + 3 starts
    pytester.makepyfile(test_perf=PERF_TEST)
    m = matrix(restarts=3, extra_env=", FAKE_NEIGHBOUR_START: '3'", leave_out="true", spares=2)
    pytester.makefile(".yaml", matrix=m)
    r = run(pytester, "--perf-ab-head", "env.FAKE_ARM=head", "--perf-json=out/r.json",
            "--perf-pr-comment=out/pr.md", "--perf-report=out/page.md")
    out = r.stdout.str()
    st = json.loads((pytester.path / "out" / "r.json").read_text())["environment"]["starts"]
    # ABBA: base head head base -> the 4th start (index 3) is the base arm's start 1
    burst = [w for w in st["windows"] if w["server"] == "fake" and w["start"] == 1]
    assert burst and burst[0]["disturbed"] and "other processes kept" in burst[0]["disturbed"], st["windows"]
    assert "[fake start 1] tg16 disturbed: other processes kept" in out
    (tg,) = [e for e in st["ab"] if e["metric"] == "tg_tps"]
    assert "fake start 1 (other processes kept" in tg["disturbed"]
    base_tried = (pytester.path / "starts.txt").read_text().split().count("base")
    left_out = {w["start"] for w in st["windows"] if w["server"] == "fake" and w["disturbed"]}
    assert base_tried == 3 + min(len(left_out), 2)  # each left-out start replaced while spares last
    assert len(tg["base_starts"]) == base_tried - len(left_out)
    assert "Disturbed while measuring" in (pytester.path / "out" / "pr.md").read_text()
    assert "fake start 1 tg16" in (pytester.path / "out" / "page.md").read_text()


def test_report_from_the_json_rebuilds_the_page_the_run_wrote(pytester):
    # one writer: the page a run writes and the page `pytest-mxfp4 report` builds
    # from that run's JSON are the same page, byte for byte but the time it was made
    from pytest_mxfp4.cli.report import report_command

    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=matrix(restarts=2))
    r = run(pytester, "--perf-ab-head", "env.FAKE_TPS=1900", "--perf-json=out/r.json", "--perf-report=out/page.md")
    assert r.ret in (0, 1), r.stdout.str()
    ran = (pytester.path / "out" / "page.md").read_text()
    assert "## Server starts and A/B" in ran
    (pytester.path / "baselines").mkdir(exist_ok=True)
    assert report_command([str(pytester.path / "out" / "r.json")], str(pytester.path / "baselines"),
                          str(pytester.path / "matrix.yaml"), str(pytester.path / "again.md"), None) == 0
    again = (pytester.path / "again.md").read_text()

    def timeless(page: str) -> list[str]:
        return [ln for ln in page.splitlines() if not ln.startswith("Generated by pytest-mxfp4")]

    assert timeless(again) == timeless(ran)
