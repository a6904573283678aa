"""A server started as a Docker container (runner: docker).

Contract, in the order `start()` does it:

* The image must already be on the daemon: we never pull. A missing image is
  a ServerError naming it and saying how to build it (docker/build.sh).
* Every container carries the labels `pytest-mxfp4=1`,
  `pytest-mxfp4.session=<id>`, `pytest-mxfp4.config=<name>` and
  `pytest-mxfp4.owner=<host>:<pid>:<start time>`. Before the first start in a
  process, `sweep_leftovers` removes labelled containers of other sessions
  whose owner process is gone (a SIGKILLed or crashed pytest); a live
  concurrent session on the same host is left alone.
* Networking is the host's (`network: host`, the default): the engine binds
  127.0.0.1:<port> and all traffic stays on loopback. `network: published`
  binds 0.0.0.0 inside the container and publishes the port on 127.0.0.1 only.
* Relative host paths in `docker.volumes` are resolved against `base_dir`,
  the same directory relative model paths of the process runner resolve
  against (where pytest runs, normally the repo root), and must exist. A key
  written `volume:NAME` is a named Docker volume instead (created on first use,
  kept across runs).
* CPU budget. `docker.cpus` is honoured as `--cpus` (a CFS quota). When it
  is unset, a CPU-only container (no `docker.gpus`) is pinned to all cores but
  the last (`--cpuset-cpus 0-(n-2)`), leaving one whole core to the measuring
  client. Measured on 2 cores (tiny model, tg128 streams): with `--cpus 1.8`
  the client still stalled 66-150 ms (p99/max) because a quota lets the engine
  take both cores for most of each 100 ms period; pinned, the stalls were
  1-7 ms (p99/max), for 6-20% less decode throughput. A 1-core machine gets
  `--cpus 0.8`. GPU containers get no default limit.
* `docker.gpus` ("all" or a count) becomes a GPU device request; a daemon
  without the NVIDIA runtime fails with a message saying to install
  nvidia-container-toolkit, and the half-made container is removed.
* The container log is streamed to `<log_dir>/<config name>.log` by a
  background thread. While waiting for health the user sees elapsed time and
  the last log line; if the container exits during startup we fail at once
  with its exit code and the log tail.
* `stop()` stops with a short timeout (a stream in flight would otherwise
  hold `docker stop` for its whole timeout) and removes the container;
  idempotent, safe after a failed start.

The `docker` Python package (docker SDK >= 7) is needed only for this runner.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import threading
import time
from pathlib import Path
from typing import Any

from pytest_mxfp4.formats.config import ServerConfig
from pytest_mxfp4.errors import ServerError
from pytest_mxfp4.servers.base import Server, ServerInfo
from pytest_mxfp4.servers.exits import IMAGE_REBUILD, exit_parts
from pytest_mxfp4.servers.health import Progress, died_message, log_tail, wait_until_healthy
from pytest_mxfp4.servers.process import expand, free_port
from pytest_mxfp4.redact import is_secret_name, looks_secret, redact_argv, redact_env, register_config_secrets

LABEL = "pytest-mxfp4"
LABEL_SESSION = "pytest-mxfp4.session"
LABEL_CONFIG = "pytest-mxfp4.config"
LABEL_OWNER = "pytest-mxfp4.owner"  # "<hostname>:<pid>:<process start time>"
# Image labels that state the engine version (docker/vllm-cpu.Dockerfile sets the first).
IMAGE_VERSION_LABELS = ("pytest-mxfp4.image.engine-version", "org.opencontainers.image.version")

DEFAULT_STOP_TIMEOUT_S = 3.0
ONE_CORE_BUDGET = 0.8  # --cpus for a CPU engine on a 1-core machine (nothing to pin)

# Used when a docker config gives no `command`; placeholders as in the process runner.
DEFAULT_COMMANDS: dict[str, tuple[str, ...]] = {
    "vllm": ("python3", "-m", "vllm.entrypoints.openai.api_server",
             "--model", "{model}", "--served-model-name", "{served_model_name}",
             "--host", "{host}", "--port", "{port}"),
}

NVIDIA_HINT = (
    "the Docker daemon has no NVIDIA GPU runtime. Install nvidia-container-toolkit "
    "(https://docs.nvidia.com/datacenter/cloud-native/container-toolkit/latest/install-guide.html), "
    "run `sudo nvidia-ctk runtime configure --runtime=docker` and restart dockerd; "
    "or drop `docker.gpus` from this config to run it on CPU"
)


# --------------------------------------------------------------------------
# The SDK, imported only when this runner is used


def docker_sdk():
    """The `docker` package, or a ServerError saying how to get it.

    A repo's own `docker/` folder (scripts, no __init__.py) can shadow a
    missing SDK as an empty namespace package; that is reported the same way.
    """
    try:
        import docker
    except ImportError:
        docker = None
    if docker is None or not hasattr(docker, "from_env"):
        raise ServerError("runner: docker needs the docker Python package (docker SDK >= 7): pip install docker")
    return docker


def connect(timeout_s: float = 60.0):
    """A client for the local daemon (DOCKER_HOST etc. are honoured)."""
    sdk = docker_sdk()
    try:
        client = sdk.from_env(timeout=int(timeout_s))
        client.ping()
    except sdk.errors.DockerException as e:
        raise ServerError(
            f"cannot reach the Docker daemon ({_short(e)}). Start it (docker/start-dockerd.sh on a "
            f"machine without one) or point DOCKER_HOST at it."
        ) from None
    return client


# --------------------------------------------------------------------------
# Pure argument building (unit-tested without a daemon)


def container_name(session_id: str, config_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"pytest-mxfp4-{session_id}-{config_name}")


def cpu_limits(cpus: float | None, gpus: str | int | None, ncpu: int) -> dict[str, Any]:
    """The container's CPU limit as create() arguments (see the module doc).

    Explicit `cpus` -> `nano_cpus` (`--cpus`). Unset, CPU-only -> `cpuset_cpus`
    of all cores but the last, so the client keeps a core of its own; on one
    core, `--cpus 0.8`. Unset with GPUs -> no limit."""
    if cpus is not None:
        return {"nano_cpus": int(round(cpus * 1e9))}
    if gpus is not None:
        return {}
    if ncpu >= 2:
        return {"cpuset_cpus": "0" if ncpu == 2 else f"0-{ncpu - 2}"}
    return {"nano_cpus": int(ONE_CORE_BUDGET * 1e9)}


def device_requests(gpus: str | int | None) -> list | None:
    if gpus is None:
        return None
    sdk = docker_sdk()
    count = -1 if gpus == "all" else int(gpus)
    return [sdk.types.DeviceRequest(count=count, capabilities=[["gpu"]])]


NAMED_VOLUME_PREFIX = "volume:"


def volume_binds(volumes: dict[str, str], base_dir: Path, server: str = "?") -> dict[str, dict[str, str]]:
    """`{host: "container[:ro|:rw]"}` -> the SDK's `{host_abs: {"bind", "mode"}}`.

    Relative host paths resolve against `base_dir`; they must exist (Docker
    would otherwise create an empty root-owned directory and the engine would
    fail far from the cause). `volume:NAME` is the named volume NAME."""
    out: dict[str, dict[str, str]] = {}
    for host, spec in volumes.items():
        where = f"server {server!r}: docker.volumes.{host}"
        target, mode = spec, "rw"
        head, sep, tail = spec.rpartition(":")
        if sep and tail in ("ro", "rw"):
            target, mode = head, tail
        if not target.startswith("/"):
            raise ServerError(f"{where}: the container path must be absolute, e.g. /models:ro; got {spec!r}")
        if host.startswith(NAMED_VOLUME_PREFIX):
            name = host[len(NAMED_VOLUME_PREFIX):]
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]+", name):
                raise ServerError(f"{where}: {name!r} is not a valid Docker volume name")
            out[name] = {"bind": target, "mode": mode}
            continue
        p = Path(host).expanduser()
        p = p if p.is_absolute() else Path(base_dir) / p
        if not p.exists():
            raise ServerError(f"{where}: host path {p} does not exist (relative paths are taken from {base_dir})")
        out[str(p.resolve())] = {"bind": target, "mode": mode}
    return out


def _proc_start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('' off Linux): tells
    a live owner from a recycled pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]


def owner_tag(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_proc_start_time(pid)}"


def owner_alive(tag: str) -> bool | None:
    """True/False for an owner on this host; None when it ran elsewhere (unknowable)."""
    host, _, rest = tag.partition(":")
    pid_s, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_s.isdigit():
        return None
    pid = int(pid_s)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, not ours to signal
    if start and Path("/proc").is_dir():
        return _proc_start_time(pid) == start
    return True


def labels(session_id: str, config_name: str, owner: str | None = None) -> dict[str, str]:
    return {
        LABEL: "1",
        LABEL_SESSION: session_id,
        LABEL_CONFIG: config_name,
        LABEL_OWNER: owner if owner is not None else owner_tag(),
    }


def build_command(config: ServerConfig, port: int, host: str) -> list[str]:
    """The command run inside the container: `command` (or the engine's
    default) + `args`, with {model} {port} {host} {served_model_name} {python}
    filled in. `model` is a path inside the container (mount it)."""
    base = config.command or DEFAULT_COMMANDS.get(config.engine, ())
    if not base:
        raise ServerError(f"server {config.name!r}: no `command` given and no default for engine {config.engine!r}")
    values = {
        "python": "python3",
        "model": config.model,
        "port": str(port),
        "host": host,
        "served_model_name": config.model_name,
    }
    return [expand(part, values) for part in (*base, *config.args)]


def create_kwargs(config: ServerConfig, *, session_id: str, port: int, base_dir: Path, ncpu: int,
                  owner: str | None = None) -> dict[str, Any]:
    """Everything `client.containers.create` gets for this config."""
    spec = config.docker
    if spec is None:
        raise ServerError(f"server {config.name!r}: runner docker needs a `docker:` block with at least `image`")
    host = "127.0.0.1" if spec.network == "host" else "0.0.0.0"
    kw: dict[str, Any] = {
        "image": spec.image,
        "command": build_command(config, port, host),
        "name": container_name(session_id, config.name),
        "labels": labels(session_id, config.name, owner),
        "environment": dict(config.env),
        "detach": True,
    }
    if spec.network == "host":
        kw["network_mode"] = "host"
    else:  # published: reachable on the host's loopback only
        kw["ports"] = {f"{port}/tcp": ("127.0.0.1", port)}
    if spec.ipc_mode:
        kw["ipc_mode"] = spec.ipc_mode
    if spec.shm_size and spec.ipc_mode != "host":  # /dev/shm is the host's with ipc=host
        kw["shm_size"] = spec.shm_size
    if spec.volumes:
        kw["volumes"] = volume_binds(spec.volumes, base_dir, config.name)
    reqs = device_requests(spec.gpus)
    if reqs:
        kw["device_requests"] = reqs
    kw.update(cpu_limits(spec.cpus, spec.gpus, ncpu))
    return kw


def docker_run_line(kw: dict[str, Any]) -> str:
    """An equivalent `docker run` command line, for reproducing by hand (secrets redacted)."""
    parts = ["docker", "run", "--rm", "--name", kw["name"]]
    if kw.get("network_mode"):
        parts += ["--network", kw["network_mode"]]
    for cport, (hip, hport) in kw.get("ports", {}).items():
        parts += ["-p", f"{hip}:{hport}:{cport.split('/')[0]}"]
    if kw.get("ipc_mode"):
        parts += ["--ipc", kw["ipc_mode"]]
    if kw.get("shm_size"):
        parts += ["--shm-size", str(kw["shm_size"])]
    if kw.get("nano_cpus"):
        parts += ["--cpus", f"{kw['nano_cpus'] / 1e9:g}"]
    if kw.get("cpuset_cpus"):
        parts += ["--cpuset-cpus", kw["cpuset_cpus"]]
    for req in kw.get("device_requests") or []:
        parts += ["--gpus", "all" if req["Count"] == -1 else str(req["Count"])]
    for host, b in kw.get("volumes", {}).items():
        parts += ["-v", f"{host}:{b['bind']}:{b['mode']}"]
    for k, v in kw.get("environment", {}).items():
        parts += ["-e", f"{k}={'***' if is_secret_name(k) or looks_secret(str(v)) else v}"]
    return shlex.join(redact_argv([*parts, kw["image"], *kw["command"]]))


# --------------------------------------------------------------------------
# Leftovers


def sweep_leftovers(client, current_session: str, progress: Progress | None = None) -> list[str]:
    """Remove our containers (label pytest-mxfp4=1) left by other sessions
    whose owner process is gone. Returns the names removed.

    A container whose owner still runs on this host (a concurrent pytest) is
    kept; so is one whose owner ran on another host (DOCKER_HOST shared by
    several machines), since we cannot tell whether it is still wanted. One
    without an owner label is removed."""
    sdk = docker_sdk()
    removed = []
    try:
        found = client.containers.list(all=True, filters={"label": f"{LABEL}=1"})
    except sdk.errors.APIError:
        return removed
    for c in found:
        lbl = c.labels or {}
        if lbl.get(LABEL_SESSION) == current_session:
            continue
        owner = lbl.get(LABEL_OWNER)
        if owner and owner_alive(owner) is not False:
            continue
        try:
            c.remove(force=True, v=True)
        except sdk.errors.NotFound:
            continue
        except sdk.errors.APIError as e:
            if progress:
                progress(f"[docker] could not remove leftover container {c.name}: {_short(e)}")
            continue
        removed.append(c.name)
        if progress:
            progress(f"[docker] removed leftover container {c.name} (session {lbl.get(LABEL_SESSION, '?')}, "
                     f"config {lbl.get(LABEL_CONFIG, '?')})")
    return removed


_swept: set[str] = set()  # sessions that already swept in this process
_swept_lock = threading.Lock()


# --------------------------------------------------------------------------
# The server


class DockerServer(Server):
    def __init__(self, config: ServerConfig, session_id: str, log_dir: Path, base_dir: Path | None = None,
                 progress: Progress | None = None, port: int | None = None, client=None,
                 stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S, sweep: bool = True):
        if config.docker is None:
            raise ServerError(f"server {config.name!r}: runner docker needs a `docker:` block with at least `image`")
        self.config = config
        self.session_id = session_id
        self.log_dir = Path(log_dir)
        self.base_dir = Path(base_dir) if base_dir is not None else Path.cwd()
        self.progress = progress
        self.port = port or free_port()
        self.stop_timeout_s = stop_timeout_s
        self.sweep = sweep
        self.client = client
        self.container = None
        self.info: ServerInfo | None = None
        self._log_thread: threading.Thread | None = None
        self._last_state: dict[str, Any] = {}
        self._name: str | None = None
        self._lock = threading.Lock()

    # -- start -------------------------------------------------------------------

    def start(self) -> ServerInfo:
        c, spec = self.config, self.config.docker
        sdk = docker_sdk()
        if self.client is None:
            self.client = connect()
        client = self.client
        if self.sweep:
            with _swept_lock:
                first = self.session_id not in _swept
                _swept.add(self.session_id)
            if first:
                sweep_leftovers(client, self.session_id, self.progress)

        t0 = time.monotonic()
        image = self._local_image(spec.image)
        if _port_in_use(self.port):
            raise ServerError(f"server {c.name!r}: port {self.port} on 127.0.0.1 is already in use")
        try:
            ncpu = int(client.info().get("NCPU") or os.cpu_count() or 1)
        except sdk.errors.APIError:
            ncpu = os.cpu_count() or 1
        kw = create_kwargs(c, session_id=self.session_id, port=self.port, base_dir=self.base_dir, ncpu=ncpu)
        register_config_secrets(kw["command"], c.env)  # masked in log tails and errors from now on
        self._remove_named(kw["name"])

        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{c.name}.log"
        run_line = docker_run_line(kw)
        log_path.write_bytes(f"$ {run_line}\n".encode())
        base_url = f"http://127.0.0.1:{self.port}"
        self.info = ServerInfo(name=c.name, kind="docker", base_url=base_url, log_path=log_path,
                               command=redact_argv(kw["command"]), env=redact_env(c.env))

        self._name = kw["name"]  # lets stop() find it even if create() is interrupted
        try:
            self.container = client.containers.create(**kw)
        except sdk.errors.ImageNotFound:
            raise self._missing_image(spec.image) from None
        except sdk.errors.APIError as e:
            raise ServerError(f"server {c.name!r}: docker could not create the container: {_short(e)}") from None
        try:
            self.container.start()
        except sdk.errors.APIError as e:
            self.stop()  # a failed start leaves the container in state `created`
            if spec.gpus is not None and _is_gpu_runtime_error(e):
                raise ServerError(f"server {c.name!r} asks for GPUs (docker.gpus: {spec.gpus}) but {NVIDIA_HINT}. "
                                  f"(docker said: {_short(e)})") from None
            raise ServerError(f"server {c.name!r}: docker could not start the container: {_short(e)}") from None

        self._log_thread = threading.Thread(target=self._stream_log, args=(self.container, log_path),
                                            name=f"docker-log-{c.name}", daemon=True)
        self._log_thread.start()
        try:
            self.info.startup_s = wait_until_healthy(
                c.name, base_url + c.health_path, c.startup_timeout_s,
                exited=self._exit_code, log_path=log_path, progress=self.progress, exit_words=self._exit_words,
            )
            if self._exit_code() is not None:  # healthy, but someone else answered on our port
                raise ServerError(f"server {c.name!r}: container exited right after /health answered "
                                  f"(is another server on port {self.port}?). Last log lines:\n{log_tail(log_path)}")
            problem = self._port_owner_problem()  # healthy, but is it our container that answered?
            if problem:
                raise ServerError(problem)
        except ServerError as e:  # OOMKilled is in the first line already (_exit_words)
            self.stop()
            raise ServerError(str(e)) from None
        except BaseException:
            self.stop()
            raise
        self.info.details.update(self._details(image, kw, run_line, time.monotonic() - t0))
        if self.progress:  # the one line of this start
            self.progress(f"[{c.name}] healthy after {self.info.startup_s:.1f}s: container {kw['name']} from "
                          f"{spec.image} ({_describe_cpus(kw)}, gpus {spec.gpus or 'none'}), port {self.port}, "
                          f"log {log_path}")
        return self.info

    def _local_image(self, name: str):
        sdk = docker_sdk()
        try:
            return self.client.images.get(name)
        except sdk.errors.ImageNotFound:
            raise self._missing_image(name) from None
        except sdk.errors.APIError as e:
            raise ServerError(f"server {self.config.name!r}: cannot inspect image {name!r}: {_short(e)}") from None

    def _missing_image(self, name: str) -> ServerError:
        return ServerError(
            f"server {self.config.name!r}: docker image {name!r} is not on this machine's Docker daemon "
            f"(pytest-mxfp4 never pulls). Build it with docker/build.sh (pytest-mxfp4/* images), "
            f"or `docker pull {name}` / `docker load` it yourself."
        )

    def _remove_named(self, name: str) -> None:
        """A container with our name can only be a leftover of this very session."""
        sdk = docker_sdk()
        try:
            self.client.containers.get(name).remove(force=True, v=True)
        except sdk.errors.NotFound:
            pass

    def _exit_words(self, code: int) -> tuple[str, str]:
        """A container's exit: docker reports a death by signal N as 128+N;
        OOMKilled is docker's own word for SIGKILL by the OOM killer."""
        head, detail = exit_parts(code, rebuild=IMAGE_REBUILD, shell_convention=True)
        if self._last_state.get("OOMKilled"):
            head += " (OOMKilled: the container used too much memory)"
        return head, detail

    def _exit_code(self) -> int | None:
        """The exit code once the container has stopped; None while it runs."""
        sdk = docker_sdk()
        c = self.container
        if c is None:
            return -1
        try:
            c.reload()
        except sdk.errors.NotFound:
            return -1
        state = c.attrs.get("State", {})
        self._last_state = state
        if state.get("Status") in ("exited", "dead"):
            if self._log_thread is not None:
                self._log_thread.join(timeout=3)  # let the tail reach the log file
            return int(state.get("ExitCode", -1))
        return None

    @staticmethod
    def _stream_log(container, path: Path) -> None:
        try:
            with open(path, "ab") as f:
                for chunk in container.logs(stream=True, follow=True, stdout=True, stderr=True):
                    f.write(chunk)
                    f.flush()
        except Exception:  # container removed under us, daemon gone: the log simply ends
            pass

    def _details(self, image, kw: dict[str, Any], run_line: str, startup_total_s: float) -> dict[str, Any]:
        image_labels = (image.attrs.get("Config") or {}).get("Labels") or {}
        version, source = None, None
        for key in IMAGE_VERSION_LABELS:
            if image_labels.get(key):
                version, source = image_labels[key], f"image label {key}"
                break
        if version is None and self.config.engine == "vllm":
            version, source = self._exec_version(), "docker exec"
        details = {
            "image": self.config.docker.image,
            "image_id": image.id,
            "repo_digests": list(image.attrs.get("RepoDigests") or []),
            "engine_version": version,
            "engine_version_source": source,
            "image_labels": {k: v for k, v in image_labels.items() if k.startswith(("pytest-mxfp4.", "org.opencontainers."))},
            "container_id": self.container.id[:12],
            "container_name": kw["name"],
            "network": self.config.docker.network,
            "cpus": kw["nano_cpus"] / 1e9 if kw.get("nano_cpus") else None,
            "cpuset_cpus": kw.get("cpuset_cpus"),
            "gpus": self.config.docker.gpus,
            "docker_run": run_line,
            "startup_total_s": round(startup_total_s, 2),
        }
        try:
            details["docker_server_version"] = self.client.version().get("Version")
        except Exception:
            pass
        details["packages"] = self._exec_packages()
        return details

    def _exec_packages(self) -> dict[str, str]:
        """vLLM/FlashInfer/torch versions and vLLM's git sha, asked of the container."""
        from pytest_mxfp4.observe.environment import ENGINE_PROBE, parse_engine_probe

        try:
            code, out = self.container.exec_run(["python3", "-c", ENGINE_PROBE])
        except Exception:
            return {}
        return parse_engine_probe(out.decode(errors="replace")) if code == 0 and out else {}

    def _exec_version(self) -> str | None:
        try:
            code, out = self.container.exec_run(["python3", "-c", "import vllm; print(vllm.__version__)"])
        except Exception:
            return None
        text = out.decode(errors="replace").strip().splitlines() if out else []
        return text[-1] if code == 0 and text else None

    # -- stop --------------------------------------------------------------------

    def alive(self) -> bool:
        return self.container is not None and self._exit_code() is None

    def stop(self) -> None:
        with self._lock:
            container, self.container = self.container, None
            name, self._name = self._name, None
        if container is None and name and self.client is not None:
            # Interrupted between create() and its return (Ctrl-C): find it by name.
            sdk = docker_sdk()
            try:
                container = self.client.containers.get(name)
            except sdk.errors.DockerException:
                container = None
        if container is not None:
            sdk = docker_sdk()
            try:
                container.stop(timeout=int(max(0, self.stop_timeout_s)))
            except sdk.errors.NotFound:
                pass
            except sdk.errors.APIError:
                pass  # remove(force) below kills it anyway
            try:
                container.remove(force=True, v=True)
            except sdk.errors.NotFound:
                pass
            except sdk.errors.APIError as e:
                if "in progress" not in str(e):  # a concurrent stop() is removing it
                    raise ServerError(f"server {self.config.name!r}: could not remove container "
                                      f"{container.name}: {_short(e)}") from None
        thread, self._log_thread = self._log_thread, None
        if thread is not None:
            thread.join(timeout=2)
        if self.info and self.info.log_path:
            from pytest_mxfp4.servers.process import scrub_file

            scrub_file(self.info.log_path)  # the engine may echo an --api-key into its log

    def _port_owner_problem(self) -> str | None:
        """With host networking, the listener on our port must be one of our
        container's processes (host pids from `docker top`); None where that
        cannot be told (published ports answer through docker-proxy)."""
        if self.config.docker is None or self.config.docker.network != "host":
            return None
        from pytest_mxfp4.servers.process import port_listener_pids

        owners = port_listener_pids(self.port)
        if not owners:
            return None
        try:
            top = self.container.top()
            col = top["Titles"].index("PID")
            ours = {int(p[col]) for p in top["Processes"]}
        except Exception:  # daemon answered oddly: cannot tell, do not guess
            return None
        if owners & ours:
            return None
        who = "a process this user cannot see" if owners == {0} else "pid " + ", ".join(map(str, sorted(owners)))
        return (f"server {self.config.name!r}: port {self.port} is answered by {who}, not by container "
                f"{self.container.name}; another server took the port. Stop it and rerun.")

    def identity_problem(self) -> str | None:
        """None while our container runs and owns its port; else what is wrong."""
        if self.container is None:
            return f"server {self.config.name!r}: its container is gone"
        code = self._exit_code()
        if code is None:
            return self._port_owner_problem()
        log = self.info.log_path if self.info else None
        return died_message(self.config.name, code, f"(container {self.container.name}) while running", log,
                            self._exit_words)


# --------------------------------------------------------------------------


def _describe_cpus(kw: dict[str, Any]) -> str:
    if kw.get("cpuset_cpus"):
        return f"pinned to cpus {kw['cpuset_cpus']}"
    if kw.get("nano_cpus"):
        return f"cpus {kw['nano_cpus'] / 1e9:g}"
    return "all cpus"


def _short(e: Exception) -> str:
    expl = getattr(e, "explanation", None)
    return str(expl or e).strip()


def _is_gpu_runtime_error(e: Exception) -> bool:
    s = _short(e).lower()
    return "could not select device driver" in s or "nvidia" in s or "[gpu]" in s


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0
