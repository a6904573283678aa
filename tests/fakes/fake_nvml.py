"""FAKE NVML (stands in for nvidia-ml-py's `pynvml`): no GPU on this machine
or in CI. Scripted readings let the sampler's logic be tested; the real thing
is checked on a lent H100/H200 (scripts/nvml_probe.py)."""

from __future__ import annotations

from types import SimpleNamespace

NVML_CLOCK_SM = 1
NVML_CLOCK_MEM = 2
NVML_TEMPERATURE_GPU = 0


class NVMLError_NotSupported(Exception):
    pass


class FakeNvml:
    NVML_CLOCK_SM = NVML_CLOCK_SM
    NVML_CLOCK_MEM = NVML_CLOCK_MEM
    NVML_TEMPERATURE_GPU = NVML_TEMPERATURE_GPU

    def __init__(self, reasons=(0x0,), unsupported=(), sm_clock=1980, gpus=1):
        self.reasons = list(reasons)
        self.unsupported = set(unsupported)
        self.sm_clock = sm_clock
        self.gpus = gpus
        self.reads = 0

    def _check(self, name):
        if name in self.unsupported:
            raise NVMLError_NotSupported(name)

    def nvmlDeviceGetCount(self):
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, i):
        return SimpleNamespace(index=i)

    def nvmlDeviceGetMaxClockInfo(self, h, kind):
        self._check("max_clock")
        return 1980

    def nvmlDeviceGetClockInfo(self, h, kind):
        self._check("clock")
        return self.sm_clock if kind == NVML_CLOCK_SM else 2619

    def nvmlDeviceGetPowerUsage(self, h):
        self._check("power")
        return 350_000

    def nvmlDeviceGetTemperature(self, h, kind):
        self._check("temp")
        return 61

    def nvmlDeviceGetUtilizationRates(self, h):
        self._check("util")
        return SimpleNamespace(gpu=97, memory=40)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h):
        self._check("reasons")
        self.reads += 1
        return self.reasons[min(self.reads - 1, len(self.reasons) - 1)]
