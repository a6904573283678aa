"""`--perf-shard K/N`: a deterministic, balanced slice of a matrix's server
configs, so a nightly can spread the full matrix over N boxes.

Balance: each config is weighed by its expected cost, dominated by the model
load: the recorded startup time where one is known (a cost file, or a result
JSON of an earlier run: `servers.<name>.info.startup_s`), else an estimate
from the model's size on disk (else a default). Configs are placed largest
first on the lightest shard (LPT), ties broken by name.

Stable: the plan depends only on the matrix and the cost file, both committed
(the nightly reads costs from `<baselines>/<hardware>/shard-costs.yaml`, which
changes only through the reviewed baseline PR), never on last night's
timings, so a config lands on the same shard, and the nightly's shard K on
the same runner (`gb10-shard-K`), night after night. Two boxes of one kind
are not alike (power capping): that is why this matters, and the merged
report says which shard and runner measured each config.

Pure: no pytest, no network.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

import yaml

from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.formats import results
from pytest_mxfp4.formats.results import ShardInfo

DEFAULT_COST_S = 120.0  # a config we know nothing about
LOAD_BYTES_PER_S = 1.0e9  # model weights read and placed, for an estimate from disk size
CASE_COST_S = 5.0  # per measured case, on top of the load
COST_FILE = "shard-costs.yaml"


@dataclass(frozen=True)
class ShardSpec:
    index: int  # 1-based
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(value: str) -> ShardSpec:
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value or "")
    if not m:
        raise PerfUserError(f"--perf-shard: expected K/N (e.g. 1/2), got {value!r}")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise PerfUserError(f"--perf-shard: K must be 1..N and N >= 1, got {value!r}")
    return ShardSpec(k, n)


def read_costs(path: Path | str) -> dict[str, float]:
    """Startup seconds per server config, from a cost file ({name: seconds},
    YAML or JSON) or from result JSON written by --perf-json."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise PerfUserError(f"{p}: cannot read shard costs ({e.strerror})") from None
    except UnicodeDecodeError:
        raise PerfUserError(f"{p}: shard costs are not UTF-8 text") from None
    except yaml.YAMLError:
        raise PerfUserError(f"{p}: shard costs are not YAML/JSON") from None
    if isinstance(data, dict) and isinstance(data.get("servers"), dict) and "results" in data:
        session = results.load(p)  # a result file: read by the owner of its format
        return {name: rec.info.startup_s for name, rec in session.servers.items()
                if rec.info is not None and rec.info.startup_s is not None and rec.info.startup_s > 0}
    if not isinstance(data, dict):
        raise PerfUserError(f"{p}: shard costs: expected a mapping of server name to startup seconds")
    out = {}
    for name, s in data.items():
        if not isinstance(s, (int, float)) or isinstance(s, bool) or s < 0:
            raise PerfUserError(f"{p}: {name}: expected startup seconds (a number >= 0), got {s!r}")
        out[str(name)] = float(s)
    return out


def write_costs(path: Path | str, costs: Mapping[str, float]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("# Startup seconds per server config, read by --perf-shard to balance shards.\n"
                          "# Changes only through the reviewed baseline PR, so shards stay stable.\n"
                          + yaml.safe_dump({k: round(v, 1) for k, v in sorted(costs.items())}, sort_keys=True))


def _dir_bytes(p: Path) -> int:
    try:
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    except OSError:
        return 0


def expected_cost(cfg, base_dir: Path, known: Mapping[str, float], n_cases: int) -> tuple[float, str]:
    """(seconds, where the number came from) for one server config."""
    if getattr(cfg, "pending", None):
        return 0.0, "pending"
    if cfg.name in known:
        return known[cfg.name] + CASE_COST_S * n_cases, "recorded startup"
    model = Path(cfg.model) if cfg.model else None
    if model is not None:
        local = model if model.is_absolute() else base_dir / model
        if local.is_dir():
            size = _dir_bytes(local)
            if size:
                return 10.0 + size / LOAD_BYTES_PER_S + CASE_COST_S * n_cases, "model size on disk"
    return DEFAULT_COST_S + CASE_COST_S * n_cases, "default"


@dataclass(frozen=True)
class Plan:
    count: int
    shards: tuple[tuple[str, ...], ...]  # server names per shard, in matrix order
    cost_s: tuple[float, ...]
    sources: Mapping[str, str]  # server -> where its cost came from

    def shard_of(self, server: str) -> int:
        for i, names in enumerate(self.shards, start=1):
            if server in names:
                return i
        raise KeyError(server)

    def describe(self) -> list[str]:
        return [f"shard {i}/{self.count}: {', '.join(names) or '(empty)'} (~{c:.0f}s)"
                for i, (names, c) in enumerate(zip(self.shards, self.cost_s), start=1)]


def plan(servers, count: int, base_dir: Path, known: Mapping[str, float] | None = None, n_cases: int = 1) -> Plan:
    """Split `servers` (ServerConfig, in matrix order) into `count` shards."""
    known = known or {}
    costs, sources = {}, {}
    for s in servers:
        costs[s.name], sources[s.name] = expected_cost(s, base_dir, known, n_cases)
    order = sorted(costs, key=lambda n: (-costs[n], n))
    load = [0.0] * count
    members: list[set[str]] = [set() for _ in range(count)]
    for name in order:
        i = min(range(count), key=lambda j: (load[j], len(members[j]), j))
        load[i] += costs[name]
        members[i].add(name)
    names = [s.name for s in servers]
    shards = tuple(tuple(n for n in names if n in m) for m in members)
    return Plan(count=count, shards=shards, cost_s=tuple(load), sources=sources)


def select(matrix, spec: ShardSpec, base_dir: Path, known: Mapping[str, float] | None = None):
    """(the matrix restricted to shard K, the plan, the full list of server names)."""
    full = tuple(s.name for s in matrix.servers)
    p = plan(matrix.servers, spec.count, base_dir, known, n_cases=len(matrix.workloads.cases))
    mine = set(p.shards[spec.index - 1])
    if not mine:
        # more shards than configs: say which shard and why, not "nothing ran"
        raise PerfUserError(f"--perf-shard {spec}: shard {spec} of {matrix.path} gets no server config "
                            f"({len(full)} config(s) split over {spec.count} shards: {'; '.join(p.describe())}); "
                            f"use at most {max(len(full), 1)} shard(s)")
    return replace(matrix, servers=tuple(s for s in matrix.servers if s.name in mine)), p, full


def default_costs_path(baselines: Path, hardware_key: str) -> Path:
    return baselines / hardware_key / COST_FILE


def shard_record(spec: ShardSpec, p: Plan, full: tuple[str, ...], costs_from: str | None) -> ShardInfo:
    """What a shard's result file says about the split (read by `merge`)."""
    import os
    import socket

    return ShardInfo(index=spec.index, count=spec.count, servers=list(p.shards[spec.index - 1]),
                     matrix_servers=list(full), plan=[list(s) for s in p.shards], costs_from=costs_from,
                     runner=os.environ.get("RUNNER_NAME") or socket.gethostname())


if __name__ == "__main__":  # python -m pytest_mxfp4.run.shard MATRIX N [COSTS]: print the plan
    import sys

    from pytest_mxfp4.formats.config import load_matrix

    m = load_matrix(Path(sys.argv[1]))
    known = read_costs(sys.argv[3]) if len(sys.argv) > 3 else {}
    pl = plan(m.servers, int(sys.argv[2]), Path.cwd(), known, n_cases=len(m.workloads.cases))
    print("\n".join(pl.describe()))
    print(json.dumps({"shards": [list(s) for s in pl.shards]}))
