"""Is the machine quiet before a server start?

On CPU: how many cores other processes keep busy (this process and its
children subtracted). On NVIDIA: other compute processes, a busy GPU or
slowing clock-event reasons (`observe.telemetry.preflight_poll`). Both are
polled, never a fixed pause: a box that quietens is used at once. What is
left out of a verdict is decided by each case's measuring window
(`measure.disturbance`); a busy pre-flight is recorded and shown."""

from __future__ import annotations

import os
import time

from pytest_mxfp4.formats.config import ServerConfig
from pytest_mxfp4.formats.results import StartWindow
from pytest_mxfp4.run.ab import Slot


def _cpu_times() -> tuple[float, float]:
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    vals = [float(x) for x in parts]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)
    return sum(vals[:8]) - idle, sum(vals[:8])


def _own_ticks() -> float:
    """CPU ticks of this process and its children still running (the client;
    the engine is stopped between starts)."""
    total = 0.0
    me = os.getpid()
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if pid == me or int(fields[1]) == me:  # ppid
                total += float(fields[11]) + float(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total


def preflight_cpu(window_s: float = 2.0, max_other_cores: float = 0.5) -> tuple[str | None, dict]:
    """Before a start: how many cores did other processes keep busy over
    ``window_s`` (this process and its children subtracted), and the 1-minute
    load average. Returns (the reason the start is disturbed or None, facts)."""
    try:
        busy0, total0 = _cpu_times()
        own0 = _own_ticks()
        time.sleep(window_s)
        busy1, total1 = _cpu_times()
        own1 = _own_ticks()
        load1 = os.getloadavg()[0]
    except (OSError, ValueError):
        return None, {"preflight": "unavailable"}
    ncpu = os.cpu_count() or 1
    frac = (busy1 - busy0 - (own1 - own0)) / max(total1 - total0, 1e-9)
    other = max(0.0, frac * ncpu)
    facts = {"other_cores_busy": round(other, 2), "load1": round(load1, 2), "cpus": ncpu}
    if other > max_other_cores:
        return (f"other processes kept {other:.1f} of {ncpu} cores busy before the start "
                f"(1-minute load {load1:.1f})"), facts
    return None, facts



def before_start(perf_session, cfg: ServerConfig, slot: Slot, say) -> None:
    """Before a start: on CPU, other processes busy; on NVIDIA, other compute
    processes, a busy GPU or slowing clock-event reasons. Polled for up to
    15 s; still so -> recorded as a busy start (what is left out of the
    verdict is decided by the measuring window itself, session.check_window)."""
    if cfg.runner == "external":
        return
    sampler = perf_session.gpu_sampler
    if cfg.requires.accelerator == "nvidia" and sampler is not None:
        # polls (returns at once on an idle GPU) instead of a fixed 15 s pause
        from pytest_mxfp4.observe.telemetry import preflight_poll

        tag = f"[{cfg.name} start {slot.start}] "
        why, facts = preflight_poll(sampler.nvml, sampler.handles, say=lambda m: say(tag + m))
        perf_session.controller.preflight.append(StartWindow(cfg.name, slot.start, disturbed=why, facts=dict(facts)))
        if why:
            say(f"{tag}disturbed: {why}")
            perf_session.controller.note_disturbed(cfg.name, why)
        return
    elif cfg.requires.accelerator == "cpu":
        check = preflight_cpu
    else:
        return
    why, facts = check()
    if why:
        # poll, not a fixed pause: a box that quietens is used at once
        say(f"[{cfg.name} start {slot.start}] pre-flight: {why}; checking again for up to 15 s")
        deadline = time.monotonic() + 15.0
        while why and time.monotonic() < deadline:
            time.sleep(0.5)
            why, facts = check()
    perf_session.controller.preflight.append(StartWindow(cfg.name, slot.start, disturbed=why, facts=dict(facts)))
    if why:
        say(f"[{cfg.name} start {slot.start}] disturbed: {why}")
        perf_session.controller.note_disturbed(cfg.name, why)
