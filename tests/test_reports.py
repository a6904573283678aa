"""Reports: Markdown page, pytest-benchmark JSON, GitHub step summary, trend
plots, run log and offline regeneration, all rendered from the same
SessionResults and agreeing number for number."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mxfp4.formats.facts import ObservedFacts
from pytest_mxfp4.formats.baselines import BaselineFile, BaselineStore, HistoryEntry, MetricBaseline, read_baseline
from pytest_mxfp4.formats.config import load_matrix
from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.run.judge import baseline_for, judge_metric
from pytest_mxfp4.formats import results as results_file
from pytest_mxfp4.report import benchmark_json
from pytest_mxfp4.report import github
from pytest_mxfp4.report import markdown
from pytest_mxfp4.report import terminal
from pytest_mxfp4.report.format import num
from pytest_mxfp4.formats.runlog import RUN_LOG_NAME, read_run_log
from pytest_mxfp4.report.history import append_run_log
from pytest_mxfp4.cli.report import report_command
from pytest_mxfp4.formats.results import ServerRecord, SessionResults
from pytest_mxfp4.formats.results import RunEnvironment, ServerInfo

ROOT = Path(__file__).resolve().parents[1]
GB10 = ROOT / "configs" / "gb10-gpt-oss-120b.yaml"
SEED = ROOT / "baselines" / "nvidia-gb10-sm121" / "openai--gpt-oss-120b" / "upstream-baseline.yaml"
PB_COMPARE = Path(sys.executable).parent / "pytest-benchmark"

ENV = {
    "hostname": "spark-01", "os": "Linux 6.11.0-1016-nvidia", "arch": "aarch64", "cpu_model": "Cortex-X925",
    "cpu_count": 20, "memory_gib": 119.7, "python": "3.11.9", "plugin_version": "0.1.0", "git_sha": "71d3c5f0a1b2",
    "gpus": [{"name": "NVIDIA GB10", "sm": "12.1", "memory_mib": None, "driver": "580.95.05"}],
    "captured_at": "2026-01-12T09:30:00+00:00", "hardware_key": "nvidia-gb10-sm121", "telemetry": "nvml",
}
OBSERVED = {"attention_backend": "TRITON_ATTN", "moe_backend": "MARLIN", "fp4_mode": "weight_only_marlin",
            "quantization": "mxfp4", "kv_cache_dtype": "auto", "spec_decode": None, "enforce_eager": True,
            "cudagraph": None, "unknown_env_vars": [], "deprecated_env_vars": [], "vllm_version": "0.13.1.dev4"}
# (mean, sd) per server and case/metric: the results page's numbers, PR row a bit faster
TRUTH = {
    "upstream-baseline": {
        "pp512/pp_tps": (2215.0, 95.0), "pp2048/pp_tps": (4332.0, 14.0), "pp2048/e2e_ttft_ms": (556.0, 13.0),
        "pp2048/ttfr_ms": (458.0, 13.0), "pp2048/est_ppt_ms": (418.0, 13.0),
        "tg32/tg_tps": (31.60, 0.06), "tg128/tg_tps": (31.61, 0.05), "tg256/tg_tps": (31.10, 0.30),
        "tg32/e2e_ttft_ms": (553.0, 14.0),
    },
    "pr31740-marlin-triton": {
        "pp512/pp_tps": (2290.0, 110.0), "pp2048/pp_tps": (4701.8, 362.7), "pp2048/e2e_ttft_ms": (579.0, 20.0),
        "tg32/tg_tps": (31.87, 0.05),
    },
}


def samples(mean: float, sd: float, seed: int, n: int = 10) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.gauss(mean, sd), 3) for _ in range(n)]


def gb10_session(env: dict | None = None, shift: float = 0.0) -> tuple[SessionResults, object, BaselineFile]:
    matrix = load_matrix(GB10)
    seed_bf = read_baseline(SEED)
    session = SessionResults(matrix=matrix.name, environment=RunEnvironment.from_dict(dict(env or ENV)))
    for s in matrix.servers:
        rec = ServerRecord(name=s.name, runner=s.runner, model=s.model_name, description=s.description)
        if s.pending:
            rec.skipped = f"pending: {s.pending}"
        session.servers[s.name] = rec
    cases = {c.id: c for c in matrix.workloads.cases}
    for i, (server, metrics) in enumerate(TRUTH.items()):
        rec = session.servers[server]
        rec.observed = ObservedFacts.from_dict(OBSERVED)
        rec.info = ServerInfo(name=server, kind="docker", base_url="http://127.0.0.1:8000", log_path=None,
                              startup_s=312.4, command=["vllm", "serve", "openai/gpt-oss-120b", "--enforce-eager"],
                              env={"HF_HUB_OFFLINE": "1", "VLLM_SERVER_DEV_MODE": "1"},
                              details={"image": matrix.server(server).docker.image, "image_id": "sha256:0f3c9a"})
        bf = seed_bf if server == "upstream-baseline" else None
        for j, (key, (mean, sd)) in enumerate(metrics.items()):
            case_id, _, metric = key.partition("/")
            values = samples(mean * (1 + shift), sd, seed=100 * i + j)
            session.results.append(judge_metric(server, cases[case_id], metric, values, baseline_for(bf, key), matrix.gates.rule(cases[case_id], metric), matrix.targets_for(cases[case_id], metric)))
    session.servers["pr31740-marlin-triton"].notes.append("expect: attention_backend TRITON_ATTN confirmed")
    return session, matrix, seed_bf


def result(session: SessionResults, server: str, key: str):
    return next(r for r in session.results if r.server == server and r.key == key)


def md_table(md: str, heading: str) -> list[dict[str, str]]:
    """The first table under `## heading` as a list of {column: cell} (bold stripped)."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.strip() == f"## {heading}")
    rows, header = [], None
    for ln in lines[start + 1:]:
        if ln.startswith("## "):
            break
        if not ln.startswith("|"):
            if header is not None:
                break
            continue
        cells = [c.strip().replace("**", "") for c in ln.strip().strip("|").split(" | ")]
        if header is None:
            header = cells
        elif not set(ln) <= set("|- "):
            rows.append(dict(zip(header, cells)))
    return rows


def row(rows: list[dict[str, str]], first: str) -> dict[str, str]:
    key = next(iter(rows[0]))
    return next(r for r in rows if r[key] == first)


def need_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("matplotlib is required in CI (pip install 'pytest-mxfp4[plot]')")
        pytest.skip("matplotlib not installed (pip install 'pytest-mxfp4[plot]')")


# --------------------------------------------------------------------------
# All formats agree


def test_all_formats_agree_number_for_number(tmp_path, monkeypatch):
    session, matrix, seed_bf = gb10_session()
    md = markdown.render(session, matrix, {"upstream-baseline": seed_bf})
    js = results_file.to_dict(session)
    pb = benchmark_json.to_pytest_benchmark(session)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    github.write_step_summary(session, md)
    summary = (tmp_path / "summary.md").read_text()
    term = "\n".join(terminal.render(session))

    js_by = {(r["server"], f"{r['workload']}/{r['metric']}"): r for r in js["results"]}
    pb_by = {(b["extra_info"]["server"], f"{b['extra_info']['workload']}/{b['extra_info']['metric']}"): b
             for b in pb["benchmarks"]}
    assert len(js_by) == len(pb_by) == len(session.results) == 13
    for r in session.results:
        mean, sd = r.summary.mean, r.summary.stdev
        j, b = js_by[(r.server, r.key)], pb_by[(r.server, r.key)]
        assert j["mean"] == mean and j["stdev"] == sd and j["n"] == 10
        assert b["extra_info"]["mean"] == mean and b["stats"]["rounds"] == 10
        if r.unit == "tok/s":
            assert b["stats"]["ops"] == mean  # OPS column reads tok/s, bit for bit
            assert b["stats"]["mean"] == pytest.approx(1 / mean, rel=1e-12)
            assert b["stats"]["min"] == pytest.approx(1 / max(r.samples)) and b["stats"]["data"][0] == pytest.approx(1 / r.samples[0])
        else:
            assert b["stats"]["mean"] * 1000 == pytest.approx(mean, rel=1e-12)
            assert b["stats"]["max"] * 1000 == pytest.approx(max(r.samples))
        # the Markdown results block prints every metric as mean ± sd
        assert f": {mean:.2f} ± {sd:.2f}" in md
        # the summary and terminal tables print it the same way
        assert f"{num(mean)} ± {num(sd)} {r.unit}" in summary
        assert f"{num(mean)} ± {num(sd)} {r.unit}" in term

    tg32 = result(session, "upstream-baseline", "tg32/tg_tps")
    mrow = row(md_table(md, "Comparison Matrix"), "upstream-baseline")
    assert mrow["tg32"] == num(tg32.summary.mean) == f"{js_by[('upstream-baseline', 'tg32/tg_tps')]['mean']:.2f}"
    assert float(mrow["tg32"]) == round(pb_by[("upstream-baseline", "tg32/tg_tps")]["stats"]["ops"], 2)
    assert f"tg32_tps: {tg32.summary.mean:.2f} ± {tg32.summary.stdev:.2f}" in md
    pp = result(session, "pr31740-marlin-triton", "pp2048/pp_tps")
    prow = row(md_table(md, "Comparison Matrix"), "pr31740-marlin-triton")
    assert prow["pp2048"] == num(pp.summary.mean) and prow["tg128"] == "-"
    ttft = result(session, "upstream-baseline", "pp2048/e2e_ttft_ms")
    assert mrow["TTFT p50"] == f"{num(ttft.summary.median)} ms"  # a median, from real samples: no '~'
    var = row(md_table(md, "Variance Analysis"), "tg32")
    assert var["Mean"] == num(tg32.summary.mean) and var["CV%"] == f"{100 * tg32.summary.cv:.2f}%"
    # verdict and baseline delta agree between the page and the JSON
    delta = js_by[("upstream-baseline", "tg32/tg_tps")]["delta_pct"]
    assert f"{tg32.verdict.value}, {delta:+.2f}% vs baseline 31.58" in md


def test_best_results_pick_the_best_config_per_metric():
    session, matrix, seed_bf = gb10_session()
    best = md_table(markdown.render(session, matrix, {"upstream-baseline": seed_bf}), "Current Best Results")
    tg32 = row(best, "tg32 (tok/s)")
    pr = result(session, "pr31740-marlin-triton", "tg32/tg_tps").summary.mean
    assert tg32["Baseline"] == "31.58" and tg32["Best"] == num(pr) and tg32["Config"] == "pr31740-marlin-triton"
    assert tg32["Date"] == "2026-01-12"
    ttft = row(best, "TTFT@pp2048 (ms)")  # lower is better: the upstream run, not the slower PR
    assert ttft["Config"] in ("upstream-baseline", "upstream-baseline (baseline)")
    assert float(ttft["Best"]) < float(num(result(session, "pr31740-marlin-triton", "pp2048/e2e_ttft_ms").summary.mean))


# --------------------------------------------------------------------------
# pytest-benchmark compatibility, checked with the real console script


def _pb_compare(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COLUMNS"))}
    env["COLUMNS"] = "250"
    return subprocess.run([str(PB_COMPARE), "compare", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def test_pytest_benchmark_compare_reads_our_file(tmp_path):
    assert PB_COMPARE.exists(), f"pytest-benchmark console script missing next to {sys.executable}"
    session, _, _ = gb10_session()
    path = benchmark_json.write(session, tmp_path / "0001_gb10.json")
    p = _pb_compare(tmp_path, str(path))
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "Failed to load" not in out and "Traceback" not in out
    tg32 = result(session, "upstream-baseline", "tg32/tg_tps").summary.mean
    pp = result(session, "pr31740-marlin-triton", "pp2048/pp_tps").summary.mean
    assert "benchmark 'tg_tps (tok/s)'" in out and "tg32[upstream-baseline]" in out
    assert f"{tg32:,.4f}" in out  # OPS column: tok/s
    assert f"{pp / 1000:,.4f}" in out and "OPS (Kops/s)" in out  # prefill: thousands of tok/s
    ttft = result(session, "upstream-baseline", "pp2048/e2e_ttft_ms").summary.mean
    assert f"{ttft:,.4f}" in out  # latency group: seconds stored, shown in ms


def test_pytest_benchmark_compare_between_two_runs(tmp_path):
    before, _, _ = gb10_session()
    after, _, _ = gb10_session(env={**ENV, "captured_at": "2026-01-13T09:30:00+00:00"}, shift=0.02)
    a = benchmark_json.write(before, tmp_path / "0001_before.json")
    b = benchmark_json.write(after, tmp_path / "0002_after.json")
    p = _pb_compare(tmp_path, "--between", "ops", str(a), str(b))
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "2 sources" in out and "ERROR" not in out
    t0 = result(before, "upstream-baseline", "tg32/tg_tps").summary.mean
    t1 = result(after, "upstream-baseline", "tg32/tg_tps").summary.mean
    assert f"{t0:,.4f}" in out and f"{t1:,.4f}" in out
    assert f"{(t1 - t0) / t0 * 100:+.1f}%" in out


def test_benchmark_json_machine_and_commit_info():
    session, _, _ = gb10_session()
    doc = benchmark_json.to_pytest_benchmark(session)
    mi, ci = doc["machine_info"], doc["commit_info"]
    assert mi["node"] == "spark-01" and mi["machine"] == "aarch64" and mi["system"] == "Linux"
    assert mi["gpus"][0]["name"] == "NVIDIA GB10" and mi["hardware_key"] == "nvidia-gb10-sm121"
    assert mi["cpu"]["brand_raw"] == "Cortex-X925"
    assert ci["id"] == "71d3c5f0a1b2" and ci["project"] == "pytest-mxfp4"
    assert doc["datetime"] == ENV["captured_at"]
    # an errored metric (no samples) is left out, as pytest-benchmark leaves out errored benchmarks
    matrix = load_matrix(GB10)
    case = next(c for c in matrix.workloads.cases if c.id == "tg64")
    session.results.append(judge_metric("upstream-baseline", case, "tg_tps", [], None, matrix.gates.rule(case, "tg_tps"), matrix.targets_for(case, "tg_tps")))
    assert len(benchmark_json.to_pytest_benchmark(session)["benchmarks"]) == len(doc["benchmarks"])


# --------------------------------------------------------------------------
# The GB10 page from stored data only


def test_gb10_page_from_seeded_baseline_only():
    matrix = load_matrix(GB10)
    seed_bf = read_baseline(SEED)
    md = markdown.render(SessionResults(matrix="", environment=RunEnvironment.from_dict({})), matrix, {seed_bf.server: seed_bf})
    assert md.startswith("# gb10-gpt-oss-120b Benchmark Results")
    for line in ("tg32_tps: 31.58 ± 0.06", "tg256_tps: 31.12 ± 0.35", "pp2048_tps: 4340.70 ± 12.22   # TTFT: 555ms",
                 "pp512_tps: 2209.10 ± 97.25", "e2e_ttft_ms: 554.80 ± 14.04", "ttfr_ms: 457.13 ± 13.94"):
        assert line in md
    for section in ("## Current Best Results", "## Comparison Matrix", "## Variance Analysis", "## upstream-baseline",
                    "### Environment", "### vLLM Configuration", "### Observed Runtime Configuration",
                    "## Pending Configurations", "## Run Log"):
        assert section in md

    cm = md_table(md, "Comparison Matrix")
    assert list(cm[0]) == ["Config", "tg32", "tg128", "tg256", "pp2048", "TTFT p50", "Notes"]
    up = row(cm, "upstream-baseline")
    assert (up["tg32"], up["tg128"], up["tg256"], up["pp2048"], up["TTFT p50"]) == (
        "31.58", "31.62", "31.12", "4341", "~554.8 ms")  # '~': a stored mean, no samples for a p50
    assert "TRITON_ATTN, MARLIN, weight_only_marlin" in up["Notes"]
    llama, sglang = row(cm, "llama.cpp"), row(cm, "SGLang")
    assert (llama["tg32"], llama["pp2048"], llama["TTFT p50"], llama["Notes"]) == ("57.85", "2449.83", "-", "Target")
    assert (sglang["tg32"], sglang["pp2048"], sglang["TTFT p50"], sglang["Notes"]) == ("52.37", "-", "49.87 ms", "Target")
    native = row(cm, "pr31740-native")
    assert native["Notes"] == "Blocked on FlashInfer SM12x JIT support"
    assert all(native[c] == "-" for c in ("tg32", "tg128", "tg256", "pp2048", "TTFT p50"))
    for todo in ("cutlass-gemm", "cutlass-mxfp8"):
        assert row(cm, todo)["Notes"] == "TODO on the results page: no recipe yet"
    for recipe in ("eagle3-short", "eagle3-long", "eagle3-throughput"):  # real configs now, not run yet
        assert row(cm, recipe)["Notes"] == "Not measured yet"
    assert row(cm, "pr31740-marlin-triton")["Notes"] == "Not measured yet"
    # the config order of the matrix file, targets last
    order = [r["Config"] for r in cm if r["Config"]]
    assert order[:3] == ["upstream-baseline", "pr31740-marlin-triton", "pr31740-native"]
    assert order[-2:] == ["llama.cpp", "SGLang"]

    best = md_table(md, "Current Best Results")
    assert row(best, "tg32 (tok/s)") == {"Metric": "tg32 (tok/s)", "Baseline": "31.58", "Best": "31.58",
                                         "Config": "upstream-baseline", "Date": "2026-01-09"}
    assert row(best, "pp2048 (tok/s)")["Best"] == "4341" and row(best, "TTFT@pp2048 (ms)")["Best"] == "554.8"

    var = md_table(md, "Variance Analysis")
    assert row(var, "pp2048")["CV%"] == "0.28%" and "suspiciously low CV — warm state?" in row(var, "pp2048")["Notes"]
    assert "suspiciously" not in row(var, "pp4096")["Notes"] and "suspiciously" not in row(var, "tg32")["Notes"]
    assert row(var, "pp512")["Notes"] == "lower prefill shows higher relative variance"
    assert "slower than tg128" in row(var, "tg256")["Notes"]
    assert row(var, "tg32")["Std Dev"] == "±0.06" and row(var, "tg32")["CV%"] == "0.19%"

    log = md_table(md, "Run Log")
    assert len(log) == 1 and log[0]["tg32"] == "31.58" and log[0]["Date"] == "2026-01-09"
    assert log[0]["Hardware"] == "nvidia-gb10-sm121"
    assert "Blocker**: blocked on FlashInfer SM12x JIT support (RuntimeError" in md


def test_low_cv_against_history_is_flagged():
    matrix = load_matrix(GB10)
    case = next(c for c in matrix.workloads.cases if c.id == "tg32")
    hist = [HistoryEntry(f"2026-01-0{i}T10:00:00+00:00", 31.6, 31.6 * cv, 10) for i, cv in
            enumerate((0.010, 0.012, 0.009, 0.011, 0.010), 1)]
    bf = BaselineFile("nvidia-gb10-sm121", "openai/gpt-oss-120b", "upstream-baseline",
                      {"tg32/tg_tps": MetricBaseline("tok/s", 31.6, 0.3, 10, None, hist)},
                      updated=hist[-1].date)

    def note(values):
        s = SessionResults(matrix="gb10", environment=RunEnvironment.from_dict(dict(ENV)))
        s.results.append(judge_metric("upstream-baseline", case, "tg_tps", values, baseline_for(bf, "tg32/tg_tps"), matrix.gates.rule(case, "tg_tps"), matrix.targets_for(case, "tg_tps")))
        return row(md_table(markdown.render(s, matrix, {"upstream-baseline": bf}), "Variance Analysis"), "tg32")["Notes"]

    quiet = note([31.60, 31.61, 31.60, 31.59, 31.60, 31.61, 31.60, 31.60])  # CV ~0.02 % vs history 1 %
    assert quiet.startswith("suspiciously low CV — warm state? (history median 1.00%)")
    assert note(samples(31.6, 0.3, seed=7)) == ""  # an ordinary CV: no note
    assert "noisier than usual" in note(samples(31.6, 1.6, seed=8))


# --------------------------------------------------------------------------
# Stored results read back


def test_load_session_round_trip_renders_the_same_page(tmp_path):
    session, matrix, seed_bf = gb10_session()
    path = tmp_path / "results.json"
    results_file.save(session, path)
    back = results_file.load(path)
    assert [r.verdict for r in back.results] == [r.verdict for r in session.results]
    live = markdown.render(session, matrix, {"upstream-baseline": seed_bf})
    assert markdown.render(back, matrix, {"upstream-baseline": seed_bf}) == live
    assert benchmark_json.to_pytest_benchmark(back) == benchmark_json.to_pytest_benchmark(session)


def test_load_session_errors_name_the_file(tmp_path):
    with pytest.raises(PerfUserError, match=re.escape(f"{tmp_path / 'nope.json'}: not found")):
        results_file.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": 1, "results": [{"server": "x", "workload": "tg32", "metric": "tg_speed", '
                   '"case": {"kind": "decode", "pp": 512, "tg": 32}}]}')
    with pytest.raises(PerfUserError, match=re.escape(f"{bad}: results[0].metric: unknown metric 'tg_speed'")):
        results_file.load(bad)


# --------------------------------------------------------------------------
# Run log


def test_run_log_append_read_bounded(tmp_path):
    session, _, _ = gb10_session()
    path = append_run_log(tmp_path, session)
    assert path == tmp_path / RUN_LOG_NAME
    recs = read_run_log(tmp_path)
    assert [r.config for r in recs] == ["upstream-baseline", "pr31740-marlin-triton"]
    up = recs[0]
    assert up.date == ENV["captured_at"] and up.hardware_key == "nvidia-gb10-sm121"
    assert up.git_sha == "71d3c5f0a1b2"
    assert up.tg32 == result(session, "upstream-baseline", "tg32/tg_tps").summary.mean
    assert up.notes.startswith("TRITON_ATTN, MARLIN, weight_only_marlin; tg32 ")
    assert append_run_log(tmp_path, session) == path and len(read_run_log(tmp_path)) == 2  # same run: not twice
    for day in range(10, 20):
        later, _, _ = gb10_session(env={**ENV, "captured_at": f"2026-02-{day}T09:00:00+00:00"})
        append_run_log(tmp_path, later, limit=5)
    recs = read_run_log(tmp_path)
    assert len(recs) == 5 and recs[-1].date == "2026-02-19T09:00:00+00:00"
    assert append_run_log(tmp_path, SessionResults(matrix="x", environment=RunEnvironment.from_dict({}))) is None  # nothing measured


def test_damaged_run_log_names_file_and_line(tmp_path):
    (tmp_path / RUN_LOG_NAME).write_text('{"date": "2026-01-09", "config": "a"}\n{"date": \n')
    with pytest.raises(PerfUserError, match=re.escape(f"{tmp_path / RUN_LOG_NAME}: line 2: not valid JSON")):
        read_run_log(tmp_path)


def test_run_log_rows_on_the_page(tmp_path):
    session, matrix, seed_bf = gb10_session()
    append_run_log(tmp_path, session)
    later, _, _ = gb10_session(env={**ENV, "captured_at": "2026-01-20T09:30:00+00:00", "git_sha": "abcdef123456"})
    md = markdown.render(later, matrix, {"upstream-baseline": seed_bf}, read_run_log(tmp_path))
    log = md_table(md, "Run Log")
    assert [(r["Date"], r["Config"]) for r in log] == [
        ("2026-01-12", "upstream-baseline"), ("2026-01-12", "pr31740-marlin-triton"),
        ("2026-01-20", "upstream-baseline"), ("2026-01-20", "pr31740-marlin-triton")]
    assert log[2]["Git SHA"] == "abcdef123456"
    assert log[2]["tg32"] == num(result(later, "upstream-baseline", "tg32/tg_tps").summary.mean)


# --------------------------------------------------------------------------
# GitHub step summary


def test_step_summary_written_only_when_set(tmp_path, monkeypatch):
    session, matrix, seed_bf = gb10_session()
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    assert github.write_step_summary(session, "page") is None
    target = tmp_path / "step_summary.md"
    target.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(target))
    md = markdown.render(session, matrix, {"upstream-baseline": seed_bf})
    assert github.write_step_summary(session, md) == target
    text = target.read_text()
    assert text.startswith("earlier step\n")  # appended, never overwritten
    assert "### pytest-mxfp4: gb10-gpt-oss-120b on `nvidia-gb10-sm121`" in text
    assert "| Config | Metric | Mean ± SD |" in text and "<details><summary>Full results page</summary>" in text
    tg32 = result(session, "upstream-baseline", "tg32/tg_tps")
    assert f"| upstream-baseline | tg32/tg_tps | {num(tg32.summary.mean)} ± {num(tg32.summary.stdev)} tok/s |" in text
    assert "skipped `pr31740-native`: pending: blocked on FlashInfer SM12x" in text
    github.write_step_summary(session, None)
    assert target.read_text().count("### pytest-mxfp4:") == 2


# --------------------------------------------------------------------------
# Trend plots


def _history_baseline() -> BaselineFile:
    hist_tg = [HistoryEntry(f"2026-01-{d:02d}T10:00:00+00:00", m, 0.06, 10)
               for d, m in ((9, 31.58), (12, 31.63), (15, 31.55), (19, 31.87), (23, 31.80))]
    hist_pp = [HistoryEntry(f"2026-01-{d:02d}T10:00:00+00:00", m, s, 10)
               for d, m, s in ((9, 4340.7, 12.2), (12, 4420.0, 180.0), (15, 4701.8, 362.7))]
    return BaselineFile("nvidia-gb10-sm121", "openai/gpt-oss-120b", "pr31740-marlin-triton",
                        {"tg32/tg_tps": MetricBaseline("tok/s", 31.80, 0.05, 10, None, hist_tg),
                         "pp2048/pp_tps": MetricBaseline("tok/s", 4701.8, 362.7, 10, None, hist_pp)},
                        updated=hist_tg[-1].date)


def test_trend_plots_write_one_png_per_metric_and_config(tmp_path):
    need_matplotlib()
    from pytest_mxfp4.report.plots import band, trend_plots

    paths = trend_plots([_history_baseline(), read_baseline(SEED)], tmp_path / "plots")
    assert len(paths) == 2 + 13 and len(set(paths)) == len(paths)
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, p
    assert any(p.name.endswith("pr31740-marlin-triton--tg32-tg_tps.png") for p in paths)
    centre, lo, hi = band(_history_baseline().metrics["tg32/tg_tps"].history, k=2)
    assert centre == pytest.approx(31.686) and lo < 31.55 and hi > 31.87


def test_trend_plots_without_matplotlib_say_how_to_install(tmp_path, monkeypatch):
    from pytest_mxfp4.report import plots

    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    with pytest.raises(PerfUserError, match=re.escape("pip install 'pytest-mxfp4[plot]'")):
        plots.trend_plots([_history_baseline()], tmp_path)
    assert not list(tmp_path.iterdir())


# --------------------------------------------------------------------------
# `pytest-mxfp4 report`: regenerate from stored data


def _baselines_dir(tmp_path: Path) -> Path:
    bdir = tmp_path / "baselines"
    dest = bdir / "nvidia-gb10-sm121" / "openai--gpt-oss-120b" / "upstream-baseline.yaml"
    dest.parent.mkdir(parents=True)
    shutil.copy(SEED, dest)
    return bdir


def test_report_command_from_results_and_baselines(tmp_path, capsys):
    bdir = _baselines_dir(tmp_path)
    BaselineStore(bdir).save(_history_baseline())
    session, _, _ = gb10_session()
    results = tmp_path / "results.json"
    results_file.save(session, results)
    append_run_log(bdir, session)
    out = tmp_path / "docs" / "BENCHMARK_RESULTS.md"
    plots_dir = None
    try:
        import matplotlib  # noqa: F401
        plots_dir = tmp_path / "docs" / "plots"
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("matplotlib is required in CI")
    rc = report_command([str(results)], str(bdir), str(GB10), str(out), str(plots_dir) if plots_dir else None)
    assert rc == 0
    md = out.read_text()
    tg32 = result(session, "upstream-baseline", "tg32/tg_tps").summary
    assert f"tg32_tps: {tg32.mean:.2f} ± {tg32.stdev:.2f}" in md  # the run's numbers, not the baseline's
    assert row(md_table(md, "Comparison Matrix"), "llama.cpp")["pp2048"] == "2449.83"
    log = md_table(md, "Run Log")
    assert [r["Config"] for r in log] == ["upstream-baseline", "pr31740-marlin-triton"]  # no duplicate rows
    assert f"results page: {out}" in capsys.readouterr().out
    if plots_dir:
        pngs = sorted(plots_dir.glob("*.png"))
        assert len(pngs) == 13 + 2
        assert "## Trends" in md and "](plots/nvidia-gb10-sm121--openai--gpt-oss-120b--upstream-baseline--tg32-tg_tps.png)" in md


def test_report_command_from_stored_baselines_only(tmp_path):
    bdir = _baselines_dir(tmp_path)
    out = tmp_path / "page.md"
    assert report_command([], str(bdir / "nvidia-gb10-sm121"), str(GB10), str(out), None) == 0
    md = out.read_text()
    assert "tg32_tps: 31.58 ± 0.06" in md and "pp2048_tps: 4340.70 ± 12.22" in md
    assert row(md_table(md, "Comparison Matrix"), "SGLang")["TTFT p50"] == "49.87 ms"


def test_report_command_user_errors_name_the_file(tmp_path):
    bdir = _baselines_dir(tmp_path)
    out = str(tmp_path / "page.md")
    missing = tmp_path / "missing.json"
    with pytest.raises(PerfUserError, match=re.escape(f"{missing}: not found")):
        report_command([str(missing)], str(bdir), None, out, None)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(PerfUserError, match=re.escape(f"{broken}: not valid JSON")):
        report_command([str(broken)], str(bdir), None, out, None)
    with pytest.raises(PerfUserError, match=re.escape(f"{tmp_path / 'nowhere'}: baseline directory not found")):
        report_command([], str(tmp_path / "nowhere"), None, out, None)
    with pytest.raises(PerfUserError, match=re.escape("configs/none.yaml: matrix file not found")):
        report_command([], str(bdir), "configs/none.yaml", out, None)
    BaselineStore(bdir).save(BaselineFile("cpu-x86_64-epyc-2c", "tiny", "tiny-eager",
                                          {"tg32/tg_tps": MetricBaseline("tok/s", 300.0, 3.0, 5)}))
    with pytest.raises(PerfUserError, match="holds baselines of several machines"):
        report_command([], str(bdir), None, out, None)
    (bdir / RUN_LOG_NAME).write_text("oops\n")
    with pytest.raises(PerfUserError, match=re.escape(f"{bdir / RUN_LOG_NAME}: line 1")):
        report_command([], str(bdir / "nvidia-gb10-sm121"), str(GB10), out, None)
    assert not Path(out).exists()


def test_page_from_a_session_alone_and_cpu_matrix_expectations():
    from pytest_mxfp4.formats.config import Case

    matrix = load_matrix(ROOT / "configs" / "cpu.yaml")
    session = SessionResults(matrix="cpu", environment=RunEnvironment.from_dict({**ENV, "gpus": [], "hardware_key": "cpu-x86_64-epyc-2c"}))
    rec = ServerRecord(name="tiny-compiled", runner="process", model="tiny",
                       observed=ObservedFacts.from_dict({"compilation_mode": "VLLM_COMPILE", "enforce_eager": False, "quantization": "mxfp4"}))
    session.servers = {"tiny-compiled": rec,
                       "later": ServerRecord(name="later", runner="process", model="", skipped="pending: no recipe yet")}
    deep = Case("decode", 512, 32, depth=1024)
    for case, metric, mean in ((Case("decode", 512, 32), "tg_tps", 310.0), (deep, "tg_tps", 280.0),
                               (Case("prefill", 512, 1), "pp_tps", 9000.0)):
        session.results.append(judge_metric("tiny-compiled", case, metric, samples(mean, mean * 0.01, 3), None, matrix.gates.rule(case, metric), matrix.targets_for(case, metric)))
    md = markdown.render(session, None)  # no matrix: everything from the session
    assert "## Workload Parameters" not in md
    cm = md_table(md, "Comparison Matrix")
    # no matrix: the usual tg32, and the prefill case it has instead of pp2048
    assert list(cm[0])[1:4] == ["tg32", "pp512", "TTFT p50"] and row(cm, "later")["Notes"] == "No recipe yet"
    assert row(md_table(md, "Variance Analysis"), "tg32@d1024")["Mean"] == num(result(session, "tiny-compiled", "tg32@d1024/tg_tps").summary.mean)
    # with the matrix: list expectations are "any of", like the plugin's own check
    md = markdown.render(session, matrix)
    assert "compilation_mode: VLLM_COMPILE  # as expected" in md
    assert "enforce_eager: false  # as expected" in md
    assert "quantization: mxfp4  # EXPECTED none" in md


def test_a_run_that_measured_nothing_says_so_and_shows_the_baseline():
    matrix = load_matrix(GB10)
    seed_bf = read_baseline(SEED)
    session = SessionResults(matrix=matrix.name, environment=RunEnvironment.from_dict(dict(ENV)))
    session.servers["upstream-baseline"] = ServerRecord(name="upstream-baseline", runner="docker", model="m")
    case = next(c for c in matrix.workloads.cases if c.id == "tg32")
    session.results.append(judge_metric("upstream-baseline", case, "tg_tps", [], baseline_for(seed_bf, "tg32/tg_tps"), matrix.gates.rule(case, "tg_tps")))
    md = markdown.render(session, matrix, {"upstream-baseline": seed_bf})
    up = row(md_table(md, "Comparison Matrix"), "upstream-baseline")
    assert up["tg32"] == "31.58" and "tg32 error" in up["Notes"] and "stored baseline 2026-01-09" in up["Notes"]
    assert "**Status**: 💥 NOT MEASURED this run - 1 metric(s) errored (tg32)" in md
    assert session.results[0].fails  # and the gate still fails it


def test_incomparable_result_shows_why_and_survives_the_json(tmp_path):
    matrix = load_matrix(GB10)
    seed_bf = read_baseline(SEED)
    session = SessionResults(matrix=matrix.name, environment=RunEnvironment.from_dict(dict(ENV)))
    session.servers["upstream-baseline"] = ServerRecord(name="upstream-baseline", runner="docker", model="m",
                                                        observed=ObservedFacts.from_dict({"attention_backend": "FLASHINFER"}))
    case = next(c for c in matrix.workloads.cases if c.id == "tg32")
    r = judge_metric("upstream-baseline", case, "tg_tps", samples(33.1, 0.05, 1), None, matrix.gates.rule(case, "tg_tps"))
    r.incomparable = "baseline was taken on another backend (attention_backend: baseline 'TRITON_ATTN', now 'FLASHINFER')"
    session.results.append(r)
    md = markdown.render(session, matrix, {"upstream-baseline": seed_bf})
    assert f"tg32_tps: {r.summary.mean:.2f} ± {r.summary.stdev:.2f}   # incomparable: baseline was taken on another" in md
    assert "tg32 incomparable" in row(md_table(md, "Comparison Matrix"), "upstream-baseline")["Notes"]
    path = tmp_path / "r.json"
    results_file.save(session, path)
    back = results_file.load(path)
    assert back.results[0].verdict.value == "incomparable" and back.results[0].incomparable


def test_the_ab_section_is_part_of_the_page_and_survives_report_from_the_json(tmp_path):
    # rendered with the page (never appended after it), so `pytest-mxfp4 report`
    # on the results JSON reproduces it
    entry = {"server": "s", "head": "s@head", "case": "tg32", "metric": "tg_tps", "base_starts": [100.0, 101.0, 99.0],
             "head_starts": [90.0, 91.0, 89.0], "overrides": ["env.X=1"], "verdict": "regressed", "gate": "fail",
             "delta_pct": -10.0, "ci_low_pct": -12.0, "ci_high_pct": -8.0, "between_start_cv_pct": 1.0,
             "noise": "between-start CV 1.00% learned from this run's arms 4 df", "disturbed": "s start 1 (busy)"}
    from pytest_mxfp4.formats.results import ABEntry, StartsRecord, StartWindow

    starts = StartsRecord(restarts=3, max_restarts=6, order=["s#0", "s@head#0"], ab=[ABEntry(**entry)],
                          windows=[StartWindow(server="s", start=1, case="tg32", disturbed="busy")])
    session = SessionResults(matrix="m", environment=RunEnvironment.from_dict({"hardware_key": "hw"}), starts=starts)
    from pytest_mxfp4.formats.config import Case
    from pytest_mxfp4.formats.results import MetricResult

    session.metrics.append(MetricResult(server="s", case=Case("decode", pp=512, tg=32), metric="tg_tps", gate="fail",
                                        samples=[100.0, 101.0, 99.0]))
    page = markdown.render(session, None)
    assert "## Server starts and A/B" in page and "| s | tg32 | tg_tps |" in page
    assert page.index("## Server starts and A/B") < page.index("## How to Run Benchmarks")
    assert "Disturbed while measuring" in page and "s start 1 tg32: busy" in page
    results_file.save(session, tmp_path / "r.json")
    (tmp_path / "bl").mkdir()
    report_command([str(tmp_path / "r.json")], str(tmp_path / "bl"), None, str(tmp_path / "page.md"), None)
    again = (tmp_path / "page.md").read_text()
    assert "## Server starts and A/B" in again and "| s | tg32 | tg_tps |" in again


def test_a_run_log_line_reads_back_as_written_and_an_old_line_still_reads(tmp_path):
    """The run log is formats/runlog.py's: a record written is the record read;
    a line of an older version (no run_id, tg32 absent) still reads."""
    session, _, _ = gb10_session()
    append_run_log(tmp_path, session)
    line = (tmp_path / RUN_LOG_NAME).read_text().splitlines()[0]
    assert list(json.loads(line)) == ["schema", "run_id", "date", "matrix", "config", "hardware_key", "git_sha",
                                      "tg32", "metrics", "verdicts", "notes"]
    assert json.loads(line) == read_run_log(tmp_path)[0].to_dict()
    (tmp_path / RUN_LOG_NAME).write_text('{"date": "2026-01-09", "config": "a", "tg32": "fast"}\n')
    old = read_run_log(tmp_path)[0]
    assert (old.run_id, old.tg32, old.config) == (None, None, "a")
