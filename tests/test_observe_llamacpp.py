"""llama.cpp as an engine: log facts from real llama-server logs (CPU here, CUDA on an
H200), the request shape, the client/server decode check, and a real llama-server
(when built by scripts/build_llama_server.sh) for /tokenize and exact outputs.

Logs in tests/data/llamacpp-logs/ are unedited llama-server output (the GPU one cut
after its third request):
  cpu-moe-mxfp4.log       gpt-oss MoE (MXFP4_MOE) on the 2-core CPU box, -lv 4
  cpu-tiny-f16.log        the tiny Llama as f16 GGUF, CPU, -lv 4
  cpu-moe-mxfp4-lv3.log   same MoE at the default verbosity 3 (almost nothing logged)
  gpu-h200-moe-mxfp4.log  0.44B gpt-oss MoE (MXFP4_MOE), CUDA on one H200, -ngl 99, FA kernels not built
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from pytest_mxfp4.measure.fidelity import (
    FLAG_SERVER_DISAGREES,
    SERVER_RATIO_BOUND,
    decode_ratio,
    disagrees,
    keep_timings,
    server_decode_tps,
)
from pytest_mxfp4.observe.facts import check_expectations
from pytest_mxfp4.observe.logs import observe_text
from pytest_mxfp4.observe.llamacpp import canonical_ftype

ROOT = Path(__file__).resolve().parent.parent
LOGS = Path(__file__).parent / "data" / "llamacpp-logs"


def facts(name: str):
    return observe_text((LOGS / name).read_text(encoding="utf-8"), engine="llama.cpp")


# --- facts from real logs --------------------------------------------------------

def test_cpu_moe_log_shows_cpu_backend_and_mxfp4_moe():
    f = facts("cpu-moe-mxfp4.log")
    assert f.backend == "CPU"
    assert f.device == "AMD EPYC"
    assert f.gpu_layers_offloaded == 0  # only the CPU is listed: nothing can be offloaded
    assert f.flash_attention is True  # "auto" resolved: "resolve_fused_ops: Flash Attention enabled"
    assert f.model_arch == "gpt-oss"
    assert f.quantization == "MXFP4_MOE"
    assert "mxfp4" in f.tensor_types
    assert f.context_size == 4096
    assert f.kv_cache_dtype == "f16"
    assert f.threads == 1
    assert f.llamacpp_build == "b0-unknown"  # as /props build_info says for a build without git
    assert "Flash Attention enabled" in f.evidence["flash_attention"]


def test_cpu_dense_log_is_llama_f16_without_mxfp4():
    f = facts("cpu-tiny-f16.log")
    assert (f.backend, f.model_arch, f.quantization) == ("CPU", "llama", "F16")
    assert "mxfp4" not in f.tensor_types


def test_gpu_log_shows_cuda_full_offload_and_fa_disabled():
    f = facts("gpu-h200-moe-mxfp4.log")
    assert f.backend == "CUDA"
    assert f.device == "NVIDIA H200"
    assert (f.gpu_layers_offloaded, f.layers_total) == (9, 9)
    # -fa auto, but the build has no CUDA FA kernels: the server says so and falls back
    assert f.flash_attention is False
    assert "set to disabled" in f.evidence["flash_attention"]
    assert f.quantization == "MXFP4_MOE"
    assert f.model_arch == "gpt-oss"
    assert f.context_size == 8192
    assert f.cuda_archs == "900"


def test_default_verbosity_log_shows_nothing_and_says_so():
    """At -lv 3 llama-server prints no model/device lines: every fact stays None,
    never a guess, and an expectation then reports 'could not be observed'."""
    f = facts("cpu-moe-mxfp4-lv3.log")
    d = f.to_dict()
    assert d["backend"] is None and d["quantization"] is None and d["flash_attention"] is None
    [m] = check_expectations({"quantization": "MXFP4_MOE"}, f)
    assert "could not be observed" in m.message


def test_core_facts_are_llamacpp_ones_not_vllm_ones():
    d = facts("cpu-moe-mxfp4.log").to_dict()
    assert "attention_backend" not in d and "vllm_version" not in d
    assert {"backend", "flash_attention", "gpu_layers_offloaded", "quantization"} <= d.keys()


def test_expectation_mismatch_names_fact_and_log_line():
    f = facts("gpu-h200-moe-mxfp4.log")
    assert check_expectations({"backend": "CUDA", "quantization": "MXFP4_MOE", "flash_attention": False}, f) == []
    [m] = check_expectations({"backend": "Vulkan"}, f)
    assert m.message.startswith("backend: expected Vulkan, observed CUDA")
    assert "using device CUDA0" in m.message or "CUDA0" in m.message


@pytest.mark.parametrize("name, canonical", [
    ("MXFP4 MoE", "MXFP4_MOE"),
    ("F16", "F16"),
    ("Q4_K - Medium", "Q4_K_M"),
    ("Q5_K - Small", "Q5_K_S"),
    ("Q8_0", "Q8_0"),
    ("IQ2_XXS - 2.0625 bpw", "IQ2_XXS"),
    ("all F32", "F32"),
    ("Q4_0 (guessed)", "Q4_0"),
])
def test_canonical_ftype_matches_llama_quantize_names(name, canonical):
    assert canonical_ftype(name) == canonical


def test_older_log_format_without_uptime_prefix():
    text = "\n".join([
        "ggml_cuda_init: found 1 CUDA devices:",
        "  Device 0: NVIDIA GB10, compute capability 12.1, VMM: yes",
        "llm_load_print_meta: model ftype      = Q4_K - Medium",
        "llm_load_tensors: offloaded 37/37 layers to GPU",
        "llama_new_context_with_model: flash_attn = 1",
        "main: build = 3467 (abc1234)",
    ])
    f = observe_text(text, engine="llama.cpp")
    assert (f.backend, f.device, f.compute_capability) == ("CUDA", "NVIDIA GB10", "12.1")
    assert f.quantization == "Q4_K_M"
    assert (f.gpu_layers_offloaded, f.flash_attention, f.llamacpp_build) == (37, True, "b3467-abc1234")


def test_observe_cli_reads_a_llamacpp_log(capsys):
    from pytest_mxfp4.cli.main import main

    assert main(["observe", "--engine", "llama.cpp", str(LOGS / "gpu-h200-moe-mxfp4.log")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backend"] == "CUDA" and out["quantization"] == "MXFP4_MOE"


# --- request shape and the client/server decode check -----------------------------------

def test_llamacpp_request_fields():
    from pytest_mxfp4.measure.client import EngineClient, RequestSpec

    c = EngineClient("l", "http://127.0.0.1:9", "m", engine="llama.cpp")
    try:
        extra = c._create_kwargs(RequestSpec("hi", 32), exact=True)["extra_body"]
        assert extra["n_predict"] == 32 and extra["ignore_eos"] is True
        assert extra["cache_prompt"] is False
        assert "min_tokens" not in extra  # llama.cpp ignores it; vLLM-only
        assert c.reset_prefix_cache() is False  # no such endpoint: no request sent
        assert "vLLM-only" in c.prefix_cache_note and "--cache-ram 0" in c.prefix_cache_note
    finally:
        c.close()


def test_llamacpp_cached_token_counter():
    from pytest_mxfp4.measure.client import parse_llamacpp_cached_tokens

    text = ("# TYPE llamacpp:prompt_tokens_cached_total counter\n"
            "llamacpp:prompt_tokens_cached_total 512\nllamacpp:prompt_tokens_total 2048\n")
    assert parse_llamacpp_cached_tokens(text) == 512.0
    assert parse_llamacpp_cached_tokens("llamacpp:prompt_tokens_total 3\n") is None


# timings as llama-server sent them in the final chunk (H200 run, tg32)
TIMINGS = {"cache_n": 0, "prompt_n": 513, "prompt_ms": 10.6, "prompt_per_token_ms": 0.0207,
           "prompt_per_second": 48396.2, "predicted_n": 32, "predicted_ms": 25.1,
           "predicted_per_token_ms": 0.784, "predicted_per_second": 1274.9}


def test_decode_ratio_and_bound():
    assert server_decode_tps(TIMINGS) == pytest.approx(1274.9)
    assert server_decode_tps({"predicted_n": 32, "predicted_ms": 25.0}) == pytest.approx(1280.0)
    assert server_decode_tps(None) is None and server_decode_tps({}) is None
    assert decode_ratio(1280.0, TIMINGS) == pytest.approx(1280.0 / 1274.9)
    assert decode_ratio(None, TIMINGS) is None and decode_ratio(1000.0, None) is None
    assert not disagrees(1.0 + SERVER_RATIO_BOUND * 0.99)
    assert disagrees(1.0 + SERVER_RATIO_BOUND * 1.01) and disagrees(1.0 - SERVER_RATIO_BOUND * 1.01)
    assert not disagrees(None)
    kept = keep_timings({**TIMINGS, "note": "x", "flag": True})
    assert kept["predicted_per_second"] == 1274.9 and "note" not in kept and "flag" not in kept


def test_server_check_flags_a_sample_the_server_disagrees_with():
    """The runner keeps the server's timings per sample, flags one whose client tg
    is beyond the bound, and summarises the ratio in a case note."""
    from pytest_mxfp4.formats.config import Case
    from pytest_mxfp4.formats.samples import RequestMetrics
    from pytest_mxfp4.measure.runner import CaseRunner
    from pytest_mxfp4.formats.samples import CaseRun, Sample
    from pytest_mxfp4.measure.timing import StreamTiming

    runner = CaseRunner.__new__(CaseRunner)  # no server: only the check itself
    runner.result = CaseRun(server="l", case=Case("decode", 512, 32), latency_ms=0.0)
    for tg, flagged in ((1280.0, False), (1274.9 * 1.5, True)):
        s = Sample(run=len(runner.result.samples))
        s.metrics = RequestMetrics(ttfr_ms=10, e2e_ttft_ms=10, est_ppt_ms=10, pp_tps=None, tg_tps=tg)
        t = StreamTiming(start=0.0)
        t.server_timings = dict(TIMINGS)
        runner._server_check(s, t)
        runner.result.samples.append(s)
        assert (FLAG_SERVER_DISAGREES in s.flags) is flagged
        assert s.server_timings["predicted_n"] == 32
    [note] = [n for n in runner.result.notes if n.startswith("client/server decode ratio")]
    assert "over 2 samples" in note and "1.500" in note


def test_results_json_keeps_server_timings():
    from pytest_mxfp4.formats.samples import Sample
    from pytest_mxfp4.formats.results import sample_dict

    s = Sample(run=0, server_timings=keep_timings(TIMINGS), server_decode_ratio=1.004)
    d = sample_dict(s)
    assert d["server_timings"]["predicted_per_second"] == 1274.9 and d["server_decode_ratio"] == 1.004
    assert "server_timings" not in sample_dict(Sample(run=0))  # vLLM samples unchanged


# --- a real llama-server ------------------------------------------------------------

SERVER = ROOT / ".venv" / "bin" / "llama-server"
MOE = ROOT / "models" / "gguf" / "moe-mxfp4.gguf"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    if not (SERVER.is_file() and MOE.is_file()):
        pytest.skip("llama-server or the MoE GGUF not built (scripts/setup.sh builds both)")
    from pytest_mxfp4.servers.exits import describe_exit
    from pytest_mxfp4.servers.health import log_tail

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("llama") / "llama-server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(SERVER), "-m", str(MOE), "-a", "moe", "--host", "127.0.0.1", "--port", str(port), "-c", "2048",
             "-np", "1", "-t", "1", "--metrics", "--no-webui", "--cache-ram", "0"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    import httpx

    url = f"http://127.0.0.1:{port}"
    failure = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:  # a dead server is reported as such, with the signal named
                failure = f"llama-server {describe_exit(proc.returncode)}. Last log lines:\n{log_tail(log, 8)}"
                break
            time.sleep(0.1)
        else:
            failure = "llama-server did not become healthy in 30 s"
        if failure is None:
            yield url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
    if failure is not None:
        pytest.fail(failure, pytrace=False)


@pytest.mark.engine
def test_real_llama_server_counts_tokens_and_gives_exact_outputs(llama_server):
    """The llama.cpp /tokenize shape counts what /v1/completions then reports as
    prompt_tokens; n_predict + ignore_eos give exactly the tokens asked for; the
    final chunk's timings are kept; /props gives the build."""
    from pytest_mxfp4.measure.client import EngineClient, RequestSpec

    c = EngineClient("moe", llama_server, "moe", engine="llama.cpp")
    try:
        prompt = "the licence grants permission to copy and modify " * 8
        n = c.count_tokens(prompt)
        assert n > 40
        # vLLM's body gets HTTP 200 with no tokens from llama-server: the reason for the engine switch
        import httpx

        assert httpx.post(llama_server + "/tokenize", json={"model": "moe", "prompt": prompt}).json()["tokens"] == []
        t = c.stream(RequestSpec(prompt, 16))
        assert (t.prompt_tokens, t.completion_tokens) == (n, 16)
        assert t.server_timings["predicted_n"] == 16 and t.server_timings["prompt_n"] == n
        assert t.server_timings["cache_n"] == 0  # cache_prompt: false
        assert c.server_version() == "b0-unknown"
        assert c.prefix_cache_hits() == 0.0
    finally:
        c.close()


# --- set-up scripts: the documented guards ------------------------------------------

def test_build_script_skip_option():
    r = subprocess.run(["bash", str(ROOT / "scripts" / "build_llama_server.sh")], capture_output=True, text=True,
                       env={**os.environ, "PYTEST_MXFP4_SKIP_LLAMACPP": "1"}, timeout=30)
    assert r.returncode == 0 and "skipped (PYTEST_MXFP4_SKIP_LLAMACPP=1)" in r.stdout


def test_make_moe_gguf_names_the_missing_converter(tmp_path):
    import sys

    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_moe_gguf.py"), "--dense-from", str(tmp_path),
                        "--dense", str(tmp_path / "x.gguf")], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "LLAMA_CPP_DIR": str(tmp_path / "nowhere")})
    assert r.returncode != 0
    assert "convert_hf_to_gguf.py not found: run scripts/build_llama_server.sh first" in r.stderr
    assert "Traceback" not in r.stderr
