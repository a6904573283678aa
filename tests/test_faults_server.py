"""Fault suite, servers: a FAKE server with fault modes (tests/fakes/fault_server.py)
for what a real engine cannot do on demand. Each fault ends in one clear line
(per sample or per case), bounded in requests, and leaves no process behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_mxfp4.formats.config import Case, ServerConfig, Workloads
from pytest_mxfp4.errors import MeasurementError, PerfUserError, ServerError
from pytest_mxfp4.measure.client import EngineClient, RequestSpec
from pytest_mxfp4.measure.prompts import PromptFactory, check_fits, context_length
from pytest_mxfp4.servers.process import ProcessServer, free_port, group_pids, sweep_leftovers
from tests.fakes.fault_server import FaultServer

ROOT = Path(__file__).resolve().parents[1]
FAKE = str(ROOT / "tests" / "fakes" / "fault_server.py")


def headline(e: BaseException) -> str:
    return str(e).splitlines()[0]


@pytest.fixture
def client_for():
    opened = []

    def make(url: str) -> EngineClient:
        c = EngineClient("fake", url, "fake", engine="openai")
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


# -- /tokenize faults: bounded, named, fast -----------------------------------------


@pytest.mark.parametrize("mode,words", [
    ("tokenize_empty", "empty token list"),
    ("tokenize_constant", "does not grow with the text"),
    ("tokenize_blank", "not a JSON object"),
    ("tokenize_huge", "words per token"),
])
def test_broken_tokenize_fails_the_case_with_the_cause_in_few_requests(client_for, mode, words):
    with FaultServer(mode) as url:
        client = client_for(url)
        calls = []

        def counting(text):
            calls.append(len(text))
            return client.count_tokens(text)

        with pytest.raises(ServerError) as e:
            PromptFactory(counting, seed=1, server="server 'fake'").exact(2048)
    msg = str(e.value)
    assert "\n" not in msg and words in msg and "fake" in msg
    assert len(calls) <= 4, "the cause is found in a handful of requests, not by growing the prompt"
    assert max(calls) < 2048 * 8 * 12, "the prompt stays bounded"


def test_a_pp_typo_with_extra_zeros_is_refused_before_any_request():
    calls = []
    with pytest.raises(ServerError) as e:
        PromptFactory(lambda t: calls.append(t) or 1 + len(t.split()), server="server 'x'").exact(51200000)
    assert "beyond any context length" in headline(e.value) and not calls


def test_calibration_gives_up_after_a_bounded_number_of_calls():
    import random

    rng = random.Random(0)  # a tokenizer whose counts jump around: never converges
    f = PromptFactory(lambda t: 1 + len(t.split()) + rng.randint(-40, 40), seed=2, server="server 'x'", max_calls=12)
    with pytest.raises(PerfUserError) as e:
        f.exact(300)
    assert f.calls <= 13 and "\n" not in str(e.value)


def test_cases_beyond_the_servers_context_length_are_refused(client_for):
    with FaultServer("ctx_small") as url:
        ctx = context_length(client_for(url).http.get("/v1/models").json())
    assert ctx == 600
    cases = (Case("prefill", pp=512, tg=1), Case("decode", pp=512, tg=128))
    with pytest.raises(ServerError) as e:
        check_fits("fake", cases, ctx)
    msg = str(e.value)
    assert "\n" not in msg and "tg128" in msg and "640" in msg and "600" in msg
    check_fits("fake", cases[:1], ctx)  # 513 fits


def test_context_length_unknown_is_not_a_failure():
    assert context_length({"data": [{"id": "m"}]}) is None
    assert context_length("garbage") is None
    check_fits("fake", (Case("prefill", pp=10**6, tg=1),), None)


# -- stream faults: one line per sample ---------------------------------------------


@pytest.mark.parametrize("mode,words", [
    ("http500", "answered 500"),
    ("break_mid", "stream broke"),
    ("malformed", "malformed SSE"),
    ("error_event", "error mid-stream"),
])
def test_stream_faults_are_one_line_per_sample(client_for, mode, words):
    with FaultServer(mode) as url:
        with pytest.raises(MeasurementError) as e:
            client_for(url).stream(RequestSpec("hello there", 8))
    assert words in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("mode,words", [
    ("wrong_prompt_tokens", "prompt_tokens"),
    ("no_usage", "no usage block"),
    ("usage_overstates", "token ids were streamed"),
])
def test_wrong_token_counts_make_every_sample_an_error(client_for, mode, words):
    from pytest_mxfp4.measure.runner import CaseRunner

    with FaultServer(mode) as url:
        runner = CaseRunner(client_for(url), Case("decode", pp=16, tg=8), Workloads(cases=(), runs=2, warmup=0,
                                                                                    reset_prefix_cache=False))
        samples = runner.measure(2)
    assert samples and all(s.error and words in s.error for s in samples), [s.error for s in samples]
    assert all(not s.metrics for s in samples)


# -- the process runner with the fake as a real process -----------------------------


def fake_cfg(mode: str, *extra: str, timeout: float = 20.0, env=None) -> ServerConfig:
    return ServerConfig(name="fake", engine="openai", model="fake",
                        command=(sys.executable, FAKE, "--port", "{port}", "--mode", mode, *extra),
                        startup_timeout_s=timeout, env=env or {})


def no_group_left(pid: int) -> bool:
    for _ in range(50):
        if not group_pids(pid):
            return True
        time.sleep(0.1)
    return False


def test_startup_crash_shows_exit_code_and_log_tail(tmp_path):
    s = ProcessServer(fake_cfg("exit_at_start"), tmp_path / "logs", ROOT)
    with pytest.raises(ServerError) as e:
        s.start()
    assert "exited with code 3" in headline(e.value)
    assert "refusing to start" in str(e.value)
    assert s.proc is None and not list((tmp_path / "logs" / ".running").glob("*.json"))


def test_a_server_that_dies_mid_run_is_reported_with_exit_code_and_tail(tmp_path):
    s = ProcessServer(fake_cfg("die_after_first"), tmp_path / "logs", ROOT)
    s.start()
    try:
        assert s.identity_problem() is None
        c = EngineClient("fake", s.info.base_url, "fake", engine="openai")
        try:
            c.stream(RequestSpec("hello", 4))
        except MeasurementError:
            pass
        finally:
            c.close()
        for _ in range(50):
            if not s.alive():
                break
            time.sleep(0.1)
        problem = s.identity_problem()
        assert problem and "exited with code 7" in problem.splitlines()[0]
        assert "listening on" in problem  # the log tail
    finally:
        s.stop()


def test_another_server_on_our_port_is_not_measured(tmp_path):
    port = free_port()
    with FaultServer("ok", port=port):  # takes the port while ours "loads"
        s = ProcessServer(fake_cfg("ok", "--startup-delay", "30"), tmp_path / "logs", ROOT, port=port)
        with pytest.raises(ServerError) as e:
            s.start()
    msg = headline(e.value)
    assert f"port {port} is answered by pid {os.getpid()}" in msg and "not by the server we started" in msg
    assert s.proc is None


def test_stop_kills_the_group_even_when_a_second_ctrl_c_interrupts_it(tmp_path):
    s = ProcessServer(fake_cfg("ok"), tmp_path / "logs", ROOT)
    s.start()
    pid = s.proc.pid
    real_wait = s.proc.wait
    calls = []

    def interrupted(timeout=None):
        calls.append(timeout)
        if len(calls) == 1:
            raise KeyboardInterrupt  # the second Ctrl-C lands in the graceful wait
        return real_wait(timeout)

    s.proc.wait = interrupted
    with pytest.raises(KeyboardInterrupt):
        s.stop(timeout_s=30)
    assert no_group_left(pid)
    assert s.proc is None and s.returncode is not None
    assert not list((tmp_path / "logs" / ".running").glob("*.json"))


def test_leftover_servers_of_a_dead_session_are_swept_at_the_next_start(tmp_path):
    records = tmp_path / "logs" / ".running"
    records.mkdir(parents=True)
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        stat = Path(f"/proc/{orphan.pid}/stat").read_text().rsplit(")", 1)[1].split()
        dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
        dead_owner.wait()
        (records / f"{orphan.pid}.json").write_text(json.dumps(
            {"pid": orphan.pid, "start": int(stat[19]), "server": "old", "port": 1,
             "owner_pid": dead_owner.pid, "owner_start": 1}))
        said = []
        assert sweep_leftovers(records, said.append) == [orphan.pid]
        assert orphan.wait(10) == -signal.SIGKILL
        assert "leftover server 'old'" in said[0] and not list(records.glob("*.json"))
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()


def test_a_live_sessions_server_is_not_swept(tmp_path):
    s = ProcessServer(fake_cfg("ok"), tmp_path / "logs", ROOT)
    s.start()
    try:
        assert sweep_leftovers(s.records_dir) == [] and s.alive()
        assert len(list(s.records_dir.glob("*.json"))) == 1
    finally:
        s.stop()
    assert not list(s.records_dir.glob("*.json"))


@pytest.mark.docker
def test_another_server_on_a_containers_port_is_not_measured(tmp_path, monkeypatch):
    """Host networking: /health answers, but the listener is not in our container."""
    monkeypatch.setenv("PYTEST_MXFP4_PROGRESS_S", "0.5")  # the "starting…" line comes while the container waits
    import uuid
    from dataclasses import replace

    from pytest_mxfp4.formats.config import load_matrix
    from pytest_mxfp4.servers import docker as dk

    try:
        client = dk.connect(timeout_s=10)
    except ServerError as e:
        pytest.skip(f"no Docker daemon reachable: {e}")
    cfg = load_matrix(ROOT / "configs" / "cpu-docker.yaml").server("tiny-eager-docker")
    try:
        client.images.get(cfg.docker.image)
    except Exception:
        pytest.skip(f"image {cfg.docker.image} is not built: run docker/build.sh")
    cfg = replace(cfg, command=("python3", "-c", "import time; time.sleep(120)"), args=(), expect={},
                  startup_timeout_s=60)
    session = f"test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    thief = None

    def steal(msg: str) -> None:  # once our container is up and waiting, another server takes the port
        nonlocal thief
        if "starting…" in msg and thief is None:
            thief = FaultServer("ok", port=port)
            thief.__enter__()

    s = dk.DockerServer(cfg, session, tmp_path, ROOT, port=port, client=client, progress=steal)
    try:
        with pytest.raises(ServerError) as e:
            s.start()
    finally:
        if thief is not None:
            thief.__exit__(None, None, None)
    assert thief is not None
    assert f"port {port} is answered by pid {os.getpid()}" in headline(e.value)
    assert client.containers.list(all=True, filters={"label": f"pytest-mxfp4.session={session}"}) == []
    client.close()


def test_llama_server_props_give_the_per_slot_context():
    # llama-server -c 2048 -np 2 answered exactly this shape here (n_ctx 1024 per slot)
    assert context_length({"default_generation_settings": {"n_ctx": 1024}, "total_slots": 2}) == 1024
    assert context_length({"data": [{"id": "m", "meta": {"n_ctx_train": 4096}}]}) == 4096
