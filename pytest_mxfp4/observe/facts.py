"""Observed runtime facts: what a serving engine's log proves it actually ran.

`observe_text(log_text)` turns a server log into `ObservedFacts` (attention
backend, MoE backend, FP4 mode, quantization, CUDA graphs, ...). A fact the log
does not show stays None: we never guess from the command line or from what
is "usually" selected. `check_expectations(expect, facts)` compares a server
config's `expect:` block with those facts.

The per-engine line rules live in one module per engine (`vllm.py`,
`llamacpp.py`); `observe_text(text, engine="llama.cpp")` picks the module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "ObservedFacts",
    "Mismatch",
    "observe_text",
    "check_expectations",
    "ENGINES",
]


# Always present in to_dict(); None (or []) when the log doesn't show them.
CORE_FACTS = (
    "attention_backend",
    "moe_backend",
    "fp4_mode",
    "quantization",
    "kv_cache_dtype",
    "spec_decode",
    "enforce_eager",
    "cudagraph",
    "unknown_env_vars",
    "deprecated_env_vars",
    "vllm_version",
)


@dataclass
class ObservedFacts:
    """Facts read from a log, with canonical values.

    Core facts (CORE_FACTS) are always reported; the others only when the log
    shows them, so that a log which says nothing about e.g. the platform does
    not grow a misleading `platform: null`.
    """

    # Core facts.
    attention_backend: str | None = None  # FLASH_ATTN | FLASHINFER | TRITON_ATTN ...
    moe_backend: str | None = None  # MARLIN | TRITON | FLASHINFER_CUTLASS_MXFP4_MXFP8 ...
    fp4_mode: str | None = None  # weight_only_marlin | emulation
    quantization: str | None = None  # mxfp4 | compressed-tensors | none ...
    kv_cache_dtype: str | None = None  # auto | fp8 | fp8_e4m3 ...
    spec_decode: str | None = None  # none | <method> (eagle3, mtp ...) | enabled
    enforce_eager: bool | None = None
    cudagraph: str | None = None  # NONE | PIECEWISE | FULL | FULL_DECODE_ONLY | FULL_AND_PIECEWISE
    unknown_env_vars: list[str] = field(default_factory=list)
    deprecated_env_vars: list[str] = field(default_factory=list)
    vllm_version: str | None = None
    # Optional facts: reported only when observed.
    attention_candidates: list[str] | None = None
    kv_cache_layout: str | None = None
    flash_attn_version: int | None = None
    moe_candidates: list[str] | None = None
    linear_backend: str | None = None
    compilation_mode: str | None = None  # NONE | STOCK_TORCH_COMPILE | DYNAMO_TRACE_ONCE | VLLM_COMPILE
    platform: str | None = None
    tensor_parallel_size: int | None = None
    startup_failed: bool | None = None
    flashinfer_cutlass_autotune_failure: bool | None = None
    # llama.cpp (observe/llamacpp.py); `quantization` there is the GGUF file type, e.g. MXFP4_MOE.
    backend: str | None = None  # CUDA | Vulkan | CPU | ...
    device: str | None = None  # "NVIDIA H200", "AMD EPYC"
    compute_capability: str | None = None  # "9.0" (ggml_cuda_init's device line, where logged)
    cuda_archs: str | None = None  # "900": the archs llama.cpp's CUDA kernels were built for
    flash_attention: bool | None = None
    gpu_layers_offloaded: int | None = None
    layers_total: int | None = None
    model_arch: str | None = None  # GGUF general.architecture: gpt-oss | llama ...
    tensor_types: list[str] | None = None  # GGUF tensor types present: f32, q8_0, mxfp4 ...
    model_params: str | None = None  # "11.31M"
    context_size: int | None = None  # n_ctx
    threads: int | None = None
    llamacpp_build: str | None = None  # "b<number>-<commit>", as /props build_info says
    draft_model: str | None = None  # llama.cpp `-md`: the draft model's file name
    # Not facts: the log line that showed each fact, and how strong that line was.
    evidence: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    _strength: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _core: tuple[str, ...] = field(default=CORE_FACTS, repr=False, compare=False)  # per engine

    @classmethod
    def fact_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name not in ("evidence", "_strength", "_core"))

    def set(self, name: str, value: Any, line: str, strength: int = 2) -> None:
        """Record a fact. A later line replaces an earlier one (the engine can
        switch, e.g. downgrade the CUDA-graph mode), unless the later line is
        weaker evidence than the one already recorded."""
        if strength < self._strength.get(name, 0):
            return
        setattr(self, name, value)
        self.evidence[name] = line
        self._strength[name] = strength

    def add(self, name: str, item: str, line: str) -> None:
        """Append to a list fact once (warnings repeat once per TP rank)."""
        items = getattr(self, name)
        if items is None:
            items = []
            setattr(self, name, items)
        if item not in items:
            items.append(item)
            self.evidence.setdefault(name, line)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.fact_names():
            value = getattr(self, name)
            if name in self._core or (value is not None and value != []):
                out[name] = list(value) if isinstance(value, list) else value
        return out


@dataclass(frozen=True)
class Mismatch:
    fact: str
    expected: Any
    observed: Any
    evidence_line: str | None
    message: str


# --- expectations ---------------------------------------------------------------

# `AttentionBackendEnum.FLASH_ATTN` and `FLASH_ATTN` name the same thing; an
# expectation should not depend on which repr a given version logged.
_ENUM_QUALIFIER = re.compile(r"^[A-Za-z_]\w*\.(?=[A-Za-z_])")


def _norm(value: Any) -> str:
    return _ENUM_QUALIFIER.sub("", str(value).strip()).casefold()


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(str(v) for v in value) + "]"
    return "null" if value is None else str(value)


def _matches(expected: Any, observed: Any, is_list_fact: bool) -> bool:
    if expected is None:
        return observed is None
    if observed is None:
        return False
    if is_list_fact:
        # A list fact (env vars, candidates) matches when it has the same members.
        exp = expected if isinstance(expected, list) else [expected]
        return {_norm(v) for v in exp} == {_norm(v) for v in observed}
    # A scalar fact: `expected` may list the acceptable values.
    acceptable = expected if isinstance(expected, list) else [expected]
    return _norm(observed) in {_norm(v) for v in acceptable}


def _describe_expected(expected: Any, is_list_fact: bool) -> str:
    if isinstance(expected, list) and not is_list_fact:
        return "one of " + ", ".join(_show(v) for v in expected)
    return _show(expected)


def check_expectations(expect: dict[str, Any], facts: ObservedFacts) -> list[Mismatch]:
    """Compare `expect` (fact name -> value or list of acceptable values) with
    what the log showed. Names compare case-insensitively; `null` expects the
    fact to be absent (e.g. `fp4_mode: null`: no weight-only FP4 fallback)."""
    known = ObservedFacts.fact_names()
    mismatches: list[Mismatch] = []
    for fact, expected in expect.items():
        if fact not in known:
            mismatches.append(Mismatch(
                fact, expected, None, None,
                f"{fact}: not a fact pytest-mxfp4 can observe (known: {', '.join(sorted(known))})",
            ))
            continue
        observed = getattr(facts, fact)
        evidence = facts.evidence.get(fact)
        is_list_fact = fact in ("unknown_env_vars", "deprecated_env_vars", "tensor_types") or fact.endswith("_candidates")
        if _matches(expected, observed, is_list_fact):
            continue
        want = _describe_expected(expected, is_list_fact)
        if observed is None:
            message = (f"{fact}: expected {want}, but it could not be observed in the log "
                       "(no line shows it; check the log level and that the server got this far)")
        else:
            message = f"{fact}: expected {want}, observed {_show(observed)}"
            if evidence:
                message += f" (log: {evidence})"
        mismatches.append(Mismatch(fact, expected, observed, evidence, message))
    return mismatches
