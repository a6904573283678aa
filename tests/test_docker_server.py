"""The docker runner.

Fast tests build container arguments and drive DockerServer against a fake
client: no daemon needed. Tests marked `docker` use a real daemon and the
image docker/build.sh makes; they skip (with the reason) when either is
missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

docker_sdk = pytest.importorskip("docker", reason="the docker Python package is not installed")
if not hasattr(docker_sdk, "from_env"):  # the repo's docker/ folder seen as a namespace package
    pytest.skip("the docker Python package is not installed", allow_module_level=True)

from docker.errors import APIError, ImageNotFound, NotFound  # noqa: E402

from pytest_mxfp4.formats.config import DockerSpec, ServerConfig, load_matrix  # noqa: E402
from pytest_mxfp4.errors import ServerError  # noqa: E402
from pytest_mxfp4.servers import docker as dk  # noqa: E402
from pytest_mxfp4.servers.process import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "pytest-mxfp4/vllm-cpu:0.32.0"
DOCKER_CONFIG = ROOT / "configs" / "cpu-docker.yaml"


def cfg(name="c", **docker_kw) -> ServerConfig:
    spec = DockerSpec(**{"image": "img:1", **docker_kw})
    return ServerConfig(name=name, runner="docker", model="/models/tiny", served_model_name="tiny",
                        args=("--enforce-eager",), env={"A": "1", "HF_TOKEN": "s3cret"}, docker=spec)


def kwargs(c: ServerConfig, tmp_path: Path, ncpu: int = 2, port: int = 18555) -> dict:
    return dk.create_kwargs(c, session_id="sess1", port=port, base_dir=tmp_path, ncpu=ncpu, owner="h:1:2")


# ---------------------------------------------------------------- argument building


def test_gpu_requests_all_or_count_and_none_for_cpu():
    (all_,) = dk.device_requests("all")
    assert all_["Count"] == -1 and all_["Capabilities"] == [["gpu"]]
    (two,) = dk.device_requests(2)
    assert two["Count"] == 2 and two["Capabilities"] == [["gpu"]]
    assert dk.device_requests(None) is None


def test_cpu_engines_leave_the_client_a_core_by_default():
    assert dk.cpu_limits(None, None, ncpu=2) == {"cpuset_cpus": "0"}
    assert dk.cpu_limits(None, None, ncpu=16) == {"cpuset_cpus": "0-14"}
    assert dk.cpu_limits(None, None, ncpu=1) == {"nano_cpus": 800_000_000}  # nothing to pin
    assert dk.cpu_limits(1.5, None, ncpu=2) == {"nano_cpus": 1_500_000_000}  # explicit `cpus` wins
    assert dk.cpu_limits(None, "all", ncpu=2) == {}  # GPU engines: no default limit
    assert dk.cpu_limits(4, 1, ncpu=8) == {"nano_cpus": 4_000_000_000}


def test_labels_mark_every_container_as_ours():
    lbl = dk.labels("s42", "tiny-eager")
    assert lbl["pytest-mxfp4"] == "1"
    assert lbl["pytest-mxfp4.session"] == "s42"
    assert lbl["pytest-mxfp4.config"] == "tiny-eager"
    assert dk.owner_alive(lbl["pytest-mxfp4.owner"]) is True  # this very process


def test_volumes_relative_to_base_dir_with_modes_and_named_volumes(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "data").mkdir()
    binds = dk.volume_binds({"models": "/models:ro", str(tmp_path / "data"): "/data",
                             "volume:cache-1": "/cache:rw"}, tmp_path)
    assert binds == {
        str((tmp_path / "models").resolve()): {"bind": "/models", "mode": "ro"},
        str((tmp_path / "data").resolve()): {"bind": "/data", "mode": "rw"},
        "cache-1": {"bind": "/cache", "mode": "rw"},
    }


def test_volume_errors_name_the_field_and_path(tmp_path):
    with pytest.raises(ServerError, match=r"docker\.volumes\.nope: host path .*nope does not exist"):
        dk.volume_binds({"nope": "/x"}, tmp_path, "srv")
    (tmp_path / "m").mkdir()
    with pytest.raises(ServerError, match=r"container path must be absolute"):
        dk.volume_binds({"m": "models:ro"}, tmp_path, "srv")
    with pytest.raises(ServerError, match=r"not a valid Docker volume name"):
        dk.volume_binds({"volume:bad name": "/x"}, tmp_path, "srv")


def test_create_kwargs_host_network_cpu(tmp_path):
    (tmp_path / "models").mkdir()
    kw = kwargs(cfg(name="a+b", volumes={"models": "/models:ro"}), tmp_path)
    assert kw["image"] == "img:1"
    assert kw["name"] == "pytest-mxfp4-sess1-a_b"
    assert kw["network_mode"] == "host" and "ports" not in kw
    assert kw["command"][:3] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    cmd = " ".join(kw["command"])
    assert "--host 127.0.0.1 --port 18555" in cmd and "--model /models/tiny" in cmd
    assert "--served-model-name tiny" in cmd and cmd.endswith("--enforce-eager")
    assert kw["shm_size"] == "1g"
    assert kw["cpuset_cpus"] == "0" and "nano_cpus" not in kw
    assert "device_requests" not in kw
    assert kw["environment"] == {"A": "1", "HF_TOKEN": "s3cret"}
    assert kw["labels"] == {"pytest-mxfp4": "1", "pytest-mxfp4.session": "sess1",
                            "pytest-mxfp4.config": "a+b", "pytest-mxfp4.owner": "h:1:2"}
    assert kw["volumes"] == {str((tmp_path / "models").resolve()): {"bind": "/models", "mode": "ro"}}
    assert kw["detach"] is True


def test_create_kwargs_gpu_ipc_host_and_published_port(tmp_path):
    kw = kwargs(cfg(gpus="all", ipc_mode="host", network="published"), tmp_path)
    assert kw["device_requests"][0]["Count"] == -1
    assert "nano_cpus" not in kw and "cpuset_cpus" not in kw
    assert kw["ipc_mode"] == "host" and "shm_size" not in kw  # /dev/shm is the host's
    assert "network_mode" not in kw
    assert kw["ports"] == {"18555/tcp": ("127.0.0.1", 18555)}  # published on loopback only
    assert "--host 0.0.0.0" in " ".join(kw["command"])


def test_explicit_command_placeholders_and_run_line_redacts_secrets(tmp_path):
    c = replace(cfg(cpus=1.0), command=("vllm", "serve", "{model}", "--port", "{port}", "--host", "{host}"))
    kw = kwargs(c, tmp_path)
    assert kw["command"] == ["vllm", "serve", "/models/tiny", "--port", "18555", "--host", "127.0.0.1",
                             "--enforce-eager"]
    line = dk.docker_run_line(kw)
    assert "--cpus 1 " in line and "--network host" in line and "HF_TOKEN=***" in line
    assert "s3cret" not in line


def test_owner_alive_tells_dead_recycled_and_foreign_owners():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert dk.owner_alive(dk.owner_tag(p.pid)) is False
    host, pid, start = dk.owner_tag().split(":")
    if start:  # Linux: a pid reused by another process is not the owner
        assert dk.owner_alive(f"{host}:{pid}:{int(start) + 1}") is False
    assert dk.owner_alive(f"some-other-host:{pid}:{start}") is None


# ---------------------------------------------------------------- fake client


class FakeContainer:
    def __init__(self, name, labels=None, start_error=None):
        self.name, self.labels, self.id = name, labels or {}, "f" * 64
        self.start_error = start_error
        self.removed = False
        self.attrs = {"State": {"Status": "created"}}

    def start(self):
        if self.start_error:
            raise self.start_error

    def stop(self, timeout=None):
        pass

    def remove(self, force=False, v=False):
        self.removed = True

    def reload(self):
        pass


class FakeContainers:
    def __init__(self, found=(), start_error=None):
        self.found, self.start_error, self.created = list(found), start_error, []

    def list(self, all=False, filters=None):
        assert filters == {"label": "pytest-mxfp4=1"}
        return self.found

    def get(self, name):
        raise NotFound("no such container")

    def create(self, **kw):
        c = FakeContainer(kw["name"], kw["labels"], self.start_error)
        self.created.append((c, kw))
        return c


class FakeImages:
    def __init__(self, present):
        self.present = present

    def get(self, name):
        if name not in self.present:
            raise ImageNotFound(f"No such image: {name}")
        return type("Img", (), {"id": "sha256:x", "attrs": {}})()


class FakeClient:
    def __init__(self, images=(), **kw):
        self.images = FakeImages(images)
        self.containers = FakeContainers(**kw)

    def info(self):
        return {"NCPU": 2, "Runtimes": {"runc": {}}}


def test_missing_image_error_names_it_and_the_build_script(tmp_path):
    s = dk.DockerServer(cfg(), "s", tmp_path, tmp_path, client=FakeClient(), sweep=False)
    with pytest.raises(ServerError) as e:
        s.start()
    msg = str(e.value)
    assert "'img:1'" in msg and "docker/build.sh" in msg and "never pulls" in msg


def test_gpu_without_nvidia_runtime_says_install_toolkit_and_removes_container(tmp_path):
    err = APIError("500 Server Error", explanation='could not select device driver "" with capabilities: [[gpu]]')
    client = FakeClient(images=("img:1",), start_error=err)
    s = dk.DockerServer(cfg(gpus="all"), "s", tmp_path, tmp_path, client=client, sweep=False)
    with pytest.raises(ServerError, match="nvidia-container-toolkit"):
        s.start()
    (container, kw), = client.containers.created
    assert kw["device_requests"][0]["Count"] == -1
    assert container.removed and s.container is None


def test_sweep_removes_only_dead_sessions_containers():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    mk = lambda n, **lbl: FakeContainer(n, {"pytest-mxfp4": "1", **lbl})  # noqa: E731
    crashed = mk("crashed", **{"pytest-mxfp4.session": "old", "pytest-mxfp4.owner": dk.owner_tag(dead.pid)})
    unowned = mk("unowned", **{"pytest-mxfp4.session": "older"})
    mine = mk("mine", **{"pytest-mxfp4.session": "now", "pytest-mxfp4.owner": dk.owner_tag()})
    live_peer = mk("peer", **{"pytest-mxfp4.session": "peer", "pytest-mxfp4.owner": dk.owner_tag()})
    remote = mk("remote", **{"pytest-mxfp4.session": "r", "pytest-mxfp4.owner": "elsewhere:1:1"})
    client = FakeClient(found=[crashed, unowned, mine, live_peer, remote])
    assert dk.sweep_leftovers(client, "now") == ["crashed", "unowned"]
    assert crashed.removed and unowned.removed
    assert not (mine.removed or live_peer.removed or remote.removed)


# ---------------------------------------------------------------- real daemon


def _client_or_skip():
    try:
        return dk.connect(timeout_s=10)
    except ServerError as e:
        pytest.skip(f"no Docker daemon reachable: {e}")


@pytest.fixture(scope="module")
def client():
    c = _client_or_skip()
    yield c
    c.close()


@pytest.fixture(scope="module")
def image(client):
    try:
        client.images.get(IMAGE)
    except ImageNotFound:
        pytest.skip(f"image {IMAGE} is not built: run docker/build.sh")
    return IMAGE


@pytest.fixture
def session_id():
    return f"test-{uuid.uuid4().hex[:8]}"


def ours(client, session: str) -> list:
    return client.containers.list(all=True, filters={"label": f"pytest-mxfp4.session={session}"})


def eager_config(**changes) -> ServerConfig:
    c = load_matrix(DOCKER_CONFIG).server("tiny-eager-docker")
    return replace(c, **changes)


@pytest.mark.docker
def test_real_container_serves_on_loopback_and_stop_leaves_nothing(client, image, session_id, tmp_path):
    progress: list[str] = []
    s = dk.DockerServer(eager_config(), session_id, tmp_path, ROOT, progress=progress.append,
                        port=free_port())
    try:
        t0 = time.monotonic()
        info = s.start()
        print(f"container healthy after {info.startup_s:.1f}s (start() took {time.monotonic() - t0:.1f}s)")
        assert info.kind == "docker" and info.base_url == f"http://127.0.0.1:{s.port}"
        (container,) = ours(client, session_id)
        assert container.labels["pytest-mxfp4"] == "1"
        assert container.labels["pytest-mxfp4.config"] == "tiny-eager-docker"
        hc = container.attrs["HostConfig"]
        assert hc["NetworkMode"] == "host" and hc["ShmSize"] == 1 << 30
        ncpu = client.info()["NCPU"]
        assert hc["CpusetCpus"] == ("0" if ncpu == 2 else f"0-{ncpu - 2}") or ncpu == 1

        body = json.dumps({"model": "tiny", "prompt": "The license", "max_tokens": 8}).encode()
        req = urllib.request.Request(info.base_url + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            out = json.load(r)
        assert out["choices"][0]["text"] and out["usage"]["completion_tokens"] == 8

        d = info.details
        assert d["image_id"].startswith("sha256:") and d["engine_version"] == "0.32.0"
        assert d["repo_digests"] == []  # built locally, never pushed
        assert "enforce_eager=True" in s.log_text()  # the container log reached our file
        assert any("healthy after" in p for p in progress)
    finally:
        s.stop()
    s.stop()  # idempotent
    assert ours(client, session_id) == []
    assert client.containers.list(all=True, filters={"label": "pytest-mxfp4=1",
                                                     "name": f"pytest-mxfp4-{session_id}"}) == []


@pytest.mark.docker
def test_bad_image_name_fails_fast_and_clearly(client, session_id, tmp_path):
    c = eager_config(docker=DockerSpec(image="pytest-mxfp4/no-such-image:0"))
    s = dk.DockerServer(c, session_id, tmp_path, ROOT)
    t0 = time.monotonic()
    with pytest.raises(ServerError, match=r"'pytest-mxfp4/no-such-image:0' is not on .*docker/build\.sh"):
        s.start()
    assert time.monotonic() - t0 < 5
    assert ours(client, session_id) == []


@pytest.mark.docker
def test_startup_crash_fails_at_once_with_exit_code_and_log_tail(client, image, session_id, tmp_path):
    c = eager_config(model="/models/does-not-exist", startup_timeout_s=300)
    s = dk.DockerServer(c, session_id, tmp_path, ROOT, port=free_port())
    t0 = time.monotonic()
    with pytest.raises(ServerError) as e:
        s.start()
    took = time.monotonic() - t0
    msg = str(e.value)
    print(f"crash reported after {took:.1f}s:\n{msg[-600:]}")
    assert took < 90, "must fail when the container exits, not at the startup timeout"
    assert "exited with code 1" in msg and "does-not-exist" in msg.split("Last log lines:")[-1]
    assert ours(client, session_id) == []


@pytest.mark.docker
def test_gpu_request_on_daemon_without_nvidia_runtime(client, image, session_id, tmp_path):
    if "nvidia" in (client.info().get("Runtimes") or {}):
        pytest.skip("this daemon has the NVIDIA runtime")
    base = eager_config()
    s = dk.DockerServer(replace(base, docker=replace(base.docker, gpus="all")), session_id, tmp_path, ROOT)
    t0 = time.monotonic()
    with pytest.raises(ServerError, match="nvidia-container-toolkit"):
        s.start()
    assert time.monotonic() - t0 < 10
    assert ours(client, session_id) == []  # the `created` container is gone too


@pytest.mark.docker
def test_sweep_removes_a_crashed_sessions_leftover(client, image, session_id):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = client.containers.run(
        image, ["sleep", "300"], detach=True, network_mode="none",
        name=f"pytest-mxfp4-{session_id}-leftover",
        labels=dk.labels(session_id, "leftover", owner=dk.owner_tag(dead.pid)),
    )
    try:
        removed = dk.sweep_leftovers(client, current_session=f"{session_id}-now")
        assert leftover.name in removed
        assert ours(client, session_id) == []
    finally:
        try:
            leftover.remove(force=True)
        except NotFound:
            pass
