"""Verify GPU environment capture and NVML telemetry on a real NVIDIA GPU.

Runs a GPU load (PyTorch bf16 matmuls, if torch is there) inside telemetry
windows and prints what pytest-mxfp4 records: the environment (GPU name, SM,
driver, hardware key) and per-window summaries (clocks, power, temperature,
clock-event reasons). Exit 1 when NVML cannot be read.

    python scripts/nvml_probe.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_mxfp4.observe.environment import capture  # noqa: E402
from pytest_mxfp4.observe.telemetry import GpuSampler, load_nvml  # noqa: E402


def load(seconds: float) -> str:
    try:
        import torch
    except ImportError:
        time.sleep(seconds)
        return "sleep (no torch)"
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        a = (a @ a).clamp_(-1, 1)
        n += 1
        if n % 20 == 0:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return f"{n} bf16 8192^3 matmuls"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    env = capture()
    print("environment:", json.dumps({k: env.to_dict()[k] for k in ("gpus", "hardware_key", "cpu_model", "cpu_count")}, indent=1))
    nvml, note = load_nvml()
    if nvml is None:
        print(note)
        return 1
    sampler = GpuSampler(nvml, interval_s=0.05)
    with sampler.window() as idle:
        time.sleep(0.5)
    with sampler.window() as busy:
        what = load(a.seconds)
    print("idle window:", json.dumps([g.to_dict() for g in idle.summary], indent=1))
    print(f"busy window ({what}):", json.dumps([g.to_dict() for g in busy.summary], indent=1))
    print("raw readings in busy window:", len(busy.readings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
