"""`pytest -m perf` with every server in a real container (configs/cpu-docker.yaml):
two backend combinations measured end to end with verdicts, the observed-
vs-requested check failing on a deliberate mismatch, and Ctrl-C while a
container starts leaving nothing behind."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "pytest-mxfp4/vllm-cpu:0.32.0"
pytestmark = pytest.mark.docker


def _daemon_and_image():
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
        client.images.get(IMAGE)
        return client
    except Exception as e:  # no SDK, no daemon, or no image
        pytest.skip(f"docker daemon + {IMAGE} needed (docker/start-dockerd.sh, docker/build.sh): {e}")


@pytest.fixture(scope="module")
def client():
    return _daemon_and_image()


def ours(client) -> list:
    return client.containers.list(all=True, filters={"label": "pytest-mxfp4=1"})


def run_perf(matrix: Path, baselines: Path, out: Path, *extra: str, timeout: int = 1200):
    cmd = [sys.executable, "-m", "pytest", "tests/perf/test_perf.py", "-m", "perf", "-p", "no:cacheprovider", "-rA",
           f"--perf-config={matrix}", f"--perf-baselines={baselines}", f"--perf-output={out / 'run'}",
           f"--perf-json={out / 'results.json'}", *extra]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def small_docker_matrix(tmp: Path, servers: str | None = None) -> Path:
    """configs/cpu-docker.yaml with fewer cases (pp512, tg32; 3 runs), to keep
    CI short; its servers unless others are given. Gates on cases this
    matrix does not have are dropped (the matrix would refuse them)."""
    import yaml

    base = yaml.safe_load((ROOT / "configs/cpu-docker.yaml").read_text())
    if servers is not None:
        base["servers"] = yaml.safe_load(textwrap.dedent(servers))
    base["workloads"] = {**{k: v for k, v in base["workloads"].items() if k not in ("prefill", "decode", "runs")},
                         "prefill": {"pp": [512]}, "decode": {"tg": [32], "pp": 512}, "runs": 3, "warmup": 1,
                         # the container machinery, not the between-start statistics (test_engine/test_ab do those)
                         "restarts": 1, "max_restarts": 1}
    gates = base.get("gates") or {}
    base["gates"] = {k: v for k, v in gates.items() if k == "default" or k.partition("/")[0] in ("pp512", "tg32")}
    p = tmp / "m.yaml"
    p.write_text(yaml.safe_dump(base))
    return p


def test_two_backend_combinations_in_containers_end_to_end(client, tmp_path):
    # the shipped configs/cpu-docker.yaml servers, on fewer cases
    matrix = small_docker_matrix(tmp_path)
    first = run_perf(matrix, tmp_path / "b", tmp_path / "first", "--perf-update-baselines")
    assert first.returncode == 0, first.stdout[-5000:]
    second = run_perf(matrix, tmp_path / "b", tmp_path / "second")
    data = json.loads((tmp_path / "second/results.json").read_text())
    # This checks the container machinery, not the CPU engine's stability
    # (the process-runner A/A in test_engine.py does that): the exit code must
    # agree with the verdicts, whatever they are.
    gated_failures = [r for r in data["results"] if r["gate"] == "fail" and r["verdict"] in ("regressed", "error")]
    assert second.returncode == (1 if gated_failures else 0), second.stdout[-5000:]
    servers = {r["server"] for r in data["results"]}
    assert servers == {"tiny-eager-docker", "tiny-compiled-docker"}
    for r in data["results"]:
        assert r["verdict"] in ("pass", "improved", "inconclusive", "regressed"), r
        if r["metric"] in ("tg_tps", "pp_tps"):
            assert r["baseline"] is not None and r["n"] >= 3
    for name in servers:
        rec = data["servers"][name]
        assert rec["info"]["kind"] == "docker" and rec["info"]["details"]["image_id"].startswith("sha256:")
        assert rec["observed"]["vllm_version"] == "0.32.0"
    assert data["servers"]["tiny-eager-docker"]["observed"]["enforce_eager"] is True
    assert data["servers"]["tiny-compiled-docker"]["observed"]["enforce_eager"] is False
    assert ours(client) == [], "every container is removed after its last test"


def test_expectation_mismatch_fails_with_expected_observed_and_log_line(client, tmp_path):
    matrix = small_docker_matrix(tmp_path, """
        lying-eager:
          model: /models/tiny
          served_model_name: tiny
          args: [--enforce-eager, --max-model-len, "4096"]
          expect: {enforce_eager: false, kv_cache_dtype: fp8}
    """)
    r = run_perf(matrix, tmp_path / "b", tmp_path / "o")
    assert r.returncode == 1
    out = r.stdout
    assert "did not run what its config expects" in out
    assert "enforce_eager" in out and "kv_cache_dtype" in out
    assert "expected False, observed True (log: " in out, "the message quotes the log line that shows the fact"
    assert ours(client) == []


def test_sigint_while_container_starts_leaves_no_container(client, tmp_path):
    matrix = small_docker_matrix(tmp_path, """
        tiny-eager-docker:
          model: /models/tiny
          served_model_name: tiny
          args: [--enforce-eager, --max-model-len, "4096"]
    """)
    cmd = [sys.executable, "-m", "pytest", "tests/perf/test_perf.py", "-m", "perf", "-p", "no:cacheprovider",
           f"--perf-config={matrix}", f"--perf-baselines={tmp_path / 'b'}", f"--perf-output={tmp_path / 'o'}"]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    while not ours(client) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert ours(client), "the container never started"
    time.sleep(2)
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=90)
    deadline = time.monotonic() + 30
    while ours(client) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert ours(client) == [], out[-3000:]
    assert p.returncode == pytest.ExitCode.INTERRUPTED
