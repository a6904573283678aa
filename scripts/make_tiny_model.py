"""Make a small random-weight Llama model with a locally trained tokenizer.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on text that
ships with Debian (/usr/share/common-licenses, /usr/share/doc/*/copyright).
The weights are random; the point is a real vLLM engine doing real work.

    python scripts/make_tiny_model.py OUT_DIR [--hidden 256 --layers 4]
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

CORPUS_GLOBS = ("/usr/share/common-licenses/*", "/usr/share/doc/*/copyright")


def corpus_files(limit_bytes: int = 8_000_000) -> list[str]:
    files, total = [], 0
    for pattern in CORPUS_GLOBS:
        for f in sorted(glob.glob(pattern)):
            p = Path(f)
            if p.is_file():
                files.append(f)
                total += p.stat().st_size
                if total > limit_bytes:
                    return files
    if not files:
        sys.exit("make_tiny_model: no local text found under /usr/share/doc or /usr/share/common-licenses")
    return files


def build_tokenizer(vocab: int):
    """The byte-level BPE, trained on local text (needs only `tokenizers`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,  # set-up shows its own steps; bars only add blank lines to a log
    )
    tok.train(corpus_files(), trainer)
    # BOS on every prompt, as Llama tokenizers do: prompt_tokens counts it.
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return tok


def train_tokenizer(out: Path, vocab: int) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(tokenizer_object=build_tokenizer(vocab), bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")
    fast.save_pretrained(out)


def write_tokenizer_only(out: Path, vocab: int) -> None:
    """What scripts/make_moe_gguf.py reads from a tokenizer folder, without
    transformers or torch (scripts/gpu_llamacpp.sh bundle on a fresh clone):
    tokenizer.json, the tokenizer_config.json transformers would write, and a
    config.json with the vocabulary size."""
    build_tokenizer(vocab).save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"backend": "tokenizers", "bos_token": "<s>", "eos_token": "</s>", "model_max_length": 1000000000000000019884624838656,
         "tokenizer_class": "TokenizersBackend", "unk_token": "<unk>"}, indent=2) + "\n")
    (out / "config.json").write_text(json.dumps({"vocab_size": vocab}) + "\n")


def make_model(out: Path, vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, positions: int) -> int:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=positions,
        bos_token_id=0,
        eos_token_id=1,
        torch_dtype="bfloat16",
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Writing model shards" bars: noise in set-up's log
    model.save_pretrained(out, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--positions", type=int, default=8192)
    ap.add_argument("--tokenizer-only", action="store_true",
                    help="only the tokenizer (+ config.json with vocab_size): needs `tokenizers`, not torch")
    a = ap.parse_args()
    if a.tokenizer_only:
        a.out.mkdir(parents=True, exist_ok=True)
        write_tokenizer_only(a.out, a.vocab)
        print(f"{a.out}: tokenizer only, vocab {a.vocab}")
        return
    if (a.out / "config.json").exists() and (a.out / "tokenizer.json").exists():
        print(f"{a.out}: already there")
        return
    a.out.mkdir(parents=True, exist_ok=True)
    train_tokenizer(a.out, a.vocab)
    n = make_model(a.out, a.vocab, a.hidden, a.layers, a.heads, a.kv_heads, a.positions)
    (a.out / "pytest_mxfp4_model.json").write_text(json.dumps({"params": n, "random_weights": True}) + "\n")
    print(f"{a.out}: {n / 1e6:.1f}M params, vocab {a.vocab}")


if __name__ == "__main__":
    main()
