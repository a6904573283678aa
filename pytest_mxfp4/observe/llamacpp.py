"""llama.cpp (`llama-server`) log rules: which log line proves which fact.

Built from the log format strings of the llama.cpp vendored in
llama-cpp-python 0.3.36 (ggml-org/llama.cpp@0c1e57098) and checked on logs
of that build on a 2-core CPU box and an H200 (tests/data/llamacpp-logs/).

llama-server prints the model, device and context lines only at log
verbosity 4 (`-lv 4`, about 200 lines at start-up and ~25 per request); at the
default verbosity 3 almost nothing below shows and every fact stays None.

Lines look like `0.00.028.591 I print_info: arch                  = gpt-oss`
(uptime, level letter, an optional 4-letter source tag such as `srv`/`cmn`),
or, in older builds, just `print_info: arch = gpt-oss`. Rules search the
message and are applied in log order; a later line overrides an earlier one
(e.g. flash attention `auto` resolved to enabled/disabled), except that WEAK
evidence never replaces STRONG evidence.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_mxfp4.formats.facts import ObservedFacts

STRONG = 2
WEAK = 1

# Always reported for a llama.cpp log (None where the log doesn't show them).
CORE_FACTS = ("backend", "device", "flash_attention", "gpu_layers_offloaded", "model_arch",
              "quantization", "kv_cache_dtype", "context_size", "llamacpp_build")

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
# "0.00.028.591 I " (uptime + level) then an optional source tag ("srv  ", "cmn  ", "slot ").
_PREFIX = re.compile(r"^\s*(?:\d+\.\d{2}\.\d{3}\.\d{3}\s+[DIWE]\s+)?(?:(?:srv|cmn|slot|spec|main|res)\s+)?")

# llama_ftype_name() spellings -> the names llama-quantize takes (LLAMA_FTYPE_MOSTLY_*).
_FTYPE_WORDS = {"medium": "M", "small": "S", "large": "L", "moe": "MOE", "guessed": ""}


def canonical_ftype(name: str) -> str:
    """'MXFP4 MoE' -> 'MXFP4_MOE', 'Q4_K - Medium' -> 'Q4_K_M', 'F16' -> 'F16',
    'IQ2_XXS - 2.0625 bpw' -> 'IQ2_XXS', 'all F32' -> 'F32'."""
    s = re.sub(r"\(.*?\)", "", name).strip()
    s = re.sub(r"\s+-\s+[\d.]+\s*bpw$", "", s)
    s = re.sub(r"^all\s+", "", s, flags=re.I)
    parts = re.split(r"[\s\-]+", s)
    out = [_FTYPE_WORDS.get(p.lower(), p.upper()) for p in parts if p]
    return "_".join(p for p in out if p)


def _backend_of(device_name: str) -> str:
    """'CUDA0' -> 'CUDA', 'Vulkan1' -> 'Vulkan', 'CPU' -> 'CPU', 'ROCm0' -> 'ROCm'."""
    return re.sub(r"\d+$", "", device_name) or device_name


class _State:
    """What earlier lines showed, for facts that need more than one line."""

    def __init__(self) -> None:
        self.devices: list[tuple[str, str, str]] = []  # (name, description, line) from device_info
        self.in_draft = False  # between "loading draft model" and the speculative set-up: the draft's lines


Rule = tuple[re.Pattern[str], Callable[[re.Match[str], "ObservedFacts", str, _State], None]]


def _set(name: str, value, strength: int = STRONG):
    def apply(m: re.Match[str], f: "ObservedFacts", line: str, st: _State) -> None:
        f.set(name, value(m) if callable(value) else value, line, strength)
    return apply


def _build(m, f, line, st):
    f.set("llamacpp_build", f"b{m['num']}-{m['commit']}", line)


def _cuda_device(m, f, line, st):
    if m["id"] == "0":
        f.set("backend", "CUDA", line)
        f.set("device", m["desc"].strip(), line)
        f.set("compute_capability", m["cc"], line)


def _vulkan_device(m, f, line, st):
    if m["id"] == "0":
        f.set("backend", "Vulkan", line)
        f.set("device", m["desc"].strip(), line)


def _using_device(m, f, line, st):
    f.set("backend", _backend_of(m["name"]), line)
    f.set("device", m["desc"].strip(), line)


def _device_listed(m, f, line, st):
    st.devices.append((m["name"], m["desc"].strip(), line))
    gpus = [d for d in st.devices if _backend_of(d[0]) not in ("CPU", "BLAS", "RPC")]
    if gpus:
        f.set("backend", _backend_of(gpus[0][0]), gpus[0][2], WEAK)
        f.set("device", gpus[0][1], gpus[0][2], WEAK)
    else:
        # Only the CPU is listed: a CPU-only build, nothing can be offloaded.
        f.set("backend", "CPU", line, WEAK)
        f.set("device", m["desc"].strip(), line, WEAK)
        f.set("gpu_layers_offloaded", 0, line, WEAK)


def _offloaded(m, f, line, st):
    f.set("gpu_layers_offloaded", int(m["n"]), line)
    f.set("layers_total", int(m["of"]), line)


def _flash(m, f, line, st):
    v = m["v"].lower()
    if v in ("enabled", "on", "1", "true"):
        f.set("flash_attention", True, line)
    elif v in ("disabled", "off", "0", "false"):
        f.set("flash_attention", False, line)
    # "auto": not a fact yet; the resolve line that follows says what it became


def _tensor_type(m, f, line, st):
    f.add("tensor_types", m["t"].lower(), line)


def _kv(m, f, line, st):
    k, v = m["k"].lower(), m["v"].lower()
    f.set("kv_cache_dtype", k if k == v else f"{k}/{v}", line)


RULES: list[Rule] = [
    # common_params_print_info: build 0 (unknown) with GNU 12.2.0 for Linux x86_64
    # (older: "main: build = 3467 (abc1234)"; "build: 4000 (abc) with cc for x86_64-linux-gnu")
    (re.compile(r"\bbuild(?: =|:)? (?P<num>\d+) \((?P<commit>[0-9a-f]+|unknown)\)"
                r"(?P<compiler> with .+? for (?P<target>\S.*?))?(?: \(debug\))?$"), _build),
    # ggml_cuda_init:   Device 0: NVIDIA H200, compute capability 9.0, VMM: yes, VRAM: 143169 MiB
    (re.compile(r"(?:^|\s)Device (?P<id>\d+): (?P<desc>.+?), compute capability (?P<cc>\d+\.\d+)"), _cuda_device),
    # ggml_vulkan: 0 = NVIDIA H200 (NVIDIA) | uma: 0 | fp16: 1 | ...
    (re.compile(r"ggml_vulkan: (?P<id>\d+) = (?P<desc>[^|]+?)\s*\|"), _vulkan_device),
    # llama_model_load_from_file_impl: using device CUDA0 (NVIDIA H200) (0000:00:05.0) - 142577 MiB free
    (re.compile(r"using device (?P<name>\S+) \((?P<desc>[^)]*)\)"), _using_device),
    # common_param:   - CUDA0   : NVIDIA H200 (143169 MiB, 142577 MiB free)   /   - CPU : AMD EPYC (...)
    (re.compile(r"(?:^|:)\s*- (?P<name>[A-Za-z][\w-]*)\s*: (?P<desc>.+?) \(\d+ MiB, \d+ MiB free\)\s*$"), _device_listed),
    # load_tensors: offloaded 9/9 layers to GPU
    (re.compile(r"offloaded (?P<n>\d+)/(?P<of>\d+) layers to GPU"), _offloaded),
    # llama_context: flash_attn = auto | enabled | disabled (older builds: 0 / 1)
    (re.compile(r"\bflash_attn\s+= (?P<v>\w+)"), _flash),
    # resolve_fused_ops: Flash Attention enabled / ... Flash Attention not supported, set to disabled
    (re.compile(r"\bFlash Attention (?P<v>enabled)\b"), _flash),
    (re.compile(r"\bFlash Attention not supported, set to (?P<v>disabled)"), _flash),
    # print_info: arch = gpt-oss
    (re.compile(r"print_info: arch\s+= (?P<v>\S+)"), _set("model_arch", lambda m: m["v"])),
    (re.compile(r"general\.architecture\s+str\s+= (?P<v>\S+)"), _set("model_arch", lambda m: m["v"], WEAK)),
    # print_info: file type   = MXFP4 MoE   (older: llm_load_print_meta: model ftype = Q4_K - Medium)
    (re.compile(r"(?:print_info: file type|model ftype)\s+= (?P<v>.+?)\s*$"),
     _set("quantization", lambda m: canonical_ftype(m["v"]))),
    # llama_model_loader: - type mxfp4:   12 tensors
    (re.compile(r"llama_model_loader: - type\s+(?P<t>\w+):\s+\d+ tensors"), _tensor_type),
    # print_info: model params = 11.31 M
    (re.compile(r"print_info: model params\s+= (?P<v>[\d.]+ [KMGT]?)"),
     _set("model_params", lambda m: m["v"].replace(" ", ""))),
    # llama_context: n_ctx = 4096
    (re.compile(r"llama_context: n_ctx\s+= (?P<v>\d+)"), _set("context_size", lambda m: int(m["v"]))),
    # llama_kv_cache: size = 4.00 MiB ( 4096 cells, 2 layers, 1/1 seqs), K (f16): 2.00 MiB, V (f16): 2.00 MiB
    (re.compile(r"llama_kv_cache: size = .*K \((?P<k>\w+)\): .*V \((?P<v>\w+)\)"), _kv),
    # system_info: n_threads = 2 (n_threads_batch = 2) / 2 | CPU : ...
    (re.compile(r"system_info: n_threads = (?P<v>\d+)"), _set("threads", lambda m: int(m["v"]))),
    # system_info: ... | CUDA : ARCHS = 900 | USE_GRAPHS = 1 | ...  (the archs the CUDA kernels were built for)
    (re.compile(r"\bCUDA : ARCHS = (?P<v>[\d,]+)"), _set("cuda_archs", lambda m: m["v"])),
    # failures before "model loaded"
    (re.compile(r"error loading model|failed to load model|exiting due to model loading error"),
     _set("startup_failed", True)),
]


def _draft_start(m, f, line, st):
    st.in_draft = True
    f.set("draft_model", m["v"].replace("\\", "/").rsplit("/", 1)[-1], line)


def _spec_impl(m, f, line, st):
    st.in_draft = False
    f.set("spec_decode", m["v"].lower() if m["v"] else "none", line)


# Speculative decoding (`-md`, `--spec-type`). The draft model is loaded with
# the same print_info/loader lines as the target: those lines describe the
# draft, not the model served, so no target fact is taken from them.
SPEC_RULES: list[Rule] = [
    # common_speculative_init_result: loading draft model '/path/tiny-draft.gguf'
    (re.compile(r"loading draft model '(?P<v>[^']+)'"), _draft_start),
    # common_specu: adding speculative implementation 'draft-simple'   (one line per --spec-type)
    (re.compile(r"adding speculative implementation '(?P<v>[\w-]+)'"), _spec_impl),
    # common_specu: no implementations specified for speculative decoding   (-md without --spec-type)
    (re.compile(r"no implementations specified for speculative decoding(?P<v>)"), _spec_impl),
    # load_model: speculative decoding context initialized
    (re.compile(r"speculative decoding context initialized"), lambda m, f, line, st: setattr(st, "in_draft", False)),
]


def observe(text: str, facts: "ObservedFacts") -> "ObservedFacts":
    """Apply every rule to every line of `text`, in log order."""
    st = _State()
    for raw in re.split(r"\r\n|\r|\n", text):
        line = _ANSI.sub("", raw).rstrip()
        message = _PREFIX.sub("", line, count=1)
        if not message.strip():
            continue
        for pattern, apply in SPEC_RULES if st.in_draft else SPEC_RULES + RULES:
            if m := pattern.search(message):
                if apply is _spec_impl and facts.spec_decode not in (None, "none") and m["v"]:
                    facts.set("spec_decode", f"{facts.spec_decode},{m['v'].lower()}", line.strip())
                    continue  # several --spec-type values: all of them
                apply(m, facts, line.strip(), st)
    return facts
