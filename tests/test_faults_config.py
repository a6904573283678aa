"""Fault suite, config: every mistake that used to switch the gate off (or
that must keep failing) is one line naming the file and the field, and the
file is left as it was. See README "What the gate refuses"."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pytest_mxfp4.formats.config import Workloads, load_matrix
from pytest_mxfp4.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

BASE = """\
servers:
  a: {model: m, command: [serve, "{model}"]}
workloads:
  prefill: {pp: [512]}
  decode: {tg: [32, 128], pp: 256}
"""


def refused(tmp_path: Path, text: str, *words: str) -> str:
    """Load `text`; it must fail with one line naming the file and `words`; the file is untouched."""
    path = tmp_path / "matrix.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_matrix(path)
    msg = str(e.value)
    assert "\n" not in msg, msg
    assert msg.startswith(str(path)), msg
    for w in words:
        assert w in msg, (w, msg)
    assert path.read_text() == text  # nothing lost
    return msg


@pytest.mark.parametrize("text,line,key", [
    (BASE + "gates:\n  tg32: fail\ngates:\n  tg32: off\n", 8, "gates"),
    ("servers:\n  a: {model: m, command: [x]}\nservers:\n  b: {model: m, command: [x]}\n"
     "workloads:\n  decode: {tg: [32]}\n", 3, "servers"),
    ("servers:\n  a:\n    model: m\n    command: [x]\n    model: other\nworkloads:\n  decode: {tg: [32]}\n", 5, "model"),
    (BASE + "gates:\n  tg32: fail\n  tg32: warn\n", 8, "tg32"),
    ("servers:\n  a: {model: m, command: [x], env: {A: '1', A: '2'}}\nworkloads:\n  decode: {tg: [32]}\n", 2, "A"),
], ids=["top-level-gates", "servers-block", "server-field", "gate-rule", "flow-mapping-env"])
def test_duplicate_yaml_keys_are_refused_with_line_numbers(tmp_path, text, line, key):
    msg = refused(tmp_path, text, f"line {line}", f"duplicate key {key!r}", "first on line")


def test_merge_keys_may_still_override(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("servers:\n  a: &a {model: m, command: [x], description: one}\n"
                    "  b:\n    <<: *a\n    description: two\nworkloads:\n  decode: {tg: [32]}\n")
    m = load_matrix(path)
    assert m.server("b").description == "two"


@pytest.mark.parametrize("gates,field", [
    ("gates:\n  tg66: fail\n", "gates.tg66"),
    ("gates:\n  pp4096/pp_tps: fail\n", "gates.pp4096/pp_tps"),
    ("gates:\n  tg32@d4096: {policy: fail}\n", "gates.tg32@d4096"),
], ids=["typo-case", "case-metric", "depth-case"])
def test_gate_keys_that_match_no_case_are_refused(tmp_path, gates, field):
    refused(tmp_path, BASE + gates, field, "names no case", "tg32")


def test_target_that_matches_no_case_is_refused(tmp_path):
    refused(tmp_path, BASE + "targets:\n  - {engine: llama.cpp, metric: tg64, value: 57.8}\n",
            "targets[0].metric", "names no case")


@pytest.mark.parametrize("floor", [100, 150, 1e6])
def test_floors_that_cannot_fail_are_refused(tmp_path, floor):
    refused(tmp_path, BASE + f"gates:\n  tg32: {{policy: fail, floor_pct: {floor}}}\n",
            "gates.tg32.floor_pct", "can never fail")


def test_a_floor_below_100_is_kept(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(BASE + "gates:\n  tg32: {policy: fail, floor_pct: 99}\n")
    m = load_matrix(path)
    assert m.gates.floors == {"tg32": 99.0} and m.gates.rules == {"tg32": "fail"}


@pytest.mark.parametrize("value", ['"false"', '"no"', "0", "[]"])
def test_reset_prefix_cache_must_be_a_boolean(tmp_path, value):
    refused(tmp_path, BASE.replace("workloads:\n", f"workloads:\n  reset_prefix_cache: {value}\n"),
            "workloads.reset_prefix_cache", "expected true or false")


def test_reset_prefix_cache_false_is_false(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(BASE.replace("workloads:\n", "workloads:\n  reset_prefix_cache: false\n"))
    assert load_matrix(path).workloads.reset_prefix_cache is False


@pytest.mark.parametrize("field,value,words", [
    ("request_timeout_s", "soon", "expected a number"),
    ("request_timeout_s", 0, "must be >= 1"),
    ("idle_timeout_s", -5, "must be >= 1"),
    ("idle_timeout_s", ".inf", "finite"),
])
def test_request_timeouts_are_validated(tmp_path, field, value, words):
    refused(tmp_path, BASE.replace("workloads:\n", f"workloads:\n  {field}: {value}\n"), f"workloads.{field}", words)


def test_request_timeouts_have_bounded_defaults_and_can_be_set(tmp_path):
    assert 0 < Workloads.idle_timeout_s <= Workloads.request_timeout_s <= 600
    path = tmp_path / "m.yaml"
    path.write_text(BASE.replace("workloads:\n", "workloads:\n  request_timeout_s: 20\n  idle_timeout_s: 5\n"))
    w = load_matrix(path).workloads
    assert (w.request_timeout_s, w.idle_timeout_s) == (20.0, 5.0)


def test_python_tags_stay_refused(tmp_path):
    refused(tmp_path, BASE + "name: !!python/object/apply:os.system ['true']\n", "not valid YAML")


def test_shipped_matrices_still_load():
    for path in sorted((ROOT / "configs").glob("*.yaml")):
        m = load_matrix(path)
        assert m.gates.rules, path


def test_pytest_with_a_duplicate_key_matrix_exits_4_with_one_line(tmp_path):
    (tmp_path / "m.yaml").write_text(BASE + "gates:\n  tg32: fail\ngates:\n  tg32: off\n")
    (tmp_path / "test_x.py").write_text("def test_x():\n    pass\n")
    r = subprocess.run([sys.executable, "-m", "pytest", "-m", "perf", "-p", "no:cacheprovider",
                        f"--perf-config={tmp_path / 'm.yaml'}", str(tmp_path / "test_x.py")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 4, out
    lines = [ln for ln in out.splitlines() if "duplicate key" in ln]
    assert len(lines) == 1 and "line 8" in lines[0], out
    assert "Traceback" not in out
