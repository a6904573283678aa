"""Fault suite, offline CLI (`pytest-mxfp4 compare | report | observe`): what
must be refused is refused with exit 2 and one line on stderr, no traceback,
and nothing is written or overwritten."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mxfp4.formats.baselines import BaselineStore

ROOT = Path(__file__).resolve().parents[1]
SEEDED = ROOT / "baselines/nvidia-gb10-sm121/openai--gpt-oss-120b/upstream-baseline.yaml"
CPU_KEY = "cpu-x86_64-amd-epyc-2c"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest_mxfp4.cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd or ROOT)


def refused(r: subprocess.CompletedProcess, *words: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert "Traceback" not in r.stderr and len(err.splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)
    return err


def result_file(path: Path, hardware_key: str | None = None, server: str = "upstream-baseline",
                tg32=(31.6, 31.55, 31.62, 31.57, 31.59)) -> Path:
    env = {"hardware_key": hardware_key} if hardware_key else {}
    path.write_text(json.dumps({"schema": 1, "matrix": "m", "environment": env, "results": [
        {"server": server, "workload": "tg32", "metric": "tg_tps", "samples": list(tg32),
         "case": {"kind": "decode", "pp": 2048, "tg": 32, "depth": 0}}]}))
    return path


# -- compare -----------------------------------------------------------------------


def test_compare_refuses_a_baseline_from_other_hardware(tmp_path):
    cur = result_file(tmp_path / "cpu.json", CPU_KEY, tg32=[300.0, 301.0, 299.0, 300.5, 300.2])
    refused(cli("compare", SEEDED, cur), "measured on nvidia-gb10-sm121", CPU_KEY, "same hardware")


def test_compare_refuses_result_references_from_other_hardware(tmp_path):
    ref = result_file(tmp_path / "ref.json", "nvidia-h200-sm90")
    cur = result_file(tmp_path / "cur.json", CPU_KEY)
    refused(cli("compare", ref, cur), "nvidia-h200-sm90", CPU_KEY)


def test_compare_refuses_results_that_match_no_baseline(tmp_path):
    cur = result_file(tmp_path / "cur.json", "nvidia-gb10-sm121", server="upstrem-baseline")
    refused(cli("compare", SEEDED, cur), "none of its 1 results matches a reference", "upstrem-baseline",
            "upstream-baseline")


def test_compare_same_hardware_still_judges(tmp_path):
    cur = result_file(tmp_path / "cur.json", "nvidia-gb10-sm121")
    r = cli("compare", SEEDED, cur)
    assert r.returncode == 0 and "tg32/tg_tps" in r.stdout, r.stderr


@pytest.mark.parametrize("content,words", [
    ("", "not valid JSON"),
    ('{"schema": 2, "results": []}', "holds no results"),
    (b"\xff\xfe\x00\x89PNG binary", "not a text file"),
    ('{"schema": 1, "results": [{"server": "s"}]}', "results[0]"),
], ids=["empty-file", "no-results", "binary", "malformed-record"])
def test_compare_refuses_empty_or_malformed_results(tmp_path, content, words):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    refused(cli("compare", SEEDED, bad), str(bad), words)


def test_compare_refuses_a_missing_reference(tmp_path):
    cur = result_file(tmp_path / "cur.json")
    refused(cli("compare", tmp_path / "nope.yaml", cur), "not found")


# -- observe -----------------------------------------------------------------------


def test_observe_refuses_a_binary_file(tmp_path):
    blob = tmp_path / "server.log"
    blob.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 4)
    refused(cli("observe", blob), "not a text log")


def test_observe_refuses_an_empty_log(tmp_path):
    empty = tmp_path / "server.log"
    empty.write_text("")
    refused(cli("observe", empty), "is empty")


def test_observe_refuses_a_directory(tmp_path):
    refused(cli("observe", tmp_path), "is a directory")


# -- report --------------------------------------------------------------------------


def _baselines(tmp_path: Path) -> Path:
    root = tmp_path / "baselines"
    BaselineStore(root).update(CPU_KEY, "tiny", "tiny-eager", {"tg32/tg_tps": ("tok/s", [300.0, 301.0, 302.0])})
    return root


def test_report_refuses_to_overwrite_a_hand_kept_page(tmp_path):
    page = tmp_path / "BENCHMARK_RESULTS.md"
    page.write_text("# Our results\n\nkept by hand\n")
    refused(cli("report", "--baselines", _baselines(tmp_path), "--out", page), "not written by pytest-mxfp4",
            "--force")
    assert page.read_text() == "# Our results\n\nkept by hand\n"


def test_report_overwrites_its_own_page_and_a_hand_kept_one_only_with_force(tmp_path):
    b = _baselines(tmp_path)
    page = tmp_path / "page.md"
    assert cli("report", "--baselines", b, "--out", page).returncode == 0
    first = page.read_text()
    assert "tiny-eager" in first
    r = cli("report", "--baselines", b, "--out", page)
    assert r.returncode == 0, r.stderr  # its own page: regenerated
    hand = tmp_path / "hand.md"
    hand.write_text("mine")
    assert cli("report", "--baselines", b, "--out", hand, "--force").returncode == 0
    assert "tiny-eager" in hand.read_text()


def test_report_refuses_malformed_results(tmp_path):
    bad = tmp_path / "r.json"
    bad.write_text('{"schema": 2')
    page = tmp_path / "page.md"
    refused(cli("report", bad, "--baselines", _baselines(tmp_path), "--out", page), "not valid JSON")
    assert not page.exists()


def test_report_refuses_a_baselines_dir_with_a_duplicate_key(tmp_path):
    b = _baselines(tmp_path)
    (f,) = list(b.rglob("*.yaml"))
    f.write_text(f.read_text() + "schema: 1\n")
    refused(cli("report", "--baselines", b, "--out", tmp_path / "p.md"), "duplicate key 'schema'", str(f))
