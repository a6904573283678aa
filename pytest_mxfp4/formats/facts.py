"""Observed runtime facts, the record: what a serving engine's log proved it
ran (attention backend, MoE backend, FP4 mode, ...). The rules that read a
log into it, and `check_expectations`, are in observe/; the results JSON and
the baseline files keep it as a mapping (`to_dict` / `from_dict`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

_NOT_FACTS = ("evidence", "_strength", "_core", "_stored", "extra")

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
    # Read back from a file: the keys it had, in its order (a stored mapping is
    # written again as it was), and keys this version does not know.
    _stored: tuple[str, ...] | None = field(default=None, repr=False, compare=False)
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def fact_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name not in _NOT_FACTS)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ObservedFacts:
        """The facts of a results JSON or baseline file (`to_dict` gives the
        same mapping back). Unknown keys are kept in `extra`, not guessed."""
        known = set(cls.fact_names())
        facts = cls(_core=(), _stored=tuple(d))
        for k, v in d.items():
            if k in known:
                setattr(facts, k, list(v) if isinstance(v, list) else v)
            else:
                facts.extra[k] = v
        return facts

    def shown(self) -> dict[str, Any]:
        """The facts that hold a value, by name (what a page or a baseline shows)."""
        return {k: v for k, v in self.to_dict().items() if v not in (None, [], {}, "")}

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
        for name in self._stored or ():
            value = self.extra[name] if name in self.extra else getattr(self, name)
            out[name] = list(value) if isinstance(value, list) else value
        for name in self.fact_names():
            value = getattr(self, name)
            if name not in out and (name in self._core or (value is not None and value != [])):
                out[name] = list(value) if isinstance(value, list) else value
        return out
