"""GPU telemetry while a workload runs: clocks, power, temperature and
throttle (clock-event) reasons via NVML, sampled in a background thread.

A sample taken while the GPU was power- or thermally throttled is flagged, not
hidden: a noisy number is better explained than dropped. Without an NVIDIA
GPU (or without nvidia-ml-py) telemetry is simply absent, with a note.

NVML is reached through one seam, `nvml` (the `pynvml` module of
nvidia-ml-py by default), so tests can drive the sampler with a stand-in.
Each field is read on its own: GB10's unified memory answers "not supported"
for some of them, which must never stop the others.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

# nvmlClocksEventReason* bits (formerly "throttle reasons")
CLOCK_EVENT_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
# Reasons that mean the GPU ran slower than it could: these flag a sample.
THROTTLE_MASK = 0x4 | 0x8 | 0x20 | 0x40 | 0x80


def decode_reasons(bits: int) -> list[str]:
    return [name for bit, name in CLOCK_EVENT_REASONS.items() if bits & bit] + (
        [f"unknown_0x{bits & ~sum(CLOCK_EVENT_REASONS):x}"] if bits & ~sum(CLOCK_EVENT_REASONS) else [])


@dataclass(frozen=True)
class GpuReading:
    t: float
    gpu: int
    sm_clock_mhz: int | None
    mem_clock_mhz: int | None
    power_w: float | None
    temp_c: int | None
    util_pct: int | None
    clock_event_reasons: int | None


@dataclass
class GpuTelemetry:
    """Compact summary for one GPU over one measured request."""

    gpu: int
    readings: int
    sm_clock_mhz_min: int | None = None
    sm_clock_mhz_mean: float | None = None
    sm_clock_mhz_max_possible: int | None = None
    mem_clock_mhz_mean: float | None = None
    power_w_mean: float | None = None
    power_w_max: float | None = None
    temp_c_max: int | None = None
    util_pct_mean: float | None = None
    reasons: list[str] = field(default_factory=list)  # union over the window
    throttled: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mean(xs: list) -> float | None:
    xs = [x for x in xs if x is not None]
    return round(sum(xs) / len(xs), 2) if xs else None


def summarize(readings: list[GpuReading], max_sm_clock: dict[int, int | None] | None = None) -> list[GpuTelemetry]:
    out = []
    for gpu in sorted({r.gpu for r in readings}):
        rs = [r for r in readings if r.gpu == gpu]
        bits = 0
        for r in rs:
            bits |= r.clock_event_reasons or 0
        sm = [r.sm_clock_mhz for r in rs if r.sm_clock_mhz is not None]
        power = [r.power_w for r in rs if r.power_w is not None]
        temps = [r.temp_c for r in rs if r.temp_c is not None]
        out.append(GpuTelemetry(
            gpu=gpu,
            readings=len(rs),
            sm_clock_mhz_min=min(sm) if sm else None,
            sm_clock_mhz_mean=_mean(sm),
            sm_clock_mhz_max_possible=(max_sm_clock or {}).get(gpu),
            mem_clock_mhz_mean=_mean([r.mem_clock_mhz for r in rs]),
            power_w_mean=_mean(power),
            power_w_max=max(power) if power else None,
            temp_c_max=max(temps) if temps else None,
            util_pct_mean=_mean([r.util_pct for r in rs]),
            reasons=decode_reasons(bits),
            throttled=bool(bits & THROTTLE_MASK),
        ))
    return out


def load_nvml():
    """(module, None) when NVML answers, else (None, a note saying why)."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return None, "no GPU telemetry: nvidia-ml-py is not installed (pip install 'pytest-mxfp4[nvml]')"
    try:
        pynvml.nvmlInit()
    except Exception as e:  # NVMLError_LibraryNotFound / DriverNotLoaded on CPU-only machines
        return None, f"no GPU telemetry: NVML unavailable ({e})"
    return pynvml, None


class GpuSampler:
    """Samples every `interval_s` between start() and stop(). Use once per
    measured request: `with sampler.window() as w: ...; w.summary`."""

    def __init__(self, nvml, gpus: list[int] | None = None, interval_s: float = 0.05):
        self.nvml = nvml
        self.interval_s = interval_s
        count = nvml.nvmlDeviceGetCount()
        self.gpus = list(range(count)) if gpus is None else gpus
        self.handles = {i: nvml.nvmlDeviceGetHandleByIndex(i) for i in self.gpus}
        self.max_sm_clock = {i: self._field(lambda h: nvml.nvmlDeviceGetMaxClockInfo(h, nvml.NVML_CLOCK_SM), h)
                             for i, h in self.handles.items()}

    def _field(self, read, handle):
        try:
            return read(handle)
        except Exception:  # NVMLError_NotSupported and friends: this field only
            return None

    def read(self) -> list[GpuReading]:
        n = self.nvml
        now = time.perf_counter()
        out = []
        for i, h in self.handles.items():
            power_mw = self._field(n.nvmlDeviceGetPowerUsage, h)
            util = self._field(n.nvmlDeviceGetUtilizationRates, h)
            reasons = self._field(getattr(n, "nvmlDeviceGetCurrentClocksEventReasons", None)
                                  or n.nvmlDeviceGetCurrentClocksThrottleReasons, h)
            out.append(GpuReading(
                t=now,
                gpu=i,
                sm_clock_mhz=self._field(lambda x: n.nvmlDeviceGetClockInfo(x, n.NVML_CLOCK_SM), h),
                mem_clock_mhz=self._field(lambda x: n.nvmlDeviceGetClockInfo(x, n.NVML_CLOCK_MEM), h),
                power_w=power_mw / 1000.0 if power_mw is not None else None,
                temp_c=self._field(lambda x: n.nvmlDeviceGetTemperature(x, n.NVML_TEMPERATURE_GPU), h),
                util_pct=getattr(util, "gpu", None),
                clock_event_reasons=reasons,
            ))
        return out

    def window(self) -> "TelemetryWindow":
        return TelemetryWindow(self)


class TelemetryWindow:
    def __init__(self, sampler: GpuSampler):
        self.sampler = sampler
        self.readings: list[GpuReading] = []
        self.summary: list[GpuTelemetry] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "TelemetryWindow":
        self.readings += self.sampler.read()  # at least one reading even for a short request
        self._thread = threading.Thread(target=self._run, name="pytest-mxfp4-nvml", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.sampler.interval_s):
            self.readings += self.sampler.read()

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2.0)
        self.readings += self.sampler.read()
        self.summary = summarize(self.readings, self.sampler.max_sm_clock)

    @property
    def throttled(self) -> bool:
        return any(g.throttled for g in self.summary)


# --------------------------------------------------------------------------
# NVIDIA pre-flight (before a server start)

PREFLIGHT_WAIT_S = 15.0  # the most a start waits for a busy GPU to quiet down
PREFLIGHT_POLL_S = 0.5


def gpu_busy(nvml, handles: dict, own_pids: set[int] | None = None, idle_util_pct: float = 5.0
             ) -> tuple[list[str], dict]:
    """(why the GPUs are busy, facts) from one reading: another compute
    process, utilization above `idle_util_pct`, or power/thermal slowdown.
    The SM clock is recorded but never judged: it stays high for a while
    after the previous start stopped, which disturbs nothing."""
    import os

    own = own_pids or {os.getpid()}
    why: list[str] = []
    facts: dict = {"gpus": {}}

    def field(fn, *a):
        try:
            return fn(*a) if fn is not None else None
        except Exception:  # not supported on this GPU/driver: that field only
            return None

    for i, h in handles.items():
        procs = field(getattr(nvml, "nvmlDeviceGetComputeRunningProcesses", None), h) or []
        others = [getattr(p, "pid", None) for p in procs if getattr(p, "pid", None) not in own]
        util = getattr(field(nvml.nvmlDeviceGetUtilizationRates, h), "gpu", None)
        reasons = field(getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons", None)
                        or getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None), h)
        sm = field(lambda x: nvml.nvmlDeviceGetClockInfo(x, nvml.NVML_CLOCK_SM), h)
        facts["gpus"][i] = {"other_pids": others, "util_pct": util, "reasons": reasons, "sm_clock_mhz": sm}
        if others:
            why.append(f"GPU {i}: {len(others)} other compute process(es) (pid {', '.join(map(str, others[:3]))})")
        if util is not None and util > idle_util_pct:
            why.append(f"GPU {i}: {util}% busy before the start")
        if reasons is not None and reasons & THROTTLE_MASK:
            why.append(f"GPU {i}: {', '.join(decode_reasons(reasons & THROTTLE_MASK))}")
    return why, facts


def preflight_poll(nvml, handles: dict, own_pids: set[int] | None = None, idle_util_pct: float = 5.0,
                   wait_s: float = PREFLIGHT_WAIT_S, poll_s: float = PREFLIGHT_POLL_S,
                   sleep=time.sleep, clock=time.monotonic, say=None) -> tuple[str | None, dict]:
    """Before a start on NVIDIA: poll `gpu_busy` every `poll_s` until the
    GPUs are quiet (returns at once when they already are) or `wait_s` has
    passed; (why it is still busy, or None; facts incl. `waited_s`)."""
    t0 = clock()
    why, facts = gpu_busy(nvml, handles, own_pids, idle_util_pct)
    if why and say:
        say(f"pre-flight: {'; '.join(why)}; waiting up to {wait_s:g} s for the GPU to be idle")
    while why and clock() - t0 < wait_s:
        sleep(poll_s)
        why, facts = gpu_busy(nvml, handles, own_pids, idle_util_pct)
    facts["waited_s"] = round(clock() - t0, 2)
    return ("; ".join(why) or None), facts
