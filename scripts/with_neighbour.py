#!/usr/bin/env python3
"""Run CMD next to a busy neighbour: a planted, dialable slowdown.

    scripts/with_neighbour.py --duty 0.2 [--] CMD [ARGS...]

The neighbour is a process that spins for ``duty * period`` and sleeps for
the rest of every ``period`` (default 10 ms), pinned to the cores CMD runs
on (this process's own CPU affinity, which CMD inherits: a runner that pins
the engine pins the neighbour with it). While it spins, the scheduler shares
those cores between the engine and the neighbour, so the engine loses a
fixed share of its CPU time: a steady slowdown whose size grows with
``--duty``. Its true size is measured independently of the client, by the
server's own inter-token latency (benchmarks/cpu_pools.py reads vLLM's
``vllm:inter_token_latency_seconds`` sum/count from /metrics).

The neighbour dies with CMD: SIGTERM/SIGINT/SIGHUP are forwarded to CMD, the
neighbour is stopped when CMD exits, and the neighbour also gets SIGKILL if
this wrapper dies (parent-death signal). The exit status is CMD's.
``--duty 0`` runs CMD alone through the same wrapper (the A/A arm).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time

_PR_SET_PDEATHSIG = 1


def _die_with_parent(sig: int = signal.SIGKILL) -> None:
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    except OSError:
        pass


def spin(duty: float, period_s: float) -> None:
    """Busy for duty*period, asleep for the rest, forever (phase-locked to
    the clock so the duty cycle does not drift)."""
    busy = duty * period_s
    nxt = time.perf_counter()
    while True:
        end = nxt + busy
        while time.perf_counter() < end:
            pass
        nxt += period_s
        rest = nxt - time.perf_counter()
        if rest > 0:
            time.sleep(rest)
        else:  # fell behind (starved): re-anchor rather than burst
            nxt = time.perf_counter()


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    # CMD starts after "--" or at the first word that is not one of our
    # options (so a runner can prepend "with_neighbour.py --duty 0.2" as is).
    own, cmd, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            cmd = argv[i + 1:]
            break
        if a in ("--duty", "--period-ms"):
            own += argv[i:i + 2]
            i += 2
            continue
        if a.startswith(("--duty=", "--period-ms=", "-h", "--help")):
            own.append(a)
            i += 1
            continue
        cmd = argv[i:]
        break
    ap = argparse.ArgumentParser(prog="with_neighbour.py", description=__doc__.split("\n")[0],
                                 usage="%(prog)s --duty D [--period-ms P] -- CMD [ARGS...]")
    ap.add_argument("--duty", type=float, required=True, help="busy share of each period, 0 <= D < 1")
    ap.add_argument("--period-ms", type=float, default=10.0, help="duty-cycle period in ms (default 10)")
    args = ap.parse_args(own)
    if not 0.0 <= args.duty < 1.0:
        ap.error(f"--duty must be in [0, 1), got {args.duty}")
    if not args.period_ms > 0:
        ap.error(f"--period-ms must be > 0, got {args.period_ms}")
    if not cmd:
        ap.error("no command: give it after --, e.g. with_neighbour.py --duty 0.2 -- python -m ...")
    return args, cmd


def main(argv: list[str] | None = None) -> int:
    args, cmd = parse(sys.argv[1:] if argv is None else argv)
    neighbour = None
    if args.duty > 0:
        pid = os.fork()
        if pid == 0:  # the neighbour
            try:
                _die_with_parent()
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                spin(args.duty, args.period_ms / 1000.0)
            finally:
                os._exit(0)
        neighbour = pid
    try:
        child = subprocess.Popen(cmd)
    except OSError as e:
        if neighbour:
            os.kill(neighbour, signal.SIGKILL)
            os.waitpid(neighbour, 0)
        print(f"with_neighbour.py: cannot run {cmd[0]!r}: {e}", file=sys.stderr)
        return 127

    def forward(signum, _frame):
        if child.poll() is None:
            child.send_signal(signum)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, forward)
    try:
        rc = child.wait()
    finally:
        if neighbour:
            try:
                os.kill(neighbour, signal.SIGKILL)
                os.waitpid(neighbour, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
