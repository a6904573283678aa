"""Matrix validation: every error names the file and the field."""

from pathlib import Path

import pytest
import yaml

from pytest_mxfp4.formats.config import Case, load_matrix, parse_matrix
from pytest_mxfp4.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]

MINIMAL = {
    "servers": {"a": {"model": "m", "command": ["serve", "{model}"]}},
    "workloads": {"prefill": {"pp": [512]}, "decode": {"tg": [32, 128], "pp": 256}},
}


def parse(data, name="m.yaml"):
    return parse_matrix(data, Path(name))


def with_(path, value):
    import copy

    d = copy.deepcopy(MINIMAL)
    cur = d
    keys = path.split(".")
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value
    return d


def test_minimal_matrix_parses_into_cases_and_default_gates():
    m = parse(MINIMAL)
    assert [c.id for c in m.workloads.cases] == ["pp512", "tg32", "tg128"]
    tg32 = m.workloads.cases[1]
    assert tg32.pp == 256 and tg32.tg == 32 and tg32.kind == "decode"
    assert m.gates.policy(tg32, "tg_tps") == "fail"
    assert m.gates.policy(tg32, "e2e_ttft_ms") == "warn"
    assert m.gates.policy(m.workloads.cases[0], "pp_tps") == "warn"


@pytest.mark.parametrize(
    "path,value,field,words",
    [
        ("servers.a.engine", "tgi", "servers.a.engine", "expected one of vllm, llama.cpp, openai"),
        ("servers.a.startup_timeout_s", "soon", "servers.a.startup_timeout_s", "expected a number"),
        ("servers.a.startup_timeout_s", -1, "servers.a.startup_timeout_s", "must be >= 1"),
        ("servers.a.health_path", "health", "servers.a.health_path", "must start with '/'"),
        ("servers.a.requires", {"sm": "sm121"}, "servers.a.requires.sm", "12.1"),
        ("servers.a.runner", "docker", "servers.a.docker", "docker.image"),
        ("servers.a.bogus", 1, "servers.a.bogus", "unknown field"),
        ("workloads.runs", 0, "workloads.runs", "must be >= 1"),
        ("workloads.runs", 2.5, "workloads.runs", "expected an integer"),
        ("workloads.prefill.pp", [512, "x"], "workloads.prefill.pp[1]", "expected an integer"),
        ("workloads.decode.tg", [1], "workloads.decode.tg[0]", "must be >= 2"),
        ("gates.tg32", "explode", "gates.tg32", "expected one of fail, warn, off"),
        ("gates.pp512/tg_tps", "fail", "gates.pp512/tg_tps", "unknown metric"),
        ("gates.latency", "fail", "gates.latency", "case id"),
        ("targets", [{"engine": "x", "metric": "tg32"}], "targets[0].value", "required"),
    ],
)
def test_errors_name_file_and_field(path, value, field, words):
    with pytest.raises(ConfigError) as e:
        parse(with_(path, value), "configs/x.yaml")
    msg = str(e.value)
    assert msg.startswith(f"configs/x.yaml: {field}:"), msg
    assert words in msg


def test_missing_model_and_command_are_reported():
    with pytest.raises(ConfigError, match=r"servers\.a\.model: required"):
        parse({**MINIMAL, "servers": {"a": {"command": ["x"]}}})
    with pytest.raises(ConfigError, match=r"servers\.a\.command: required"):
        parse({**MINIMAL, "servers": {"a": {"model": "m"}}})


def test_pending_rows_need_no_recipe():
    m = parse({**MINIMAL, "servers": {"later": {"pending": "no recipe yet"}}})
    assert m.servers[0].pending == "no recipe yet"


def test_defaults_merge_and_env_merges_per_key():
    data = {
        **MINIMAL,
        "defaults": {"command": ["serve"], "env": {"A": "1", "B": "2"}, "startup_timeout_s": 99},
        "servers": {"a": {"model": "m", "env": {"B": "3"}}, "b": {"model": "n", "startup_timeout_s": 5}},
    }
    a, b = parse(data).servers
    assert a.env == {"A": "1", "B": "3"} and a.command == ("serve",) and a.startup_timeout_s == 99
    assert b.startup_timeout_s == 5 and b.env == {"A": "1", "B": "2"}


def test_explicit_gates_replace_the_default_rule():
    m = parse({**MINIMAL, "gates": {"default": "warn", "tg128": "fail"}})
    tg32, tg128 = m.workloads.cases[1:]
    assert m.gates.policy(tg32, "tg_tps") == "warn"
    assert m.gates.policy(tg128, "tg_tps") == "fail"


def test_invalid_yaml_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("servers:\n  a: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: line \d+, column \d+: not valid YAML"):
        load_matrix(p)


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match="not found .*--perf-config"):
        load_matrix(tmp_path / "nope.yaml")


def test_depth_multiplies_cases():
    m = parse(with_("workloads.depth", [0, 4096]))
    assert "pp512@d4096" in [c.id for c in m.workloads.cases]
    assert Case("decode", 2048, 32, 4096).id == "tg32@d4096"


def test_shipped_configs_are_valid():
    cpu = load_matrix(ROOT / "configs/cpu.yaml")
    runnable = [s for s in cpu.servers if not s.pending]
    assert len(runnable) >= 2
    assert len({(s.args, s.model) for s in runnable}) == len(runnable), "CPU configs must differ for real"
    assert {c.id for c in cpu.workloads.cases} == {"pp512", "pp2048", "tg32", "tg128", "tg32@c2", "tg128@c2"}
    # one concurrency sweep on the vLLM rows (--max-num-seqs 2); the llama.cpp rows (-np 1) state [1]
    assert {s.name: [c.id for c in cpu.cases_for(s) if c.concurrency > 1] for s in runnable} == {
        "tiny-eager": ["tg32@c2", "tg128@c2"], "tiny-compiled": ["tg32@c2", "tg128@c2"],
        "llamacpp-tiny": [], "llamacpp-moe-mxfp4": [],
        "llamacpp-tiny-spec": [], "tiny-ngram": []}  # spec rows: acceptance is read around one request
    gb10 = load_matrix(ROOT / "configs/gb10-gpt-oss-120b.yaml")
    assert gb10.server("eagle3-throughput").concurrency == (1, 4, 8)  # the throughput row's sweep
    names = {s.name for s in gb10.servers}
    assert {"upstream-baseline", "pr31740-marlin-triton", "pr31740-native", "cutlass-gemm", "cutlass-mxfp8",
            "eagle3-short", "eagle3-long", "eagle3-throughput"} <= names
    up = gb10.server("upstream-baseline")
    for flag in ("mxfp4", "131072", "8192", "--enforce-eager", "--enable-prefix-caching", "fastsafetensors"):
        assert flag in up.args
    assert up.requires.sm == "12.1" and up.model == "openai/gpt-oss-120b"
    values = {(t.engine, t.metric): t.value for t in gb10.targets}
    assert values[("llama.cpp", "tg32")] == 57.85 and values[("llama.cpp", "pp2048")] == 2449.83
    assert values[("SGLang", "tg32")] == 52.37 and values[("SGLang", "pp2048/e2e_ttft_ms")] == 49.87


def test_gate_floor_override():
    m = parse({**MINIMAL, "gates": {"tg32": {"policy": "fail", "floor_pct": 20}, "pp512": "warn"}})
    tg32 = m.workloads.cases[1]
    assert m.gates.policy(tg32, "tg_tps") == "fail" and m.gates.rule(tg32, "tg_tps").floor_pct == 20.0
    pp = m.gates.rule(m.workloads.cases[0], "pp_tps")
    assert not pp.floor_given and pp.floor_pct == 5.0  # the metric's default floor
    with pytest.raises(ConfigError, match=r"gates\.tg32\.floor: unknown field"):
        parse({**MINIMAL, "gates": {"tg32": {"policy": "fail", "floor": 20}}})
