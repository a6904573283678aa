"""Matrix file (YAML) -> typed, validated objects.

Every validation error names the file and the dotted field path, says what
was expected and what was found, so a user never needs a traceback.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from pytest_mxfp4.errors import ConfigError

ENGINES = ("vllm", "llama.cpp", "openai")
RUNNERS = ("process", "docker", "external")
APIS = ("completions", "chat")
GATE_POLICIES = ("fail", "warn", "off")
LATENCY_MODES = ("api", "generation", "none")
PROMPT_SOURCES = ("random", "text")  # measure/prompts.py: random words | natural text (the shipped corpus)
ACCELERATORS = ("cpu", "nvidia", "any")

@dataclass(frozen=True)
class Metric:
    """One measured quantity. `kinds`: the workload kinds that report it;
    `primary_for`: the kind whose bare case id ("tg32") means this metric in
    `gates` and `targets`."""

    name: str
    unit: str
    higher_is_better: bool
    kinds: tuple[str, ...]
    primary_for: str | None = None


# The one metric table; order within a kind is the report order.
METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("pp_tps", "tok/s", True, ("prefill",), primary_for="prefill"),
    Metric("tg_tps", "tok/s", True, ("decode",), primary_for="decode"),
    Metric("ttfr_ms", "ms", False, ("prefill",)),
    Metric("est_ppt_ms", "ms", False, ("prefill",)),
    Metric("e2e_ttft_ms", "ms", False, ("prefill", "decode")),
    # speculative decoding only (a server that drafts nothing reports neither)
    Metric("accept_pct", "%", True, ("decode",)),
    Metric("accept_len", "tok", True, ("decode",)),
    # N concurrent streams (a decode case at concurrency N > 1): generated
    # tokens of all N streams / wall from the first request sent to the last
    # token, one value per round of N streams (measure/concurrent.py)
    Metric("agg_tps", "tok/s", True, ("concurrent",)),
)}


def metrics_for(kind: str) -> tuple[str, ...]:
    """Metric names of a workload kind, the primary one first."""
    names = [m.name for m in METRICS.values() if kind in m.kinds]
    return tuple(sorted(names, key=lambda n: METRICS[n].primary_for != kind))


PREFILL_METRICS = metrics_for("prefill")
DECODE_METRICS = metrics_for("decode")
# Views of METRICS kept for callers that only need one column.
METRIC_UNITS = {m.name: m.unit for m in METRICS.values()}
HIGHER_IS_BETTER = {m.name: m.higher_is_better for m in METRICS.values()}

CONCURRENT_METRICS = metrics_for("concurrent")
# tg32, pp2048@d4096, tg32@c4 (4 concurrent streams), tg32@d4096@c4
CASE_ID_RE = re.compile(r"(pp|tg)(\d+)(?:@d(\d+))?(?:@c(\d+))?")


@dataclass(frozen=True)
class Requirements:
    """What hardware a server config needs. A machine skips what it can't run."""

    accelerator: str = "any"  # cpu | nvidia | any
    sm: str | None = None  # e.g. "12.1" for GB10; None = any compute capability
    min_gpus: int = 0

    def describe(self) -> str:
        if self.accelerator == "nvidia":
            sm = f" SM {self.sm}" if self.sm else ""
            n = f" x{self.min_gpus}" if self.min_gpus > 1 else ""
            return f"NVIDIA GPU{sm}{n}"
        return self.accelerator


@dataclass(frozen=True)
class DockerSpec:
    """How to run a server config as a container."""

    image: str
    gpus: str | int | None = None  # "all", a count, or None (CPU)
    shm_size: str | None = "1g"
    ipc_mode: str | None = None
    cpus: float | None = None  # CPU budget; leaves the client room on small boxes
    volumes: dict[str, str] = field(default_factory=dict)  # host -> "container[:ro]"
    network: str = "host"


@dataclass(frozen=True)
class ServerConfig:
    name: str
    engine: str = "vllm"
    runner: str = "process"
    model: str = ""
    served_model_name: str | None = None
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    health_path: str = "/health"
    startup_timeout_s: float = 600.0
    requires: Requirements = Requirements()
    api: str = "completions"
    base_url: str | None = None  # runner "external"
    pending: str | None = None  # a results-page row without a known recipe yet
    expect: dict[str, Any] = field(default_factory=dict)
    docker: DockerSpec | None = None
    description: str = ""
    # Cores the engine process may run on (the first N). Unset on a CPU engine:
    # all but one, so the measuring client is never starved by the engine.
    cpu_cores: int | None = None
    noise_prior: "NoisePrior | None" = None  # overrides workloads.noise_prior for this config
    # This row's concurrency sweep (streams per decode case), overriding
    # workloads.concurrency; None: the workloads' sweep.
    concurrency: tuple[int, ...] | None = None

    @property
    def model_name(self) -> str:
        """The name requests must use for `model`."""
        return self.served_model_name or self.model


@dataclass(frozen=True)
class Case:
    """One measured workload: a prompt of `pp` tokens, `tg` generated tokens,
    after `depth` tokens of context already in the KV cache."""

    kind: str  # "prefill" | "decode"
    pp: int
    tg: int
    depth: int = 0
    # streams started together (decode cases only); 1 = the plain case, whose
    # id has no @c, so ids and baselines from before concurrency stay valid
    concurrency: int = 1
    # where the prompt's words come from (measure/prompts.py PROMPT_SOURCES):
    # "random" words, or "text", natural text from the corpus the package ships
    prompt: str = "random"

    @property
    def id(self) -> str:
        base = f"pp{self.pp}" if self.kind == "prefill" else f"tg{self.tg}"
        base = base if self.depth == 0 else f"{base}@d{self.depth}"
        return base if self.concurrency == 1 else f"{base}@c{self.concurrency}"

    @property
    def metrics(self) -> tuple[str, ...]:
        """Per stream (tg_tps, e2e_ttft_ms: each stream's own sample), then at
        concurrency > 1 the aggregate (agg_tps: one value per round)."""
        if self.kind == "prefill":
            return PREFILL_METRICS
        return DECODE_METRICS + (CONCURRENT_METRICS if self.concurrency > 1 else ())

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]

    @classmethod
    def parse(cls, case_id: str, pp: int = 0, tg: int = 0) -> Case:
        """The inverse of `id`. A decode id does not carry its prompt length
        (nor a prefill id its output length): pass it as `pp`/`tg`, else 0/1.
        Raises ValueError for anything that is not a case id."""
        m = CASE_ID_RE.fullmatch(case_id)
        if not m or (m.group(4) is not None and (m.group(1) == "pp" or int(m.group(4)) < 2)):
            raise ValueError(f"not a case id like tg32, pp2048, tg32@d4096 or tg32@c4: {case_id!r}")
        n, depth = int(m.group(2)), int(m.group(3) or 0)
        if m.group(1) == "pp":
            return cls("prefill", pp=n, tg=tg or 1, depth=depth)
        return cls("decode", pp=pp, tg=n, depth=depth, concurrency=int(m.group(4) or 1))


@dataclass(frozen=True)
class Workloads:
    cases: tuple[Case, ...]
    runs: int = 5
    warmup: int = 1
    latency_mode: str = "api"
    max_client_lag_ms: float = 50.0  # a sample whose client was held up longer is flagged
    reset_prefix_cache: bool = True
    # Per-request limits, so a stalled or never-closing stream cannot hold a run.
    # Sized for gpt-oss-120b on GB10: prefill runs at roughly 1-2k tok/s there,
    # so the longest prompt it serves (131072 tokens of context) waits ~65-130 s
    # for its first token; the idle limit (no byte at all for that long) is
    # 180 s, and the whole request (TTFT + tg128 at ~50 tok/s) 300 s. On a
    # small model set them lower in `workloads:` to fail a stall sooner.
    request_timeout_s: float = 300.0
    idle_timeout_s: float = 180.0
    # Server starts per config (pytest_mxfp4.stats.starts): each config is
    # started this many times, starts interleaved across configs (A B B A),
    # every case measured on each start; the verdict's unit is the start mean.
    restarts: int = 1
    # The sequential budget: while a fail-gated verdict is inconclusive after
    # `restarts` starts, start each config (each arm) up to this many times
    # and judge again (two looks, alpha split). None: no extra starts.
    max_restarts: int | None = None
    # ... and only while the extra starts fit this many minutes of starts in
    # the whole run (the estimate: the mean duration of the starts so far).
    max_restart_minutes: float | None = None
    # Streams started together per decode case (each level a case, tg32@c4);
    # a server's own `concurrency` replaces it for that row.
    concurrency: tuple[int, ...] = (1,)
    # Between-start noise stated for a box that has not measured itself yet
    # (startstats.learned_noise); None: startstats.DEFAULT_PRIOR.
    noise_prior: NoisePrior | None = None
    # A start disturbed while it measured (another process busy, the client
    # behind, a GPU throttled) is left out and replaced by another start of
    # its arm, at most this many times per arm.
    max_replacements: int = 2
    # False: disturbed windows are still detected and reported, but kept in
    # the verdict (a box that is always shared, where leaving out would
    # leave nothing).
    leave_out_disturbed: bool = True


@dataclass(frozen=True)
class NoisePrior:
    """A stated between-start CV (%) worth ``df`` starts' evidence: the
    fallback until the box's own starts are enough to learn it."""

    cv_pct: float
    df: float = 2.0


@dataclass(frozen=True)
class GateRule:
    """How one metric of one case is gated: the policy, the practical floor
    (the gate's own, else the metric's default) and the largest drop a pass
    may admit."""

    gate: str  # fail | warn | off
    floor_pct: float | None  # None: a metric with no default floor and none given
    floor_given: bool
    max_regression_pct: float | None


@dataclass(frozen=True)
class Gates:
    """Per-metric policy. Keys: a case id ("tg32": its primary metric) or
    "case/metric" ("pp2048/e2e_ttft_ms")."""

    default: str = "warn"
    rules: dict[str, str] = field(default_factory=lambda: {"tg32": "fail"})
    # Practical floors (%) overriding stats.DEFAULT_FLOOR_PCT, e.g. for a
    # noisy CI box whose runs drift more than the hardware under test.
    floors: dict[str, float] = field(default_factory=dict)
    # The largest drop (%) a pass may admit, where wider than the floor: a
    # pass must rule out a drop beyond it (startstats, the earned pass).
    max_regressions: dict[str, float] = field(default_factory=dict)

    def _lookup(self, table: dict, case: Case, metric: str):
        full = f"{case.id}/{metric}"
        if full in table:
            return table[full]
        if metric == case.primary_metric and case.id in table:
            return table[case.id]
        return None

    def policy(self, case: Case, metric: str) -> str:
        return self._lookup(self.rules, case, metric) or self.default

    def rule(self, case: Case, metric: str) -> GateRule:
        """Everything the gate says about one metric of one case, resolved once."""
        from pytest_mxfp4.stats.samples import DEFAULT_FLOOR_PCT

        given = self._lookup(self.floors, case, metric)
        return GateRule(gate=self.policy(case, metric),
                        floor_pct=given if given is not None else DEFAULT_FLOOR_PCT.get(metric),
                        floor_given=given is not None,
                        max_regression_pct=self._lookup(self.max_regressions, case, metric))


@dataclass(frozen=True)
class Target:
    """A fixed reference number shown beside results (e.g. llama.cpp tg32)."""

    engine: str
    metric: str  # case id or case/metric
    value: float
    unit: str = ""
    note: str = ""


@dataclass(frozen=True)
class Matrix:
    path: Path
    servers: tuple[ServerConfig, ...]
    workloads: Workloads
    gates: Gates
    targets: tuple[Target, ...] = ()
    name: str = ""

    def noise_prior(self, server: str) -> NoisePrior | None:
        """The stated fallback noise of a config: its own, else the workloads' (None: the default)."""
        cfg = next((c for c in self.servers if c.name == server), None)
        return (cfg.noise_prior if cfg else None) or self.workloads.noise_prior

    def start_prior(self, server: str):
        """The noise prior the start-level rule uses for `server`: stated, else the default."""
        from pytest_mxfp4.stats import starts as startstats

        np_ = self.noise_prior(server)
        return startstats.Prior(np_.cv_pct / 100.0, np_.df) if np_ else startstats.DEFAULT_PRIOR

    def cases_for(self, cfg: ServerConfig) -> tuple[Case, ...]:
        """The cases this row measures: every prefill case, and the decode
        cases at the concurrency levels of its sweep (its own, else the workloads')."""
        levels = cfg.concurrency or self.workloads.concurrency
        return tuple(c for c in self.workloads.cases if c.kind == "prefill" or c.concurrency in levels)

    def server(self, name: str) -> ServerConfig:
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(name)

    def targets_for(self, case: Case, metric: str) -> list[Target]:
        keys = {f"{case.id}/{metric}"}
        if metric == case.primary_metric:
            keys.add(case.id)
        return [t for t in self.targets if t.metric in keys]


# --------------------------------------------------------------------------
# Parsing


class _Reader:
    """Reads typed fields from a mapping and reports errors as file: a.b.c."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.path}: {where}: {msg}")

    def mapping(self, value: Any, where: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__} {value!r}")
        return value

    def check_keys(self, data: dict, allowed: set[str], where: str) -> None:
        unknown = sorted(set(map(str, data)) - allowed)
        if unknown:
            raise self.fail(
                f"{where}.{unknown[0]}" if where else unknown[0],
                f"unknown field; allowed: {', '.join(sorted(allowed))}",
            )

    def string(self, value: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail(where, f"expected a string, got {value!r}")
        s = str(value)
        if choices and s not in choices:
            raise self.fail(where, f"expected one of {', '.join(choices)}, got {s!r}")
        return s

    def number(self, value: Any, where: str, minimum: float | None = None, integer: bool = False) -> float:
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            kind = "an integer" if integer else "a number"
            raise self.fail(where, f"expected {kind}, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise self.fail(where, f"expected a finite number, got {value!r}")
        if minimum is not None and value < minimum:
            raise self.fail(where, f"must be >= {minimum:g}, got {value!r}")
        return value

    def int_list(self, value: Any, where: str, minimum: int = 1) -> tuple[int, ...]:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise self.fail(where, "expected at least one value")
        return tuple(int(self.number(v, f"{where}[{i}]", minimum, integer=True)) for i, v in enumerate(items))

    def str_list(self, value: Any, where: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str):
            return tuple(value.split())
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list of strings, got {value!r}")
        return tuple(self.string(v, f"{where}[{i}]") for i, v in enumerate(value))

    def boolean(self, value: Any, where: str, default: bool) -> bool:
        """true/false only: YAML's `"false"` (a string) is not quietly True."""
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        raise self.fail(where, f"expected true or false, got {value!r}")

    def str_map(self, value: Any, where: str) -> dict[str, str]:
        data = self.mapping(value, where)
        out = {}
        for k, v in data.items():
            if v is None or isinstance(v, (dict, list)):
                raise self.fail(f"{where}.{k}", f"expected a string value, got {v!r}")
            out[str(k)] = str(v).lower() if isinstance(v, bool) else str(v)
        return out


_SERVER_KEYS = {
    "engine", "runner", "model", "served_model_name", "command", "args", "env",
    "health_path", "startup_timeout_s", "requires", "api", "base_url", "pending",
    "expect", "docker", "description", "cpu_cores", "extends", "noise_prior",
    "concurrency",
}
_DOCKER_KEYS = {"image", "gpus", "shm_size", "ipc_mode", "cpus", "volumes", "network"}
_WORKLOAD_KEYS = {"prefill", "decode", "depth", "runs", "warmup", "latency_mode",
                  "max_client_lag_ms", "reset_prefix_cache", "request_timeout_s", "idle_timeout_s",
                  "restarts", "max_restarts", "max_restart_minutes", "noise_prior", "max_replacements",
                  "leave_out_disturbed", "concurrency", "prompt"}
_TOP_KEYS = {"name", "defaults", "servers", "workloads", "gates", "targets"}


def _requirements(r: _Reader, value: Any, where: str) -> Requirements:
    if value is None:
        return Requirements()
    if isinstance(value, str):
        return Requirements(accelerator=r.string(value, where, ACCELERATORS))
    data = r.mapping(value, where)
    r.check_keys(data, {"accelerator", "sm", "min_gpus"}, where)
    acc = r.string(data.get("accelerator", "nvidia" if "sm" in data else "any"), f"{where}.accelerator", ACCELERATORS)
    sm = data.get("sm")
    if sm is not None:
        sm = r.string(sm, f"{where}.sm")
        if not re.fullmatch(r"\d+\.\d+", sm):
            raise r.fail(f"{where}.sm", f"expected a compute capability like \"12.1\", got {sm!r}")
    gpus = int(r.number(data.get("min_gpus", 1 if acc == "nvidia" else 0), f"{where}.min_gpus", 0, integer=True))
    return Requirements(accelerator=acc, sm=sm, min_gpus=gpus)


def _docker(r: _Reader, value: Any, where: str) -> DockerSpec | None:
    if value is None:
        return None
    data = r.mapping(value, where)
    r.check_keys(data, _DOCKER_KEYS, where)
    if "image" not in data:
        raise r.fail(f"{where}.image", "required: the image to run (build it first, see docker/)")
    gpus = data.get("gpus")
    if gpus is not None and gpus != "all":
        gpus = int(r.number(gpus, f"{where}.gpus", 1, integer=True))
    cpus = data.get("cpus")
    return DockerSpec(
        image=r.string(data["image"], f"{where}.image"),
        gpus=gpus,
        shm_size=None if data.get("shm_size") is None and "shm_size" in data else r.string(data.get("shm_size", "1g"), f"{where}.shm_size"),
        ipc_mode=r.string(data["ipc_mode"], f"{where}.ipc_mode") if data.get("ipc_mode") else None,
        cpus=float(r.number(cpus, f"{where}.cpus", 0.01)) if cpus is not None else None,
        volumes=r.str_map(data.get("volumes"), f"{where}.volumes"),
        network=r.string(data.get("network", "host"), f"{where}.network", ("host", "published")),
    )


def _server(r: _Reader, name: str, data: dict, defaults: dict) -> ServerConfig:
    where = f"servers.{name}"
    data = r.mapping(data, where)
    r.check_keys(data, _SERVER_KEYS, where)
    merged = {**defaults, **data}
    # env merges key by key so a server can add one variable to the defaults
    merged["env"] = {**r.mapping(defaults.get("env"), "defaults.env"), **r.mapping(data.get("env"), f"{where}.env")}
    runner = r.string(merged.get("runner", "docker" if merged.get("docker") else "process"), f"{where}.runner", RUNNERS)
    pending = merged.get("pending") if "pending" in data else None
    pending = r.string(pending, f"{where}.pending") if pending is not None else None
    model = r.string(merged.get("model", ""), f"{where}.model") if merged.get("model") is not None else ""
    if not model and not pending:
        raise r.fail(f"{where}.model", "required: the model path or name the server serves")
    if runner == "external" and not merged.get("base_url") and not pending:
        raise r.fail(f"{where}.base_url", "required for runner: external (e.g. http://127.0.0.1:8000)")
    if runner == "process" and not merged.get("command") and not pending:
        raise r.fail(f"{where}.command", "required for runner: process (the command that starts the server)")
    docker = _docker(r, merged.get("docker"), f"{where}.docker")
    if runner == "docker" and docker is None and not pending:
        raise r.fail(f"{where}.docker", "required for runner: docker (at least docker.image)")
    health = r.string(merged.get("health_path", "/health"), f"{where}.health_path")
    if not health.startswith("/"):
        raise r.fail(f"{where}.health_path", f"must start with '/', got {health!r}")
    cores = merged.get("cpu_cores")
    return ServerConfig(
        name=name,
        engine=r.string(merged.get("engine", "vllm"), f"{where}.engine", ENGINES),
        runner=runner,
        model=model,
        served_model_name=r.string(merged["served_model_name"], f"{where}.served_model_name") if merged.get("served_model_name") else None,
        command=r.str_list(merged.get("command"), f"{where}.command"),
        args=r.str_list(merged.get("args"), f"{where}.args"),
        env=r.str_map(merged["env"], f"{where}.env"),
        health_path=health,
        startup_timeout_s=float(r.number(merged.get("startup_timeout_s", 600), f"{where}.startup_timeout_s", 1)),
        requires=_requirements(r, merged.get("requires"), f"{where}.requires"),
        api=r.string(merged.get("api", "completions"), f"{where}.api", APIS),
        base_url=_base_url(r, merged["base_url"], f"{where}.base_url") if merged.get("base_url") else None,
        pending=pending,
        expect=r.mapping(merged.get("expect"), f"{where}.expect"),
        docker=docker,
        description=r.string(merged.get("description", ""), f"{where}.description"),
        cpu_cores=int(r.number(cores, f"{where}.cpu_cores", 1, integer=True)) if cores is not None else None,
        noise_prior=_noise_prior(r, merged.get("noise_prior"), f"{where}.noise_prior"),
        concurrency=(_levels(r, merged["concurrency"], f"{where}.concurrency")
                     if merged.get("concurrency") is not None else None),
    )


def _levels(r: _Reader, value: Any, where: str) -> tuple[int, ...]:
    levels = r.int_list(value, where, minimum=1)
    _no_repeats(r, levels, where, lambda v: f"@c{v} of every decode case")
    return tuple(sorted(levels))


# Where a server's command line caps its concurrent streams (engine -> flags).
# Absent, the engine's default applies (not known here); the measurement
# itself then shows whether the streams ran together (measure/concurrent.py).
STREAM_LIMIT_FLAGS = {"vllm": ("--max-num-seqs",), "llama.cpp": ("-np", "--parallel")}


def stream_limit(cfg: ServerConfig) -> tuple[int, str] | None:
    """(most concurrent streams, the flag that says so) from the server's
    command and args, or None where the command line does not say."""
    argv = list(cfg.command) + list(cfg.args)
    found = None
    for i, a in enumerate(argv):
        for flag in STREAM_LIMIT_FLAGS.get(cfg.engine, ()):
            value = a[len(flag) + 1:] if a.startswith(flag + "=") else (
                argv[i + 1] if a == flag and i + 1 < len(argv) else None)
            if value is not None and value.strip().lstrip("-").isdigit():
                found = (int(value), flag)  # the last one wins, as in argparse
    if found and found[0] < 1:  # llama.cpp -np -1: automatic
        return None
    return found


def _check_stream_limits(r: _Reader, servers: list[ServerConfig], workloads: Workloads) -> None:
    """A case asking for more streams than a server takes at once would be
    measured serialized (queued in the server): a config error, not a number."""
    for cfg in servers:
        if cfg.pending:
            continue
        levels = cfg.concurrency or workloads.concurrency
        limit = stream_limit(cfg)
        if limit is None or max(levels) <= limit[0]:
            continue
        n, flag = limit
        field_ = f"servers.{cfg.name}.concurrency" if cfg.concurrency else "workloads.concurrency"
        fits = sorted({c for c in levels if c <= n} | {n})  # what it can take, its limit included
        raise r.fail(field_, f"asks server {cfg.name!r} for {max(levels)} concurrent streams, but its command "
                     f"line allows {n} ({flag} {n}); the extra streams would queue and the case would measure "
                     f"a serialized run. Raise {flag} in servers.{cfg.name}.args, or give that server its own "
                     f"sweep: servers.{cfg.name}.concurrency: {fits}")


def _noise_prior(r: _Reader, value: Any, where: str) -> NoisePrior | None:
    if value is None:
        return None
    data = r.mapping(value, where)
    r.check_keys(data, {"cv_pct", "df"}, where)
    if "cv_pct" not in data:
        raise r.fail(f"{where}.cv_pct", "required: the between-start CV in percent this box is expected to show")
    cv = float(r.number(data["cv_pct"], f"{where}.cv_pct", 0))
    if cv >= 100:
        raise r.fail(f"{where}.cv_pct", f"a between-start CV of {cv:g}% is not a noise level; use a value below 100")
    return NoisePrior(cv_pct=cv, df=float(r.number(data.get("df", 2), f"{where}.df", 0)))


def base_url_problem(url: str) -> str | None:
    """Why `url` is not an http(s) base URL (None if it is); for the matrix's
    base_url and --perf-base-url alike."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as e:
        return f"not a URL ({e}): expected e.g. http://127.0.0.1:8000"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{url!r} has no http:// or https:// scheme and host; expected e.g. http://{url.split('://')[-1]}"
    return None


def _base_url(r: _Reader, value: Any, where: str) -> str:
    url = r.string(value, where).rstrip("/")
    problem = base_url_problem(url)
    if problem:
        raise r.fail(where, problem)
    return url


def _workloads(r: _Reader, value: Any, server_levels: tuple[int, ...] = ()) -> Workloads:
    where = "workloads"
    data = r.mapping(value, where)
    if not data:
        raise r.fail(where, "required: at least `prefill: {pp: [...]}` or `decode: {tg: [...]}`")
    r.check_keys(data, _WORKLOAD_KEYS, where)
    depths = r.int_list(data.get("depth", 0), f"{where}.depth", minimum=0)
    _no_repeats(r, depths, f"{where}.depth", lambda v: f"@d{v} of every case")
    prompt = r.string(data.get("prompt", "random"), f"{where}.prompt", PROMPT_SOURCES)
    cases = [c for kind in ("prefill", "decode") if kind in data
             for c in _sweep(r, data[kind], kind, depths, prompt)]
    levels = _levels(r, data["concurrency"], f"{where}.concurrency") if data.get("concurrency") is not None else (1,)
    extra = tuple(sorted({lv for lv in server_levels if lv not in levels}))
    if max(levels + extra) > 1:
        if not any(c.kind == "decode" for c in cases):
            raise r.fail(f"{where}.concurrency", "concurrent streams are measured on decode cases; "
                         "add `decode: {tg: [...]}`")
        # each decode case once per level, the sweep of one case side by side
        cases = [c for c in cases if c.kind == "prefill"] + [
            replace(c, concurrency=lv) for c in cases if c.kind == "decode" for lv in sorted(levels + extra)]
    if not cases:
        raise r.fail(where, "no cases: add `prefill: {pp: [...]}` or `decode: {tg: [...]}`")
    restarts = int(r.number(data.get("restarts", 1), f"{where}.restarts", 1, integer=True))
    if data.get("max_restarts") is not None and r.number(data["max_restarts"], f"{where}.max_restarts", 1,
                                                         integer=True) < restarts:
        # the command line refuses the same (--perf-max-restarts below the starts per config)
        raise r.fail(f"{where}.max_restarts", f"must be >= workloads.restarts ({restarts}), got "
                     f"{data['max_restarts']!r}: it is the most starts per config, the first look included")
    return Workloads(
        cases=tuple(cases),
        runs=int(r.number(data.get("runs", 5), f"{where}.runs", 1, integer=True)),
        warmup=int(r.number(data.get("warmup", 1), f"{where}.warmup", 0, integer=True)),
        latency_mode=r.string(data.get("latency_mode", "api"), f"{where}.latency_mode", LATENCY_MODES),
        max_client_lag_ms=float(r.number(data.get("max_client_lag_ms", 50), f"{where}.max_client_lag_ms", 0)),
        reset_prefix_cache=r.boolean(data.get("reset_prefix_cache"), f"{where}.reset_prefix_cache", True),
        request_timeout_s=float(r.number(data.get("request_timeout_s", Workloads.request_timeout_s),
                                         f"{where}.request_timeout_s", 1)),
        idle_timeout_s=float(r.number(data.get("idle_timeout_s", Workloads.idle_timeout_s),
                                      f"{where}.idle_timeout_s", 1)),
        restarts=int(r.number(data.get("restarts", 1), f"{where}.restarts", 1, integer=True)),
        max_restarts=(None if data.get("max_restarts") is None else
                      int(r.number(data["max_restarts"], f"{where}.max_restarts", 1, integer=True))),
        max_restart_minutes=(None if data.get("max_restart_minutes") is None else
                             float(r.number(data["max_restart_minutes"], f"{where}.max_restart_minutes", 0.1))),
        noise_prior=_noise_prior(r, data.get("noise_prior"), f"{where}.noise_prior"),
        max_replacements=int(r.number(data.get("max_replacements", 2), f"{where}.max_replacements", 0,
                                      integer=True)),
        leave_out_disturbed=r.boolean(data.get("leave_out_disturbed"), f"{where}.leave_out_disturbed", True),
        concurrency=levels,
    )


# kind -> (swept length, fixed length, its default, smallest swept value, what the sweep is)
_SWEEPS = {
    "prefill": ("pp", "tg", 1, 1, "prompt lengths, e.g. [512, 2048]"),
    "decode": ("tg", "pp", 512, 2, "output lengths, e.g. [32, 128]"),
}


def _no_repeats(r: _Reader, values: tuple[int, ...], where: str, case_id) -> None:
    """The same case twice would be measured twice and its baseline keep one of them."""
    seen = set()
    for i, v in enumerate(values):
        if v in seen:
            raise r.fail(f"{where}[{i}]", f"{v} is listed twice (case {case_id(v)}); list each value once")
        seen.add(v)


def _sweep(r: _Reader, value: Any, kind: str, depths: tuple[int, ...], prompt: str = "random") -> list[Case]:
    swept, fixed, default, minimum, what = _SWEEPS[kind]
    where = f"workloads.{kind}"
    block = r.mapping(value, where)
    r.check_keys(block, {"pp", "tg", "prompt"}, where)
    prompt = r.string(block.get("prompt", prompt), f"{where}.prompt", PROMPT_SOURCES)
    if swept not in block:
        raise r.fail(f"{where}.{swept}", f"required: {what}")
    fixed_value = int(r.number(block.get(fixed, default), f"{where}.{fixed}", 1, integer=True))
    values = r.int_list(block[swept], f"{where}.{swept}", minimum=minimum)
    _no_repeats(r, values, f"{where}.{swept}", lambda v: f"{swept}{v}")
    return [Case(kind, depth=d, prompt=prompt, **{swept: v, fixed: fixed_value}) for d in depths for v in values]


def _gates(r: _Reader, value: Any, cases: tuple[Case, ...]) -> Gates:
    data = r.mapping(value, "gates")
    default = r.string(data.get("default", "warn"), "gates.default", GATE_POLICIES)
    rules = {"tg32": "fail"}
    explicit = {k: v for k, v in data.items() if k != "default"}
    if explicit:
        rules = {}
    case_ids = {c.id for c in cases}
    floors: dict[str, float] = {}
    max_regs: dict[str, float] = {}
    for key, pol in explicit.items():
        key = str(key)
        where = f"gates.{key}"
        _check_metric_key(r, where, key, cases, case_ids, allow_unknown_case=False)
        if isinstance(pol, dict):  # {policy: fail, floor_pct: 20}
            r.check_keys(pol, {"policy", "floor_pct", "max_regression_pct"}, where)
            if "max_regression_pct" in pol:
                mr = float(r.number(pol["max_regression_pct"], f"{where}.max_regression_pct", 0))
                if mr >= 100:
                    raise r.fail(f"{where}.max_regression_pct", f"{mr:g}% admits any drop; use a value below 100")
                max_regs[key] = mr
            if "floor_pct" in pol:
                floor = float(r.number(pol["floor_pct"], f"{where}.floor_pct", 0))
                if floor >= 100:
                    raise r.fail(f"{where}.floor_pct", f"a floor of {floor:g}% can never fail (a regression "
                                 "beyond it would need less than zero throughput); use a value below 100, "
                                 "or policy: warn/off")
                floors[key] = floor
            pol = pol.get("policy", default)
        rules[key] = r.string(pol, where, GATE_POLICIES)
    for key, mr in max_regs.items():
        if key in floors and mr < floors[key]:
            raise r.fail(f"gates.{key}.max_regression_pct", f"{mr:g}% is below the floor ({floors[key]:g}%): "
                         "a pass admits at least the floor; raise it or drop the key")
    return Gates(default=default, rules=rules, floors=floors, max_regressions=max_regs)


def _check_metric_key(r: _Reader, where: str, key: str, cases, case_ids, allow_unknown_case: bool) -> None:
    case_id, _, metric = key.partition("/")
    if not CASE_ID_RE.fullmatch(case_id):
        raise r.fail(where, f"expected a case id like tg32 or pp2048 (optionally /metric), got {key!r}")
    try:
        case = Case.parse(case_id)
    except ValueError as e:
        raise r.fail(where, f"{e}: a concurrency is @c2 or more (one stream is the plain id, tg32)") from None
    if not allow_unknown_case and case_ids is not None and case_id not in case_ids:
        why = (". A gate on no case would replace the default gate and judge nothing"
               if where.startswith("gates") else "")
        raise r.fail(where, f"names no case of this matrix ({case_id!r}); its cases: "
                     f"{', '.join(sorted(case_ids)) or '(none)'}{why}")
    if metric:
        allowed = case.metrics
        if metric not in allowed:
            raise r.fail(where, f"unknown metric {metric!r} for {case_id}; allowed: {', '.join(allowed)}")


def _targets(r: _Reader, value: Any, cases) -> tuple[Target, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise r.fail("targets", "expected a list of {engine, metric, value}")
    out = []
    for i, t in enumerate(value):
        where = f"targets[{i}]"
        t = r.mapping(t, where)
        r.check_keys(t, {"engine", "metric", "value", "unit", "note"}, where)
        for req in ("engine", "metric", "value"):
            if req not in t:
                raise r.fail(f"{where}.{req}", "required")
        metric = r.string(t["metric"], f"{where}.metric")
        _check_metric_key(r, f"{where}.metric", metric, cases, {c.id for c in cases}, False)
        out.append(Target(
            engine=r.string(t["engine"], f"{where}.engine"),
            metric=metric,
            value=float(r.number(t["value"], f"{where}.value", 0)),
            unit=r.string(t.get("unit", ""), f"{where}.unit"),
            note=r.string(t.get("note", ""), f"{where}.note"),
        ))
    return tuple(out)


def _extended_servers(r: _Reader, servers_raw: dict, defaults: dict) -> list[ServerConfig]:
    """Every server, `extends` resolved through any number of levels (a cycle
    is an error). A base is validated before the servers that extend it, so a
    bad inherited field is reported at the server that wrote it."""
    resolved: dict[str, dict] = {}

    def resolve(name: str, chain: tuple[str, ...]) -> dict:
        if name in resolved:
            return resolved[name]
        s = r.mapping(servers_raw[name], f"servers.{name}")
        if "extends" in s:
            base = r.string(s["extends"], f"servers.{name}.extends")
            if base not in servers_raw or base == name:
                raise r.fail(f"servers.{name}.extends", f"no other server named {base!r}")
            if base in chain:
                raise r.fail(f"servers.{name}.extends", f"a cycle: {' -> '.join((*chain, name, base))}")
            s = {**resolve(base, (*chain, name)), **s}
            s.pop("extends", None)
            s.pop("pending", None) if "pending" not in servers_raw[name] else None
        resolved[name] = s
        return s

    parsed: dict[str, ServerConfig] = {}

    def parse(name: str) -> None:
        if name in parsed:
            return
        s = resolve(name, ())
        base = r.mapping(servers_raw[name], f"servers.{name}").get("extends")
        if base is not None:
            parse(str(base))
        parsed[name] = _server(r, str(name), s, defaults)

    for name in servers_raw:
        parse(name)
    return [parsed[name] for name in servers_raw]


def parse_matrix(data: Any, path: Path) -> Matrix:
    r = _Reader(path)
    data = r.mapping(data, "(top level)")
    r.check_keys(data, _TOP_KEYS, "")
    defaults = r.mapping(data.get("defaults"), "defaults")
    r.check_keys(defaults, _SERVER_KEYS, "defaults")
    servers_raw = r.mapping(data.get("servers"), "servers")
    if not servers_raw:
        raise r.fail("servers", "required: at least one named server configuration")
    for name in servers_raw:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", str(name)):
            raise r.fail(f"servers.{name}", "names may use letters, digits, '_', '.', '+', '-' only")
    servers = _extended_servers(r, servers_raw, defaults)
    workloads = _workloads(r, data.get("workloads"),
                           tuple(lv for s in servers if s.concurrency for lv in s.concurrency))
    _check_stream_limits(r, servers, workloads)
    return Matrix(
        path=path,
        name=r.string(data.get("name", path.stem), "name"),
        servers=tuple(servers),
        workloads=workloads,
        gates=_gates(r, data.get("gates"), workloads.cases),
        targets=_targets(r, data.get("targets"), workloads.cases),
    )


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader (no python tags) that refuses a key given twice in one
    mapping: plain YAML keeps the last one, silently dropping e.g. a whole
    earlier `gates:` or `servers:` block. `<<` merges may still be overridden."""


def _unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # unhashable key: SafeLoader reports it below
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first on line {first + 1}; YAML would silently keep "
                f"only the last one)", key_node.start_mark)
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(text: str) -> Any:
    """Every YAML the plugin reads goes through here (matrix, baselines)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def yaml_error_where(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"


def load_matrix(path: str | Path) -> Matrix:
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: matrix file not found (pass --perf-config PATH, or set perf_config in the ini file)") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read matrix file: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                          "save the matrix file as UTF-8") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as e:
        where = yaml_error_where(e)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}: {where}: not valid YAML: {problem}") from None
    return parse_matrix(data, path)
