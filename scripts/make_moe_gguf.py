"""Make the GGUF models the llama.cpp rows serve, locally, with random weights.

* `--moe OUT.gguf`: a small gpt-oss-style MoE (transformers `GptOssConfig`,
  alternating sliding/full attention, attention sinks, yarn rope) with the
  tokenizer that scripts/make_tiny_model.py trained on local text, converted
  with llama.cpp's own convert_hf_to_gguf.py (f16) and quantized `MXFP4_MOE`
  with llama-quantize: the expert tensors become MXFP4, the rest stays f16 /
  Q8_0, so llama.cpp runs its MXFP4 MoE kernels (CPU or CUDA).
* `--dense-from models/tiny --dense OUT.gguf`: the dense Llama made by
  make_tiny_model.py, converted to an f16 GGUF.

    python scripts/make_moe_gguf.py --tokenizer models/tiny --moe models/gguf/moe-mxfp4.gguf \
        --dense-from models/tiny --dense models/gguf/tiny-f16.gguf

Sizes: `--preset cpu` (default) is tiny so a request takes well under a second
on 2 CPU cores; `--preset gpu` is larger (about 0.3B params) for the H200 run.
Nothing is downloaded; idempotent (an existing output is kept).

The converter recognises known tokenizers by hashing how they pre-tokenize a
test string; a locally trained byte-level BPE is unknown to it and it refuses.
We run the converter in-process with that single check relaxed to "gpt-2"
(byte-level BPE with GPT-2's split regex, which is what this tokenizer is).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRESETS = {
    # hidden, layers, heads, kv_heads, experts, top_k, expert_ffn
    "cpu": dict(hidden=256, layers=4, heads=4, kv_heads=2, experts=8, top_k=2, ffn=256),
    "gpu": dict(hidden=1024, layers=8, heads=16, kv_heads=4, experts=16, top_k=4, ffn=1024),
}


def llama_cpp_src() -> Path:
    d = Path(os.environ.get("LLAMA_CPP_DIR", ROOT / ".cache" / "llama.cpp")) / "src"
    if not (d / "convert_hf_to_gguf.py").is_file():
        sys.exit(f"make_moe_gguf: {d}/convert_hf_to_gguf.py not found: run scripts/build_llama_server.sh first")
    return d


def find_quantize() -> str:
    for cand in (os.environ.get("LLAMA_QUANTIZE"), str(Path(sys.prefix) / "bin" / "llama-quantize"),
                 shutil.which("llama-quantize")):
        if cand and Path(cand).is_file():
            return cand
    sys.exit("make_moe_gguf: llama-quantize not found (set LLAMA_QUANTIZE or run scripts/build_llama_server.sh)")


def make_hf_moe(out: Path, tokenizer_dir: Path, p: dict) -> int:
    import torch
    from transformers import GptOssConfig, GptOssForCausalLM

    vocab = json.loads((tokenizer_dir / "config.json").read_text())["vocab_size"]
    torch.manual_seed(0)
    cfg = GptOssConfig(
        vocab_size=vocab,
        hidden_size=p["hidden"],
        intermediate_size=p["ffn"],
        num_hidden_layers=p["layers"],
        num_attention_heads=p["heads"],
        num_key_value_heads=p["kv_heads"],
        head_dim=64,
        num_local_experts=p["experts"],
        num_experts_per_tok=p["top_k"],
        sliding_window=128,
        layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(p["layers"])],
        max_position_embeddings=8192,
        # gpt-oss uses yarn; state a factor that matches 8192 / 4096 so transformers doesn't warn
        rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 2.0,
                         "original_max_position_embeddings": 4096, "beta_fast": 32.0, "beta_slow": 1.0},
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        tie_word_embeddings=False,
    )
    model = GptOssForCausalLM(cfg).to(torch.bfloat16)
    with torch.no_grad():  # random init leaves some params at 0/1 (sinks, router bias): fine
        for prm in model.parameters():
            if prm.dim() >= 2:
                prm.normal_(0.0, 0.02)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars: noise in set-up's log
    model.save_pretrained(out, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / f, out / f)
    return sum(x.numel() for x in model.parameters())


def convert(hf_dir: Path, out: Path, outtype: str = "f16") -> None:
    """Run llama.cpp's convert_hf_to_gguf.py in a child Python with the
    pre-tokenizer check relaxed (see the module docstring)."""
    src = llama_cpp_src()
    boot = (
        "import sys, runpy\n"
        f"sys.path[:0] = [{str(src)!r}, {str(src / 'gguf-py')!r}]\n"
        "from conversion import base\n"
        "_orig = base.TextModel.get_vocab_base_pre\n"
        "def _pre(self, tokenizer):\n"
        "    try:\n"
        "        return _orig(self, tokenizer)\n"
        "    except NotImplementedError:\n"
        "        return 'gpt-2'  # locally trained byte-level BPE\n"
        "base.TextModel.get_vocab_base_pre = _pre\n"
        f"sys.argv = ['convert_hf_to_gguf.py', {str(hf_dir)!r}, '--outtype', {outtype!r}, '--outfile', {str(out)!r}]\n"
        f"runpy.run_path({str(src / 'convert_hf_to_gguf.py')!r}, run_name='__main__')\n"
    )
    r = subprocess.run([sys.executable, "-c", boot], capture_output=True, text=True)
    if r.returncode != 0 or not out.is_file():
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
        sys.exit(f"make_moe_gguf: converting {hf_dir} to {out} failed (exit {r.returncode})")


def quantize(src: Path, out: Path, qtype: str) -> None:
    r = subprocess.run([find_quantize(), str(src), str(out), qtype], capture_output=True, text=True)
    if r.returncode < 0:  # died by a signal: a build/CPU mismatch; exit 3 lets the build script rebuild
        sys.path.insert(0, str(ROOT))
        from pytest_mxfp4.servers.exits import describe_exit

        sys.stderr.write(r.stdout[-1000:] + r.stderr[-1000:])
        print(f"make_moe_gguf: llama-quantize {describe_exit(r.returncode)}", file=sys.stderr)
        sys.exit(3)
    if r.returncode != 0 or not out.is_file():
        sys.stderr.write(r.stdout[-3000:] + r.stderr[-3000:])
        sys.exit(f"make_moe_gguf: llama-quantize {qtype} failed (exit {r.returncode})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", type=Path, default=ROOT / "models" / "tiny",
                    help="folder with tokenizer.json from make_tiny_model.py (default models/tiny)")
    ap.add_argument("--moe", type=Path, help="output: the MXFP4_MOE GGUF")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    ap.add_argument("--dense-from", type=Path, help="HF Llama folder to convert (e.g. models/tiny)")
    ap.add_argument("--dense", type=Path, help="output: the dense f16 GGUF")
    a = ap.parse_args()
    if not (a.moe or a.dense):
        ap.error("nothing to do: give --moe and/or --dense")
    if a.dense and not a.dense_from:
        ap.error("--dense needs --dense-from")

    if a.dense:
        if a.dense.is_file():
            print(f"{a.dense}: already there")
        else:
            a.dense.parent.mkdir(parents=True, exist_ok=True)
            tmp = a.dense.with_suffix(".tmp.gguf")
            convert(a.dense_from, tmp, "f16")
            tmp.replace(a.dense)
            print(f"{a.dense}: f16 GGUF of {a.dense_from} ({a.dense.stat().st_size / 2**20:.1f} MiB)")

    if a.moe:
        if a.moe.is_file():
            print(f"{a.moe}: already there")
            return
        a.moe.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="moe-", dir=a.moe.parent) as td:
            hf = Path(td) / "hf"
            n = make_hf_moe(hf, a.tokenizer, PRESETS[a.preset])
            f16 = Path(td) / "moe-f16.gguf"
            convert(hf, f16, "f16")
            tmp = Path(td) / "moe-mxfp4.gguf"
            quantize(f16, tmp, "MXFP4_MOE")
            shutil.move(str(tmp), a.moe)
        (a.moe.parent / (a.moe.name + ".json")).write_text(json.dumps(
            {"params": n, "random_weights": True, "arch": "gpt-oss", "quant": "MXFP4_MOE",
             "preset": a.preset, **PRESETS[a.preset]}) + "\n")
        print(f"{a.moe}: gpt-oss-style MoE, {n / 1e6:.1f}M params, MXFP4_MOE ({a.moe.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
