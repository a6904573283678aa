#!/usr/bin/env bash
# Build llama.cpp's llama-server (and llama-quantize) from source: the
# llama.cpp vendored in the `llama-cpp-python` sdist from PyPI (fetched with
# pip, the only download; 76 MB, once), for the CPU of THIS machine, then
# smoke-test the binary on the GGUF models before declaring it good.
# Idempotent: a stamp records the version, the build flags, the requested CPU
# features and this CPU's flags; a re-run with the same ones does nothing.
#
#   scripts/build_llama_server.sh            # CPU build (2 cores: about 4-5 min)
#   LLAMA_CUDA=1 scripts/build_llama_server.sh   # CUDA build (needs nvcc)
#   scripts/build_llama_server.sh source     # only fetch/unpack the source (no compiler, no venv)
#
# CPU features (why not -march=native): GGML_NATIVE compiles in every instruction set the
# build box advertises, AMX included. On VMs of our own kind (Xeon, `amx_tile amx_int8
# amx_bf16` in /proc/cpuinfo, the kernel grants the tile permission) ggml's AMX path then
# dies during llama-server's warm-up: SIGSEGV at `ldtilecfg` in ggml_backend_amx_mul_mat,
# SIGILL in tinygemm_kernel_amx. Advertised is not the same as working, so the features
# are named here and each is proven before it is used:
#   safe    SSE4.2 AVX AVX2 FMA F16C BMI2 (x86-64-v3: every x86-64 server of our kind has it;
#           on a CPU without AVX2, SSE4.2 only)
#   avx512  safe + AVX-512 F/CD/VL/DQ/BW (+ VNNI/VBMI/BF16 where advertised), chosen only when
#           a probe program using exactly those instructions runs here (a few ms)
#   native  GGML_NATIVE=ON: whatever the CPU advertises, AMX included; only on request
# AMX is never chosen automatically. Whatever was built must then serve a real short
# generation on each GGUF (scripts/smoke_llama_server.py); a death by a signal there (or in
# llama-quantize while making the MXFP4 model) is named and the build is redone ONCE with
# `safe`, saying so. A failing `safe` build stops with the message; no stamp is written.
#
# Options (environment):
#   PYTEST_MXFP4_SKIP_LLAMACPP=1   skip everything (the llama.cpp rows of configs/cpu.yaml are
#                                  then skipped with a reason: no llama-server on PATH/.venv/bin)
#   LLAMA_CPU_FEATURES             auto (default: avx512 if its probe runs, else safe) | safe |
#                                  avx512 | native
#   LLAMA_CPP_PYTHON_VERSION       sdist version to take llama.cpp from (default 0.3.36:
#                                  ggml-org/llama.cpp@0c1e57098, gpt-oss + MXFP4_MOE)
#   LLAMA_CPP_DIR                  source/build folder (default .cache/llama.cpp, git-ignored)
#   LLAMA_BIN_DIR                  where the binaries go (default $VENV/bin, i.e. .venv/bin)
#   LLAMA_CUDA=1                   -DGGML_CUDA=ON; LLAMA_CUDA_ARCH (default 90), FA kernels off
#                                  (they triple the build time; the server then logs FA disabled)
#   LLAMA_JOBS                     parallel compile jobs (default: all cores)
#   LLAMA_SDIST                    path to an already downloaded sdist (offline boxes)
#   LLAMA_SMOKE_GGUFS              models to smoke-test (default, CPU build: models/gguf/tiny-f16.gguf
#                                  and models/gguf/moe-mxfp4.gguf, made here from models/tiny when
#                                  missing); "none" skips the smoke test (said, and stamped so)
#   LLAMA_PROGRESS_S               seconds between progress lines while compiling (default 20)
#
# Nothing is downloaded at build time: -DLLAMA_USE_PREBUILT_UI=OFF stops the
# server's CMake from fetching the web UI, and curl/OpenSSL are off. Binaries
# are static (BUILD_SHARED_LIBS=OFF) so they can be copied anywhere (with the same CPU features).
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
REQUESTED="${LLAMA_CPU_FEATURES:-auto}"
PROGRESS_S="${LLAMA_PROGRESS_S:-20}"
T0=$(date +%s)

say() { echo "build_llama_server: $*"; }
elapsed() { local s=$(( $(date +%s) - T0 )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

case "$REQUESTED" in auto|safe|avx512|native) ;; *)
    echo "build_llama_server: LLAMA_CPU_FEATURES=$REQUESTED: expected auto, safe, avx512 or native" >&2; exit 2 ;;
esac

# -- source: llama.cpp vendored in the llama-cpp-python sdist -------------------
fetch_source() {
    [ -f "$DIR/src/.from-$VERSION" ] && return 0
    mkdir -p "$DIR/dl"
    local sdist="${LLAMA_SDIST:-$DIR/dl/llama_cpp_python-$VERSION.tar.gz}"
    if [ ! -f "$sdist" ]; then
        say "fetching the llama-cpp-python $VERSION sdist with pip (76 MB)"
        # Only the file: --no-deps --no-build-isolation with the sdist's metadata hook
        # answered by scikit-build-core (pure Python, small) instead of building an
        # isolated build environment. It goes to a scratch folder, not into $PY's
        # environment: any python3 with pip will do (a fresh clone has no .venv).
        "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$DIR/dl/tools" scikit-build-core 2>&1 \
            | grep -v "^WARNING: Location" || true
        PYTHONPATH="$DIR/dl/tools${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pip download -q --disable-pip-version-check \
            --no-deps --no-binary :all: --no-build-isolation "llama-cpp-python==$VERSION" -d "$DIR/dl" 2>&1 \
            | grep -v "^WARNING: Location" || true
        [ -f "$sdist" ] || { echo "build_llama_server: pip did not fetch $sdist" >&2; exit 1; }
    fi
    rm -rf "$DIR/src" "$DIR/x"
    mkdir -p "$DIR/x"
    tar -xzf "$sdist" -C "$DIR/x" "llama_cpp_python-$VERSION/vendor/llama.cpp"
    mv "$DIR/x/llama_cpp_python-$VERSION/vendor/llama.cpp" "$DIR/src"
    rm -rf "$DIR/x"
    touch "$DIR/src/.from-$VERSION"
}
if [ "${1:-}" = "source" ]; then  # e.g. scripts/gpu_llamacpp.sh bundle: the source, no build
    fetch_source
    say "source ready in $DIR/src (llama.cpp from llama-cpp-python $VERSION)"
    exit 0
fi

FLAGS=(-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_USE_PREBUILT_UI=OFF
       -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF)
if [ "${LLAMA_CUDA:-0}" = "1" ]; then
    FLAGS+=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${LLAMA_CUDA_ARCH:-90}" -DGGML_CUDA_FA=OFF)
    KIND=cuda
else
    KIND=cpu
fi
CPU_FLAGS_LINE="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)"
has_cpu() { [[ " ${CPU_FLAGS_LINE#*:} " == *" $1 "* ]]; }
CPU_ID="$(echo "$CPU_FLAGS_LINE" | md5sum | cut -c1-8)"
STAMP_KEY="$(echo "${FLAGS[*]} features=$REQUESTED cpu=$CPU_ID" | md5sum | cut -c1-8)"
STAMP="$BIN_DIR/.llama-server-$VERSION-$STAMP_KEY"
if [ -f "$STAMP" ] && [ -x "$BIN_DIR/llama-server" ] && [ -x "$BIN_DIR/llama-quantize" ] \
   && [ -f "$DIR/src/convert_hf_to_gguf.py" ]; then
    say "up to date ($BIN_DIR/llama-server, llama.cpp from llama-cpp-python $VERSION, $KIND, $(cat "$STAMP"))"
    exit 0
fi

# -- CPU feature sets (see the header for why) ----------------------------------------
ALL_X86=(SSE42 AVX AVX2 FMA F16C BMI2 AVX_VNNI AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16 AMX_TILE AMX_INT8 AMX_BF16)
features_flags() {  # NAME -> cmake -D flags, every x86 switch set explicitly
    local name=$1 on=() f
    case "$name" in
        native) echo "-DGGML_NATIVE=ON"; return ;;
        safe) if has_cpu avx2 || [ -z "$CPU_FLAGS_LINE" ]; then on=(SSE42 AVX AVX2 FMA F16C BMI2); else on=(SSE42); fi ;;
        avx512) on=(SSE42 AVX AVX2 FMA F16C BMI2 AVX512)
                has_cpu avx512_vnni && on+=(AVX512_VNNI)
                has_cpu avx512vbmi && on+=(AVX512_VBMI)
                has_cpu avx512_bf16 && on+=(AVX512_BF16) ;;
    esac
    local out="-DGGML_NATIVE=OFF"
    for f in "${ALL_X86[@]}"; do
        if [[ " ${on[*]} " == *" $f "* ]]; then out+=" -DGGML_$f=ON"; else out+=" -DGGML_$f=OFF"; fi
    done
    echo "$out"
}

probe_avx512() {  # 0 when a program using the AVX-512 subsets the avx512 set compiles in runs here
    has_cpu avx512f && has_cpu avx512bw && has_cpu avx512vl && has_cpu avx512dq && has_cpu avx512cd || return 1
    local d="$DIR/probe" cflags=(-O1 -mavx512f -mavx512cd -mavx512vl -mavx512dq -mavx512bw)
    has_cpu avx512_vnni && cflags+=(-mavx512vnni)
    has_cpu avx512vbmi && cflags+=(-mavx512vbmi)
    has_cpu avx512_bf16 && cflags+=(-mavx512bf16)
    mkdir -p "$d"
    cat > "$d/avx512.c" <<'EOF'
#include <immintrin.h>
int main(void) {
    volatile float in[16];
    for (int i = 0; i < 16; i++) in[i] = (float)i;
    __m512 a = _mm512_loadu_ps((const float *)in);
    a = _mm512_add_ps(a, a);                                          /* F */
    __m512i b = _mm512_add_epi16(_mm512_set1_epi16(3), _mm512_set1_epi16(4));  /* BW */
    __m256i c = _mm256_maskz_add_epi32(0xff, _mm256_set1_epi32(1), _mm256_set1_epi32(2));  /* VL */
    __m512d e = _mm512_and_pd(_mm512_set1_pd(1.0), _mm512_set1_pd(1.0));       /* DQ */
    __m512i z = _mm512_conflict_epi32(_mm512_set1_epi32(5));                  /* CD */
#ifdef __AVX512VNNI__
    b = _mm512_dpbusd_epi32(b, b, b);
#endif
#ifdef __AVX512VBMI__
    b = _mm512_permutexvar_epi8(b, b);
#endif
#ifdef __AVX512BF16__
    __m512bh h = _mm512_cvtne2ps_pbh(a, a);
    a = _mm512_add_ps(a, _mm512_dpbf16_ps(_mm512_setzero_ps(), h, h));
#endif
    volatile int sink = _mm512_reduce_add_epi32(b) + _mm256_extract_epi32(c, 0)
                      + (int)_mm512_reduce_add_pd(e) + _mm512_reduce_add_epi32(z);
    (void)sink;
    return _mm512_reduce_add_ps(a) > 0.0f ? 0 : 1;
}
EOF
    cc "${cflags[@]}" -o "$d/avx512" "$d/avx512.c" 2>"$d/avx512.log" || return 1
    "$d/avx512" 2>>"$d/avx512.log"
}

choose_features() {
    if [ "$REQUESTED" != auto ]; then echo "$REQUESTED"; return; fi
    if probe_avx512; then echo avx512; else echo safe; fi
}

# -- tools -------------------------------------------------------------------
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v c++ >/dev/null || need+=(g++)
command -v ninja >/dev/null || need+=(ninja-build)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing ${need[*]} with apt-get"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
        echo "build_llama_server: needs ${need[*]} (apt-get install ${need[*]}), or set PYTEST_MXFP4_SKIP_LLAMACPP=1" >&2
        exit 1
    fi
fi

say "[1/4] llama.cpp source (llama-cpp-python $VERSION)"
fetch_source
mkdir -p "$BIN_DIR"

# -- build ---------------------------------------------------------------------
BUILD_PID=
trap '[ -n "$BUILD_PID" ] && kill "$BUILD_PID" 2>/dev/null; true' EXIT
build() {  # FEATURES: configure + compile in the background, a progress line every PROGRESS_S
    local features=$1 build="$DIR/build-$KIND-$1" log="$DIR/build-$KIND-$1.log" t=$(date +%s) next rc=0
    # shellcheck disable=SC2046  # features_flags prints separate -D words
    cmake -S "$DIR/src" -B "$build" -G Ninja "${FLAGS[@]}" $(features_flags "$features") \
        >"$DIR/configure-$KIND-$features.log" 2>&1 \
        || { tail -20 "$DIR/configure-$KIND-$features.log" >&2; exit 1; }
    say "[2/4] compiling llama-server + llama-quantize ($KIND, CPU features: $features, $JOBS jobs; log $log)"
    cmake --build "$build" -j "$JOBS" --target llama-server llama-quantize >"$log" 2>&1 &
    BUILD_PID=$!
    next=$(( t + PROGRESS_S ))
    while kill -0 "$BUILD_PID" 2>/dev/null; do
        sleep 1
        if [ "$(date +%s)" -ge "$next" ] && kill -0 "$BUILD_PID" 2>/dev/null; then
            local step; step="$(grep -o '^\[[0-9]*/[0-9]*\]' "$log" 2>/dev/null | tail -1 || true)"
            say "      compiling ($features) ${step:-[configuring]} files, $(elapsed) so far"
            next=$(( next + PROGRESS_S ))
        fi
    done
    wait "$BUILD_PID" || rc=$?
    BUILD_PID=
    [ $rc -eq 0 ] || { tail -30 "$log" >&2; echo "build_llama_server: compiling failed (exit $rc; log $log)" >&2; exit 1; }
    install -m 755 "$build/bin/llama-server" "$build/bin/llama-quantize" "$BIN_DIR/"
    say "      compiled in $(( $(date +%s) - t )) s"
}

# -- the models to smoke-test on, and the smoke test ------------------------------
SMOKE_GGUFS="${LLAMA_SMOKE_GGUFS:-}"
DEFAULT_GGUFS="models/gguf/tiny-f16.gguf models/gguf/moe-mxfp4.gguf"
smoke_models() {  # 0: ok (or nothing to test), 3: a crash by a signal, other: another failure
    local models=$SMOKE_GGUFS rc=0
    if [ "$models" = none ]; then say "[3/4] smoke test skipped (LLAMA_SMOKE_GGUFS=none)"; return 0; fi
    if [ -z "$models" ]; then
        if [ "$KIND" != cpu ]; then
            say "[3/4] no GGUF named for the $KIND build (LLAMA_SMOKE_GGUFS): smoke test left to the caller"
            return 0
        fi
        models=$DEFAULT_GGUFS
        if [ ! -f models/gguf/tiny-f16.gguf ] || [ ! -f models/gguf/moe-mxfp4.gguf ]; then
            if [ ! -f models/tiny/config.json ]; then
                say "[3/4] no models/tiny to make the GGUFs from (scripts/setup.sh makes it): smoke test skipped"
                return 0
            fi
            say "[3/4] making the GGUF models with the new llama-quantize (f16 dense, MXFP4_MOE MoE; seconds)"
            LLAMA_QUANTIZE="$BIN_DIR/llama-quantize" LLAMA_CPP_DIR="$DIR" "$PY" scripts/make_moe_gguf.py \
                --tokenizer models/tiny --moe models/gguf/moe-mxfp4.gguf \
                --dense-from models/tiny --dense models/gguf/tiny-f16.gguf || return $?
        fi
    fi
    say "[4/4] smoke test: a real short generation on each of: $models"
    # shellcheck disable=SC2086  # a list of paths
    "$PY" scripts/smoke_llama_server.py "$BIN_DIR/llama-server" $models || rc=$?
    return $rc
}

FEATURES="$(choose_features)"
[ "$REQUESTED" = auto ] && say "CPU features: $FEATURES (AVX-512 probe $([ "$FEATURES" = avx512 ] && echo ran || echo 'did not run or not advertised'); AMX never chosen automatically)"
rm -f "$BIN_DIR"/.llama-server-*   # not good until the smoke test passed
build "$FEATURES"
rc=0; smoke_models || rc=$?
if [ $rc -eq 3 ] && [ "$FEATURES" != safe ]; then
    say "the $FEATURES build crashed on this CPU (above); rebuilding once with the safe feature set (SSE4.2 AVX AVX2 FMA F16C BMI2, no AVX-512, no AMX)"
    FEATURES=safe
    build safe
    rc=0; smoke_models || rc=$?
fi
if [ $rc -ne 0 ]; then
    if [ $rc -eq 3 ]; then
        echo "build_llama_server: the $FEATURES build crashed on this CPU even so; no stamp written. Send the line above and /proc/cpuinfo's flags with a bug report, or set PYTEST_MXFP4_SKIP_LLAMACPP=1 to run without the llama.cpp rows" >&2
    else
        echo "build_llama_server: the smoke test failed (exit $rc, above); no stamp written" >&2
    fi
    exit 1
fi
echo "features=$FEATURES smoke=${SMOKE_GGUFS:-default}" > "$STAMP"
say "$BIN_DIR/llama-server ready: CPU features $FEATURES, $(elapsed) in all"
"$BIN_DIR/llama-server" --version 2>&1 | grep -m1 '^version' || true
