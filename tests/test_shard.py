"""--perf-shard K/N: every config in exactly one shard, balanced by expected
cost, the same split every time for the same matrix and cost file."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pytest_mxfp4.run import shard
from pytest_mxfp4.formats.config import ServerConfig
from pytest_mxfp4.errors import PerfUserError

pytest_plugins = ["pytester"]


def _servers(*names: str, **kw) -> tuple[ServerConfig, ...]:
    return tuple(ServerConfig(name=n, model=kw.get("model", "hub/" + n)) for n in names)


def test_parse_shard():
    assert shard.parse_shard("2/3") == shard.ShardSpec(2, 3)
    for bad in ("0/2", "3/2", "1/0", "x", "", "1-2"):
        with pytest.raises(PerfUserError, match="--perf-shard"):
            shard.parse_shard(bad)


def test_every_config_lands_in_exactly_one_shard_and_the_plan_is_stable(tmp_path):
    servers = _servers(*[f"cfg{i}" for i in range(7)])
    known = {f"cfg{i}": 30.0 * (i + 1) for i in range(7)}
    p = shard.plan(servers, 3, tmp_path, known)
    flat = [n for s in p.shards for n in s]
    assert sorted(flat) == sorted(s.name for s in servers) and len(flat) == len(set(flat))
    # same inputs, same plan; matrix order of the servers does not matter
    assert shard.plan(tuple(reversed(servers)), 3, tmp_path, known).shards == tuple(
        tuple(n for n in reversed(s)) for s in p.shards)
    assert shard.plan(servers, 3, tmp_path, dict(known)).shards == p.shards


def test_balanced_by_recorded_startup_times(tmp_path):
    # one heavy 120B config and four light ones: the heavy one gets a shard to itself
    servers = _servers("heavy", "a", "b", "c", "d")
    known = {"heavy": 600.0, "a": 100.0, "b": 100.0, "c": 100.0, "d": 100.0}
    p = shard.plan(servers, 2, tmp_path, known)
    assert p.shards == (("heavy",), ("a", "b", "c", "d"))
    assert p.sources["heavy"] == "recorded startup"
    # naive halving by position would put 800 s on one box and 200 s on the other
    assert max(p.cost_s) - min(p.cost_s) <= 200.0 + 1e-9


def test_unknown_costs_come_from_model_size_on_disk_then_a_default(tmp_path):
    (tmp_path / "models/big").mkdir(parents=True)
    (tmp_path / "models/big/w.bin").write_bytes(b"\0" * 2_000_000)
    servers = (ServerConfig(name="big", model="models/big"), ServerConfig(name="hub", model="org/model"),
               ServerConfig(name="later", pending="no recipe"))
    p = shard.plan(servers, 2, tmp_path, {})
    assert p.sources == {"big": "model size on disk", "hub": "default", "later": "pending"}


def test_cost_file_from_results_json_and_yaml(tmp_path):
    r = tmp_path / "r.json"
    r.write_text(json.dumps({"schema": 2, "results": [], "servers": {
        "a": {"info": {"startup_s": 41.5}}, "b": {"info": {}}, "c": {"skipped": "pending"}}}))
    assert shard.read_costs(r) == {"a": 41.5}
    y = tmp_path / "shard-costs.yaml"
    shard.write_costs(y, {"a": 41.54, "b": 300})
    assert shard.read_costs(y) == {"a": 41.5, "b": 300.0}
    y.write_text("a: soon\n")
    with pytest.raises(PerfUserError, match=r"shard-costs.yaml: a: expected startup seconds"):
        shard.read_costs(y)


MATRIX = textwrap.dedent("""
    servers:
      alpha: {pending: "no recipe yet"}
      beta: {pending: "no recipe yet"}
      gamma: {pending: "no recipe yet"}
    workloads: {decode: {tg: [32]}, runs: 2}
""")

PERF_TEST = """
import pytest
pytestmark = pytest.mark.perf
def test_workload(perf_measure):
    perf_measure()
"""


def test_plugin_runs_one_shard_and_records_the_split(pytester, tmp_path):
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=MATRIX)
    costs = tmp_path / "costs.yaml"
    costs.write_text("alpha: 500\nbeta: 100\ngamma: 100\n")
    seen = {}
    for k in (1, 2):
        out = tmp_path / f"r{k}.json"
        r = pytester.runpytest_subprocess("-m", "perf", "--perf-config=matrix.yaml", f"--perf-shard={k}/2",
                                          f"--perf-shard-costs={costs}", f"--perf-json={out}", "-p", "no:cacheprovider")
        data = json.loads(out.read_text())
        sh = data["environment"]["shard"]
        assert sh["index"] == k and sh["count"] == 2
        assert sh["matrix_servers"] == ["alpha", "beta", "gamma"] and sh["costs_from"] == str(costs)
        seen[k] = sorted(data["servers"])
        assert seen[k] == sorted(sh["servers"])
        r.assert_outcomes(skipped=len(seen[k]))
    # pending rows cost nothing; the recorded costs only order them. Each
    # config is in exactly one shard.
    assert sorted(seen[1] + seen[2]) == ["alpha", "beta", "gamma"]


def test_plugin_bad_shard_is_a_usage_error(pytester):
    pytester.makepyfile(test_perf=PERF_TEST)
    pytester.makefile(".yaml", matrix=MATRIX)
    r = pytester.runpytest_subprocess("-m", "perf", "--perf-config=matrix.yaml", "--perf-shard=3/2")
    assert r.ret == pytest.ExitCode.USAGE_ERROR
    assert "--perf-shard: K must be 1..N" in r.stderr.str() and "Traceback" not in r.stderr.str()
