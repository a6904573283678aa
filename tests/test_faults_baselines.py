"""Fault suite, baselines: concurrent writers lose nothing, a killed writer's
temp files are swept, files are 0644, broken or unwritable stores are one
line naming the file, and the hardware key does not move with CPU affinity."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import filelock
import pytest
import yaml

from pytest_mxfp4.formats.baselines import LOCK_NAME, BaselineEngine, BaselineEnvironment, BaselineStore, read_baseline
from pytest_mxfp4.errors import BaselineError
from pytest_mxfp4.formats.results import RunEnvironment, ServerInfo

KEY, MODEL, SERVER = "cpu-x86_64-test-2c", "models/tiny", "tiny-eager"


def one_line(e: BaseException) -> str:
    msg = str(e)
    assert "\n" not in msg, msg
    return msg


def _updater(root: str, n: int, offset: float) -> None:
    store = BaselineStore(Path(root))
    for i in range(n):
        store.update(KEY, MODEL, SERVER, {"tg32/tg_tps": ("tok/s", [offset + i, offset + i + 1.0])})


def test_two_concurrent_update_runs_lose_no_history_entry(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_updater, args=(str(tmp_path), 12, off)) for off in (100.0, 500.0)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    bf = read_baseline(BaselineStore(tmp_path).path(KEY, MODEL, SERVER))
    history = bf.metrics["tg32/tg_tps"].history
    assert len(history) == 24, "every update of both runs is in the history"
    means = sorted(h.mean for h in history)
    assert means[0] == 100.5 and means[-1] == 511.5


def test_orphan_temp_files_of_a_killed_writer_are_swept(tmp_path):
    store = BaselineStore(tmp_path)
    path = store.path(KEY, MODEL, SERVER)
    path.parent.mkdir(parents=True)
    orphans = [path.parent / f".{path.name}.k2j4h5g1.tmp", path.parent / f".{path.name}.abcd1234",
               tmp_path / ".run_log.jsonl.zz99xx11.tmp"]
    for o in orphans:
        o.write_text("half-written")
    keep = path.parent / "notes.txt"
    keep.write_text("mine")
    store.update(KEY, MODEL, SERVER, {"tg32/tg_tps": ("tok/s", [1.0, 2.0])})
    assert not any(o.exists() for o in orphans)
    assert keep.read_text() == "mine" and path.exists()


def test_baseline_files_are_written_0644(tmp_path):
    old = os.umask(0o022)
    try:
        path = BaselineStore(tmp_path).update(KEY, MODEL, SERVER, {"tg32/tg_tps": ("tok/s", [1.0, 2.0])})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_a_held_lock_times_out_with_one_line_and_the_file_untouched(tmp_path):
    store = BaselineStore(tmp_path, lock_timeout_s=0.2)
    path = store.update(KEY, MODEL, SERVER, {"tg32/tg_tps": ("tok/s", [1.0, 2.0])})
    before = path.read_text()
    with filelock.FileLock(str(tmp_path / LOCK_NAME)):
        with pytest.raises(BaselineError) as e:
            BaselineStore(tmp_path, lock_timeout_s=0.2).update(
                KEY, MODEL, SERVER, {"tg32/tg_tps": ("tok/s", [9.0, 9.0])})
    assert "lock" in one_line(e.value) and str(tmp_path) in str(e.value)
    assert path.read_text() == before


def test_unwritable_baseline_file_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    store = BaselineStore(tmp_path)
    path = store.update(KEY, MODEL, SERVER, {"tg32/tg_tps": ("tok/s", [1.0, 2.0])})
    before = path.read_text()

    def denied(p, text):  # as a read-only checkout or a full disk answers (root ignores chmod here)
        raise PermissionError(13, "Permission denied", str(p))

    monkeypatch.setattr("pytest_mxfp4.formats.baselines.write_atomic", denied)
    with pytest.raises(BaselineError) as e:
        store.update(KEY, MODEL, SERVER, {"tg32/tg_tps": ("tok/s", [5.0, 6.0])})
    assert "cannot write" in one_line(e.value) and "Permission denied" in str(e.value)
    assert path.read_text() == before


def test_unwritable_baselines_root_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(BaselineError) as e:
        BaselineStore(blocker / "baselines").update(KEY, MODEL, SERVER, {"tg32/tg_tps": ("tok/s", [1.0, 2.0])})
    assert "baselines directory" in one_line(e.value)
    assert blocker.read_text() == "not a directory"


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = BaselineStore(tmp_path).path(KEY, MODEL, SERVER)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


GOOD = f"""\
schema: 1
hardware_key: {KEY}
model: {MODEL}
server: {SERVER}
metrics:
  tg32/tg_tps: {{unit: tok/s, mean: 10.0, stdev: 0.5, n: 5}}
"""


@pytest.mark.parametrize("text,words", [
    (GOOD + "metrics:\n  tg32/tg_tps: {unit: tok/s, mean: 99.0, stdev: 0.5, n: 5}\n", ["line 7", "duplicate key 'metrics'"]),
    (GOOD.replace("mean: 10.0, stdev: 0.5, n: 5", "mean: 10.0, mean: 11.0, stdev: 0.5, n: 5"), ["line 6", "duplicate key 'mean'"]),
    (GOOD.replace("schema: 1", "schema: 7"), ["schema", "expected 1"]),
    (GOOD.replace("n: 5", "n: 0"), ["metrics.tg32/tg_tps.n", "positive integer"]),
    (GOOD.replace("{unit: tok/s, mean: 10.0, stdev: 0.5, n: 5}", "{samples: [1, .nan]}"), ["samples", "finite"]),
    (GOOD.replace("model: models/tiny\n", ""), ["model", "required"]),
    (b"\xff\xfe\x00binary\x00", ["not a text file"]),
    (GOOD + "x: !!python/object/apply:os.system ['true']\n", ["not valid YAML"]),
], ids=["dup-top", "dup-field", "schema", "n", "nan", "missing", "binary", "python-tag"])
def test_broken_baselines_are_one_line_naming_file_and_field(tmp_path, text, words):
    path = _write(tmp_path, text)
    before = path.read_bytes()
    with pytest.raises(BaselineError) as e:
        BaselineStore(tmp_path).load(KEY, MODEL, SERVER)
    msg = one_line(e.value)
    assert msg.startswith(str(path))
    for w in words:
        assert w in msg, (w, msg)
    assert path.read_bytes() == before


def test_a_broken_baseline_is_not_overwritten_by_an_update(tmp_path):
    path = _write(tmp_path, GOOD.replace("n: 5", "n: -1"))
    before = path.read_text()
    with pytest.raises(BaselineError):
        BaselineStore(tmp_path).update(KEY, MODEL, SERVER, {"tg32/tg_tps": ("tok/s", [1.0, 2.0])})
    assert path.read_text() == before


@pytest.mark.skipif(not shutil.which("taskset") or len(os.sched_getaffinity(0)) < 2, reason="needs taskset, 2 cores")
def test_hardware_key_does_not_move_with_cpu_affinity():
    code = "from pytest_mxfp4.observe.environment import capture; e = capture(); print(e.hardware_key, len(e.cpu_affinity))"
    free = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    pinned = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert pinned[0] == free[0], "the baseline key describes the box, not the process"
    assert pinned[1] == "1" and int(free[1]) >= 2, "the affinity is recorded beside the key"


def test_baseline_update_never_stores_a_raw_secret(tmp_path):
    path = BaselineStore(tmp_path).update(
        KEY, MODEL, SERVER, {"tg32/tg_tps": ("tok/s", [1.0, 2.0])},
        engine=BaselineEngine(image="x"),
        environment=BaselineEnvironment(server_command=["vllm", "serve", "--api-key", "planted-arg-secret-1", "--port", "80"],
                                        server_env={"HF_TOKEN": "planted-env-secret-2", "SHAPE": "sk-planted0shape0secret3"}))
    text = path.read_text()
    for secret in ("planted-arg-secret-1", "planted-env-secret-2", "sk-planted0shape0secret3"):
        assert secret not in text
    env = yaml.safe_load(text)["environment"]
    assert env["server_command"] == ["vllm", "serve", "--api-key", "***", "--port", "80"]


def _run_logger(root: str, n: int, tag: str) -> None:
    from pytest_mxfp4.report.writer import _append_run_log_locked
    from pytest_mxfp4.formats.results import SessionResults

    for i in range(n):
        s = SessionResults(matrix="m", environment=RunEnvironment.from_dict({"hardware_key": KEY}))
        _append_run_log_locked(Path(root), _one_metric_session(s, f"{tag}-{i}"))


def _one_metric_session(s, server):
    from pytest_mxfp4.formats.config import Case
    from pytest_mxfp4.formats.results import MetricResult, ServerRecord
    from pytest_mxfp4.stats.samples import Summary

    s.servers[server] = ServerRecord(name=server, runner="process", model="m", info=ServerInfo(server, "process", "http://127.0.0.1:1"))
    s.metrics.append(MetricResult(server=server, case=Case("decode", pp=8, tg=32), metric="tg_tps", gate="fail",
                                  samples=[1.0, 2.0], summary=Summary.from_samples([1.0, 2.0])))
    return s


def test_two_runs_appending_to_the_run_log_at_once_keep_every_record(tmp_path):
    from pytest_mxfp4.formats.runlog import read_run_log

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_run_logger, args=(str(tmp_path), 20, tag)) for tag in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    records = read_run_log(tmp_path)
    assert len(records) == 40, "unlocked, about a third of them were lost here"


# -- a baseline is what its place says ---------------------------------------------------


@pytest.mark.parametrize("field,value", [("hardware_key", "nvidia-gb10-sm121"), ("model", "openai/gpt-oss-120b"),
                                         ("server", "other-config")])
def test_a_baseline_whose_own_identity_disagrees_with_its_place_is_refused(tmp_path, field, value):
    text = GOOD.replace(f"{field}: {dict(hardware_key=KEY, model=MODEL, server=SERVER)[field]}\n",
                        f"{field}: {value}\n")
    path = _write(tmp_path, text)
    with pytest.raises(BaselineError) as e:
        BaselineStore(tmp_path).load(KEY, MODEL, SERVER)
    msg = one_line(e.value)
    assert msg.startswith(f"{path}: {field}: the file says {value!r}"), msg
    assert path.read_text() == text


@pytest.mark.parametrize("metric,field,words", [
    ("{unit: tok/s, mean: -10.0, stdev: 0.5, n: 5}", "metrics.tg32/tg_tps.mean", "must be > 0"),
    ("{unit: tok/s, samples: [10.0, -3.0, 11.0]}", "metrics.tg32/tg_tps.samples[1]", "must be > 0"),
    ("{unit: tok/s, mean: 10.0, stdev: 0.5, n: 5, samples: [10.0, 11.0]}", "metrics.tg32/tg_tps.n",
     "2 samples are given"),
    ("{unit: tok/s, mean: 10.0, stdev: 0.5, n: 5, history: [{date: d, mean: 10.0, stdev: 0.5, n: 5, starts: 3, "
     "start_cv: -0.02}]}", "metrics.tg32/tg_tps.history[0].start_cv", "must be >= 0"),
    ("{unit: tok/s, mean: 10.0, stdev: 0.5, n: 5, history: [{date: d, mean: -1.0, stdev: 0.5, n: 5}]}",
     "metrics.tg32/tg_tps.history[0].mean", "must be > 0"),
], ids=["negative-mean", "negative-sample", "fewer-samples-than-n", "negative-start-cv", "negative-history-mean"])
def test_impossible_baseline_content_is_refused_at_load_naming_file_and_field(tmp_path, metric, field, words):
    text = GOOD.replace("{unit: tok/s, mean: 10.0, stdev: 0.5, n: 5}", metric)
    path = _write(tmp_path, text)
    with pytest.raises(BaselineError) as e:
        BaselineStore(tmp_path).load(KEY, MODEL, SERVER)
    msg = one_line(e.value)
    assert msg.startswith(f"{path}: {field}: "), msg
    assert words in msg, msg
    assert path.read_bytes() == text.encode()


@pytest.mark.parametrize("name", ["..", ".", "../..", "./.."])
def test_a_served_model_name_of_path_parts_stays_in_the_hardware_folder(tmp_path, name, monkeypatch):
    monkeypatch.chdir(tmp_path)  # './..' and '../..' exist from here, as a checkout's folders would
    root = tmp_path / "b"
    path = BaselineStore(root).update(KEY, name, SERVER, {"tg32/tg_tps": ("tok/s", [1.0, 2.0])})
    assert path.parent.parent == root / KEY and path.parent.name not in (".", ".."), path
    written = [p for p in tmp_path.rglob("*.yaml")]
    assert written == [path] and path.resolve().is_relative_to((root / KEY).resolve())
    assert BaselineStore(root).load(KEY, name, SERVER) is not None


def test_a_run_refuses_a_baseline_copied_from_another_config(tmp_path):
    from .test_faults_session import no_server_left, one_line as line_with, run, write_matrix

    m = write_matrix(tmp_path)
    r = run(tmp_path, m, "--perf-update-baselines")  # (on a busy box tg8 may be all client-behind: rc 1)
    assert r.returncode in (0, 1), r.stdout[-3000:]
    (stored,) = (tmp_path / "baselines").rglob("fake.yaml")
    text = stored.read_text().replace("server: fake\n", "server: other\n")
    stored.write_text(text)  # e.g. another config's file copied over this one
    r = run(tmp_path, m)
    assert r.returncode == 1, r.stdout[-3000:]
    line = line_with(r.stdout, "the file says")
    assert f"{stored}: server: the file says 'other'" in line
    assert stored.read_text() == text
    assert no_server_left(tmp_path)


def test_two_runs_of_one_config_in_the_same_second_keep_both_run_log_records(tmp_path):
    from pytest_mxfp4.formats.config import load_matrix
    from pytest_mxfp4.observe.environment import capture
    from pytest_mxfp4.formats.runlog import read_run_log
    from pytest_mxfp4.report.writer import _append_run_log_locked
    from pytest_mxfp4.run.session import PerfSession

    (tmp_path / "m.yaml").write_text("servers:\n  fake: {model: m, command: [x]}\nworkloads:\n  decode: {tg: [32]}\n")
    matrix, env = load_matrix(tmp_path / "m.yaml"), capture()  # one captured_at: the same second
    for _ in range(2):
        perf = PerfSession(matrix=matrix, environment=env, store=BaselineStore(tmp_path / "b"),
                           output_dir=tmp_path / "out", base_dir=tmp_path)
        perf.results.metrics.clear()
        _append_run_log_locked(tmp_path / "b", _one_metric_session(perf.results, "fake"))
    records = read_run_log(tmp_path / "b")
    assert len(records) == 2 and records[0].date == records[1].date, records
    assert records[0].run_id != records[1].run_id
