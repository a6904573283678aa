"""scripts/build_llama_server.sh's guard against builds this CPU refuses,
proven without a real build: a fake `cmake` on PATH "builds" a llama-server
that dies by a real signal (SIGILL/SIGSEGV) when compiled with AVX-512 on,
and a fake server that generates otherwise. The script must name the signal,
rebuild once with the safe feature set (no AVX-512, no AMX, GGML_NATIVE off),
stamp only a build that passed the smoke test, and stop when even that crashes.
Seconds, no compiler."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build_llama_server.sh"
FAKE_SERVER = ROOT / "tests" / "fakes" / "fake_llama_server.py"

FAKE_CMAKE = r"""#!/bin/bash
# configure (-S src -B dir flags...): remember the flags; --build dir: write the "binaries"
if [ "$1" = "--build" ]; then
    b=$2; mkdir -p "$b/bin"; echo "build $b" >> "$CMAKE_CALLS"
    if [ "$FAKE_CRASH" = all ] || { [ "$FAKE_CRASH" = avx512 ] && grep -q -- "-DGGML_AVX512=ON" "$b/args"; }; then
        printf '#!/bin/sh\nulimit -c 0\necho "load_tensors: loading model"\nkill -%s $$\n' "$FAKE_SIGNAL" > "$b/bin/llama-server"
    else
        printf '#!/bin/sh\nexec %s %s "$@"\n' "$FAKE_PYTHON" "$FAKE_SERVER" > "$b/bin/llama-server"
    fi
    printf '#!/bin/sh\nexit 0\n' > "$b/bin/llama-quantize"
    chmod +x "$b/bin/llama-server" "$b/bin/llama-quantize"
    echo "[1/1] Linking CXX executable bin/llama-server"
    exit 0
fi
args="$*"
while [ $# -gt 0 ]; do [ "$1" = -B ] && b=$2; shift; done
mkdir -p "$b"; echo "$args" > "$b/args"; echo "configure $args" >> "$CMAKE_CALLS"
"""


@pytest.fixture
def fake_build(tmp_path):
    """(run, calls file, stamp dir): run(**env) runs the script against a fake toolchain."""
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "cmake").write_text(FAKE_CMAKE)
    (tools / "ninja").write_text("#!/bin/sh\nexit 0\n")
    for t in tools.iterdir():
        t.chmod(0o755)
    src = tmp_path / "llama.cpp" / "src"
    src.mkdir(parents=True)
    (src / ".from-0.3.36").touch()
    (src / "convert_hf_to_gguf.py").touch()
    models = [tmp_path / "tiny-f16.gguf", tmp_path / "moe-mxfp4.gguf"]
    for m in models:
        m.write_bytes(b"GGUF")
    bin_dir = tmp_path / "bin"
    calls = tmp_path / "cmake-calls.txt"

    def run(**env: str) -> subprocess.CompletedProcess:
        full = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "LLAMA_CPP_DIR": str(tmp_path / "llama.cpp"),
                "LLAMA_BIN_DIR": str(bin_dir), "PYTHON": sys.executable, "LLAMA_PROGRESS_S": "1",
                "LLAMA_SMOKE_GGUFS": " ".join(map(str, models)), "LLAMA_SMOKE_LOG_DIR": str(tmp_path / "smoke"),
                "CMAKE_CALLS": str(calls), "FAKE_PYTHON": sys.executable, "FAKE_SERVER": str(FAKE_SERVER),
                "FAKE_SIGNAL": "ILL", "FAKE_CRASH": "avx512", **env}
        full.pop("PYTEST_MXFP4_SKIP_LLAMACPP", None)
        return subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=full, timeout=120)

    return run, calls, bin_dir


def configures(calls: Path) -> list[str]:
    return [l for l in calls.read_text().splitlines() if l.startswith("configure")]


def test_a_build_that_dies_by_sigill_is_named_and_rebuilt_once_with_the_safe_set(fake_build):
    run, calls, bin_dir = fake_build
    r = run(LLAMA_CPU_FEATURES="avx512")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "killed by SIGILL (illegal instruction): the binary uses CPU instructions this machine refuses" in out
    assert "rebuilding once with the safe feature set" in out
    first, second = configures(calls)
    assert "-DGGML_AVX512=ON" in first and "-DGGML_NATIVE=OFF" in first
    for flag in ("-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_AVX512=OFF", "-DGGML_AMX_TILE=OFF",
                 "-DGGML_AMX_INT8=OFF", "-DGGML_AMX_BF16=OFF"):
        assert flag in second
    assert "smoke test: moe-mxfp4.gguf: ok" in out and "smoke test: tiny-f16.gguf: ok" in out
    stamps = list(bin_dir.glob(".llama-server-*"))
    assert len(stamps) == 1 and "features=safe" in stamps[0].read_text()
    # the stamp is keyed by what was asked, not what the fallback gave: a re-run does nothing
    again = run(LLAMA_CPU_FEATURES="avx512")
    assert again.returncode == 0 and "up to date" in again.stdout and "features=safe" in again.stdout
    assert len(configures(calls)) == 2


def test_a_safe_build_that_still_crashes_stops_without_a_stamp(fake_build):
    run, calls, bin_dir = fake_build
    r = run(LLAMA_CPU_FEATURES="avx512", FAKE_CRASH="all", FAKE_SIGNAL="SEGV")
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert out.count("killed by SIGSEGV (segmentation fault)") == 2  # once per build, not once per model
    assert "crashed on this CPU even so; no stamp written" in out
    assert len(configures(calls)) == 2, "rebuilds once, never more"
    assert not list(bin_dir.glob(".llama-server-*"))


def test_a_crash_of_the_safe_set_itself_is_not_rebuilt(fake_build):
    run, calls, bin_dir = fake_build
    r = run(LLAMA_CPU_FEATURES="safe", FAKE_CRASH="all")
    assert r.returncode == 1 and "killed by SIGILL" in r.stderr
    assert len(configures(calls)) == 1 and "rebuilding" not in r.stdout
    assert not list(bin_dir.glob(".llama-server-*"))


def test_compiling_shows_progress_and_the_feature_set(fake_build):
    run, calls, _ = fake_build
    r = run(LLAMA_CPU_FEATURES="safe")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[2/4] compiling llama-server + llama-quantize (cpu, CPU features: safe" in r.stdout
    assert "[4/4] smoke test" in r.stdout and "CPU features safe" in r.stdout


def test_an_unknown_feature_set_is_one_clear_error(fake_build):
    run, calls, _ = fake_build
    r = run(LLAMA_CPU_FEATURES="turbo")
    assert r.returncode == 2 and "LLAMA_CPU_FEATURES=turbo: expected auto, safe, avx512 or native" in r.stderr
    assert not calls.exists()


def test_the_gpu_bundle_tokenizer_needs_only_tokenizers(tmp_path):
    """scripts/gpu_llamacpp.sh bundle on a fresh clone (no models/tiny, no torch):
    make_tiny_model.py --tokenizer-only writes what make_moe_gguf.py reads."""
    import json

    pytest.importorskip("tokenizers")
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_tiny_model.py"), str(tmp_path / "tok"),
                        "--tokenizer-only", "--vocab", "512"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "tok" / "config.json").read_text()) == {"vocab_size": 512}
    assert json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())["bos_token"] == "<s>"
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tmp_path / "tok" / "tokenizer.json"))
    assert tok.get_vocab_size() == 512 and tok.encode("the licence").ids[0] == tok.token_to_id("<s>")
    assert not (tmp_path / "tok" / "model.safetensors").exists()
