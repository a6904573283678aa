"""Was a server start disturbed while it measured?

Pre-flight looks before a start; this looks at the measuring window itself
(one case on one start): CPU time that other processes took meanwhile, the
share of samples whose numbers describe the client or the GPU rather than
the engine (client behind, server disagrees, GPU throttled), and on NVIDIA
other compute processes at the window's end. A disturbed (start, case) is
left out of the verdict and its start replaced while the budget allows
(run/controller.py); why is recorded.

Measured on the 2-core box: a planted neighbour spinning one core during a
start reads 0.9-1.0 other cores and slows llama.cpp tg by 15-30 %; an idle
box reads 0.00-0.08 (kernel threads, the sampler itself). Pure /proc reads,
no HTTP stack.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from pytest_mxfp4.measure.fidelity import FLAG_SERVER_DISAGREES
from pytest_mxfp4.formats.samples import FLAG_CLIENT_BEHIND

# Other processes' CPU over the window, in cores, above which the start is
# disturbed. 0.3: three times the idle box's worst, a third of the smallest
# planted neighbour that moved tg beyond the noise.
MAX_OTHER_CORES = 0.3
# Share of a window's samples carrying a flag that says "not the engine's
# number" above which the window is disturbed (one odd sample is the
# sample screen's business; most of a start is the start's).
MAX_FLAGGED_SHARE = 0.5
SUSPECT_FLAGS = (FLAG_CLIENT_BEHIND, FLAG_SERVER_DISAGREES, "gpu-throttled")


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (None: gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _ticks(pid: int) -> float | None:
    f = _stat(pid)
    return float(f[11]) + float(f[12]) if f and len(f) > 12 else None  # utime + stime


def _pgid_ppid(pid: int) -> tuple[int, int] | None:
    f = _stat(pid)
    return (int(f[2]), int(f[1])) if f and len(f) > 2 else None


def _pids() -> list[int]:
    try:
        return [int(n) for n in os.listdir("/proc") if n.isdigit()]
    except OSError:
        return []


def cpu_snapshot() -> dict[int, float]:
    """pid -> CPU ticks so far, for every process visible now."""
    return {pid: t for pid in _pids() if (t := _ticks(pid)) is not None}


def own_pids(server_pgids: Iterable[int] = ()) -> set[int]:
    """This process, its children (the client's helpers) and every process
    of the server's process groups: the processes whose CPU is ours."""
    me = os.getpid()
    groups = set(server_pgids)
    return {me} | {pid for pid in _pids() if (pp := _pgid_ppid(pid)) and (pp[1] == me or pp[0] in groups)}


def other_cores(before: dict[int, float], after: dict[int, float], ours: set[int], seconds: float,
                hz: float | None = None) -> float:
    """Cores other processes kept busy on average between two snapshots
    (processes that started inside the window count from zero)."""
    if seconds <= 0:
        return 0.0
    hz = hz or float(os.sysconf("SC_CLK_TCK"))
    used = sum(t - before.get(pid, 0.0) for pid, t in after.items() if pid not in ours)
    return max(0.0, used / hz / seconds)


@dataclass
class Disturbance:
    """Why one measuring window cannot stand for the engine (empty: clean)."""

    reasons: list[str] = field(default_factory=list)
    facts: dict = field(default_factory=dict)

    @property
    def disturbed(self) -> bool:
        return bool(self.reasons)

    def text(self) -> str:
        return "; ".join(self.reasons)


def judge_window(*, other_cores_busy: float | None, flags_per_sample: list[list[str]],
                 gpu_other_pids: list[int] | None = None, max_other_cores: float = MAX_OTHER_CORES,
                 max_flagged_share: float = MAX_FLAGGED_SHARE) -> Disturbance:
    """The rule: any of the three signs marks the window disturbed."""
    d = Disturbance()
    if other_cores_busy is not None:
        d.facts["other_cores_busy"] = round(other_cores_busy, 2)
        if other_cores_busy > max_other_cores:
            d.reasons.append(f"other processes kept {other_cores_busy:.2f} cores busy while it measured")
    n = len(flags_per_sample)
    if n:
        for flag in SUSPECT_FLAGS:
            k = sum(1 for fl in flags_per_sample if flag in fl)
            if k:
                d.facts[f"{flag}_samples"] = k
            if k / n > max_flagged_share:
                d.reasons.append(f"{k} of {n} samples flagged {flag}")
    if gpu_other_pids:
        d.facts["gpu_other_pids"] = list(gpu_other_pids)[:5]
        d.reasons.append(f"{len(gpu_other_pids)} other compute process(es) on the GPU "
                         f"(pid {', '.join(map(str, list(gpu_other_pids)[:3]))})")
    return d


class Window:
    """Watch one measuring window: ``with Window(pgids) as w: ...; w.other_cores``."""

    def __init__(self, server_pgids: Iterable[int] = (), clock: Callable[[], float] | None = None):
        import time

        self._clock = clock or time.monotonic
        self._pgids = tuple(server_pgids)
        self.other_cores: float | None = None

    def __enter__(self) -> "Window":
        self._t0 = self._clock()
        self._before = cpu_snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        seconds = self._clock() - self._t0
        after = cpu_snapshot()
        if self._before and after:
            self.other_cores = other_cores(self._before, after, own_pids(self._pgids), seconds)
