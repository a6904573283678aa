"""Baseline store: round trip, atomic writes, history, clear errors."""

from pathlib import Path

import pytest
import yaml

from pytest_mxfp4.formats.baselines import HISTORY_LIMIT, BaselineStore, model_slug, read_baseline
from pytest_mxfp4.errors import BaselineError

ROOT = Path(__file__).resolve().parents[1]


def test_round_trip_and_history(tmp_path):
    store = BaselineStore(tmp_path)
    measured = {"tg32/tg_tps": ("tok/s", [300.0, 310.0, 305.0]), "pp512/pp_tps": ("tok/s", [9000.0, 9100.0])}
    path = store.update("cpu-x86_64-test-2c", "tiny", "tiny-eager", measured, engine={"runner": "process"},
                        environment={"os": "Linux"})
    assert path == tmp_path / "cpu-x86_64-test-2c" / "tiny" / "tiny-eager.yaml"
    bf = store.load("cpu-x86_64-test-2c", "tiny", "tiny-eager")
    m = bf.metrics["tg32/tg_tps"]
    assert m.samples == [300.0, 310.0, 305.0] and m.n == 3 and m.mean == pytest.approx(305.0)
    assert m.stdev == pytest.approx(5.0) and len(m.history) == 1
    stats = m.stats()
    assert stats.n == 3 and stats.mean == pytest.approx(305.0)
    # second update appends to history, keeps other metrics
    store.update("cpu-x86_64-test-2c", "tiny", "tiny-eager", {"tg32/tg_tps": ("tok/s", [301.0, 302.0])}, {}, {})
    bf = store.load("cpu-x86_64-test-2c", "tiny", "tiny-eager")
    assert len(bf.metrics["tg32/tg_tps"].history) == 2 and "pp512/pp_tps" in bf.metrics
    assert not list(path.parent.glob(".*")), "no temp files left behind"


def test_history_is_bounded(tmp_path):
    store = BaselineStore(tmp_path)
    for i in range(HISTORY_LIMIT + 5):
        store.update("k", "m", "s", {"tg32/tg_tps": ("tok/s", [100.0 + i, 101.0 + i])}, {}, {})
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
    p = store.update("k", "openai/gpt-oss-120b", "s", {"tg32/tg_tps": ("tok/s", [31.5812345678, 31.6])}, {}, {})
    assert p.parent.name == "openai--gpt-oss-120b"
    data = yaml.safe_load(p.read_text())
    assert data["metrics"]["tg32/tg_tps"]["samples"] == [31.5812, 31.6]
    assert list(data)[:4] == ["schema", "hardware_key", "model", "server"]


def test_model_slug():
    assert model_slug("openai/gpt-oss-120b") == "openai--gpt-oss-120b"
    assert model_slug("tiny") == "tiny"
    assert model_slug("/abs/path/models/tiny/") == "tiny"
