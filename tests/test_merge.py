"""`pytest-mxfp4 merge`: shards of one run become one JSON and page; a missing,
duplicate or mismatched (matrix, split, hardware) shard is reported and
fails the merge, while the shards that ran are still written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mxfp4.formats import results as results_file
from pytest_mxfp4.cli.main import main as cli_main
from pytest_mxfp4.formats.config import Case
from pytest_mxfp4.formats.results import MetricResult, ServerRecord, SessionResults
from pytest_mxfp4.formats.results import RunEnvironment, ServerInfo
from pytest_mxfp4.stats.samples import Summary

ALL = ["a", "b", "c"]
PLAN = [["a"], ["b", "c"]]


def _shard(tmp_path: Path, k: int, servers: list[str], *, n: int = 2, hw: str = "cpu-x86_64-test-2c",
           matrix: str = "cpu", matrix_servers=None, plan=None, name: str | None = None) -> Path:
    env = {"hardware_key": hw, "hostname": f"box{k}",
           "shard": {"index": k, "count": n, "servers": servers, "matrix_servers": matrix_servers or ALL,
                     "plan": plan or PLAN, "costs_from": None, "runner": f"gb10-shard-{k}"}}
    s = SessionResults(matrix=matrix, environment=RunEnvironment.from_dict(env))
    for i, srv in enumerate(servers):
        s.servers[srv] = ServerRecord(name=srv, runner="process", model="tiny", info=ServerInfo(srv, "process", "http://127.0.0.1:1", startup_s=20.0 + i))
        case = Case("decode", pp=512, tg=32)
        s.metrics.append(MetricResult(server=srv, case=case, metric="tg_tps", gate="fail",
                                      samples=[100.0, 101.0, 99.0],
                                      summary=Summary.from_samples([100.0, 101.0, 99.0])))
    path = tmp_path / (name or f"shard-{k}.json")
    results_file.save(s, path)
    return path


def _keys(path: Path) -> set[tuple[str, str]]:
    return {(r.server, r.key) for r in results_file.load(path).metrics}


def test_two_shards_merge_into_one_run(tmp_path, capsys):
    s1, s2 = _shard(tmp_path, 1, ["a"]), _shard(tmp_path, 2, ["b", "c"])
    out = tmp_path / "merged.json"
    assert cli_main(["merge", str(s2), str(s1), "--json", str(out)]) == 0
    merged = results_file.load(out)
    assert sorted(merged.servers) == ALL
    assert _keys(out) == {(s, "tg32/tg_tps") for s in ALL}
    assert merged.servers["b"].shard == "2/2" and merged.servers["b"].shard_runner == "gb10-shard-2"
    assert [sh.index for sh in sorted(merged.shards, key=lambda x: x.index)] == [1, 2]
    assert merged.shard is None and "shard" not in merged.environment.extra  # the merged run is no shard
    assert "merged 2 shard file(s), 3 config(s)" in capsys.readouterr().out


def test_a_missing_shard_is_reported_and_the_rest_kept(tmp_path, capsys):
    s1 = _shard(tmp_path, 1, ["a"])
    out = tmp_path / "merged.json"
    assert cli_main(["merge", str(s1), "--json", str(out)]) == 1
    err = capsys.readouterr().err
    assert "missing shard 2/2: configs b, c not measured" in err
    assert sorted(results_file.load(out).servers) == ["a"]


def test_expect_shards_catches_a_run_that_was_split_too_few_ways(tmp_path, capsys):
    s1, s2 = _shard(tmp_path, 1, ["a"]), _shard(tmp_path, 2, ["b", "c"])
    assert cli_main(["merge", str(s1), str(s2), "--json", str(tmp_path / "m.json"), "--expect-shards", "3"]) == 1
    err = capsys.readouterr().err
    assert "expected 3 shards, the files say 2" in err and "missing shard 3/3" in err


def test_duplicate_shard_and_duplicate_config(tmp_path, capsys):
    s1 = _shard(tmp_path, 1, ["a"])
    again = _shard(tmp_path, 1, ["a"], name="shard-1-again.json")
    s2 = _shard(tmp_path, 2, ["b", "c"])
    assert cli_main(["merge", str(s1), str(again), str(s2), "--json", str(tmp_path / "m.json")]) == 1
    err = capsys.readouterr().err
    assert "duplicate shard 1/2: " in err and "shard-1-again.json" in err
    assert "duplicate config 'a'" in err


def test_mismatched_hardware_matrix_and_split(tmp_path, capsys):
    s1 = _shard(tmp_path, 1, ["a"])
    other_hw = _shard(tmp_path, 2, ["b", "c"], hw="nvidia-gb10-sm121")
    assert cli_main(["merge", str(s1), str(other_hw), "--json", str(tmp_path / "m.json")]) == 1
    assert "mismatched hardware" in capsys.readouterr().err

    other_matrix = _shard(tmp_path, 2, ["b", "d"], matrix_servers=["a", "b", "d"], name="om.json")
    assert cli_main(["merge", str(s1), str(other_matrix), "--json", str(tmp_path / "m.json")]) == 1
    assert "mismatched matrix" in capsys.readouterr().err

    other_split = _shard(tmp_path, 2, ["c"], plan=[["a", "b"], ["c"]], name="os.json")
    assert cli_main(["merge", str(s1), str(other_split), "--json", str(tmp_path / "m.json")]) == 1
    assert "mismatched split" in capsys.readouterr().err


def test_a_file_without_shard_info_and_a_broken_file(tmp_path, capsys):
    plain = tmp_path / "plain.json"
    results_file.save(SessionResults(matrix="cpu", environment=RunEnvironment.from_dict({"hardware_key": "x"})), plain)
    assert cli_main(["merge", str(plain), "--json", str(tmp_path / "m.json")]) == 1
    assert "not a shard (no environment.shard" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": 2, "kind": "pytest-mxfp4-results", "results": "nope"}))
    assert cli_main(["merge", str(bad), "--json", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "Traceback" not in err


def test_merge_writes_the_page_with_a_shards_table(tmp_path):
    s1, s2 = _shard(tmp_path, 1, ["a"]), _shard(tmp_path, 2, ["b", "c"])
    (tmp_path / "baselines").mkdir()
    page = tmp_path / "page.md"
    assert cli_main(["merge", str(s1), str(s2), "--json", str(tmp_path / "m.json"), "--report", str(page),
                     "--baselines", str(tmp_path / "baselines")]) == 0
    text = page.read_text()
    assert "## Shards" in text and "| 2/2 | gb10-shard-2 | box2 | b, c | shard-2.json |" in text
    # part of the page (before its end mark, never appended after it), so `report` on the merged JSON rebuilds it
    from pytest_mxfp4.report.ownership import PAGE_MARK

    assert text.index("## Shards") < text.index("## How to Run Benchmarks") < text.index(PAGE_MARK)
    again = tmp_path / "again.md"
    assert cli_main(["report", str(tmp_path / "m.json"), "--baselines", str(tmp_path / "baselines"),
                     "--out", str(again)]) == 0
    timeless = lambda t: [ln for ln in t.splitlines() if not ln.startswith("Generated by")]  # noqa: E731
    assert timeless(again.read_text()) == timeless(text)


def test_merge_imports_no_network_stack():
    import subprocess
    import sys

    code = ("import sys, pytest_mxfp4.cli.merge, pytest_mxfp4.cli.trend, pytest_mxfp4.run.shard; "
            "bad = [m for m in ('openai', 'httpx', 'docker', 'pytest') if m in sys.modules]; print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_a_run_that_judged_nothing_fails_the_merge(tmp_path, capsys):
    # every config skipped on both shards (a runner that lost its GPU): complete, but nothing judged
    paths = []
    for k, servers in ((1, ["a"]), (2, ["b", "c"])):
        s = results_file.load(_shard(tmp_path, k, servers))
        s.metrics = []
        for rec in s.servers.values():
            rec.skipped, rec.info = "requires gpu: no GPU found", None
        results_file.save(s, tmp_path / f"skipped-{k}.json")
        paths.append(str(tmp_path / f"skipped-{k}.json"))
    assert cli_main(["merge", *paths, "--json", str(tmp_path / "m.json")]) == 1
    err = capsys.readouterr().err
    assert "nothing was judged: no fail-gated metric was measured (3 config(s) skipped (a: requires gpu" in err
    # one config measured: judged, so the same merge passes
    s1 = _shard(tmp_path, 1, ["a"])
    assert cli_main(["merge", str(s1), paths[1], "--json", str(tmp_path / "m2.json")]) == 0
