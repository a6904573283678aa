#!/usr/bin/env bash
# Build llama.cpp's llama-server (and llama-quantize) from source: the
# llama.cpp vendored in the `llama-cpp-python` sdist from PyPI (fetched with
# pip, the only download; 76 MB, once). Idempotent: a stamp records the version
# and the build flags, and a re-run with the same ones does nothing.
#
#   scripts/build_llama_server.sh            # CPU build (2 cores: about 8-12 min)
#   LLAMA_CUDA=1 scripts/build_llama_server.sh   # CUDA build (needs nvcc)
#
# Options (environment):
#   PYTEST_MXFP4_SKIP_LLAMACPP=1   skip everything (the llama.cpp rows of configs/cpu.yaml are
#                                  then skipped with a reason: no llama-server on PATH/.venv/bin)
#   LLAMA_CPP_PYTHON_VERSION       sdist version to take llama.cpp from (default 0.3.36:
#                                  ggml-org/llama.cpp@0c1e57098, gpt-oss + MXFP4_MOE)
#   LLAMA_CPP_DIR                  source/build folder (default .cache/llama.cpp, git-ignored)
#   LLAMA_BIN_DIR                  where the binaries go (default $VENV/bin, i.e. .venv/bin)
#   LLAMA_CUDA=1                   -DGGML_CUDA=ON; LLAMA_CUDA_ARCH (default 90), FA kernels off
#                                  (they triple the build time; the server then logs FA disabled)
#   LLAMA_JOBS                     parallel compile jobs (default: all cores)
#   LLAMA_SDIST                    path to an already downloaded sdist (offline boxes)
#
# Nothing is downloaded at build time: -DLLAMA_USE_PREBUILT_UI=OFF stops the
# server's CMake from fetching the web UI, and curl/OpenSSL are off. Binaries
# are static (BUILD_SHARED_LIBS=OFF) so they can be copied anywhere.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ "${PYTEST_MXFP4_SKIP_LLAMACPP:-0}" = "1" ]; then
    echo "build_llama_server: skipped (PYTEST_MXFP4_SKIP_LLAMACPP=1)"
    exit 0
fi

VENV="${VENV:-$ROOT/.venv}"
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
DIR="${LLAMA_CPP_DIR:-$ROOT/.cache/llama.cpp}"
BIN_DIR="${LLAMA_BIN_DIR:-$VENV/bin}"
JOBS="${LLAMA_JOBS:-$(nproc)}"
PY="${PYTHON:-$VENV/bin/python}"
[ -x "$PY" ] || PY=python3

FLAGS=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_USE_PREBUILT_UI=OFF
       -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF)
if [ "${LLAMA_CUDA:-0}" = "1" ]; then
    FLAGS+=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${LLAMA_CUDA_ARCH:-90}" -DGGML_CUDA_FA=OFF)
    KIND=cuda
else
    KIND=cpu
fi
STAMP="$BIN_DIR/.llama-server-$VERSION-$(echo "${FLAGS[*]}" | md5sum | cut -c1-8)"
if [ -f "$STAMP" ] && [ -x "$BIN_DIR/llama-server" ] && [ -x "$BIN_DIR/llama-quantize" ] \
   && [ -f "$DIR/src/convert_hf_to_gguf.py" ]; then
    echo "build_llama_server: up to date ($BIN_DIR/llama-server, llama.cpp from llama-cpp-python $VERSION, $KIND)"
    exit 0
fi

# -- tools -------------------------------------------------------------------
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v c++ >/dev/null || need+=(g++)
command -v ninja >/dev/null || need+=(ninja-build)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "build_llama_server: installing ${need[*]} with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "build_llama_server: needs ${need[*]} (apt-get install ${need[*]}), or set PYTEST_MXFP4_SKIP_LLAMACPP=1" >&2
        exit 1
    fi
fi

# -- source: llama.cpp vendored in the llama-cpp-python sdist -------------------
mkdir -p "$DIR/dl" "$BIN_DIR"
if [ ! -f "$DIR/src/.from-$VERSION" ]; then
    SDIST="${LLAMA_SDIST:-$DIR/dl/llama_cpp_python-$VERSION.tar.gz}"
    if [ ! -f "$SDIST" ]; then
        echo "build_llama_server: fetching the llama-cpp-python $VERSION sdist with pip (76 MB)"
        # Preparing the sdist's metadata needs its build backend; installing it
        # (pure Python, small) avoids building build isolation from source.
        "$PY" -m pip install -q --disable-pip-version-check scikit-build-core 2>&1 | grep -v "^WARNING: Location" || true
        "$PY" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: \
            --no-build-isolation "llama-cpp-python==$VERSION" -d "$DIR/dl" 2>&1 | grep -v "^WARNING: Location" || true
        [ -f "$SDIST" ] || { echo "build_llama_server: pip did not fetch $SDIST" >&2; exit 1; }
    fi
    rm -rf "$DIR/src" "$DIR/x"
    mkdir -p "$DIR/x"
    tar -xzf "$SDIST" -C "$DIR/x" "llama_cpp_python-$VERSION/vendor/llama.cpp"
    mv "$DIR/x/llama_cpp_python-$VERSION/vendor/llama.cpp" "$DIR/src"
    rm -rf "$DIR/x"
    touch "$DIR/src/.from-$VERSION"
fi

# -- build ---------------------------------------------------------------------
BUILD="$DIR/build-$KIND"
echo "build_llama_server: building llama-server + llama-quantize ($KIND, $JOBS jobs; minutes)"
t0=$(date +%s)
cmake -S "$DIR/src" -B "$BUILD" -G Ninja "${FLAGS[@]}" >"$DIR/configure-$KIND.log" 2>&1 \
    || { tail -20 "$DIR/configure-$KIND.log" >&2; exit 1; }
cmake --build "$BUILD" -j "$JOBS" --target llama-server llama-quantize >"$DIR/build-$KIND.log" 2>&1 \
    || { tail -30 "$DIR/build-$KIND.log" >&2; exit 1; }
install -m 755 "$BUILD/bin/llama-server" "$BUILD/bin/llama-quantize" "$BIN_DIR/"
rm -f "$BIN_DIR"/.llama-server-*
touch "$STAMP"
echo "build_llama_server: $BIN_DIR/llama-server built in $(( $(date +%s) - t0 )) s"
"$BIN_DIR/llama-server" --version 2>&1 | tail -2 || true
