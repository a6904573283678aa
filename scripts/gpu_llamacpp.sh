#!/usr/bin/env bash
# The gate on a real GPU with llama.cpp: build llama-server with CUDA, make a
# random-weight gpt-oss-style MoE quantized MXFP4_MOE, and run the plugin's own
# matrix (configs/gpu-llamacpp.yaml) over R server starts with NVML telemetry.
#
#   scripts/gpu_llamacpp.sh bundle        # on a box with PyPI: fill .cache/gpu-bundle/ (git-ignored) with
#                                         # what an offline CUDA box needs (~14 MB): py3.12 wheels
#                                         # (openai 3.x + httpx2/httpcore2/truststore, pydantic,
#                                         # docker, ...), the llama.cpp source (slimmed) and the
#                                         # tokenizer of models/tiny
#   scripts/gpu_llamacpp.sh all [R]       # on the CUDA box: build + model + 2 x R starts (default 5)
#   scripts/gpu_llamacpp.sh build | model | starts [R] | compare | pack DIR
#   scripts/gpu_llamacpp.sh dense && scripts/gpu_llamacpp.sh ab   # bandwidth-bound A/A + planted ~2.4 % A/B
#
# A start is a fresh llama-server process measuring every case. With the plugin's own
# starts (--perf-restarts R): one run of R starts stores the baseline, a second run of R
# fresh starts is judged against it by the gate, so A/A across starts is the gate's own
# verdict. Where the plugin has no restarts, each start is one pytest invocation and
# start 1 is the baseline. `compare` repeats the decision offline (pytest-mxfp4 compare)
# and writes one results page over all runs. Results land in .perf/gpu-llamacpp/.
# On the CUDA box, python3 must have torch + transformers (to make the model), pytest,
# pyyaml, scipy, filelock and nvidia-ml-py; nvcc, cmake and ninja for the build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VERSION=0.3.36
BUNDLE="${GPU_BUNDLE:-$ROOT/.cache/gpu-bundle}"
WORK="${GPU_WORK:-$ROOT/.perf/gpu-llamacpp}"
CFG="${GPU_CFG:-configs/gpu-llamacpp.yaml}"
MODEL=models/gguf/moe-mxfp4-gpu.gguf
export LLAMA_CPP_DIR="$ROOT/.cache/llama.cpp" LLAMA_BIN_DIR="$ROOT/.cache/llama.cpp/bin-cuda"
PY="${PYTHON:-python3}"

say() { echo "[gpu_llamacpp $(date -u +%H:%M:%S)] $*"; }

site() {  # the carried wheels, installed into a scratch site (no registry there)
    if [ -d "$BUNDLE/whl" ] && [ ! -f /tmp/gpu-llamacpp-site/.done ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/gpu-llamacpp-site "$BUNDLE"/whl/*.whl
        touch /tmp/gpu-llamacpp-site/.done
    fi
    export PYTHONPATH="/tmp/gpu-llamacpp-site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
}

bundle() {  # needs only python3 with pip and PyPI: no .venv, no models, no compiler
    local t0; t0=$(date +%s)
    mkdir -p "$BUNDLE/whl" "$BUNDLE/tok"
    say "bundle [1/3] wheels for the CUDA box (python 3.12)"
    "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$BUNDLE/whl" \
        openai==3.60.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 \
        typing-inspection==0.4.5 jiter==0.19.0 sniffio==1.3.1 httpx2==2.16.2 httpcore2==2.16.2 \
        truststore==0.10.5 anyio==4.16.0 typing_extensions==4.16.0 docker==7.2.0 h11==0.16.0 \
        httpx==0.29.0 idna==3.20 2>&1 | grep -v "^WARNING: Location" || true
    say "bundle [2/3] llama.cpp source (the sdist only, no build; $(( $(date +%s) - t0 )) s so far)"
    PYTHON="$PY" bash scripts/build_llama_server.sh source
    local ex=()
    for d in models docs media tests examples benches pocs tools/server/tests tools/ui/tests \
             ggml/src/ggml-{cann,et,hexagon,metal,musa,opencl,openvino,sycl,virtgpu,vulkan,webgpu,zdnn,zendnn,hip,blas}; do
        ex+=("--exclude=src/$d")
    done
    tar -C "$LLAMA_CPP_DIR" --anchored "${ex[@]}" -czf "$BUNDLE/llama.cpp-src.tar.gz" src
    say "bundle [3/3] tokenizer ($(( $(date +%s) - t0 )) s so far)"
    if [ -f models/tiny/tokenizer.json ]; then
        cp models/tiny/config.json models/tiny/tokenizer.json models/tiny/tokenizer_config.json "$BUNDLE/tok/"
    else  # a fresh clone: train it here with `tokenizers` alone (in a scratch folder), no torch
        local tools="$ROOT/.cache/gpu-bundle-tools"
        PYTHONPATH="$tools" "$PY" -c "import tokenizers" 2>/dev/null || \
            "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --target "$tools" tokenizers==0.23.3 2>&1 \
                | grep -v "^WARNING: Location" || true
        PYTHONPATH="$tools" "$PY" scripts/make_tiny_model.py "$BUNDLE/tok" --tokenizer-only
    fi
    say "bundle ready in $(( $(date +%s) - t0 )) s: $(du -sh "$BUNDLE" | cut -f1) in $BUNDLE"
}

build() {
    if [ ! -f "$LLAMA_CPP_DIR/src/.from-$VERSION" ]; then
        [ -f "$BUNDLE/llama.cpp-src.tar.gz" ] || { echo "no $BUNDLE/llama.cpp-src.tar.gz: run '$0 bundle' where PyPI is reachable" >&2; exit 1; }
        mkdir -p "$LLAMA_CPP_DIR"
        tar -C "$LLAMA_CPP_DIR" -xzf "$BUNDLE/llama.cpp-src.tar.gz"
        touch "$LLAMA_CPP_DIR/src/.from-$VERSION"
    fi
    command -v nvcc >/dev/null || export PATH="/usr/local/cuda/bin:$PATH"
    LLAMA_CUDA=1 PYTHON="$PY" bash scripts/build_llama_server.sh
}

model() {
    local tok="$BUNDLE/tok"; [ -f "$tok/tokenizer.json" ] || tok=models/tiny
    LLAMA_QUANTIZE="$LLAMA_BIN_DIR/llama-quantize" "$PY" scripts/make_moe_gguf.py \
        --preset gpu --tokenizer "$tok" --moe "$MODEL"
    # the build's own smoke test needs a model, which needs the build: so it runs here, once
    # both exist; a crash is named by its signal (SIGILL: rebuild with LLAMA_CPU_FEATURES=safe)
    say "smoke test: a real short generation on $MODEL"
    "$PY" scripts/smoke_llama_server.py "$LLAMA_BIN_DIR/llama-server" "$MODEL"
}

run_pytest() {  # NAME [pytest args...]: one plugin run, its JSON/page/log under $WORK
    local name="$1"; shift
    "$PY" -m pytest -m perf "${plugin[@]}" -p no:cacheprovider tests/perf \
        --perf-config="$CFG" --perf-baselines="$WORK/baselines" --perf-output="$WORK/logs-$name" \
        --perf-json="$WORK/$name.json" --perf-report="$WORK/$name.md" \
        --perf-lock="$WORK/machine.lock" "$@" > "$WORK/$name.txt" 2>&1 \
        || say "$name: pytest exit $? (see $name.txt)"
    tail -30 "$WORK/$name.txt"
}

starts() {  # R: R server starts for the baseline, then R more judged against it (A/A)
    local R="${1:-5}"
    site
    mkdir -p "$WORK"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv > "$WORK/nvidia-smi.csv" 2>&1 || true
    "$LLAMA_BIN_DIR/llama-server" --version > "$WORK/llama-server-version.txt" 2>&1 || true
    plugin_args
    local help; help="$("$PY" -m pytest "${plugin[@]}" -p no:cacheprovider --help 2>/dev/null || true)"
    if [[ "$help" == *--perf-restarts* ]]; then  # (not `| grep -q`: pipefail + SIGPIPE reads as "no")
        # the plugin's own server starts (workloads.restarts): one run stores R starts as the
        # baseline, a second run of R fresh starts is judged against it by the gate
        [ -f "$WORK/base.json" ] || { say "baseline: $R server starts"; run_pytest base --perf-restarts "$R" --perf-update-baselines; }
        [ -f "$WORK/check.json" ] || { say "A/A check: $R server starts"; run_pytest check --perf-restarts "$R"; }
    else
        # no restarts dimension: one pytest invocation per start; start 1 is the baseline
        for i in $(seq 1 "$R"); do
            [ -f "$WORK/start$i.json" ] && continue
            say "start $i/$R"
            if [ "$i" = 1 ]; then run_pytest "start$i" --perf-update-baselines; else run_pytest "start$i"; fi
        done
    fi
}

compare() {  # the gate's decision again, offline, and the results page over all runs
    site
    local out="$WORK/compare.txt" files=()
    for f in "$WORK"/base.json "$WORK"/check.json "$WORK"/start*.json; do [ -f "$f" ] && files+=("$f"); done
    [ ${#files[@]} -ge 2 ] || { echo "fewer than 2 result files in $WORK to compare" >&2; return 1; }
    : > "$out"
    for f in "${files[@]:1}"; do
        { echo "== $(basename "$f") vs $(basename "${files[0]}")"
          "$PY" -m pytest_mxfp4.cli.main compare "${files[0]}" "$f" --config "$CFG" || true; echo; } >> "$out" 2>&1
    done
    "$PY" -m pytest_mxfp4.cli.main report "${files[@]}" --baselines "$WORK/baselines" --config "$CFG" \
        --out "$WORK/BENCHMARK_RESULTS.md" >> "$out" 2>&1 || true
    cat "$out" | head -60
}

plugin_args() {  # load the plugin by module where it is not pip-installed (pytest11 entry point)
    plugin=()
    "$PY" -c "import importlib.metadata as m, sys; sys.exit(not any(e.value == 'pytest_mxfp4.plugin' for e in m.entry_points(group='pytest11')))" \
        || plugin=(-p pytest_mxfp4.plugin)
}

DENSE_DIR=/dev/shm/pytest-mxfp4
dense() {  # the bandwidth-bound dense model and its one-layer-longer twin (the planted slowdown)
    site
    local tok="$BUNDLE/tok"; [ -f "$tok/tokenizer.json" ] || tok=models/tiny
    "$PY" scripts/make_dense_gguf.py --tokenizer "$tok" --out "$DENSE_DIR/dense-f16.gguf"
    "$PY" scripts/make_dense_gguf.py --tokenizer "$tok" --out "$DENSE_DIR/dense-f16-41L.gguf" --extra-layers 1
}

ab() {  # the plugin's own A/B on the dense model: an A/A, then the planted slowdown (head: 41 layers)
    site
    plugin_args
    mkdir -p "$WORK"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv > "$WORK/nvidia-smi.csv" 2>&1 || true
    CFG=configs/gpu-llamacpp-dense.yaml
    local steps="${GPU_AB_STEPS:-aa slow}"  # e.g. GPU_AB_STEPS=aa: the A/A only (one device call each)
    [[ " $steps " == *" aa "* ]] || touch "$WORK/.skip-aa"
    [ -f "$WORK/aa.json" ] || [ -f "$WORK/.skip-aa" ] || { say "A/A: same model both arms"; run_pytest aa --perf-ab-head env.PYTEST_MXFP4_ARM=head \
        --perf-pr-comment="$WORK/aa-comment.md"; }
    rm -f "$WORK/.skip-aa"
    [[ " $steps " == *" slow "* ]] || return 0
    [ -f "$WORK/slow.json" ] || { say "A/B: head serves $DENSE_DIR/dense-f16-41L.gguf (+1 layer)"; run_pytest slow \
        --perf-ab-head "args+=-m $DENSE_DIR/dense-f16-41L.gguf" --perf-pr-comment="$WORK/slow-comment.md"; }
}

pack() {  # one tarball of the run (server logs included) into DIR
    local dest="${1:?pack DIR}"
    mkdir -p "$dest"
    tar -C "$(dirname "$WORK")" -czf "$dest/gpu-llamacpp-run.tar.gz" "$(basename "$WORK")"
}

cmd="${1:-all}"; shift || true
case "$cmd" in
    bundle) bundle ;;
    build) build ;;
    model) model ;;
    starts) starts "$@" ;;
    compare) compare ;;
    dense) dense ;;
    pytest) site; plugin_args; mkdir -p "$WORK"; run_pytest "$@" ;;  # NAME [ARGS]: one more plugin run (GPU_CFG)
    ab) ab ;;
    pack) pack "$@" ;;
    all) t0=$(date +%s); build; say "build done ($(( $(date +%s) - t0 )) s)"; model; say "model done ($(( $(date +%s) - t0 )) s)"
         starts "$@"; say "starts done ($(( $(date +%s) - t0 )) s)"; compare ;;
    *) echo "usage: $0 bundle|all [R]|build|model|starts [R]|compare|pack DIR" >&2; exit 2 ;;
esac
