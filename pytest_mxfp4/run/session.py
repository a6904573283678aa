"""One perf session: matrix + environment + baselines + the servers it started.

Plain Python, usable without pytest; `plugin.py` only wires it to hooks.
Several starts per config (which start runs, when a config is judged) are
the controller's (`session.controller`, run/controller.py); the session keeps
the servers, baselines and results.
Data flows one way: config -> server -> samples -> verdict -> report.
"""

from __future__ import annotations

import atexit
import signal
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pytest_mxfp4.formats.baselines import BaselineEngine, BaselineEnvironment, BaselineFile, BaselineStore
from pytest_mxfp4.formats.config import Case, Matrix, ServerConfig
from pytest_mxfp4.observe.environment import Environment
from pytest_mxfp4.errors import BaselineError, PerfUserError, ServerError
from pytest_mxfp4.run.judge import incomparable_reason, measure_and_judge
from pytest_mxfp4.measure.client import EngineClient
from pytest_mxfp4.measure.runner import CaseRunner
from pytest_mxfp4.formats.results import MetricResult, ServerRecord, SessionResults, StartWindow
from pytest_mxfp4.run.controller import StartController
from pytest_mxfp4.servers.base import Server, ServerInfo
from pytest_mxfp4.servers.external import ExternalServer
from pytest_mxfp4.servers.process import ProcessServer

Progress = Callable[[str], None]

# Every server any session started, so that exit paths can stop them.
_LIVE: set[Server] = set()
_LIVE_LOCK = threading.Lock()


def stop_all_servers() -> None:
    with _LIVE_LOCK:
        servers = list(_LIVE)
        _LIVE.clear()
    for s in servers:
        try:
            s.stop()
        except Exception:  # best effort on the way out; never mask the real error
            pass


atexit.register(stop_all_servers)


# The signal that interrupted this process, for the "interrupted" marker of
# every output (Ctrl-C when a KeyboardInterrupt came without our handler).
_INTERRUPTED_BY: list[str] = []


def interrupted_by() -> str:
    return _INTERRUPTED_BY[-1] if _INTERRUPTED_BY else "SIGINT (Ctrl-C)"


def install_sigterm_handler() -> None:
    """SIGTERM (CI cancelling a job) unwinds like Ctrl-C, so teardown runs."""
    if threading.current_thread() is not threading.main_thread():
        return

    def _raise(signum, frame):
        _INTERRUPTED_BY.append(signal.Signals(signum).name)
        raise KeyboardInterrupt(f"signal {signum}")

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _raise)


@dataclass
class RunningServer:
    config: ServerConfig
    server: Server
    info: ServerInfo
    client: EngineClient
    baseline: BaselineFile | None
    slot: object = None  # abtest.Slot: which start of which config this is


@dataclass
class PerfSession:
    matrix: Matrix
    environment: Environment
    store: BaselineStore
    output_dir: Path
    base_dir: Path  # relative model paths resolve here
    base_url: str | None = None
    progress: Progress | None = None
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    # Server starts (run/ab.py): every config started `restarts`
    # times; with `ab_overrides` each config is an A/B pair of arms.
    restarts: int = 1
    ab_overrides: tuple = ()
    max_restarts: int | None = None  # the sequential budget: up to this many starts while inconclusive
    results: SessionResults = field(init=False)
    _judged_by: dict[str, BaselineFile] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.results = SessionResults(matrix=self.matrix.name, environment=self.environment.record())
        # the run's own id: run-log records of two runs started in one second stay two
        self.results.environment.run_id = self.session_id
        if self.base_url:
            self.restarts = 1  # a server started elsewhere cannot be restarted
        # several starts per config: the start plan, the A/B arms and the sequential rule
        self.controller = StartController(self.matrix, self.results, self._baseline_of, restarts=self.restarts,
                                          max_restarts=self.max_restarts, ab_overrides=self.ab_overrides,
                                          external=bool(self.base_url), progress=self.progress)
        self.gpu_sampler = None
        if self.environment.gpus:
            from pytest_mxfp4.observe.telemetry import GpuSampler, load_nvml

            nvml, note = load_nvml()
            if nvml is not None:
                self.gpu_sampler = GpuSampler(nvml)
            self.telemetry_note = note
        else:
            self.telemetry_note = "no GPU telemetry: no NVIDIA GPU on this machine"
        self.results.environment.telemetry = self.telemetry_note or "nvml"
        for s in self.controller.arms.values():
            self.results.servers[s.name] = ServerRecord(name=s.name, runner=s.runner, model=s.model_name,
                                                        description=s.description)

    # -- servers ---------------------------------------------------------------

    def skip_reason(self, cfg: ServerConfig) -> str | None:
        if cfg.pending:
            return f"pending: {cfg.pending}"
        if self.base_url:
            return None  # the user says this server is running; trust the URL
        return self.environment.can_run(cfg.requires)

    def mark_skipped(self, cfg: ServerConfig, reason: str) -> None:
        self.results.servers[cfg.name].skipped = reason

    def make_server(self, cfg: ServerConfig) -> Server:
        logs = self.output_dir / "logs"
        if self.base_url:
            return ExternalServer(cfg.name, self.base_url, cfg.health_path)
        if cfg.runner == "external":
            return ExternalServer(cfg.name, cfg.base_url or "", cfg.health_path)
        if cfg.runner == "docker":
            # docker SDK only needed here; DockerServer sweeps a crashed session's leftovers on start
            from pytest_mxfp4.servers.docker import DockerServer

            return DockerServer(cfg, session_id=self.session_id, log_dir=logs, base_dir=self.base_dir,
                                progress=self.progress)
        return ProcessServer(cfg, log_dir=logs, base_dir=self.base_dir, progress=self.progress)

    def start(self, cfg: ServerConfig) -> RunningServer:
        """Start `cfg` (once per session; the caller caches). Raises PerfUserError."""
        record = self.results.servers[cfg.name]
        server = self.make_server(cfg)
        with _LIVE_LOCK:
            _LIVE.add(server)
        try:
            info = server.start()
            record.info = info
            self.check_observed(cfg, server, record)
            baseline = self.load_baseline(cfg)
            if baseline is not None:
                self._judged_by[cfg.name] = baseline
            w = self.matrix.workloads
            client = EngineClient(cfg.name, info.base_url, cfg.model_name, engine=cfg.engine, api=cfg.api,
                                  total_timeout_s=w.request_timeout_s, idle_timeout_s=w.idle_timeout_s)
            version = client.server_version() or (record.observed.vllm_version if record.observed else None)
            if version:
                record.info.details["engine_version"] = version
            self.check_context(cfg, client, record)
        except PerfUserError as e:
            record.error = str(e)
            self.stop(server)
            raise
        except BaseException:
            self.stop(server)
            raise
        return RunningServer(cfg, server, info, client, baseline)

    def check_observed(self, cfg: ServerConfig, server: Server, record: ServerRecord) -> None:
        """Which backend really ran, from the server log; `expect:` mismatches fail the config."""
        text = server.log_text()
        if isinstance(server, ExternalServer):
            if cfg.expect:
                record.notes.append("expect: not checked: the server was started elsewhere and its log is not visible")
            return
        from pytest_mxfp4.observe.logs import ENGINES as OBSERVED_ENGINES  # engines whose logs we can read

        if not text or cfg.engine not in OBSERVED_ENGINES:
            if cfg.expect:
                raise ServerError(f"server {cfg.name!r}: `expect:` is set but no server log is available to check it")
            return
        from pytest_mxfp4.observe.facts import check_expectations
        from pytest_mxfp4.observe.logs import observe_text

        facts = observe_text(text, engine=cfg.engine)
        record.observed = facts
        mismatches = check_expectations(cfg.expect, facts) if cfg.expect else []
        if mismatches:
            lines = "\n".join(f"  - {m.message}" for m in mismatches)
            raise ServerError(f"server {cfg.name!r} did not run what its config expects:\n{lines}")

    def check_context(self, cfg: ServerConfig, client: EngineClient, record: ServerRecord) -> None:
        """Every case must fit the server's context length, where it says (vLLM: max_model_len)."""
        from pytest_mxfp4.measure.prompts import check_fits, context_length

        known = []
        for path in ("/v1/models", "/props"):  # /props: llama-server's per-slot context
            try:
                r = client.http.get(path)
                ctx = context_length(r.json(), cfg.model_name) if r.status_code == 200 else None
            except Exception:  # no such endpoint, not JSON: the length is simply unknown
                ctx = None
            if ctx:
                known.append(ctx)
        ctx = min(known) if known else None
        if ctx:
            record.info.details["context_length"] = ctx
        check_fits(cfg.name, self.matrix.workloads.cases, ctx)

    def check_identity(self, running: RunningServer, when: str) -> None:
        """The server we started is alive and is the one answering; else the
        case fails with its exit code and log tail."""
        problem = running.server.identity_problem()
        if problem:
            record = self.results.servers[running.config.name]
            first = problem.splitlines()[0]
            if first not in record.notes:
                record.notes.append(f"{when}: {first}")
            record.error = record.error or first
            raise ServerError(f"{when}: {problem}")

    def stop(self, server: Server) -> None:
        try:
            server.stop()
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(server)

    # -- baselines ---------------------------------------------------------------

    def load_baseline(self, cfg: ServerConfig) -> BaselineFile | None:
        name = self.controller.base_of.get(cfg.name, cfg.name)  # an A/B head arm: its base's baseline
        try:
            return self.store.load(self.environment.hardware_key, cfg.model_name, name)
        except BaselineError:
            raise

    def _baseline_of(self, base: str) -> BaselineFile | None:
        """The baseline a base config is judged by: as loaded at its start, else the store's."""
        arms = self.controller.arms
        return self._judged_by.get(base) or (self.load_baseline(arms[base]) if arms.get(base) else None)

    def judged_baselines(self) -> dict[str, BaselineFile]:
        """Server name -> the baseline this session judged it by (as loaded)."""
        return dict(self._judged_by)

    def current_baselines(self) -> dict[str, BaselineFile]:
        """Server name -> what is stored now (after any update), for this machine."""
        out = {}
        for cfg in self.matrix.servers:  # not A/B head arms: they have no baseline of their own
            bf = self.store.load(self.environment.hardware_key, cfg.model_name, cfg.name)
            if bf is not None:
                out[cfg.name] = bf
        return out

    def update_baselines(self) -> list[Path]:
        written = []
        for name, record in self.results.servers.items():
            if self.controller.base_of.get(name, name) != name:
                continue  # an A/B head arm is not this machine's baseline
            measured = {r.key: (r.unit, r.samples) for r in self.results.for_server(name) if r.samples and not r.error}
            if not measured:
                continue
            engine = BaselineEngine.of_server(record.info.details if record.info else {}, record.runner)
            starts = {key: [m for _, m in sorted(self.controller.start_means.get((name, *key.split("/", 1)), {}).items())]
                      for key in measured}
            written.append(self.store.update(self.environment.hardware_key, record.model, name, measured,
                                             engine=engine, environment=self._baseline_env(record),
                                             starts={k: v for k, v in starts.items() if v}))
        return written

    def _baseline_env(self, record: ServerRecord) -> BaselineEnvironment:
        return BaselineEnvironment.of_run(self.results.environment, record.info.command if record.info else [],
                                          record.info.env if record.info else {}, record.observed)

    # -- measuring ---------------------------------------------------------------

    def run_case(self, running: RunningServer, case: Case, seed: int | None = None, slot=None) -> list[MetricResult]:
        if slot is not None and self.controller.several_starts:
            return self.run_case_on_start(running, case, slot, seed)
        self.check_identity(running, f"before {case.id}")
        runner = CaseRunner(running.client, case, self.matrix.workloads, seed=seed, gpu_sampler=self.gpu_sampler,
                            progress=self.progress)
        record = self.results.servers[running.config.name]
        results = measure_and_judge(runner, self.matrix, running.baseline,
                                    incomparable_reason(running.baseline, record.observed))
        self.results.metrics.extend(results)
        self.results.case_runs.append(runner.result)
        record = self.results.servers[running.config.name]
        if runner.result.system_fingerprint:
            record.info.details["system_fingerprint"] = runner.result.system_fingerprint
        for note in runner.result.notes:
            if note not in record.notes:
                record.notes.append(note)
        self.check_identity(running, f"after {case.id}")
        return results

    # -- several starts per config: measure one start, hand it to the controller ---------

    def run_case_on_start(self, running: RunningServer, case: Case, slot, seed: int | None = None
                          ) -> list[MetricResult]:
        """Measure `case` on this start (samples tagged with the start index);
        judge the config (or the A/B pair) once its last start is measured."""
        from pytest_mxfp4.measure.disturbance import Window

        self.check_identity(running, f"before {case.id}")
        runner = CaseRunner(running.client, case, self.matrix.workloads, seed=seed, gpu_sampler=self.gpu_sampler,
                            progress=self.progress)
        with Window(running.server.process_groups() or ()) as window:
            runner.measure(self.matrix.workloads.runs)
        run = runner.result
        for smp in run.samples:
            smp.start = slot.start
        for rd in run.rounds:
            rd.start = slot.start
        self.results.case_runs.append(run)
        record = self.results.servers[running.config.name]
        if run.system_fingerprint:
            record.info.details["system_fingerprint"] = run.system_fingerprint
        for note in run.notes:
            if note not in record.notes:
                record.notes.append(note)
        name = running.config.name
        disturbance = self.check_window(running, case, run,
                                        window.other_cores if running.server.process_groups() else None)
        self.check_identity(running, f"after {case.id}")
        return self.controller.record_start(name, case, slot.start, run, disturbance)

    def check_window(self, running: RunningServer, case: Case, run, other_cores: float | None) -> str | None:
        """Why this (start, case) was disturbed while it measured, or None."""
        from pytest_mxfp4.measure.disturbance import judge_window

        gpu_others = None
        if self.gpu_sampler is not None and running.config.requires.accelerator == "nvidia":
            gpu_others = self._gpu_other_pids(running)
        d = judge_window(other_cores_busy=other_cores,
                         flags_per_sample=[smp.flags for smp in run.samples if smp.error is None],
                         gpu_other_pids=gpu_others)
        slot = getattr(running, "slot", None)
        self.controller.windows.append(StartWindow(
            server=running.config.name, start=slot.start if slot else 0, case=case.id, disturbed=d.text() or None,
            facts=dict(d.facts), kept=bool(d.disturbed and not self.matrix.workloads.leave_out_disturbed)))
        return d.text() or None

    def _gpu_other_pids(self, running: RunningServer) -> list[int]:
        nvml = self.gpu_sampler.nvml
        ours = set()
        for g in running.server.process_groups() or ():
            from pytest_mxfp4.servers.process import group_pids

            ours |= group_pids(g)
        out: list[int] = []
        for h in self.gpu_sampler.handles.values():
            try:
                procs = nvml.nvmlDeviceGetComputeRunningProcesses(h) or []
            except Exception:  # not supported here: that sign only
                continue
            out += [p.pid for p in procs if getattr(p, "pid", None) not in ours]
        return out

    # -- the run as a whole ------------------------------------------------------

    def gate_problems(self, *, ci: bool, first_run: bool, allow_partial: bool) -> tuple[list[str], list[str]]:
        """(errors, warnings) about the run as a whole, each one line. An error
        makes the run non-zero: a gate that judged nothing must not pass."""
        errors: list[str] = []
        warns: list[str] = []
        records = self.results.servers
        started = [r for r in records.values() if r.info and not r.skipped]
        skipped = [r for r in records.values() if r.skipped]
        failed = [r for r in records.values() if r.error]
        fail_gated = [m for m in self.results.metrics if m.gate == "fail"]
        measured = [m for m in fail_gated if m.samples and not m.error]
        if not measured:
            why = []
            if skipped:
                why.append(f"{len(skipped)} server config(s) skipped ({skipped[0].name}: {skipped[0].skipped})")
            if failed:
                why.append(f"{len(failed)} failed to start ({failed[0].name})")
            if fail_gated and not measured:
                why.append(f"every fail-gated metric errored ({fail_gated[0].server} {fail_gated[0].key}: "
                           f"{fail_gated[0].error or 'no samples'})")
            gated_in_matrix = any(self.matrix.gates.policy(c, m) == "fail"
                                  for c in self.matrix.workloads.cases for m in c.metrics)
            if not gated_in_matrix:
                why.append(f"no case of {self.matrix.path} is fail-gated (gates:)")
            elif not fail_gated and started and not self.results.metrics:
                why.append("no case produced a result (every perf test errored)")
            msg = ("no fail-gated metric was measured, so nothing was judged: " + "; ".join(why or ["nothing ran"]))
            (warns if allow_partial else errors).append(
                msg + (" (--perf-allow-partial: a warning only)" if allow_partial else
                       "; pass --perf-allow-partial for a deliberately partial run"))
        judged_any = any(name in self._judged_by for name in (r.name for r in started))
        judged_any = judged_any or any(e.verdict not in (None, "error") for e in self.controller.ab)  # A/B: arm vs arm
        if started and not judged_any:
            msg = (f"NO BASELINE for any server of this run on {self.environment.hardware_key} "
                   f"(looked in {self.store.root}); every metric is no-baseline and nothing was judged")
            if ci and not first_run:
                errors.append(msg + "; in CI this fails unless --perf-first-run (or --perf-update-baselines) "
                              "says it is the first run")
            else:
                warns.append(msg + ("" if first_run else "; store some with --perf-update-baselines"))
        return errors, warns

