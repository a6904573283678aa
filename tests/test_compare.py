"""`pytest-mxfp4 compare`: the gate's decision on stored files, offline."""

import json
from pathlib import Path

import pytest

from pytest_mxfp4.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
SEEDED = ROOT / "baselines/nvidia-gb10-sm121/openai--gpt-oss-120b/upstream-baseline.yaml"


def result_file(path: Path, tg32: list[float], pp2048: list[float], server="upstream-baseline") -> Path:
    def r(workload, metric, kind, pp, tg, samples):
        return {"server": server, "workload": workload, "metric": metric, "samples": samples,
                "case": {"kind": kind, "pp": pp, "tg": tg, "depth": 0}}

    path.write_text(json.dumps({"schema": 1, "matrix": "gb10", "environment": {}, "results": [
        r("tg32", "tg_tps", "decode", 2048, 32, tg32), r("pp2048", "pp_tps", "prefill", 2048, 1, pp2048)]}))
    return path


def test_parity_passes_against_the_seeded_results_page_baseline(tmp_path, capsys):
    cur = result_file(tmp_path / "cur.json", [31.60, 31.55, 31.62, 31.57, 31.59], [4335, 4350, 4338])
    assert main(["compare", str(SEEDED), str(cur)]) == 0
    out = capsys.readouterr().out
    assert "upstream-baseline  tg32/tg_tps" in out and "31.58" in out


def test_tg32_regression_exits_non_zero_and_says_which(tmp_path, capsys):
    cur = result_file(tmp_path / "cur.json", [30.9, 30.95, 30.88, 30.92, 30.9], [4335, 4350, 4338])
    assert main(["compare", str(SEEDED), str(cur)]) == 1
    out = capsys.readouterr().out
    assert "regressed" in out and "FAILED: 1 gated metric(s) regressed: upstream-baseline tg32/tg_tps" in out


def test_a_prefill_regression_only_warns_by_default(tmp_path):
    cur = result_file(tmp_path / "cur.json", [31.60, 31.55, 31.62], [3800, 3790, 3810, 3805, 3795])
    assert main(["compare", str(SEEDED), str(cur)]) == 0


def test_earlier_result_files_are_references_too(tmp_path):
    ref = result_file(tmp_path / "ref.json", [200.0, 201.0, 199.5, 200.5, 200.2], [9000, 9050, 8990])
    same = result_file(tmp_path / "same.json", [200.3, 199.8, 200.9, 200.1, 199.9], [9010, 9020, 9000])
    slow = result_file(tmp_path / "slow.json", [150.0, 151.0, 149.0, 150.5, 150.2], [9010, 9020, 9000])
    assert main(["compare", str(ref), str(same)]) == 0
    assert main(["compare", str(ref), str(slow)]) == 1


@pytest.mark.parametrize("content,words", [
    ("{not json", "not valid JSON"),
    ('{"schema": 99, "results": []}', "result schema 99 is not one this version reads"),
    ('{"schema": 2, "results": []}', "holds no results"),
    ('[1, 2]', "not a pytest-mxfp4 result file"),
    ('{"schema": 1, "results": [{"server": "s", "workload": "tg32", "samples": [1.0]}]}', "results[0].metric: missing"),
    ('{"schema": 1, "results": [{"server": "s", "metric": "tg_tps", "samples": [1.0]}]}', "results[0].case: missing"),
    ('{"schema": 1, "results": [{"server": "s", "metric": "tg_tps", "samples": ["fast"],'
     ' "case": {"kind": "decode", "pp": 1, "tg": 32}}]}', "results[0].samples[0]: expected a finite number"),
    ('{"schema": 1, "results": [{"server": 7, "metric": "tg_tps", "samples": [],'
     ' "case": {"kind": "decode", "pp": 1, "tg": 32}}]}', "results[0].server: expected str"),
])
def test_bad_files_get_one_clear_line(tmp_path, capsys, content, words):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    assert main(["compare", str(SEEDED), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pytest-mxfp4 compare: ") and str(bad) in err and words in err


def test_missing_reference_is_clear(tmp_path, capsys):
    cur = result_file(tmp_path / "cur.json", [31.6], [4335])
    assert main(["compare", str(tmp_path / "nope.yaml"), str(cur)]) == 2
    assert "nope.yaml: not found" in capsys.readouterr().err
