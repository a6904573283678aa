"""Fault suite, secrets: what redaction masks and what it must leave alone.
(The end-to-end grep over every output is in test_faults_session.py.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pytest_mxfp4 import redact
from pytest_mxfp4.formats.config import DockerSpec, ServerConfig
from pytest_mxfp4.errors import ServerError
from pytest_mxfp4.redact import MASK, is_secret_name, redact_argv, redact_env, redact_obj, redact_text
from pytest_mxfp4.servers.process import ProcessServer

ROOT = Path(__file__).resolve().parents[1]
FAKE = str(ROOT / "tests" / "fakes" / "fault_server.py")


@pytest.fixture(autouse=True)
def _fresh():
    redact.forget_all()
    yield
    redact.forget_all()


@pytest.mark.parametrize("argv,want", [
    (["--api-key", "s3cr3t-value"], ["--api-key", MASK]),
    (["--api-key=s3cr3t-value"], [f"--api-key={MASK}"]),
    (["--hf-token", "abc12345"], ["--hf-token", MASK]),
    (["--auth", "user:pw-123"], ["--auth", MASK]),
    (["--db-password=pw-123456"], [f"--db-password={MASK}"]),
    (["--client-secret", "xyz98765"], ["--client-secret", MASK]),
    (["HF_TOKEN=abc12345", "vllm"], [f"HF_TOKEN={MASK}", "vllm"]),
    (["--api-key", "--port", "8000"], ["--api-key", "--port", "8000"]),  # no value given: nothing eaten
    (["--served-model-name", "ghp_abcdefghijklmnop"], ["--served-model-name", MASK]),  # by shape
    (["-H", "Authorization: Bearer tok-abcdefgh"], ["-H", f"Authorization: Bearer {MASK}"]),
], ids=["flag-space", "flag-eq", "hf-token", "auth", "password", "secret", "env-arg", "no-value", "shape",
        "bearer"])
def test_argv_values_after_secret_flags_are_masked(argv, want):
    assert redact_argv(argv) == want


@pytest.mark.parametrize("argv", [
    ["--tokenizer", "models/tiny"],
    ["--max-num-batched-tokens", "8192"],
    ["--ssl-keyfile", "/etc/key.pem"],
    ["--kv-cache-dtype", "fp8"],
    ["--port", "8000", "--model", "openai/gpt-oss-120b"],
])
def test_ordinary_arguments_are_left_alone(argv):
    assert redact_argv(argv) == argv


def test_env_values_are_masked_by_name_and_by_shape():
    env = {"HF_TOKEN": "plainvalue1", "MY_API_KEY": "v2v2v2v2", "WEIRD": "sk-proj-abcdefghijkl",
           "NOTE": "Bearer abcdefghij", "TOKENIZERS_PARALLELISM": "false", "HF_TOKEN_PATH": "/x/y",
           "VLLM_CPU_KVCACHE_SPACE": "1"}
    out = redact_env(env)
    assert out["HF_TOKEN"] == out["MY_API_KEY"] == out["WEIRD"] == out["NOTE"] == MASK
    assert out["TOKENIZERS_PARALLELISM"] == "false" and out["HF_TOKEN_PATH"] == "/x/y"
    assert out["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_a_value_masked_once_is_masked_in_any_later_text():
    redact_env({"HF_TOKEN": "no-shape-at-all-42"})
    text = "loading with token no-shape-at-all-42 from cache"
    assert "no-shape-at-all-42" not in redact_text(text)


def test_free_text_key_value_pairs_and_url_credentials_are_masked():
    t = redact_text("non-default args: {'api_key': ['zzz-hidden-1'], 'model': 'm'} "
                    "https://user:pw-hidden-2@host/x password=pw-hidden-3 token_ids=[1, 2]")
    assert "zzz-hidden-1" not in t and "pw-hidden-2" not in t and "pw-hidden-3" not in t
    assert "token_ids=[1, 2]" in t and "'model': 'm'" in t


def test_user_errors_are_redacted_wherever_they_are_shown():
    e = ServerError("server 'x' exited; last line: --api-key sk-abcdefghijklmnop")
    assert "sk-abcdefghijklmnop" not in str(e)


def test_nested_results_are_redacted_by_key():
    data = {"info": {"command": ["vllm", "--api-key", "k-1234567"], "env": {"GH_TOKEN": "ghtok-99"},
                     "details": {"docker_run": "docker run -e HF_TOKEN=hfval-1234 img"}}}
    out = redact_obj(data)
    text = str(out)
    assert "k-1234567" not in text and "ghtok-99" not in text and "hfval-1234" not in text


def test_docker_run_line_masks_env_args_and_shapes():
    from pytest_mxfp4.servers.docker import create_kwargs, docker_run_line

    cfg = ServerConfig(name="d", model="m", runner="docker", docker=DockerSpec(image="img:1"),
                       command=("vllm", "serve", "{model}", "--api-key", "plain-key-77"),
                       env={"HF_TOKEN": "hf_abcdefghijkl", "OTHER": "ghp_abcdefghijklmn", "SAFE": "1"})
    kw = create_kwargs(cfg, session_id="s", port=8000, base_dir=ROOT, ncpu=4)
    line = docker_run_line(kw)
    for s in ("plain-key-77", "hf_abcdefghijkl", "ghp_abcdefghijklmn"):
        assert s not in line
    assert "SAFE=1" in line


def test_process_log_header_recorded_command_and_log_are_masked(tmp_path):
    cfg = ServerConfig(name="fake", engine="openai", model="fake", startup_timeout_s=20,
                       command=(sys.executable, FAKE, "--port", "{port}", "--mode", "ok", "--api-key", "zz-key-0001"),
                       env={"HF_TOKEN": "zz-env-0002"})
    s = ProcessServer(cfg, tmp_path / "logs", ROOT)
    info = s.start()
    try:
        assert "zz-key-0001" not in " ".join(info.command) and info.env["HF_TOKEN"] == MASK
        header = info.log_path.read_text().splitlines()[0]
        assert header.startswith("$ ") and "zz-key-0001" not in header
    finally:
        s.stop()
    log = info.log_path.read_text()
    assert "non-default args" in log  # the fake echoed its argv ...
    assert "zz-key-0001" not in log and "zz-env-0002" not in log  # ... and it was scrubbed on stop
    assert info.log_path.stat().st_mode & 0o777 == 0o644


def test_environment_record_is_redacted():
    from pytest_mxfp4.observe.environment import capture

    redact.remember("host-secret-123")
    env = capture()
    env.hostname = "box-host-secret-123"
    assert "host-secret-123" not in str(env.to_dict())


@pytest.mark.parametrize("text", [
    "Avg generation throughput: 32.1 tokens/s, Prefix cache hit rate: 0.0%",
    "token budget 8192; the token list was empty",
    "Basic configuration done; Basic Configuration",
    "max_num_batched_tokens=8192 tokenizer=models/tiny kv_cache_dtype=auto",
])
def test_ordinary_log_text_is_left_alone(text):
    assert redact_text(text) == text


def test_basic_auth_credentials_are_masked():
    assert redact_text("Basic dXNlcjpwYXNzd29yZA==") == f"Basic {MASK}"


@pytest.mark.parametrize("name,secret", [
    ("hardware_key", False), ("cache_key", False), ("sort_key", False),  # lookup keys, shown on the page
    ("api_key", True), ("OPENAI_KEY", True), ("--api-key", True), ("key", True), ("ssh_key", True),
    ("private_key", True), ("HF_TOKEN", True),
])
def test_a_lookup_key_is_not_a_secret_but_a_credential_key_is(name, secret):
    assert is_secret_name(name) is secret


def test_a_stored_environment_keeps_its_hardware_key_and_loses_its_token():
    out = redact_obj({"environment": {"hardware_key": "cpu-x86_64-epyc-2c", "HF_TOKEN": "plain-value-1234"}})
    assert out["environment"]["hardware_key"] == "cpu-x86_64-epyc-2c"
    assert out["environment"]["HF_TOKEN"] == "***"
