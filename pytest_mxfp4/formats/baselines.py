"""Baseline store: reviewable YAML, one file per (hardware key, model, server
config), written atomically, with a bounded history of past runs.

    baselines/<hardware-key>/<model-slug>/<server>.yaml

A metric holds either raw `samples` or, where only a summary is known (e.g.
numbers copied from the results page), `mean`/`stdev`/`n`.

Writers hold a `filelock` lock on `<root>/.pytest-mxfp4.lock` around every
read-modify-write (baselines and the run log), so two `--perf-update-baselines`
runs at once lose nothing; temp files left by a killed writer are removed
under that lock. Commands and environments are redacted before they are
written: a baseline is committed, a secret must never be in it.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

import filelock

from pytest_mxfp4.formats.facts import ObservedFacts
from pytest_mxfp4.formats.config import load_yaml, yaml_error_where
from pytest_mxfp4.errors import BaselineError
from pytest_mxfp4.redact import redact_obj
from pytest_mxfp4.formats.fileio import write_atomic
from pytest_mxfp4.formats.results import RunEnvironment
from pytest_mxfp4.stats.samples import BaselineStats, StatsError, Summary

SCHEMA = 1
HISTORY_LIMIT = 30
LOCK_NAME = ".pytest-mxfp4.lock"
LOCK_TIMEOUT_S = 300.0
# write_atomic's temp files: ".<name>.<random>.tmp" (and the older ".<name>.<random>")
_TEMP = re.compile(r"^\..+\.(?:yaml|yml|jsonl|json|md)\.[A-Za-z0-9_]{6,12}(?:\.tmp)?$")


def model_slug(model: str) -> str:
    """'openai/gpt-oss-120b' -> 'openai--gpt-oss-120b'; a local path -> its last part.
    Always one plain folder name: never '.', '..' or hidden (a name made of
    path parts must not move the baseline out of its hardware folder)."""
    p = model.rstrip("/")
    if p.startswith(("/", ".")) or os.sep in p and Path(p).exists():
        p = Path(p).name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "--", p).strip("-")
    slug = re.sub(r"^\.+", lambda m: "_" * len(m.group()), slug)  # '..' -> '__', '.x' -> '_x'
    return slug or "model"


def check_place(bf: BaselineFile, path: Path, hardware_key: str, model: str, server: str) -> None:
    """A baseline judges only what its place says: its own hardware key, model
    and server must be those of the folder and name it sits at (a file copied
    from another machine or config is refused, as `compare` refuses results of
    other hardware)."""
    for field_name, theirs, ours, same in (
            ("hardware_key", bf.hardware_key, hardware_key, bf.hardware_key == hardware_key),
            ("model", bf.model, model, model_slug(bf.model) == model_slug(model)),
            ("server", bf.server, server, bf.server == server)):
        if not same:
            raise BaselineError(
                f"{path}: {field_name}: the file says {theirs!r}, but it sits where the baseline of "
                f"{field_name} {ours!r} belongs (copied from another machine or config?); it judges nothing "
                "here. Move it to its own place or delete it and rerun with --perf-update-baselines.")


@dataclass
class HistoryEntry:
    date: str
    mean: float
    stdev: float
    n: int
    starts: int = 1  # server starts of that run
    start_cv: float | None = None  # between-start CV of their start means (log scale), when starts > 1

    @property
    def cv(self) -> float:
        return self.stdev / abs(self.mean) if self.mean else 0.0


@dataclass
class MetricBaseline:
    unit: str
    mean: float
    stdev: float
    n: int
    samples: list[float] | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    starts: list[float] | None = None  # the mean of each server start of the stored run

    def start_evidence(self) -> tuple[list[float], tuple[tuple[float, int], ...]]:
        """(the stored run's start means, (between-start CV, df) of the runs
        before it): the baseline's evidence about between-start noise. The
        last history entry is the stored run itself: where its starts are
        used, counting its CV again would count them twice."""
        stored = list(self.starts or [])
        past = self.history[:-1] if stored and self.history else self.history
        hist = tuple((h.start_cv, h.starts - 1) for h in past if h.start_cv is not None and h.starts > 1)
        return (stored or [self.mean]), hist

    def stats(self) -> BaselineStats:
        cvs = tuple(h.cv for h in self.history)
        if self.samples:
            return BaselineStats.from_samples(self.samples, history_cv=cvs)
        return BaselineStats.from_summary(self.mean, self.stdev, self.n, history_cv=cvs)


def _in_order(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """`values` in the order of `keys` (the mapping as read or built), so a
    rewrite keeps a file's shape; a key listed there is written as given
    (null too), any other only when it holds something."""
    out = {k: values[k] for k in keys if k in values}
    out.update((k, v) for k, v in values.items() if k not in out and v not in (None, [], {}))
    return out


# what a started server said about itself that identifies the engine a baseline was measured on
ENGINE_DETAILS = ("image_id", "image", "repo_digests", "engine_version", "system_fingerprint", "packages")


@dataclass
class BaselineEngine:
    """What served the stored run (YAML: engine). A hand-kept baseline may
    name anything (vllm_git_sha, cuda ...): such keys are kept in `extra`."""

    runner: str | None = None
    image: str | None = None
    image_id: str | None = None
    repo_digests: list[str] | None = None
    engine_version: str | None = None
    system_fingerprint: str | None = None
    packages: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as read
    keys: tuple[str, ...] = field(default=(), repr=False, compare=False)  # the mapping's key order

    @classmethod
    def of_server(cls, details: dict[str, Any], runner: str) -> BaselineEngine:
        """From a started server's details (in the order it reported them) and its runner."""
        return cls.from_dict({**{k: v for k, v in details.items() if k in ENGINE_DETAILS}, "runner": runner})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaselineEngine:
        """Lenient: a field of the wrong type is kept under `extra`, never guessed."""
        kw: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for k, v in d.items():
            if k in _ENGINE_TYPES and (v is None or isinstance(v, _ENGINE_TYPES[k])):
                kw[k] = v
            else:
                extra[k] = v
        return cls(**kw, extra=extra, keys=tuple(d))

    def to_dict(self) -> dict[str, Any]:
        known = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "keys")}
        return _in_order({**known, **self.extra}, self.keys)


_ENGINE_TYPES: dict[str, type] = {"runner": str, "image": str, "image_id": str, "repo_digests": list,
                                  "engine_version": str, "system_fingerprint": str, "packages": dict}


@dataclass
class BaselineEnvironment:
    """Where and how the stored run ran (YAML: environment, one flat mapping):
    the run environment (no hostname: a baseline belongs to a hardware key,
    not a host), the server's command and env, and what its log said.
    Unknown keys (a baseline seeded from the results page may say anything)
    are kept in `run.extra`."""

    run: RunEnvironment = field(default_factory=RunEnvironment)
    server_command: list[Any] | None = None
    server_env: dict[str, Any] | None = None
    observed: ObservedFacts | None = None  # the facts that held a value
    keys: tuple[str, ...] = field(default=(), repr=False, compare=False)  # the mapping's key order

    @classmethod
    def of_run(cls, env: RunEnvironment, server_command: list[Any], server_env: dict[str, Any],
               observed: ObservedFacts | None) -> BaselineEnvironment:
        """What a measured run stores: its environment less the hostname,
        and the observed facts that hold a value (`observed` None: none seen)."""
        run = replace(env, hostname=None, extra={k: v for k, v in env.extra.items() if k != "hostname"})
        obs = None if observed is None else ObservedFacts.from_dict(
            {k: v for k, v in observed.to_dict().items() if v not in (None, [], {})})
        keys = (*run.to_dict(), "server_command", "server_env", *(("observed",) if obs is not None else ()))
        return cls(run, list(server_command), dict(server_env), obs, keys)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaselineEnvironment:
        """Lenient, as RunEnvironment.from_dict: a value of the wrong type is kept, never guessed."""
        rest = dict(d)
        own: dict[str, Any] = {}
        for k, t in (("server_command", list), ("server_env", dict), ("observed", dict)):
            if isinstance(rest.get(k), t):
                own[k] = rest.pop(k)
        if "observed" in own:
            own["observed"] = ObservedFacts.from_dict(own["observed"])
        return cls(RunEnvironment.from_dict(rest), **own, keys=tuple(d))

    def run_dict(self) -> dict[str, Any]:
        """The run environment's keys as stored (unknown ones too), for a page."""
        return {k: v for k, v in self.to_dict().items() if k not in ("server_command", "server_env", "observed")}

    def to_dict(self) -> dict[str, Any]:
        values = self.run.to_dict()  # a wrong-typed server_command & co. sits in run.extra: kept unless set
        for k in ("server_command", "server_env"):
            if getattr(self, k) is not None:
                values[k] = getattr(self, k)
        if self.observed is not None:
            values["observed"] = self.observed.to_dict()
        return _in_order(values, self.keys)


@dataclass
class BaselineFile:
    hardware_key: str
    model: str
    server: str
    metrics: dict[str, MetricBaseline] = field(default_factory=dict)  # "tg32/tg_tps" -> ...
    engine: BaselineEngine = field(default_factory=BaselineEngine)
    environment: BaselineEnvironment = field(default_factory=BaselineEnvironment)
    updated: str = ""
    source: str = ""  # e.g. "results page 2026-01-09 (summary only)"


class BaselineStore:
    def __init__(self, root: Path, lock_timeout_s: float = LOCK_TIMEOUT_S):
        self.root = Path(root)
        self.lock_timeout_s = lock_timeout_s
        self._lock: filelock.FileLock | None = None

    @contextlib.contextmanager
    def lock(self):
        """Exclusive across processes (re-entrant within this store). On first
        acquire, temp files orphaned by a killed writer are removed."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BaselineError(f"{self.root}: cannot create the baselines directory ({e.strerror})") from None
        if self._lock is None:
            self._lock = filelock.FileLock(str(self.root / LOCK_NAME), timeout=self.lock_timeout_s)
        first = not self._lock.is_locked
        try:
            self._lock.acquire()
        except filelock.Timeout:
            raise BaselineError(f"{self.root / LOCK_NAME}: another run has held the baselines lock for "
                                f"{self.lock_timeout_s:.0f}s; wait for it, or remove the file if no run is active") from None
        except OSError as e:
            raise BaselineError(f"{self.root}: cannot lock the baselines directory ({e.strerror})") from None
        try:
            if first:
                clean_orphans(self.root)
            yield self
        finally:
            self._lock.release()

    def path(self, hardware_key: str, model: str, server: str) -> Path:
        path = self.root / hardware_key / model_slug(model) / f"{server}.yaml"
        # model_slug and the matrix's name rules keep every part one plain name;
        # this is the last word: nothing is read or written outside <root>/<hardware>/
        if path.parent.parent != self.root / hardware_key or path.parent.name in ("", ".", ".."):
            raise BaselineError(f"{path}: the model name {model!r} would place its baseline outside "
                                f"{self.root / hardware_key}; use a served_model_name without path parts")
        return path

    def load(self, hardware_key: str, model: str, server: str) -> BaselineFile | None:
        path = self.path(hardware_key, model, server)
        if not path.exists():
            return None
        bf = read_baseline(path)
        check_place(bf, path, hardware_key, model, server)
        return bf

    def save(self, bf: BaselineFile) -> Path:
        path = self.path(bf.hardware_key, bf.model, bf.server)
        text = yaml.safe_dump(to_yaml(bf), sort_keys=False, allow_unicode=True, width=100)
        with self.lock():
            try:
                write_atomic(path, text)
            except OSError as e:
                raise BaselineError(f"{path}: cannot write the baseline ({e.strerror}); "
                                    "nothing was changed") from None
        return path

    def update(self, hardware_key: str, model: str, server: str, measured: dict[str, tuple[str, list[float]]],
               engine: BaselineEngine | None = None, environment: BaselineEnvironment | None = None,
               starts: dict[str, list[float]] | None = None) -> Path:
        """Replace metrics measured now (keeping others), append each to its history.
        ``starts``: per metric key, the mean of each server start (kept with
        the metric; the history keeps their count and between-start CV).
        Read, merge and write happen under the store lock."""
        with self.lock():
            return self._update(hardware_key, model, server, measured, engine or BaselineEngine(),
                                environment or BaselineEnvironment(), starts or {})

    def _update(self, hardware_key: str, model: str, server: str, measured: dict[str, tuple[str, list[float]]],
                engine: BaselineEngine, environment: BaselineEnvironment,
                starts: dict[str, list[float]] | None = None) -> Path:
        bf = self.load(hardware_key, model, server) or BaselineFile(hardware_key, model, server)
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for key, (unit, samples) in measured.items():
            s = Summary.from_samples(samples, metric=key)
            old = bf.metrics.get(key)
            st = list((starts or {}).get(key) or [])
            scv = _log_cv(st) if len(st) > 1 else None
            history = (old.history if old else []) + [HistoryEntry(now, s.mean, s.stdev, s.n, max(1, len(st)), scv)]
            bf.metrics[key] = MetricBaseline(unit, s.mean, s.stdev, s.n, list(samples), history[-HISTORY_LIMIT:],
                                             st or None)
        bf.engine, bf.environment, bf.updated, bf.source = engine, environment, now, "measured"
        return self.save(bf)


def _num(v: float) -> float:
    return float(f"{v:.6g}")


def _log_cv(means: list[float]) -> float | None:
    """Between-start CV (sd of ln start means, ddof 1); None if undefined."""
    import math

    if len(means) < 2 or any(not (m > 0) for m in means):
        return None
    ys = [math.log(m) for m in means]
    mu = sum(ys) / len(ys)
    return math.sqrt(sum((y - mu) ** 2 for y in ys) / (len(ys) - 1))


def _history_dict(h: HistoryEntry) -> dict[str, Any]:
    d: dict[str, Any] = {"date": h.date, "mean": _num(h.mean), "stdev": _num(h.stdev), "n": h.n}
    if h.starts > 1:
        d["starts"] = h.starts
        if h.start_cv is not None:
            d["start_cv"] = _num(h.start_cv)
    return d


def to_yaml(bf: BaselineFile) -> dict:
    metrics = {}
    for key, m in bf.metrics.items():
        d: dict[str, Any] = {"unit": m.unit, "mean": _num(m.mean), "stdev": _num(m.stdev), "n": m.n}
        if m.samples:
            d["samples"] = [_num(x) for x in m.samples]
        if m.starts:
            d["starts"] = [_num(x) for x in m.starts]
        if m.history:
            d["history"] = [_history_dict(h) for h in m.history]
        metrics[key] = d
    out: dict[str, Any] = {
        "schema": SCHEMA,
        "hardware_key": bf.hardware_key,
        "model": bf.model,
        "server": bf.server,
        "updated": bf.updated,
    }
    if bf.source:
        out["source"] = bf.source
    out["engine"] = redact_obj(bf.engine.to_dict())
    out["metrics"] = metrics
    out["environment"] = redact_obj(bf.environment.to_dict())
    return out


def clean_orphans(root: Path) -> list[Path]:
    """Remove temp files a killed writer left behind (call under the lock)."""
    removed = []
    try:
        candidates = [p for p in Path(root).rglob(".*") if p.is_file() and _TEMP.match(p.name)]
    except OSError:
        return removed
    for p in candidates:
        try:
            p.unlink()
            removed.append(p)
        except OSError:
            pass
    return removed


def read_baseline(path: Path) -> BaselineFile:
    def bad(where: str, msg: str) -> BaselineError:
        return BaselineError(f"{path}: {where}: {msg}. Fix the file or delete it and rerun with --perf-update-baselines.")

    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as e:
        where = yaml_error_where(e)
        raise bad(where if where != "?" else "(file)", f"not valid YAML ({getattr(e, 'problem', None) or e})") from None
    except UnicodeDecodeError:
        raise bad("(file)", "not a text file") from None
    except OSError as e:
        raise bad("(file)", f"cannot read ({e.strerror})") from None
    if not isinstance(data, dict):
        raise bad("(top level)", "expected a mapping")
    if data.get("schema") != SCHEMA:
        raise bad("schema", f"expected {SCHEMA}, got {data.get('schema')!r}")
    for req in ("hardware_key", "model", "server", "metrics"):
        if req not in data:
            raise bad(req, "required field missing")
    if not isinstance(data["metrics"], dict):
        raise bad("metrics", "expected a mapping of 'case/metric' -> {mean, stdev, n} or {samples}")
    metrics = {}
    for key, m in data["metrics"].items():
        where = f"metrics.{key}"
        if not isinstance(m, dict):
            raise bad(where, "expected a mapping")
        samples = m.get("samples")
        if samples is not None:
            if not isinstance(samples, list) or not samples or not all(_finite(x) for x in samples):
                raise bad(f"{where}.samples", "expected a non-empty list of finite numbers")
            # every metric is a rate or a time: a value <= 0 was never measured
            for i, x in enumerate(samples):
                if x <= 0:
                    raise bad(f"{where}.samples[{i}]", f"must be > 0 (a throughput or a time), got {x!r}")
            if "n" in m and m["n"] != len(samples):
                raise bad(f"{where}.n", f"says {m['n']!r}, but {len(samples)} samples are given")
            try:
                s = Summary.from_samples([float(x) for x in samples], metric=key)
            except StatsError as e:
                raise bad(f"{where}.samples", str(e)) from None
            mean, stdev, n = s.mean, s.stdev, s.n
        else:
            for f in ("mean", "stdev", "n"):
                if f not in m:
                    raise bad(f"{where}.{f}", "required when no samples are given")
            mean, stdev, n = m["mean"], m["stdev"], m["n"]
            if not _finite(mean) or not _finite(stdev) or stdev < 0:
                raise bad(where, f"mean/stdev must be finite numbers, stdev >= 0 (got {mean!r}, {stdev!r})")
            if mean <= 0:
                raise bad(f"{where}.mean", f"must be > 0 (a throughput or a time), got {mean!r}")
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise bad(f"{where}.n", f"expected a positive integer, got {n!r}")
        history = []
        for i, h in enumerate(m.get("history") or []):
            hw = f"{where}.history[{i}]"
            try:
                scv = h.get("start_cv")
                entry = HistoryEntry(str(h["date"]), float(h["mean"]), float(h["stdev"]), int(h["n"]),
                                     int(h.get("starts", 1)), None if scv is None else float(scv))
            except (KeyError, TypeError, ValueError, AttributeError):
                raise bad(hw, "expected {date, mean, stdev, n[, starts, start_cv]}") from None
            problem = _history_problem(entry)
            if problem:
                raise bad(f"{hw}.{problem[0]}", problem[1])
            history.append(entry)
        starts = m.get("starts")
        if starts is not None and (not isinstance(starts, list) or not starts
                                   or not all(_finite(x) and x > 0 for x in starts)):
            raise bad(f"{where}.starts", "expected a non-empty list of positive start means")
        metrics[str(key)] = MetricBaseline(str(m.get("unit", "")), float(mean), float(stdev), int(n),
                                           [float(x) for x in samples] if samples else None, history,
                                           [float(x) for x in starts] if starts else None)
    engine, environment = data.get("engine") or {}, data.get("environment") or {}
    for name, value in (("engine", engine), ("environment", environment)):
        if not isinstance(value, dict):
            raise bad(name, "expected a mapping")
    return BaselineFile(
        hardware_key=str(data["hardware_key"]), model=str(data["model"]), server=str(data["server"]),
        metrics=metrics, engine=BaselineEngine.from_dict(engine),
        environment=BaselineEnvironment.from_dict(environment),
        updated=str(data.get("updated", "")), source=str(data.get("source", "")),
    )


def _history_problem(h: HistoryEntry) -> tuple[str, str] | None:
    """(field, what is wrong) for a history entry no run could have written."""
    if not (math.isfinite(h.mean) and h.mean > 0):
        return "mean", f"must be > 0 (a throughput or a time), got {h.mean!r}"
    if not (math.isfinite(h.stdev) and h.stdev >= 0):
        return "stdev", f"must be >= 0, got {h.stdev!r}"
    if h.n < 1:
        return "n", f"expected a positive integer, got {h.n!r}"
    if h.starts < 1:
        return "starts", f"expected a positive integer, got {h.starts!r}"
    if h.start_cv is not None and not (math.isfinite(h.start_cv) and h.start_cv >= 0):
        return "start_cv", f"a between-start CV must be >= 0, got {h.start_cv!r}"
    return None


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


__all__ = ["BaselineStore", "BaselineFile", "BaselineEngine", "BaselineEnvironment", "MetricBaseline", "HistoryEntry",
           "read_baseline", "write_atomic", "model_slug", "check_place", "StatsError"]
