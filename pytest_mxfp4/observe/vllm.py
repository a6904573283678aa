"""vLLM log rules: which log line proves which runtime fact.

Built from the logger format strings of vLLM 0.10.1.1 ... 0.33.0 (see
shared/reference/vllm-log-strings.md) and the traps listed in
shared/reference/vllm-log-pitfalls.md (cited below as "pitfall N").

Every rule is a compiled regex searched in the *message* of a log line (the
text after the `(Proc pid=N) LEVEL MM-DD HH:MM:SS [file.py:N]` prefix) plus the
fact setters it fires. All rules are applied to every line, in log order, so a
later line overrides an earlier one where the engine switches (e.g. the
CUDA-graph mode is downgraded after the config line). Rules marked WEAK only
fill a fact that no strong line has shown.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_mxfp4.formats.facts import ObservedFacts

STRONG = 2  # the line states the fact
WEAK = 1  # the line implies it; never overrides a strong line

# --- turning raw text into (file, message) lines ---------------------------------

_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
# Pastes on GitHub/forums often lose the ESC byte but keep "[1;36m" ... "[0m".
_BARE_SGR = re.compile(r"\[\d{1,3}(?:;\d{1,3})*m")
# Forum rendering turns ' into ‘ ’ (pitfall 9, log 13).
_TYPOGRAPHY = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00a0": " ",
})
_COLLECTOR_NOTE = "### [collector note"

# Prefixes added outside vLLM: markdown quoting, docker-compose "name  | ".
_OUTER_PREFIX = re.compile(r"^(?:>\s?)+|^[\w.-]+\s+\|\s")
# "(EngineCore_DP0 pid=1)", "(VllmWorker TP1 pid=2)", doubled "(Worker pid=3) (Worker_TP0 pid=3)".
_PROC_PREFIX = re.compile(r"^\s*\([^()]*?\bpid=\d+\)\s?")
_LEVEL = re.compile(
    r"^(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)\s+(?:\d{2}-\d{2}\s+\d{2}:\d{2}:\d{2}(?:\.\d+)?\s+)?"
)
_FILE_TAG = re.compile(r"^\[(?P<file>[\w.-]+\.py):\d+\]\s?")
# A vLLM header after some unknown outer prefix: needs level, timestamp and file tag.
_HEADER_ANYWHERE = re.compile(
    r"\b(?:DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\d{2}-\d{2}\s+\d{2}:\d{2}:\d{2}(?:\.\d+)?\s+"
    r"\[(?P<file>[\w.-]+\.py):\d+\]\s?"
)


@dataclass(frozen=True)
class Line:
    text: str  # the cleaned line, kept as evidence
    message: str  # the text after vLLM's prefix
    file: str | None  # basename from "[file.py:N]" (only the basename is ever logged)
    has_header: bool  # had a process prefix, level or file tag


def _clean(raw: str) -> str:
    text = _BARE_SGR.sub("", _ANSI.sub("", raw)).translate(_TYPOGRAPHY)
    return text.rstrip()


def _parse(text: str) -> Line:
    rest = _OUTER_PREFIX.sub("", text, count=1)
    has_header = False
    while m := _PROC_PREFIX.match(rest):
        rest, has_header = rest[m.end():], True
    if m := _LEVEL.match(rest):
        rest, has_header = rest[m.end():], True
    file = None
    if m := _FILE_TAG.match(rest):
        rest, file, has_header = rest[m.end():], m["file"], True
    elif not has_header and (m := _HEADER_ANYWHERE.search(rest)):
        rest, file, has_header = rest[m.end():], m["file"], True
    return Line(text=text.strip(), message=rest.strip(), file=file, has_header=has_header)


def _continues(prev_physical: str, prev: Line, line: Line) -> bool:
    """Is `line` the hard-wrapped tail of `prev`? (pitfall 3/9: users wrap the
    FP4 warning, log 16). Only prose-like wraps: the previous physical line is
    long and stops mid-sentence, and this one has no prefix and starts lowercase."""
    return (
        not line.has_header
        and line.message[:1].islower()
        and len(prev_physical) >= 60
        and prev.message[-1:].isalnum()
    )


def logical_lines(text: str) -> Iterator[Line]:
    """Cleaned, parsed lines with hard-wrapped continuations joined."""
    pending: Line | None = None
    prev_physical = ""
    for raw in re.split(r"\r\n|\r|\n", text):
        cleaned = _clean(raw)
        if cleaned.lstrip().startswith(_COLLECTOR_NOTE):
            # Marks a gap between excerpts: skip it and never join across it.
            if pending:
                yield pending
            pending, prev_physical = None, ""
            continue
        line = _parse(cleaned)
        if pending and line.message and _continues(prev_physical, pending, line):
            pending = Line(
                text=f"{pending.text} {line.text}",
                message=f"{pending.message} {line.message}",
                file=pending.file,
                has_header=pending.has_header,
            )
        else:
            if pending:
                yield pending
            pending = line
        prev_physical = cleaned
    if pending:
        yield pending


# --- canonical names -------------------------------------------------------------

_QUALIFIER = re.compile(r"^[A-Za-z_]\w*\.(?=[A-Za-z_])")

# Class names appear only inside CUDA-graph warnings (pitfall 1, log 23).
_ATTN_CLASSES = {
    "FlashAttentionBackend": "FLASH_ATTN",
    "FlashInferBackend": "FLASHINFER",
    "TritonAttentionBackend": "TRITON_ATTN",
    "FlexAttentionBackend": "FLEX_ATTENTION",
    "TreeAttentionBackend": "TREE_ATTN",
    "XFormersAttentionBackend": "XFORMERS",
    "TorchSDPABackend": "TORCH_SDPA",
    "CPUAttentionBackend": "CPU_ATTN",
    "FlashInferMLABackend": "FLASHINFER_MLA",
    "CutlassMLABackend": "CUTLASS_MLA",
    "FlashMLABackend": "FLASHMLA",
    "TritonMLABackend": "TRITON_MLA",
    "FlashAttnMLABackend": "FLASH_ATTN_MLA",
    "FlashMLASparseBackend": "FLASHMLA_SPARSE",
    "RocmAttentionBackend": "ROCM_ATTN",
}

# 0.10.1-0.11.0 logged one fixed sentence per backend (pitfall 1).
_ATTN_SENTENCE_NAMES = {
    "flash attention": "FLASH_ATTN",
    "flashinfer": "FLASHINFER",
    "triton": "TRITON_ATTN",
    "flexattention": "FLEX_ATTENTION",
    "tree attention": "TREE_ATTN",
    "xformers": "XFORMERS",
    "torch sdpa": "TORCH_SDPA",
    "cutlass mla": "CUTLASS_MLA",
    "triton mla": "TRITON_MLA",
    "flashmla": "FLASHMLA",
    "flashinfer mla": "FLASHINFER_MLA",
    "flashattention mla": "FLASH_ATTN_MLA",
    "sparse mla": "FLASHMLA_SPARSE",
}

# CompilationMode (0.11+) and the older CompilationLevel share the integers.
_COMPILATION_MODES = {0: "NONE", 1: "STOCK_TORCH_COMPILE", 2: "DYNAMO_TRACE_ONCE", 3: "VLLM_COMPILE"}
# CUDAGraphMode: NONE=0, PIECEWISE=1, FULL=2, FULL_DECODE_ONLY=(2,0), FULL_AND_PIECEWISE=(2,1).
_CUDAGRAPH_VALUES = {
    "0": "NONE", "1": "PIECEWISE", "2": "FULL", "2,0": "FULL_DECODE_ONLY", "2,1": "FULL_AND_PIECEWISE",
}


def attn_name(raw: str) -> str:
    """`AttentionBackendEnum.FLASH_ATTN`, `'FLASH_ATTN_VLLM_V1'` -> FLASH_ATTN."""
    name = _QUALIFIER.sub("", raw.strip().strip("'\"")).upper()
    # The *_VLLM_V1 suffixes of <=0.11 name the same backends.
    return name.removesuffix("_VLLM_V1")


def attn_class_name(raw: str) -> str:
    return _ATTN_CLASSES.get(raw, raw)


def backend_name(raw: str) -> str:
    return _QUALIFIER.sub("", raw.strip().strip("'\"")).upper()


def name_list(canon: Callable[[str], str]) -> Callable[[str], list[str]]:
    """"['A', 'B']" (0.12, 0.16+) or "('A', 'B')" (0.13-0.15) -> [A, B]."""
    return lambda raw: [canon(n) for n in re.findall(r"[A-Za-z_][\w.]*", raw)]


def cudagraph_mode(raw: str) -> str:
    key = re.sub(r"[\s()\[\]]", "", raw)
    return _CUDAGRAPH_VALUES.get(key, key.upper())


def compilation_mode(raw: str) -> str:
    return _COMPILATION_MODES.get(int(raw), raw) if raw.isdigit() else raw.upper()


def lower(raw: str) -> str:
    return raw.strip().strip("'\"").lower()


def boolean(raw: str) -> bool:
    return raw == "True"


# --- rules -----------------------------------------------------------------------

Apply = Callable[[re.Match[str], "ObservedFacts", str], None]


@dataclass(frozen=True)
class Rule:
    pattern: re.Pattern[str]
    apply: Apply
    # When the line carries a [file.py] tag, it must (not) be one of these.
    files: frozenset[str] | None = None
    not_files: frozenset[str] = frozenset()


def rule(pattern: str, *appliers: Apply, files: tuple[str, ...] | None = None,
         not_files: tuple[str, ...] = (), flags: int = 0) -> Rule:
    def apply(m: re.Match[str], facts: ObservedFacts, line: str) -> None:
        for a in appliers:
            a(m, facts, line)

    return Rule(re.compile(pattern, flags), apply,
                frozenset(files) if files is not None else None, frozenset(not_files))


def put(fact: str, group: str = "v", conv: Callable[[str], Any] = str, strength: int = STRONG) -> Apply:
    def apply(m: re.Match[str], facts: ObservedFacts, line: str) -> None:
        if m[group] is not None:
            facts.set(fact, conv(m[group]), line, strength)
    return apply


def const(fact: str, value: Any, strength: int = STRONG) -> Apply:
    def apply(m: re.Match[str], facts: ObservedFacts, line: str) -> None:
        facts.set(fact, value, line, strength)
    return apply


def add(fact: str, group: str = "v") -> Apply:
    def apply(m: re.Match[str], facts: ObservedFacts, line: str) -> None:
        facts.add(fact, m[group], line)
    return apply


def const_by(fact: str, table: dict[str, str], group: str = "v") -> Apply:
    """Map a matched sentence fragment to a canonical value."""
    def apply(m: re.Match[str], facts: ObservedFacts, line: str) -> None:
        facts.set(fact, table[m[group].lower()], line, STRONG)
    return apply


_EAGER = (const("enforce_eager", True), const("cudagraph", "NONE"))

RULES: tuple[Rule, ...] = (
    # ---- attention backend (pitfall 1) ----
    # 0.12+: auto selection with its candidate list: ['A', 'B'] (0.12, 0.16+; '.' from
    # 0.16) or a tuple ('A', 'B') (0.13-0.15).
    rule(r"^Using (?P<v>[\w.]+) attention backend out of potential backends: (?P<c>[\[(].*?[\])])\.?$",
         put("attention_backend", conv=attn_name),
         put("attention_candidates", "c", name_list(attn_name))),
    # 0.11.2 only: candidates on their own line, then "Using FLASH_ATTN backend."
    rule(r"^Valid backends: (?P<c>\[.*\])$", put("attention_candidates", "c", name_list(attn_name))),
    # "Using %s backend." - explicit selection (prints the enum repr
    # AttentionBackendEnum.X), 0.11.2 auto path, CPU MLA. Always ends with '.', which
    # tells it apart from the MoE "Using Marlin backend" (no '.'), pitfall 2.
    rule(r"^Using (?P<v>(?:\w+\.)?[A-Z][A-Z0-9_]*) backend\.$",
         put("attention_backend", conv=attn_name), not_files=("mxfp4.py",)),
    # <=0.11.0 fixed sentences ("Using Triton backend on V1 engine.", V0 "Using XFormers
    # backend."), incl. "Using FlashInfer backend with HND KV cache layout on V1 engine ...".
    rule(r"^Using (?P<v>Flash Attention|FlashInfer|Triton|FlexAttention|Tree Attention|XFormers|Torch SDPA|"
         r"Cutlass MLA|Triton MLA|FlashMLA|FlashInfer MLA|FlashAttention MLA|Sparse MLA) backend"
         r"(?: for \S+)?(?: with (?P<layout>\w+) KV cache layout)?(?: on V1 engine)?(?: by default .*)?\.$",
         const_by("attention_backend", _ATTN_SENTENCE_NAMES),
         put("kv_cache_layout", "layout"), not_files=("mxfp4.py",)),
    # 0.18+: a --block-size that rules out better backends.
    rule(r"precluded higher-priority backend\(s\) .*?\. Using (?P<v>[\w.]+) instead",
         put("attention_backend", conv=attn_name)),
    # Only the class name, inside CUDA-graph warnings (log 23). Weak: a side remark.
    rule(r"(?:for attention backend|with) (?P<v>\w+Backend)\b",
         put("attention_backend", conv=attn_class_name, strength=WEAK)),
    # 0.26+: only logged by the FlashInfer backend.
    rule(r"^FlashInfer resolved query dtypes:", const("attention_backend", "FLASHINFER", WEAK)),
    # "Using HND KV cache layout for FLASHINFER backend." (0.11.2-0.26) / CPU "Using LBHNC
    # KV cache layout." - NOT the attention-backend line (pitfall 1), but names it.
    rule(r"^Using (?P<layout>[A-Z]+) KV cache layout(?: for (?P<v>[\w.]+) backend)?\.$",
         put("kv_cache_layout", "layout"), put("attention_backend", conv=attn_name, strength=WEAK)),
    rule(r"^Using FlashAttention version (?P<v>\d+)", put("flash_attn_version", conv=int)),

    # ---- MoE backend (pitfall 2) ----
    # Oracle era (0.15+ NvFp4, 0.19+ Mxfp4, also Fp8/Int8/WNA16/...): "Using 'MARLIN' Mxfp4
    # MoE backend." and "Using 'X' NvFp4 MoE backend out of potential backends: [...]."
    rule(r"^Using '?(?P<v>[A-Z][A-Z0-9_]*)'? \w+ MoE backend(?: \(user-requested\))?"
         r"(?: out of potential backends: (?P<c>\[.*?\]))?\.?$",
         put("moe_backend", conv=backend_name),
         put("moe_candidates", "c", name_list(backend_name))),
    # 0.33: no backend takes the requested activation -> a BF16 fallback.
    rule(r"^No \w+ MoE backend supports activation=\S+ for the deployment configuration\. "
         r"Falling back to '(?P<v>\w+)'",
         put("moe_backend", conv=backend_name)),
    # Free-text era, quantization/mxfp4.py 0.10.2-0.18. "Using Triton backend" also means
    # XPU/CUDA attention elsewhere: exact sentence (no '.') and, if tagged, mxfp4.py.
    rule(r"^(?:\[get_mxfp4_backend_with_lora\] )?Using (?P<v>Marlin|Triton) backend(?: for mxfp4 lora)?$",
         put("moe_backend", conv=str.upper), files=("mxfp4.py",)),
    # Legacy FlashInfer sentences -> oracle names (the SM100_FI_* enum names never appear).
    # On SM90 the FlashInfer BF16 path is CUTLASS; on SM100 it is TRT-LLM.
    rule(r"^Using FlashInfer MXFP4 BF16 backend for SM90\b",
         const("moe_backend", "FLASHINFER_CUTLASS_MXFP4_BF16")),
    rule(r"^(?:Using FlashInfer MXFP4 BF16 backend for SM100|"
         r"Enabling FlashInfer MXFP4 BF16 backend by default for Blackwell)\b",
         const("moe_backend", "FLASHINFER_TRTLLM_MXFP4_BF16")),
    rule(r"^Using FlashInfer MXFP4 MXFP8 CUTLASS backend for SM100\b",
         const("moe_backend", "FLASHINFER_CUTLASS_MXFP4_MXFP8")),
    rule(r"^Using FlashInfer MXFP4 MXFP8 TRTLLM backend for SM100\b",
         const("moe_backend", "FLASHINFER_TRTLLM_MXFP4_MXFP8")),
    rule(r"^Using CK MXFP4 MoE backend \(Aiter ROCm\)", const("moe_backend", "CK")),
    rule(r"^CK MXFP4 MoE GEMM does not support .*Falling back to Triton backend", const("moe_backend", "TRITON")),
    rule(r"^Using (?:xpu|ipex marlin) backend on XPU", const("moe_backend", "XPU")),
    # Pre-oracle FP8 / NvFp4 MoE sentences (0.11.2-0.14).
    rule(r"^Using (?P<v>\w+) backend for (?:FP8|NvFp4) MoE$", put("moe_backend", conv=backend_name)),
    rule(r"Falling back to (?P<v>\w+) for NvFp4 MoE", put("moe_backend", conv=backend_name)),
    # Linear (GEMM) kernel: kept as logged - its names differ by version and have no
    # canonical list (NvFp4LinearBackend.MARLIN, CutlassNvFp4LinearKernel ...).
    rule(r"^Using (?P<v>\S+) for (?:NVFP4|MXFP4) GEMM\.?$", put("linear_backend")),

    # ---- FP4 mode (pitfall 3) ----
    # Match the stable part: the wording is being changed upstream and pastes wrap it.
    # Absence proves nothing: from 0.18 gpt-oss MXFP4-on-Marlin no longer warns.
    rule(r"native support for FP4|weight-only FP4|lacks native FP4 compute",
         const("fp4_mode", "weight_only_marlin"), flags=re.IGNORECASE),
    rule(r"does not support native MXFP4 computation\. Using Emulation", const("fp4_mode", "emulation")),
    # <=0.10.2 config check: "mxfp4 quantization is not fully optimized yet."
    rule(r"^(?P<v>[\w-]+) quantization is not fully optimized yet", put("quantization", conv=lower)),

    # ---- KV-cache dtype (pitfall 4) ----
    # <=0.19.1 prints the literal "fp8" for every fp8 variant, so "fp8" is weak: the
    # engine-config line's exact dtype (fp8_e4m3 ...) wins whatever the order.
    rule(r"^Using (?P<v>fp8) data type to store kv cache", put("kv_cache_dtype", conv=lower, strength=WEAK)),
    rule(r"^Using (?P<v>(?!fp8 )\w+) data type to store kv cache", put("kv_cache_dtype", conv=lower)),

    # ---- speculative decoding (pitfall 7): the method is only in the config line ----
    rule(r"^SpecDecoding metrics:", const("spec_decode", "enabled", WEAK)),
    rule(r"\bwith spec-decode\b", const("spec_decode", "enabled", WEAK)),
    rule(r"^Loading drafter model", const("spec_decode", "enabled", WEAK)),
    rule(r"^Using Eagle3 auxiliary layers", const("spec_decode", "eagle3", WEAK)),
    rule(r"^Enabling num_speculative_tokens > 1 will run ?multiple times of forward on same MTP layer",
         const("spec_decode", "mtp", WEAK)),

    # ---- CUDA graphs / eager (pitfall 8) ----
    rule(r"^Enforce eager set, disabling torch\.compile", *_EAGER, const("compilation_mode", "NONE")),  # 0.17+
    rule(r"^Enforce eager set, overriding optimization level to -O0", *_EAGER),  # 0.12-0.16
    rule(r"enforce-eager is enabled, async output processor cannot be used", *_EAGER),  # <=0.10.2
    rule(r"^Cudagraph is disabled under eager mode", *_EAGER),
    rule(r"^Skipping CUDA graph capture\b", const("cudagraph", "NONE")),
    # The config shows the *requested* mode; the engine may downgrade it later (log 23).
    rule(r"setting cudagraph_mode=(?P<v>\w+)", put("cudagraph", conv=cudagraph_mode)),
    rule(r"^Cudagraph mode \w+ requires piecewise capture.*Overriding to (?P<v>\w+)",
         put("cudagraph", conv=cudagraph_mode)),
    # Graphs being captured/profiled never happens under enforce_eager.
    rule(r"^(?:Graph capturing finished in|Capturing CUDA graphs|Profiling CUDA graph memory|"
         r"Estimated CUDA graph memory)|setting cudagraph_mode=(?!NONE)",
         const("enforce_eager", False, WEAK)),

    # ---- environment variables (pitfall 6) ----
    rule(r"Unknown vLLM environment variable detected: (?P<v>\S+)", add("unknown_env_vars")),
    rule(r"^Using (?P<v>\w+) environment variable is deprecated", add("deprecated_env_vars")),
    rule(r"^(?P<v>VLLM_\w+) environment variable is deprecated", add("deprecated_env_vars")),

    # ---- version / platform / parallelism / startup (pitfall 5) ----
    rule(r"Initializing a V1 LLM engine \(v(?P<v>[^)\s]+)\) with config", put("vllm_version")),
    rule(r"^vLLM (?:API server|batch processing API) version (?P<v>\S+)", put("vllm_version")),
    rule(r"^vLLM server version (?P<v>[^\s,]+), serving model", put("vllm_version")),
    # 0.16+ ASCII logo: "... █ ▀▄▀ █  version 0.22.1". Needs the logo glyphs so that
    # "FlashAttention version 2" or "PyTorch Version 2.10" never count.
    rule(r"[█▀▄]\s+version\s+(?P<v>\d[^\s,]*)", put("vllm_version")),
    # INFO only up to 0.11.0 (DEBUG later).
    rule(r"^Automatically detected platform (?P<v>\w+)\.", put("platform", conv=lower)),
    # What vLLM logs as the effective non-default args; the pasted command line is a
    # request, not a fact (pitfall 4), and is never read.
    rule(r"^non-default args: .*'tensor_parallel_size': (?P<v>\d+)", put("tensor_parallel_size", conv=int)),
    rule(r"EngineCore failed to start|Engine core initialization failed", const("startup_failed", True)),
    rule(r"Application startup complete", const("startup_failed", False)),
    rule(r"^\[Autotuner\]: Skipping tactic .* due to failure while profiling|"
         r"^\[TensorRT-LLM\]\[ERROR\] Failed to initialize cutlass",
         const("flashinfer_cutlass_autotune_failure", True)),
)

# ---- the engine-config line: "Initializing a V1 LLM engine (v%s) with config: %s" ----
# Often truncated or pasted as a tail fragment (pitfall 4, logs 19, 21), so keys are
# read one by one and only from lines that look like that config dump.
_CONFIG_MARKERS = re.compile(
    r", (?:speculative_config|quantization|enforce_eager|kv_cache_dtype|tensor_parallel_size|"
    r"device_config|served_model_name|compilation_config|load_format)="
)
_K = r"(?<![\w.-])"  # a config key starts a token: kv_cache_dtype=, not ...kv_cache_dtype_x=

CONFIG_RULES: tuple[Rule, ...] = (
    rule(_K + r"speculative_config=None\b", const("spec_decode", "none")),
    # method=... inside the SpeculativeConfig(...) repr; an older repr without it still means "on".
    rule(_K + r"speculative_config=SpeculativeConfig\((?![^)]*method=)", const("spec_decode", "enabled")),
    rule(_K + r"speculative_config=SpeculativeConfig\([^)]*?method='?(?P<v>[\w-]+)", put("spec_decode", conv=lower)),
    # quantization=mxfp4 (quantization_config= is a different key).
    rule(_K + r"quantization=(?P<v>[\w-]+)", put("quantization", conv=lower)),
    rule(_K + r"enforce_eager=(?P<v>True|False)\b", put("enforce_eager", conv=boolean)),
    rule(_K + r"kv_cache_dtype=(?P<v>\w+)", put("kv_cache_dtype", conv=lower)),
    rule(_K + r"tensor_parallel_size=(?P<v>\d+)", put("tensor_parallel_size", conv=int)),
    # compilation_config: JSON (0.10: "level":3) or dict repr (0.11+: 'mode':
    # <CompilationMode.VLLM_COMPILE: 3>, 'level': None). 'mode' comes second so it wins.
    rule(r"compilation_config=\{.*?['\"]level['\"]:\s*(?:<\w+\.\w+:\s*)?(?P<v>\d)",
         put("compilation_mode", conv=compilation_mode)),
    rule(r"compilation_config=\{.*?['\"]mode['\"]:\s*(?:<\w+\.\w+:\s*)?(?P<v>\d)",
         put("compilation_mode", conv=compilation_mode)),
    # cudagraph_mode: <CUDAGraphMode.FULL_AND_PIECEWISE: (2, 1)>, "FULL", 1 or [2,1].
    rule(r"['\"]cudagraph_mode['\"]:\s*(?:<CUDAGraphMode\.(?P<v>\w+)|['\"](?P<s>\w+)['\"]|"
         r"(?P<n>\d|[\[(]\s*\d\s*,\s*\d\s*[\])]))",
         put("cudagraph", "v", cudagraph_mode), put("cudagraph", "s", cudagraph_mode),
         put("cudagraph", "n", cudagraph_mode)),
)


def _is_config_line(message: str) -> bool:
    return "with config:" in message or len(_CONFIG_MARKERS.findall(message)) >= 2


def _applies(r: Rule, line: Line) -> bool:
    if line.file is None:
        return True
    if r.files is not None and line.file not in r.files:
        return False
    return line.file not in r.not_files


def observe(text: str, facts: ObservedFacts) -> ObservedFacts:
    """Apply every rule to every logical line of `text`, in log order."""
    for line in logical_lines(text):
        if not line.message:
            continue
        rules = RULES + CONFIG_RULES if _is_config_line(line.message) else RULES
        for r in rules:
            if _applies(r, line) and (m := r.pattern.search(line.message)):
                r.apply(m, facts, line.text)
    return facts
