"""Make a draft model for llama.cpp speculative decoding (`-md`) from a GGUF.

A draft must share the target's vocabulary; nothing else about it is fixed.
This one is cut from the target itself: its token embedding, output head and
tokenizer, and its first `--layers` blocks, so greedy drafts agree with the
target often (random weights or not: what decides acceptance is how close
the draft's next-token choice is to the target's). `--noise S` adds Gaussian
noise of S x each tensor's own standard deviation to the kept blocks and the
output head (seeded): a worse draft of the same size and cost, for a planted
drafter change (lower acceptance, same draft speed).

Offline, seconds, no torch: gguf-py from the llama.cpp source that
scripts/build_llama_server.sh unpacks (.cache/llama.cpp/src/gguf-py).

    python scripts/make_draft_gguf.py models/gguf/tiny-f16.gguf models/gguf/tiny-draft.gguf --layers 1
    python scripts/make_draft_gguf.py models/gguf/tiny-f16.gguf models/gguf/tiny-draft-worse.gguf --layers 1 --noise 1.0
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def gguf_module():
    src = Path(os.environ.get("LLAMA_CPP_DIR", ROOT / ".cache" / "llama.cpp")) / "src" / "gguf-py"
    if not (src / "gguf").is_dir():
        sys.exit(f"make_draft_gguf: {src} not found: unpack the llama.cpp source first (scripts/build_llama_server.sh)")
    sys.path.insert(0, str(src))
    import gguf

    return gguf


def make_draft(src: Path, out: Path, layers: int, noise: float = 0.0, seed: int = 1) -> tuple[int, int]:
    """Write the draft; returns (its blocks, the target's blocks)."""
    gguf = gguf_module()
    r = gguf.GGUFReader(str(src))
    arch = r.fields["general.architecture"].contents()
    n_blocks = int(r.fields[f"{arch}.block_count"].contents())
    if not 1 <= layers <= n_blocks:
        sys.exit(f"make_draft_gguf: --layers {layers}: the target {src} has {n_blocks} blocks; pick 1..{n_blocks}")
    w = gguf.GGUFWriter(str(out), arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        val = f.contents()
        if key == f"{arch}.block_count":
            val = layers
        elif key == "general.name":
            val = f"{val} draft {layers}L" + (f" noise {noise:g}" if noise else "")
        sub = f.types[1] if len(f.types) > 1 else None
        w.add_key_value(key, val, f.types[0], sub)
    rng = np.random.default_rng(seed)
    block = re.compile(r"blk\.(\d+)\.")
    for t in r.tensors:
        m = block.match(t.name)
        if m and int(m.group(1)) >= layers:
            continue
        data = np.array(t.data)
        if noise and data.ndim == 2 and (m or t.name == "output.weight" or
                                         (t.name == "token_embd.weight" and not any(x.name == "output.weight"
                                                                                    for x in r.tensors))):
            f32 = data.astype(np.float32)
            f32 += rng.standard_normal(f32.shape, dtype=np.float32) * noise * float(f32.std())
            data = f32.astype(data.dtype)
        # gguf-py's reader gives shapes innermost-first; the writer wants numpy order
        w.add_tensor(t.name, data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return layers, n_blocks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("target", type=Path, help="the target model GGUF (f16)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--layers", type=int, default=1, help="blocks kept from the target (default 1)")
    ap.add_argument("--noise", type=float, default=0.0, help="noise, in units of each tensor's std (default 0)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if not a.target.is_file():
        sys.exit(f"make_draft_gguf: {a.target} not found (scripts/setup.sh makes it)")
    if a.out.is_file():
        print(f"{a.out}: already there")
        return
    tmp = a.out.with_suffix(".tmp.gguf")
    kept, total = make_draft(a.target, tmp, a.layers, a.noise, a.seed)
    tmp.replace(a.out)
    print(f"{a.out}: draft of {a.target.name}, {kept} of {total} blocks"
          + (f", noise {a.noise:g}x std" if a.noise else "") + f" ({a.out.stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
