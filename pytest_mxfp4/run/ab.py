"""Server starts as the unit of evidence: the start plan, A/B arms, the
start-level verdict. Plain Python (no pytest).

* `plan_starts`: which (config, arm, start index) runs in which order: each
  config (each arm of an A/B) started R times, interleaved A B B A ... so
  slow drift of the machine does not fall on one of them.
* `parse_override` / `head_config`: the head arm of an A/B run is the base
  server config with overrides given on the command line
  (``--perf-ab-head``): ``image=REF`` (docker runner), ``python=PATH``
  (process runner: the interpreter that runs ``{python}``), ``env.NAME=VALUE``,
  ``args+=--flag value`` (appended arguments), ``wrap=PROGRAM ARGS`` (a
  command prefix, e.g. ``wrap=scripts/with_neighbour.py --duty 0.2``).
* `judge_starts`: start means of this run (and of the baseline or the other
  arm) -> a `stats.Comparison` through `startstats.compare_starts`.
"""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass, replace

from pytest_mxfp4.stats import starts as startstats
from pytest_mxfp4.formats.config import ServerConfig
from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.stats.samples import Comparison, StatsError, Verdict

BASE, HEAD = "base", "head"
HEAD_SUFFIX = "@head"


class ABError(PerfUserError):
    """A bad --perf-ab-head / --perf-restarts."""


# --------------------------------------------------------------------------
# Overrides


@dataclass(frozen=True)
class Override:
    kind: str  # image | python | env | args | wrap
    key: str  # env name for kind env; "" otherwise
    value: str

    def text(self) -> str:
        if self.kind == "env":
            return f"env.{self.key}={self.value}"
        if self.kind == "args":
            return f"args+={self.value}"
        return f"{self.kind}={self.value}"


KINDS = ("image", "python", "env.NAME", "args+", "wrap")


def parse_override(spec: str) -> Override:
    """'image=vllm-cpu:head', 'python=/p/bin/python', 'env.X=Y',
    'args+=--max-num-seqs 4', 'wrap=scripts/with_neighbour.py --duty 0.2'."""
    if "+=" in spec and spec.split("+=", 1)[0] == "args":
        value = spec.split("+=", 1)[1]
        if not value.strip():
            raise ABError(f"--perf-ab-head {spec!r}: nothing to append after args+=")
        _split(spec, value)
        return Override("args", "", value)
    if "=" not in spec:
        raise ABError(f"--perf-ab-head {spec!r}: expected <key>=<value> with <key> one of {', '.join(KINDS)}")
    key, value = spec.split("=", 1)
    key = key.strip()
    if key.startswith("env."):
        name = key[4:]
        if not name or not all(c.isalnum() or c == "_" for c in name):
            raise ABError(f"--perf-ab-head {spec!r}: {key!r} is not env.NAME with a valid variable name")
        return Override("env", name, value)
    if key not in ("image", "python", "wrap"):
        raise ABError(f"--perf-ab-head {spec!r}: unknown key {key!r}; use one of {', '.join(KINDS)}")
    if not value.strip():
        raise ABError(f"--perf-ab-head {spec!r}: {key}= needs a value")
    if key == "wrap":
        _split(spec, value)
    return Override(key, "", value.strip())


def _split(spec: str, value: str) -> list[str]:
    """The words of an args+=/wrap= value, split as a shell would (once, here,
    so that a bad quote is a usage error, not a crash at the first start)."""
    try:
        return shlex.split(value)
    except ValueError as e:
        raise ABError(f"--perf-ab-head {spec!r}: cannot split it into arguments ({e}); close the quote, "
                      "or quote the whole option once, e.g. --perf-ab-head 'args+=--x \"a b\"'") from None


def check_programs(overrides: tuple[Override, ...], base_dir) -> None:
    """The programs a head arm would run (wrap=, python=) exist, checked
    before any arm starts: a typo must not cost a base arm's start first.
    Relative paths are taken from `base_dir`, where servers are started."""
    import shutil
    from pathlib import Path

    for o in overrides:
        if o.kind not in ("wrap", "python"):
            continue
        prog = shlex.split(o.value)[0] if o.kind == "wrap" else o.value
        if "/" in prog:
            p = Path(prog) if Path(prog).is_absolute() else Path(base_dir) / prog
            found = p.is_file() and os.access(p, os.X_OK)
        else:
            found = shutil.which(prog) is not None
        if not found:
            raise ABError(f"--perf-ab-head {o.text()!r}: program {prog!r} not found or not executable"
                          + (f" (relative paths are taken from {base_dir})" if "/" in prog and
                             not Path(prog).is_absolute() else " on PATH") + "; nothing was started")


def head_config(base: ServerConfig, overrides: tuple[Override, ...]) -> ServerConfig:
    """The head arm: `base` with the overrides applied (a new name,
    base.name + '@head'). Raises ABError when an override does not apply to
    the runner or the arms would not differ."""
    cfg = base
    for o in overrides:
        where = f"--perf-ab-head {o.text()!r} (server {base.name!r}, runner {base.runner})"
        if o.kind == "image":
            if cfg.runner != "docker" or cfg.docker is None:
                raise ABError(f"{where}: image= needs the docker runner; use python=, env., args+= or wrap= here")
            cfg = replace(cfg, docker=replace(cfg.docker, image=o.value))
        elif o.kind == "python":
            if cfg.runner != "process":
                raise ABError(f"{where}: python= needs the process runner")
            if "{python}" not in cfg.command:
                raise ABError(f"{where}: the config's command does not start with {{python}}, so there is no "
                              "interpreter to replace")
            cfg = replace(cfg, command=tuple(o.value if part == "{python}" else part for part in cfg.command))
        elif o.kind == "env":
            cfg = replace(cfg, env={**cfg.env, o.key: o.value})
        elif o.kind == "args":
            cfg = replace(cfg, args=(*cfg.args, *shlex.split(o.value)))
        elif o.kind == "wrap":
            if cfg.runner != "process":
                raise ABError(f"{where}: wrap= needs the process runner")
            cfg = replace(cfg, command=(*shlex.split(o.value), *cfg.command))
    if cfg == base:
        raise ABError(f"--perf-ab-head: the head arm of server {base.name!r} is identical to the base arm "
                      f"({', '.join(o.text() for o in overrides) or 'no override'}); an A/B needs arms that differ")
    return replace(cfg, name=base.name + HEAD_SUFFIX, description=(
        f"{base.description} [A/B head: {', '.join(o.text() for o in overrides)}]".strip()))


# --------------------------------------------------------------------------
# The start plan


@dataclass(frozen=True)
class Slot:
    """One server start: the config (the head arm has its own name), the arm
    (None outside an A/B), its index among that config's starts, how many
    starts that config has."""

    server: str
    arm: str | None
    start: int
    of: int
    decides: int | None = None  # the start whose test judges the first look (default: the last)

    @property
    def id(self) -> str:
        """The test id: the config's name for the start that judges the first
        look (the test that carries the verdict, so JUnit names stay
        `test_workload[NAME-CASE]` and are never an unneeded, skipped extra
        start), NAME#i for every other start. A config extended for more
        starts gets its final verdict in the test of its last start."""
        decides = self.of - 1 if self.decides is None else self.decides
        if self.start == decides:
            return self.server
        return f"{self.server}#{self.start}"

    @property
    def last(self) -> bool:
        return self.start == self.of - 1


def plan_starts(servers: list[str], restarts: int, ab: bool, first_look: int | None = None) -> tuple[Slot, ...]:
    """Every start in run order. With ``ab``, each config is a pair of arms
    (name, name@head) and the pair runs in ABBA blocks; several configs run
    one after another, each interleaved with itself. ``first_look``: starts
    per arm judged first (default: all of them)."""
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ABError(f"--perf-restarts / workloads.restarts must be an integer >= 1, got {restarts!r}")
    decides = None if first_look is None else min(first_look, restarts) - 1
    out: list[Slot] = []
    if ab:
        for name in servers:
            for arm_name, i in startstats.interleave([name, name + HEAD_SUFFIX], restarts):
                out.append(Slot(arm_name, HEAD if arm_name.endswith(HEAD_SUFFIX) else BASE, i, restarts, decides))
        return tuple(out)
    for name, i in startstats.interleave(list(servers), restarts):
        out.append(Slot(name, None, i, restarts, decides))
    return tuple(out)


# --------------------------------------------------------------------------
# The verdict on start means


def judge_starts(base_means: list[float], head_means: list[float], *, higher_is_better: bool, floor_pct: float,
                 history_cvs: tuple[tuple[float, int], ...] = (), prior: startstats.Prior = startstats.DEFAULT_PRIOR,
                 alpha: float = 0.01, label: str = "metric", what_base: str = "baseline",
                 disturbed: str | None = None, looks: int = 1, max_regression_pct: float | None = None,
                 extra: tuple[startstats.NoiseSource, ...] = (), arms_label: str | None = None,
                 ) -> tuple[Comparison, startstats.StartComparison]:
    """Start means -> (stats.Comparison for the reports, the raw numbers).
    ``history_cvs``: (between-start CV, its df) of earlier runs of this box;
    ``extra``: further noise evidence (the stored baseline's own starts);
    ``prior``: the stated fallback while the box is calibrating;
    ``max_regression_pct``: the largest drop a pass may admit (default: the floor);
    ``disturbed``: starts left out as disturbed (words for the reason)."""
    hist = [startstats.spread_from_cv(cv, df) for cv, df in history_cvs if df > 0]
    evidence = list(extra)
    if hist:
        evidence.append(startstats.NoiseSource(
            f"history ({len(hist)} run{'s' if len(hist) > 1 else ''})",
            startstats.Spread(*startstats._sum_spreads(hist))))
    floor = floor_pct / 100.0
    threshold = max(floor, max_regression_pct / 100.0) if max_regression_pct is not None else floor
    sc = startstats.compare_starts(base_means, head_means, higher_is_better=higher_is_better,
                                   floor=floor, alpha=alpha, extra=evidence, prior=prior, looks=looks,
                                   threshold=threshold, arms_label=arms_label)
    verdict = sc.verdict
    size = (f"{label}: {sc.n_head} start(s) vs {sc.n_base} {what_base} start(s), "
            f"{100 * sc.delta:+.2f}% ({100 * (1 - 2 * sc.alpha_look):g}% CI {100 * sc.ci_low:+.2f}% .. "
            f"{100 * sc.ci_high:+.2f}%), {noise_words(sc.noise)}")
    if verdict is Verdict.INCONCLUSIVE:
        n = startstats.starts_to_decide(sc)
        size += (f"; could be as bad as {-100 * sc.worst:+.1f}% (threshold {100 * sc.threshold:.1f}%)"
                 + (f"; about {n} start(s) per arm would decide it" if n else ""))
    elif verdict is Verdict.PASS:
        size += f"; rules out a drop beyond {100 * sc.threshold:.1f}%"
    if disturbed:
        size += f"; left out as disturbed: {disturbed}"
    c = Comparison(
        verdict=verdict, delta_pct=100 * sc.delta, effect_pct=100 * sc.effect, ci_low_pct=100 * sc.ci_low,
        ci_high_pct=100 * sc.ci_high, p_value=sc.p_value, tolerance_pct=100 * sc.tolerance,
        n_current=sc.n_head, n_baseline=sc.n_base, reason=size + ".", method="start means (startstats)",
        p_worse=sc.p_value,
    )
    return c, sc


def noise_words(noise: startstats.Pooled) -> str:
    """Where the between-start noise figure came from, in words."""
    measured = noise.measured_cv
    parts = ", ".join(f"{label} {df:g} df" for label, df, _ in noise.sources) or "no starts to learn from"
    if noise.calibrating:
        p = noise.prior
        return (f"calibrating: between-start CV {100 * noise.cv:.2f}% with the stated "
                f"{100 * p.cv:g}% prior worth {p.df:g} df"
                + (f" (measured {100 * measured:.2f}% from {parts})" if measured is not None else ""))
    return f"between-start CV {100 * noise.cv:.2f}% learned from {parts}"


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


__all__ = ["ABError", "Override", "parse_override", "head_config", "Slot", "plan_starts", "judge_starts",
           "BASE", "HEAD", "HEAD_SUFFIX", "StatsError"]
