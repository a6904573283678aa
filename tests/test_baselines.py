"""Baseline store: round trip, atomic writes, history, clear errors."""

from pathlib import Path

import pytest
import yaml

from pytest_mxfp4.formats.facts import ObservedFacts
from pytest_mxfp4.formats.baselines import (HISTORY_LIMIT, BaselineEngine, BaselineEnvironment, BaselineFile, BaselineStore,
                                            model_slug, read_baseline)
from pytest_mxfp4.errors import BaselineError

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip_and_history(tmp_path):
    store = BaselineStore(tmp_path)
    measured = {"tg32/tg_tps": ("tok/s", [300.0, 310.0, 305.0]), "pp512/pp_tps": ("tok/s", [9000.0, 9100.0])}
    path = store.update("cpu-x86_64-test-2c", "tiny", "tiny-eager", measured, engine=BaselineEngine(runner="process"),
                        environment=BaselineEnvironment.from_dict({"os": "Linux"}))
    assert path == tmp_path / "cpu-x86_64-test-2c" / "tiny" / "tiny-eager.yaml"
    bf = store.load("cpu-x86_64-test-2c", "tiny", "tiny-eager")
    m = bf.metrics["tg32/tg_tps"]
    assert m.samples == [300.0, 310.0, 305.0] and m.n == 3 and m.mean == pytest.approx(305.0)
    assert m.stdev == pytest.approx(5.0) and len(m.history) == 1
    stats = m.stats()
    assert stats.n == 3 and stats.mean == pytest.approx(305.0)
    # second update appends to history, keeps other metrics
    store.update("cpu-x86_64-test-2c", "tiny", "tiny-eager", {"tg32/tg_tps": ("tok/s", [301.0, 302.0])})
    bf = store.load("cpu-x86_64-test-2c", "tiny", "tiny-eager")
    assert len(bf.metrics["tg32/tg_tps"].history) == 2 and "pp512/pp_tps" in bf.metrics
    assert not list(path.parent.glob(".*")), "no temp files left behind"


def test_history_is_bounded(tmp_path):
    store = BaselineStore(tmp_path)
    for i in range(HISTORY_LIMIT + 5):
        store.update("k", "m", "s", {"tg32/tg_tps": ("tok/s", [100.0 + i, 101.0 + i])})
    assert len(store.load("k", "m", "s").metrics["tg32/tg_tps"].history) == HISTORY_LIMIT


def test_summary_only_baseline_from_results_page():
    path = ROOT / "baselines/nvidia-gb10-sm121/openai--gpt-oss-120b/upstream-baseline.yaml"
    bf = read_baseline(path)
    tg32 = bf.metrics["tg32/tg_tps"]
    assert (tg32.mean, tg32.stdev, tg32.n, tg32.samples) == (31.58, 0.06, 10, None)
    assert bf.metrics["pp2048/pp_tps"].mean == 4340.70
    s = tg32.stats()
    assert s.mean == 31.58 and s.stdev == 0.06 and s.n == 10


@pytest.mark.parametrize(
    "content,words",
    [
        ("metrics: [1, 2", "not valid YAML"),
        ("- a list", "(top level): expected a mapping"),
        ("schema: 2\nhardware_key: k\nmodel: m\nserver: s\nmetrics: {}", "schema: expected 1"),
        ("schema: 1\nmodel: m\nserver: s\nmetrics: {}", "hardware_key: required"),
        ("schema: 1\nhardware_key: k\nmodel: m\nserver: s\nmetrics: {tg32/tg_tps: {mean: 1}}", "metrics.tg32/tg_tps.stdev: required"),
        ("schema: 1\nhardware_key: k\nmodel: m\nserver: s\nmetrics: {tg32/tg_tps: {samples: [1, .nan]}}", "finite numbers"),
        ("schema: 1\nhardware_key: k\nmodel: m\nserver: s\nmetrics: {tg32/tg_tps: {mean: 1, stdev: -1, n: 3}}", "stdev >= 0"),
        ("schema: 1\nhardware_key: k\nmodel: m\nserver: s\nmetrics: {tg32/tg_tps: {mean: 1, stdev: 0, n: 0}}", "positive integer"),
        ("schema: 1\nhardware_key: k\nmodel: m\nserver: s\nmetrics: {}\nengine: vllm", "engine: expected a mapping"),
        ("schema: 1\nhardware_key: k\nmodel: m\nserver: s\nmetrics: {}\nenvironment: [a]", "environment: expected a mapping"),
    ],
)
def test_malformed_files_name_file_and_field(tmp_path, content, words):
    p = tmp_path / "b.yaml"
    p.write_text(content)
    with pytest.raises(BaselineError) as e:
        read_baseline(p)
    assert str(e.value).startswith(str(p)) and words in str(e.value)
    assert "--perf-update-baselines" in str(e.value)


def test_files_are_reviewable_yaml(tmp_path):
    store = BaselineStore(tmp_path)
    p = store.update("k", "openai/gpt-oss-120b", "s", {"tg32/tg_tps": ("tok/s", [31.5812345678, 31.6])})
    assert p.parent.name == "openai--gpt-oss-120b"
    data = yaml.safe_load(p.read_text())
    assert data["metrics"]["tg32/tg_tps"]["samples"] == [31.5812, 31.6]
    assert list(data)[:4] == ["schema", "hardware_key", "model", "server"]


def test_model_slug():
    assert model_slug("openai/gpt-oss-120b") == "openai--gpt-oss-120b"
    assert model_slug("tiny") == "tiny"
    assert model_slug("/abs/path/models/tiny/") == "tiny"


STORED = ROOT / "tests" / "data" / "baselines"  # files as the store wrote them before engine/environment were typed


@pytest.mark.parametrize("rel", ["nvidia-gb10-sm121/openai--gpt-oss-120b/vllm-docker.yaml",
                                 "cpu-x86_64-epyc-2c/tiny/tiny-process.yaml"])
def test_a_stored_baseline_round_trips_byte_for_byte(tmp_path, rel):
    stored = STORED / rel
    bf = read_baseline(stored)
    assert BaselineStore(tmp_path).save(bf).read_bytes() == stored.read_bytes()


def test_the_typed_records_write_what_the_session_wrote_before():
    """The same server details, environment and log facts give the same bytes
    as the dicts the session built (the stored files were written from these)."""
    from pytest_mxfp4.formats.baselines import to_yaml
    from pytest_mxfp4.formats.results import RunEnvironment

    env = RunEnvironment.from_dict({
        "hardware_key": "nvidia-gb10-sm121", "hostname": "spark-1", "os": "Linux-6.11.0-1016-nvidia-aarch64",
        "arch": "aarch64", "cpu_model": "Cortex-X925", "cpu_count": 20, "memory_gib": 119.7, "python": "3.12.3",
        "plugin_version": "0.4.0", "git_sha": "0123456",
        "gpus": [{"name": "NVIDIA GB10", "sm": "12.1", "memory_mib": None, "driver": "580.95.05"}],
        "captured_at": "2026-01-09T16:25:01+00:00", "run_id": "20260109T162501-ab12", "telemetry": "nvml"})
    details = {"image": "vllm/vllm-openai:v0.13.0", "image_id": "sha256:abc",
               "repo_digests": ["vllm/vllm-openai@sha256:def"], "engine_version": None, "engine_version_source": None,
               "container_id": "0123456789ab", "packages": {"vllm": "0.13.0", "torch": "2.9.0"},
               "system_fingerprint": "fp_1"}
    observed = {"attention_backend": "TRITON_ATTN", "moe_backend": "MARLIN", "cudagraph": None, "unknown_env_vars": [],
                "deprecated_env_vars": ["VLLM_ATTENTION_BACKEND"], "vllm_version": "0.13.0"}
    command = ["vllm", "serve", "openai/gpt-oss-120b", "--api-key", "planted-arg-secret-1", "--port", "8000"]
    server_env = {"HF_TOKEN": "planted-env-secret-2", "VLLM_USE_FLASHINFER_MOE_MXFP4": "1"}
    stored = yaml.safe_load((STORED / "nvidia-gb10-sm121/openai--gpt-oss-120b/vllm-docker.yaml").read_text())
    assert stored["environment"]["hardware_key"] == "***"  # that store masked it as if it were a credential
    stored["environment"]["hardware_key"] = "nvidia-gb10-sm121"  # a lookup key: shown now
    bf = BaselineFile("nvidia-gb10-sm121", "openai/gpt-oss-120b", "vllm-docker",
                      engine=BaselineEngine.of_server(details, "docker"),
                      environment=BaselineEnvironment.of_run(env, command, server_env, ObservedFacts.from_dict(observed)))
    out = to_yaml(bf)
    dump = lambda d: yaml.safe_dump(d, sort_keys=False, allow_unicode=True, width=100)  # noqa: E731
    assert dump(out["engine"]) == dump(stored["engine"]) and dump(out["environment"]) == dump(stored["environment"])
    assert "planted" not in dump(out), "redacted on the way out"
    assert bf.environment.run.hostname is None and bf.environment.run.git_sha == "0123456"


def test_a_hand_kept_baseline_keeps_every_key():
    """A baseline seeded from the results page names what it likes: nothing is lost."""
    seed = ROOT / "baselines" / "nvidia-gb10-sm121" / "openai--gpt-oss-120b" / "upstream-baseline.yaml"
    bf = read_baseline(seed)
    raw = yaml.safe_load(seed.read_text())
    assert bf.engine.runner == "docker" and bf.engine.extra["cuda"] == "NGC 25.12"
    assert bf.environment.run.extra == {"gpu": "NVIDIA GB10 (SM121)"}
    assert bf.environment.observed.moe_backend == "MARLIN" and bf.environment.server_command is None
    from pytest_mxfp4.formats.baselines import to_yaml

    out = to_yaml(bf)
    assert list(out["engine"].items()) == list(raw["engine"].items())
    assert list(out["environment"].items()) == list(raw["environment"].items())
