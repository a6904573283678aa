"""One perf session: matrix + environment + baselines + the servers it started.

Plain Python, usable without pytest; `plugin.py` only wires it to hooks.
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
from pytest_mxfp4.stats.samples import StatsError
from pytest_mxfp4.run.judge import incomparable_reason, measure_and_judge
from pytest_mxfp4.measure.client import EngineClient
from pytest_mxfp4.measure.runner import CaseRunner
from pytest_mxfp4.formats.samples import flag_counts
from pytest_mxfp4.formats.results import (ABEntry, MetricResult, SecondOpinion, ServerRecord, SessionResults,
                                          StartsRecord, StartWindow)
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
        from pytest_mxfp4.run.ab import head_config, plan_starts

        self.results = SessionResults(matrix=self.matrix.name, environment=self.environment.record())
        # the run's own id: run-log records of two runs started in one second stay two
        self.results.environment.run_id = self.session_id
        if self.base_url:
            self.restarts = 1  # a server started elsewhere cannot be restarted
        self.arms: dict[str, ServerConfig] = {s.name: s for s in self.matrix.servers}
        self.base_of: dict[str, str] = {s.name: s.name for s in self.matrix.servers}
        runnable = [s.name for s in self.matrix.servers if not s.pending]
        if self.ab_overrides:
            for s in self.matrix.servers:
                if s.pending:
                    continue
                h = head_config(s, tuple(self.ab_overrides))
                self.arms[h.name] = h
                self.base_of[h.name] = s.name
        from pytest_mxfp4.stats import starts as startstats

        w = self.matrix.workloads
        self.first_look = self.restarts
        self.max_starts = max(self.restarts, self.max_restarts or self.restarts)
        if self.base_url:
            self.max_starts = 1
        # the one sequential rule (startstats.next_action) runs against this budget
        self.budget = startstats.Budget(max_starts=self.max_starts, max_minutes=w.max_restart_minutes)
        multi = self.max_starts > 1 or bool(self.ab_overrides)
        # spare starts per arm, run only to replace a start disturbed while it measured
        self.spares = w.max_replacements if multi and not self.base_url else 0
        self.slots = plan_starts(runnable, self.max_starts + self.spares, bool(self.ab_overrides),
                                 first_look=self.first_look)
        self.look: dict[str, int] = {}  # base config -> starts per arm its current look needs
        self.slot_by_id = {sl.id: sl for sl in self.slots}
        # (arm, case id) -> start -> why that start's measurement is left out
        self.excluded: dict[tuple[str, str], dict[int, str]] = {}
        # (arm, case id, metric) -> the latest start-level comparison (what next_action reads)
        self.start_comparisons: dict[tuple[str, str, str], object] = {}
        self.skipped_starts: set[tuple[str, int]] = set()
        # (server, case id, metric) -> {start index: start mean}
        self.start_means: dict[tuple[str, str, str], dict[int, float]] = {}
        self.start_values: dict[tuple[str, str], dict[int, list]] = {}  # (server, case id) -> start -> samples
        self.disturbed: dict[str, list[str]] = {}  # server -> reasons
        self.windows: list[StartWindow] = []  # one per (start, case) measured: what its window saw
        self.start_errors: dict[str, list[str]] = {}  # server -> why a start failed
        self.judged: dict[tuple[str, str], int] = {}  # (base server, case id) -> starts per arm it was judged on
        self.ab: list[ABEntry] = []  # one entry per (config, case, metric) of an A/B run
        self.preflight: list[StartWindow] = []
        self.start_seconds: list[float] = []  # wall time of each start (set-up to stop)
        self.budget_notes: list[str] = []
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
        for s in self.arms.values():
            self.results.servers[s.name] = ServerRecord(name=s.name, runner=s.runner, model=s.model_name,
                                                        description=s.description)
        if self.max_starts > 1 or self.ab_overrides:
            self.results.starts = StartsRecord(
                restarts=self.restarts, max_restarts=self.max_starts, replacements=self.spares,
                order=[f"{sl.server}#{sl.start}" for sl in self.slots],
                ab_head=[o.text() for o in self.ab_overrides])
        elif self.base_url:
            self.results.starts = StartsRecord(restarts=1, between_start="from the baseline history")
        if self.results.starts is not None:  # the record holds the session's own lists, filled as it runs
            st = self.results.starts
            st.ab, st.preflight, st.windows = self.ab, self.preflight, self.windows
            st.start_errors, st.budget_notes = self.start_errors, self.budget_notes

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
            version = client.server_version() or record.observed.get("vllm_version")
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
        record.observed = facts.to_dict()
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
        name = getattr(self, "base_of", {}).get(cfg.name, cfg.name)  # an A/B head arm: its base's baseline
        try:
            return self.store.load(self.environment.hardware_key, cfg.model_name, name)
        except BaselineError:
            raise

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
            if self.base_of.get(name, name) != name:
                continue  # an A/B head arm is not this machine's baseline
            measured = {r.key: (r.unit, r.samples) for r in self.results.for_server(name) if r.samples and not r.error}
            if not measured:
                continue
            engine = BaselineEngine.of_server(record.info.details if record.info else {}, record.runner)
            starts = {key: [m for _, m in sorted(self.start_means.get((name, *key.split("/", 1)), {}).items())]
                      for key in measured}
            written.append(self.store.update(self.environment.hardware_key, record.model, name, measured,
                                             engine=engine, environment=self._baseline_env(record),
                                             starts={k: v for k, v in starts.items() if v}))
        return written

    def _baseline_env(self, record: ServerRecord) -> BaselineEnvironment:
        return BaselineEnvironment.of_run(self.results.environment, record.info.command if record.info else [],
                                          record.info.env if record.info else {}, record.observed or None)

    # -- measuring ---------------------------------------------------------------

    def run_case(self, running: RunningServer, case: Case, seed: int | None = None, slot=None) -> list[MetricResult]:
        if slot is not None and (self.max_starts > 1 or self.ab_overrides):
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

    # -- several starts per config --------------------------------------------------

    def note_disturbed(self, server: str, reason: str) -> None:
        self.disturbed.setdefault(server, []).append(reason)
        record = self.results.servers[server]
        if reason not in record.notes:
            record.notes.append(f"disturbed start: {reason}")

    def note_start_failed(self, server: str, start: int, why: str) -> None:
        self.start_errors.setdefault(server, []).append(f"start {start}: {why.splitlines()[0]}")

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
        return self.record_start(name, case, slot.start, run, disturbance)

    def record_start(self, name: str, case: Case, start: int, run, disturbance: str | None = None
                     ) -> list[MetricResult]:
        """The controller's bookkeeping for one measured (start, case): keep
        its start means, leave it out if disturbed, and judge the config (or
        the A/B pair) once the look has its starts. No server here: a
        simulated session drives the same path (tests/test_one_rule.py)."""
        from pytest_mxfp4.run.judge import judge_metric

        self.start_values.setdefault((name, case.id), {})[start] = run
        if disturbance:
            self.note_disturbed(name, f"start {start} {case.id}: {disturbance}")
            if self.matrix.workloads.leave_out_disturbed:
                self.excluded.setdefault((name, case.id), {})[start] = disturbance
            if self.progress:
                self.progress(f"[{name} start {start}] {case.id} disturbed: {disturbance}; "
                              + ("left out" + (" (a spare start replaces it)" if self.spares else "")
                                 if self.matrix.workloads.leave_out_disturbed
                                 else "kept (workloads.leave_out_disturbed: false)"))
        provisional = []
        for metric in case.metrics:
            values = run.values(metric)
            if values:
                self.start_means.setdefault((name, case.id, metric), {})[start] = sum(values) / len(values)
            if metric == case.primary_metric or values:
                # this start's own numbers, not judged (gate off): progress only
                r = judge_metric(name, case, metric, values, None, self.matrix.gates, (), run)
                r.gate = "off"
                provisional.append(r)
        base = self.base_of.get(name, name)
        if self.ready_to_judge(base, case):
            return self.judge_group(base, case)
        return provisional

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
        self.windows.append(StartWindow(server=running.config.name, start=slot.start if slot else 0, case=case.id,
                                        disturbed=d.text() or None, facts=dict(d.facts),
                                        kept=bool(d.disturbed and not self.matrix.workloads.leave_out_disturbed)))
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

    def look_size(self, base: str) -> int:
        """Starts per arm the current look of this config needs."""
        return self.look.get(base, self.first_look)

    def clean_starts(self, arm: str, case_id: str) -> dict[int, object]:
        """start -> CaseRun of the starts of `arm` that measured `case_id` undisturbed."""
        left_out = self.excluded.get((arm, case_id), {})
        # a start whose samples were all set aside gave no number: it counts as a start to replace
        primary = self._case(case_id).primary_metric
        measured = self.start_means.get((arm, case_id, primary), {})
        return {i: r for i, r in self.start_values.get((arm, case_id), {}).items()
                if i not in left_out and i in measured}

    def _arms(self, base: str) -> list[str]:
        return [n for n, b in self.base_of.items() if b == base]

    def _slots_left(self, arm: str, case_id: str) -> bool:
        tried = set(self.start_values.get((arm, case_id), {})) | self._failed_starts(arm)
        return any(sl.server == arm and sl.start not in tried and (arm, sl.start) not in self.skipped_starts
                   for sl in self.slots)

    def _needs(self, arm: str, n: int) -> bool:
        base = self.base_of.get(arm, arm)
        return any(self.judged.get((base, c.id), 0) < n and len(self.clean_starts(arm, c.id)) < n
                   for c in self.matrix.cases_for(self.arms[arm]))

    def slot_skip_reason(self, slot) -> str | None:
        """None: run this start; else why it is not needed. The look's starts
        run first (a disturbed one replaced by a spare); once the look is
        judged, the sequential rule (startstats.next_action) says whether
        the budget's next block of starts runs."""
        arm = slot.server
        base = self.base_of.get(arm, arm)
        n = self.look_size(base)
        if self._needs(arm, n):
            if slot.start < n or not self.budget.max_minutes or not self.start_seconds:
                return None
            # a replacement start costs time like any other: the minutes budget holds
            used = sum(self.start_seconds) / 60.0
            if used + used / len(self.start_seconds) <= self.budget.max_minutes:
                return None
            note = (f"{base}: a replacement start (~{used / len(self.start_seconds):.1f} min) would pass the "
                    f"{self.budget.max_minutes:g}-minute budget")
            if note not in self.budget_notes:
                self.budget_notes.append(note)
            self.skipped_starts.add((arm, slot.start))
            return note
        looked = all(self.judged.get((base, c.id), 0) >= n for c in self.matrix.workloads.cases
                     if any(self.start_values.get((x, c.id)) for x in self._arms(base)))
        if looked and self.next_action(base) == "more":
            self.look[base] = n + self.budget.step(n)
            if self._needs(arm, self.look[base]):
                return None
        self.skipped_starts.add((arm, slot.start))
        over = [x for x in self.budget_notes if x.startswith(f"{base}:")]
        if over:
            return over[-1]
        if slot.start >= self.max_starts:
            return f"{arm}: spare start {slot.start + 1} not needed (no disturbed start to replace)"
        return (f"{arm}: decided after {self.look_size(base)} start(s) per arm; "
                f"start {slot.start + 1} of the budget not needed")

    def next_action(self, base: str) -> str:
        """The sequential rule on this config's fail-gated start-level
        comparisons (the head arm's in an A/B run): "more" or "stop"."""
        from pytest_mxfp4.stats import starts as startstats
        from pytest_mxfp4.stats.samples import Verdict

        names = set(self._arms(base))
        head = any(x != base for x in names)
        comps = [sc for (arm, case_id, metric), sc in self.start_comparisons.items()
                 if arm in names and (not head or arm != base)
                 and self.matrix.gates.policy(self._case(case_id), metric) == "fail"]
        used = sum(self.start_seconds) / 60.0
        mean = used / len(self.start_seconds) if self.start_seconds else 0.0
        n = self.look_size(base)
        block = len(names) * self.budget.step(n) * mean
        actions = [startstats.next_action(sc, self.budget, used, block) for sc in comps]
        if "more" in actions:
            return "more"
        if self.budget.max_minutes and any(sc.verdict is Verdict.INCONCLUSIVE for sc in comps) \
                and self.budget.step(n) and used + block > self.budget.max_minutes:
            note = (f"{base}: {self.budget.step(n)} more start(s) per arm (~{block:.1f} min) would pass the "
                    f"{self.budget.max_minutes:g}-minute budget")
            if note not in self.budget_notes:
                self.budget_notes.append(note)
        return "stop"

    def _case(self, case_id: str) -> Case:
        return next(c for c in self.matrix.workloads.cases if c.id == case_id)

    def ready_to_judge(self, base: str, case: Case) -> bool:
        """Every arm has the look's clean starts of this case, or no start left to get them."""
        n = self.look_size(base)
        if self.judged.get((base, case.id), 0) >= n:
            return False
        names = self._arms(base)
        for x in names:
            if len(self.clean_starts(x, case.id)) < n and self._slots_left(x, case.id):
                return False
        return any(self.start_values.get((x, case.id)) for x in names)

    def _failed_starts(self, name: str) -> set[int]:
        out = set()
        for line in self.start_errors.get(name, []):
            try:
                out.add(int(line.split(":", 1)[0].split()[1]))
            except (IndexError, ValueError):
                pass
        return out

    def floor_pct(self, case: Case, metric: str) -> float:
        """The gate's practical floor (%), else the metric's default (`Gates.rule`)."""
        floor = self.matrix.gates.rule(case, metric).floor_pct
        if floor is None:
            raise PerfUserError(f"{self.matrix.path}: metric {metric!r} of case {case.id} has no default floor; "
                                f"give one under gates.floors")
        return floor

    def noise_prior(self, name: str):
        """The stated fallback noise of a config's base arm (`Matrix.start_prior`)."""
        return self.matrix.start_prior(self.base_of.get(name, name))

    def _clean_means(self, arm: str, case_id: str, metric: str) -> dict[int, float]:
        left_out = self.excluded.get((arm, case_id), {})
        return {i: m for i, m in self.start_means.get((arm, case_id, metric), {}).items() if i not in left_out}

    def _left_out_words(self, arms: list[str], case_id: str) -> str | None:
        parts = [f"{a} start {i} ({why})" for a in arms
                 for i, why in sorted(self.excluded.get((a, case_id), {}).items())]
        return "; ".join(parts[:3]) + (f" and {len(parts) - 3} more" if len(parts) > 3 else "") if parts else None

    def _outliers(self, base: str, head: str, case_id: str, metric: str, sc) -> list[str]:
        """Starts far outside the pooled noise: shown, never silent."""
        from pytest_mxfp4.stats import starts as startstats

        out = []
        for arm in (base, head):
            means = self._clean_means(arm, case_id, metric)
            idx = sorted(means)
            for k in startstats.outlier_starts([means[i] for i in idx], sc.noise.cv):
                out.append(f"{arm} start {idx[k]} ({means[idx[k]]:.4g})")
        return out

    def _baseline_starts(self, bf: BaselineFile | None, key: str) -> tuple[list[float], tuple]:
        """(the baseline's start means, (between-start CV, df) of its history)."""
        if bf is None or key not in bf.metrics:
            return [], ()
        return bf.metrics[key].start_evidence()

    def judge_group(self, base: str, case: Case) -> list[MetricResult]:
        """The verdict of one case of one config from its start means: against
        the stored baseline's starts, or (A/B) head arm against base arm."""
        from pytest_mxfp4.run.ab import judge_starts
        from pytest_mxfp4.run.judge import incomparable_reason
        from pytest_mxfp4.stats.samples import Summary, Verdict

        self.judged[(base, case.id)] = self.look_size(base)
        names = self._arms(base)
        # a second look replaces the first one's results of this group
        self.results.metrics = [r for r in self.results.metrics if not (r.server in names and r.case.id == case.id)]
        self.ab[:] = [e for e in self.ab if not (e.server == base and e.case == case.id)]  # the record shares it
        looks = self.budget.looks(self.first_look)
        head = next((n for n in names if n != base), None)
        bf = self._judged_by.get(base) or (self.load_baseline(self.arms[base]) if self.arms.get(base) else None)
        out: list[MetricResult] = []
        for name in names:
            runs = self.start_values.get((name, case.id), {})
            record = self.results.servers[name]
            incomp = incomparable_reason(bf, record.observed) if bf else None
            for metric in case.metrics:
                key = f"{case.id}/{metric}"
                means_d = self._clean_means(name, case.id, metric)
                values = [v for i in sorted(runs) for v in runs[i].values(metric)]
                if metric != case.primary_metric and not values:
                    continue
                gate = self.matrix.gates.policy(case, metric)
                if head and name == base:
                    gate = "warn" if gate == "fail" else gate  # the stored baseline: a second opinion only
                r = MetricResult(server=name, case=case, metric=metric, gate=gate, samples=values)
                r.runs_to_verdict = len(values)
                r.flagged_samples = sum(len(x.flagged) for x in runs.values())
                r.flags = flag_counts([smp for x in runs.values() for smp in x.flagged])
                r.error_samples = sum(len(x.errors) for x in runs.values())
                floor = self.floor_pct(case, metric)
                hib = r.higher_is_better
                disturbed = self._left_out_words([name], case.id)
                failed = self.start_errors.get(name, [])
                if not values or not means_d:
                    errs = [e for x in runs.values() for e in x.errors]
                    r.error = ("no start measured this case" + (f" ({failed[0]})" if failed else "")
                               if not self.start_values.get((name, case.id)) else
                               f"every start of this case was disturbed ({disturbed})" if disturbed else
                               f"no sample of any start gave a number ({errs[0]})" if errs else
                               "no sample of any start gave a trusted number (every one flagged)")
                    out.append(r)
                    continue
                r.summary = Summary.from_samples(values, metric=key)
                b_means, hist = self._baseline_starts(bf, key)
                if b_means and not incomp:
                    r.baseline = bf.metrics[key].stats()
                    try:
                        r.comparison, sc = judge_starts(
                            b_means, [means_d[i] for i in sorted(means_d)], higher_is_better=hib, floor_pct=floor,
                            history_cvs=hist, label=key, what_base="baseline", disturbed=disturbed,
                            looks=looks, prior=self.noise_prior(name), arms_label="baseline and this run's starts",
                            max_regression_pct=self.matrix.gates.rule(case, metric).max_regression_pct)
                        self.start_comparisons[(name, case.id, metric)] = sc
                    except StatsError as e:
                        r.error = str(e)
                r.incomparable = incomp if b_means else None
                out.append(r)
        if head:
            out = self._judge_ab(base, head, case, out, bf, looks)
        self.results.metrics.extend(out)
        return out

    def _judge_ab(self, base: str, head: str, case: Case, out: list[MetricResult], bf,
                  looks: int = 1) -> list[MetricResult]:
        from pytest_mxfp4.run.ab import judge_starts

        by = {(r.server, r.metric): r for r in out}
        for metric in case.metrics:
            rb, rh = by.get((base, metric)), by.get((head, metric))
            if rh is None and rb is None:
                continue
            key = f"{case.id}/{metric}"
            mb = self._clean_means(base, case.id, metric)
            mh = self._clean_means(head, case.id, metric)
            entry = ABEntry(server=base, head=head, case=case.id, metric=metric,
                            base_starts=[mb[i] for i in sorted(mb)], head_starts=[mh[i] for i in sorted(mh)],
                            overrides=[o.text() for o in self.ab_overrides])
            if rh is None:
                continue
            # the head arm's verdict is the A/B; its comparison with the stored baseline is a second opinion
            second = rh.comparison
            rh.baseline = None
            rh.comparison = None
            rh.gate = self.matrix.gates.policy(case, metric)
            if not mb or not mh:
                name_ = base if not mb else head
                failed = self.start_errors.get(name_, [])
                arm = "base" if not mb else "head"
                left_out = self._left_out_words([name_], case.id)
                why = (f"every start of the {arm} arm was left out as disturbed ({left_out})"
                       if left_out and self.start_means.get((name_, case.id, metric)) else
                       f"the {arm} arm measured no start" + (f" ({failed[0]})" if failed else ""))
                rh.error = f"A/B: {why}; the other arm's results are kept"
                entry.verdict, entry.error = "error", rh.error
                entry.disturbed = self._left_out_words([base, head], case.id)
            else:
                from pytest_mxfp4.stats import starts as startstats

                disturbed = self._left_out_words([base, head], case.id)
                floor = self.floor_pct(case, metric)
                b_means, hist = self._baseline_starts(bf, key)
                stored = ((startstats.NoiseSource("stored baseline starts", startstats.spread_of(b_means)),)
                          if len(b_means) > 1 else ())
                try:
                    comp, sc = judge_starts(list(entry.base_starts), list(entry.head_starts),
                                            higher_is_better=rh.higher_is_better, floor_pct=floor,
                                            history_cvs=hist, label=key, what_base="base-arm",
                                            disturbed=disturbed, looks=looks, prior=self.noise_prior(base),
                                            extra=stored,
                                            max_regression_pct=self.matrix.gates.rule(case, metric).max_regression_pct)
                    self.start_comparisons[(head, case.id, metric)] = sc
                    rh.comparison = comp
                    from pytest_mxfp4.stats.samples import BaselineStats
                    rh.baseline = BaselineStats.from_samples(rb.samples) if rb and rb.samples else None
                    from pytest_mxfp4.run.ab import noise_words

                    measured = sc.noise.measured_cv
                    _update(entry, verdict=comp.verdict.value, delta_pct=comp.delta_pct, ci_low_pct=comp.ci_low_pct,
                                 ci_high_pct=comp.ci_high_pct, tolerance_pct=comp.tolerance_pct,
                                 p_value=comp.p_value, looks=looks,
                                 between_start_cv_pct=None if measured is None else 100 * measured,
                                 noise_cv_pct=100 * sc.noise.cv, noise_df=sc.noise.df,
                                 noise=noise_words(sc.noise), calibrating=sc.noise.calibrating,
                                 worst_pct=-100 * sc.worst, threshold_pct=100 * sc.threshold,
                                 starts_to_decide=startstats.starts_to_decide(sc)
                                 if comp.verdict.value == "inconclusive" else None,
                                 outliers=self._outliers(base, head, case.id, metric, sc),
                                 reason=comp.reason, disturbed=disturbed)
                except StatsError as e:
                    rh.error = str(e)
                    entry.verdict, entry.error = "error", str(e)
            if second is not None:
                entry.baseline_second_opinion = SecondOpinion(second.verdict.value, second.delta_pct, second.reason)
            entry.gate = rh.gate
            self.ab.append(entry)
        return out

    def finish_starts(self) -> list[MetricResult]:
        """Judge every (config, case) whose last start never ran (a start that
        failed); returns the new results."""
        out = []
        for case in self.matrix.workloads.cases:
            for base in {b for b in self.base_of.values()}:
                if self.judged.get((base, case.id), 0) >= self.look_size(base):
                    continue
                names = self._arms(base)
                if any(self.start_values.get((n, case.id)) for n in names):
                    out += self.judge_group(base, case)
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
        judged_any = judged_any or any(e.verdict not in (None, "error") for e in self.ab)  # A/B: arm vs arm
        if started and not judged_any:
            msg = (f"NO BASELINE for any server of this run on {self.environment.hardware_key} "
                   f"(looked in {self.store.root}); every metric is no-baseline and nothing was judged")
            if ci and not first_run:
                errors.append(msg + "; in CI this fails unless --perf-first-run (or --perf-update-baselines) "
                              "says it is the first run")
            else:
                warns.append(msg + ("" if first_run else "; store some with --perf-update-baselines"))
        return errors, warns


def _update(record, **values) -> None:
    """Set several fields of a record at once (each name must be one of its fields)."""
    for name, value in values.items():
        if not hasattr(record, name):
            raise AttributeError(f"{type(record).__name__} has no field {name!r}")
        setattr(record, name, value)
