"""Write a random-weight dense Llama straight to an f16 GGUF with gguf-py.

For the GPU A/B (scripts/gpu_llamacpp.sh dense): a model large enough that
decode is bandwidth-bound (every token reads all weights: about 12 GB at
the default size, ~4.5 ms/token on an H100), like gpt-oss-120b on GB10.
`--extra-layers K` writes the same model with K more layers: a planted
decode slowdown of known size for the head arm (one more layer of 40 is
about +2.4 % bytes per token; the server's own timings give the truth).

No torch, no convert step: the tensors are written one by one from a few
random blocks (the values do not change the speed of f16 kernels), so 12 GB
take seconds and little memory. The vocabulary is the locally trained
tokenizer of models/tiny (byte-level BPE, GPT-2 split), as in make_moe_gguf.py.

    python scripts/make_dense_gguf.py --tokenizer models/tiny --out /dev/shm/dense.gguf [--extra-layers 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIZES = {
    # hidden, layers, heads, kv heads, ffn: ~6.2B params, 12.5 GB f16
    "gpu": dict(hidden=3584, layers=40, heads=28, kv_heads=4, ffn=9728),
    # a few MB: checks the writer and the tokenizer on a CPU llama-server
    "tiny": dict(hidden=256, layers=2, heads=4, kv_heads=2, ffn=512),
}


def gguf_module():
    src = Path(os.environ.get("LLAMA_CPP_DIR", ROOT / ".cache" / "llama.cpp")) / "src" / "gguf-py"
    if not (src / "gguf").is_dir():
        sys.exit(f"make_dense_gguf: {src} not found: unpack the llama.cpp source first "
                 "(scripts/build_llama_server.sh, or scripts/gpu_llamacpp.sh build on the GPU box)")
    sys.path.insert(0, str(src))
    import gguf

    return gguf


def vocabulary(tok_dir: Path) -> tuple[list[str], list[int], list[str], int, int]:
    t = json.loads((tok_dir / "tokenizer.json").read_text())
    vocab = t["model"]["vocab"]
    n = max(vocab.values()) + 1
    tokens = [""] * n
    for tok, i in vocab.items():
        tokens[i] = tok
    special = {a["id"]: a["content"] for a in t.get("added_tokens", [])}
    types = [3 if i in special else 1 for i in range(n)]  # 3 = control, 1 = normal
    merges = [m if isinstance(m, str) else " ".join(m) for m in t["model"]["merges"]]
    by_name = {v: k for k, v in special.items()}
    return tokens, types, merges, by_name.get("<s>", 0), by_name.get("</s>", 1)


def write(out: Path, tok_dir: Path, size: dict, extra_layers: int, seed: int = 0) -> float:
    gguf = gguf_module()
    tokens, types, merges, bos, eos = vocabulary(tok_dir)
    h, L, nh, nkv, ffn = size["hidden"], size["layers"] + extra_layers, size["heads"], size["kv_heads"], size["ffn"]
    head_dim = h // nh
    kv = nkv * head_dim
    vocab = len(tokens)
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name(f"pytest-mxfp4 random dense {L}L")
    w.add_context_length(8192)
    w.add_embedding_length(h)
    w.add_block_count(L)
    w.add_feed_forward_length(ffn)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(bos)
    w.add_eos_token_id(eos)
    w.add_add_bos_token(False)
    rng = np.random.default_rng(seed)
    blocks: dict[tuple[int, int], np.ndarray] = {}

    def mat(rows: int, cols: int) -> np.ndarray:  # one random block per shape, reused
        if (rows, cols) not in blocks:
            blocks[(rows, cols)] = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)
        return blocks[(rows, cols)]

    ones = np.ones(h, dtype=np.float32)
    plan: list[tuple[str, np.ndarray]] = [("token_embd.weight", mat(vocab, h))]
    for i in range(L):
        p = f"blk.{i}."
        plan += [(p + "attn_norm.weight", ones), (p + "attn_q.weight", mat(h, h)), (p + "attn_k.weight", mat(kv, h)),
                 (p + "attn_v.weight", mat(kv, h)), (p + "attn_output.weight", mat(h, h)),
                 (p + "ffn_norm.weight", ones), (p + "ffn_gate.weight", mat(ffn, h)),
                 (p + "ffn_up.weight", mat(ffn, h)), (p + "ffn_down.weight", mat(h, ffn))]
    plan += [("output_norm.weight", ones), ("output.weight", mat(vocab, h))]
    for name, arr in plan:
        w.add_tensor_info(name, arr.shape, arr.dtype, arr.nbytes)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for _, arr in plan:
        w.write_tensor_data(arr)
    w.close()
    return sum(a.nbytes for _, a in plan) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", type=Path, default=ROOT / "models" / "tiny")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", choices=sorted(SIZES), default="gpu")
    ap.add_argument("--extra-layers", type=int, default=0)
    a = ap.parse_args()
    if not (a.tokenizer / "tokenizer.json").is_file():
        sys.exit(f"make_dense_gguf: {a.tokenizer}/tokenizer.json not found (scripts/make_tiny_model.py makes it)")
    if a.out.exists():
        print(f"make_dense_gguf: {a.out} exists, kept")
        return
    a.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    tmp = a.out.with_suffix(".partial")
    gb = write(tmp, a.tokenizer, SIZES[a.size], a.extra_layers)
    tmp.rename(a.out)
    print(f"make_dense_gguf: {a.out}: {SIZES[a.size]['layers'] + a.extra_layers} layers, {gb:.2f} GB "
          f"in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
