"""Two-level statistics: samples within a server start, starts within a run.

Plain functions on frozen values; no I/O and no wording (the report layer
words the numbers).

The unit of evidence is the **start mean**: the mean of one metric over the
samples of one server start. Start means of an unchanged engine scatter more
than the samples inside one start suggest (warm-up, memory layout, clocks
and co-tenants are fixed for the life of a process), so a verdict built on
samples of one start against samples of another mistakes that scatter for a
change. Here each start contributes one number, and the noise is the spread
of those numbers.

Everything is done on the log scale: ``y = ln(start mean)``. A relative
change is then a difference, ``delta = exp(mean(y_head) - mean(y_base)) - 1``,
and a between-start CV ``c`` is (to first order) the standard deviation of
``y``. Fractions throughout (0.05 = 5 %); nothing is in percent.

Noise (`pooled_spread`)
-----------------------
Every group of start means that share one true value (an arm of this run,
the baseline's starts, a past run) gives a variance estimate of ``y`` with
``n - 1`` degrees of freedom, around its own mean. The estimates are pooled,
weighted by their degrees of freedom, together with a `Prior`: a stated CV
worth ``prior.df`` pseudo degrees of freedom. With few starts the pool is
pulled toward the prior; with many, the data dominate::

    s^2 = (prior.df * prior.cv^2 + sum_i df_i * s_i^2) / (prior.df + sum_i df_i)

This is the posterior mean of a normal variance under a scaled
inverse-chi-square prior; the t quantiles use ``df = prior.df + sum df_i``.

Learned noise (`learned_noise`): the prior is only the fallback of a box
that has not measured itself yet. Once the box's own evidence (this run's
arms, the baseline's starts, the between-start CVs of its history) holds at
least ``MIN_LEARNED_DF`` degrees of freedom, the noise is that evidence
alone: a stated 3 % prior on a GPU whose starts scatter by 0.1 % would
otherwise set a 5 % tolerance (shared/reference/gpu-ab-h100.md). Below it
the box is *calibrating* and the prior is pooled in, as above.
The variance of a start mean already contains the within-start part
(``sigma_b^2 + sigma_w^2 / n``): it is exactly the noise of the unit the
verdict uses.

The decision (`compare_starts`)
-------------------------------
``effect`` is the change signed so that + is better. With
``SE = s * sqrt(1/n_base + 1/n_head)`` and ``t = t_{1 - alpha_look, df}``
the tolerance is ``max(floor, t * SE)`` (the noise sets it until enough
starts make it smaller than the practical floor)::

    effect < -tolerance                 -> REGRESSED     (significant and beyond the floor)
    effect > max(floor, t * SE)         -> IMPROVED
    worst <= threshold                  -> PASS          (the interval rules out a drop beyond it)
    otherwise                           -> INCONCLUSIVE  (could be as bad as ``worst``)

``worst`` is the far end of the one-sided interval on the worse side (the
drop the data cannot rule out at ``alpha_look``) and ``threshold`` the
largest drop the gate accepts (``max_regression``, else the floor). A pass
is earned: a point estimate above -floor with an interval reaching -40 % is
inconclusive, not a pass.

``alpha_look = alpha / looks`` (Bonferroni over the looks the sequential
rule may take), so adding starts while inconclusive does not raise the false
alarm rate above ``alpha``.

The sequential rule (`next_action`)
-----------------------------------
INCONCLUSIVE and the `Budget` allows another block -> "more": run
``budget.step(n)`` more starts per arm (in the ABBA order) and compare again.
Anything else -> "stop". The default block is everything the budget has
left (two looks: R, then max_starts), which keeps the Bonferroni price of
the second look small.

The limit no protocol beats (`starts_needed`)
---------------------------------------------
Two arms of ``n`` starts each, between-start CV ``c``: to catch a drop
``d`` with power ``1 - beta`` at one-sided level ``alpha`` takes
``n = 2 (z_{1-alpha} + z_{1-beta})^2 c^2 / d^2`` starts per arm:
31.5 c^2/d^2 at 95 % power and 1 %, 26.0 c^2/d^2 at 90 %.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scipy import special as _special

from pytest_mxfp4.stats.samples import DEFAULT_FLOOR_PCT, StatsError, Verdict

__all__ = [
    "Prior",
    "DEFAULT_PRIOR",
    "StartSummary",
    "Spread",
    "Pooled",
    "NoiseSource",
    "MIN_LEARNED_DF",
    "Budget",
    "StartComparison",
    "summarize_start",
    "start_means",
    "spread_of",
    "spread_from_cv",
    "pooled_spread",
    "learned_noise",
    "compare_starts",
    "starts_to_decide",
    "outlier_starts",
    "next_action",
    "abba_order",
    "interleave",
    "starts_needed",
    "default_floor",
]


def _finite(xs: Iterable[float], what: str) -> tuple[float, ...]:
    if isinstance(xs, (str, bytes)):
        raise StatsError(f"{what}: expected numbers, got a string")
    out = []
    for i, x in enumerate(xs, 1):
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
            raise StatsError(f"{what}: value {i} is not a finite number: {x!r}")
        out.append(float(x))
    return tuple(out)


def _positive(xs: Iterable[float], what: str) -> tuple[float, ...]:
    out = _finite(xs, what)
    for i, x in enumerate(out, 1):
        if x <= 0:
            raise StatsError(f"{what}: value {i} is {x!r}; start means must be > 0 (a rate or a time)")
    return out


# --------------------------------------------------------------------------
# Values


@dataclass(frozen=True)
class Prior:
    """A stated between-start CV (fraction) worth ``df`` pseudo degrees of
    freedom. ``df = 0`` means no prior (the data alone)."""

    cv: float
    df: float

    def __post_init__(self) -> None:
        for name in ("cv", "df"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise StatsError(f"prior {name} must be a finite number >= 0, got {v!r}")


# The between-start CV of a start mean before any start is seen: 3 %, worth
# 2 starts' evidence. Measured: H200 host-bound decode 2-6 % (bandwidth-bound
# 0.3-1.2 %), the CPU engine here 5-15 % (benchmarks/results/cpu_pools.txt).
# Worth little on purpose: two pairs of starts already outweigh it.
DEFAULT_PRIOR = Prior(cv=0.03, df=2.0)


@dataclass(frozen=True)
class StartSummary:
    """One start of one metric: its samples' count, mean and stdev (ddof 1;
    0.0 for one sample)."""

    n: int
    mean: float
    stdev: float

    @property
    def cv(self) -> float:
        return self.stdev / abs(self.mean) if self.mean else (0.0 if self.stdev == 0 else math.inf)


@dataclass(frozen=True)
class Spread:
    """A variance estimate of log start means and its degrees of freedom."""

    var: float
    df: float

    def __post_init__(self) -> None:
        for name in ("var", "df"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise StatsError(f"spread {name} must be a finite number >= 0, got {v!r}")

    @property
    def cv(self) -> float:
        return math.sqrt(self.var)


@dataclass(frozen=True)
class NoiseSource:
    """One body of evidence about the between-start noise and where it came
    from (e.g. "this run's arms", "baseline starts", "history (4 runs)")."""

    label: str
    spread: Spread


@dataclass(frozen=True)
class Pooled:
    """The pooled between-start noise: ``var`` of log start means, its
    ``df`` (prior included), ``df_data`` (without the prior) and the share
    of the estimate that came from the prior (``prior_weight``, 0..1).
    ``sources``: (label, df, cv) of each body of evidence pooled;
    ``calibrating``: the box's own evidence was too thin, the prior stood in."""

    var: float
    df: float
    df_data: float
    prior_weight: float
    sources: tuple[tuple[str, float, float], ...] = ()
    calibrating: bool = False
    prior: Prior | None = None

    @property
    def cv(self) -> float:
        return math.sqrt(self.var)

    @property
    def measured_cv(self) -> float | None:
        """The CV of the data alone (no prior), None without data."""
        if self.df_data <= 0:
            return None
        num = math.fsum(df * cv * cv for _, df, cv in self.sources)
        return math.sqrt(num / self.df_data)


@dataclass(frozen=True)
class Budget:
    """How far the sequential rule may go: at most ``max_starts`` starts per
    arm, added ``block`` starts per arm at a time (None: everything that is
    left, i.e. one extension, a two-stage design), and no new block once
    ``minutes_used + block_minutes`` would pass ``max_minutes`` (None: no time
    limit)."""

    max_starts: int
    max_minutes: float | None = None
    block: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.max_starts, bool) or not isinstance(self.max_starts, int) or self.max_starts < 1:
            raise StatsError(f"budget max_starts must be an integer >= 1, got {self.max_starts!r}")
        m = self.max_minutes
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or not m > 0):
            raise StatsError(f"budget max_minutes must be > 0, got {m!r}")
        b = self.block
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise StatsError(f"budget block must be an integer >= 1, got {b!r}")

    def step(self, have: int) -> int:
        """Starts per arm to add after a look at ``have`` starts per arm (0: none left)."""
        left = max(0, self.max_starts - have)
        return left if self.block is None else min(self.block, left)

    def looks(self, first: int) -> int:
        """How many comparisons the rule may make when it starts at
        ``first`` starts per arm."""
        n, have = 1, first
        while (k := self.step(have)) > 0:
            have += k
            n += 1
        return n


@dataclass(frozen=True)
class StartComparison:
    """Head arm vs base arm, start means as units.

    delta: head vs base as a fraction, + = numerically bigger.
    effect: the same, + = better (for times smaller is better).
    ci_low/ci_high: two-sided (1 - 2 alpha_look) interval of delta.
    se: standard error of the log difference; df its degrees of freedom.
    tolerance: max(floor, t * se), as a fraction of the base.
    worst/threshold: see the module docstring (the earned pass).
    p_value: one-sided, that head is worse (None without a noise estimate).
    """

    verdict: Verdict
    delta: float
    effect: float
    ci_low: float
    ci_high: float
    se: float
    df: float
    tolerance: float
    floor: float
    p_value: float | None
    alpha_look: float
    n_base: int
    n_head: int
    noise: Pooled
    worst: float = math.nan  # the largest drop (fraction, + = worse) the interval admits
    threshold: float = math.nan  # the largest drop a pass may admit


# --------------------------------------------------------------------------
# Functions


def summarize_start(samples: Iterable[float], what: str = "start") -> StartSummary:
    xs = _finite(samples, what)
    if not xs:
        raise StatsError(f"{what}: no samples")
    n = len(xs)
    m = math.fsum(xs) / n
    sd = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return StartSummary(n=n, mean=m, stdev=sd)


def start_means(samples_by_start: Iterable[Iterable[float]], what: str = "start") -> tuple[float, ...]:
    """The mean of each start's samples, in start order."""
    return tuple(summarize_start(s, f"{what} {i}").mean for i, s in enumerate(samples_by_start))


def spread_of(means: Sequence[float], what: str = "start means") -> Spread:
    """Variance of ln(mean) over starts that share one true value (ddof 1).
    Fewer than 2 starts: no information (df 0)."""
    ys = [math.log(x) for x in _positive(means, what)]
    n = len(ys)
    if n < 2:
        return Spread(0.0, 0.0)
    m = math.fsum(ys) / n
    return Spread(math.fsum((y - m) ** 2 for y in ys) / (n - 1), float(n - 1))


def spread_from_cv(cv: float, df: float) -> Spread:
    """A stored between-start CV (e.g. a past run's) with its degrees of freedom."""
    if isinstance(cv, bool) or not isinstance(cv, (int, float)) or not math.isfinite(cv) or cv < 0:
        raise StatsError(f"between-start CV must be a finite number >= 0, got {cv!r}")
    return Spread(float(cv) ** 2, df)


def pooled_spread(spreads: Iterable[Spread], prior: Prior = DEFAULT_PRIOR) -> Pooled:
    """Pool variance estimates by degrees of freedom, shrunk toward the prior
    (see the module docstring). Without any data and without a prior the
    noise is unknown: StatsError."""
    ss = list(spreads)
    df_data = math.fsum(s.df for s in ss)
    num = prior.df * prior.cv**2 + math.fsum(s.df * s.var for s in ss)
    df = prior.df + df_data
    if df <= 0:
        raise StatsError("no between-start noise estimate: fewer than 2 starts in every group and no prior")
    return Pooled(var=num / df, df=df, df_data=df_data, prior_weight=prior.df / df)


# The box's own evidence needed before it replaces the stated prior: 2 df is
# e.g. 2 + 2 starts of an A/A, or one stored baseline of 3 starts. Fewer and
# the t quantile alone (t(1 df, 0.995) = 64) would make every verdict
# inconclusive; the prior bridges until the box has measured itself.
MIN_LEARNED_DF = 2.0


def learned_noise(sources: Iterable[NoiseSource], fallback: Prior = DEFAULT_PRIOR,
                  min_df: float = MIN_LEARNED_DF) -> Pooled:
    """The between-start noise from this box's own evidence; the stated
    ``fallback`` prior only while that evidence has fewer than ``min_df``
    degrees of freedom (``min_df=math.inf``: always pool the prior in, the
    rule before noise was learned)."""
    src = [x for x in sources if x.spread.df > 0]
    df_data = math.fsum(x.spread.df for x in src)
    calibrating = df_data < min_df
    pooled = pooled_spread([x.spread for x in src], fallback if calibrating else Prior(0.0, 0.0))
    return Pooled(var=pooled.var, df=pooled.df, df_data=pooled.df_data, prior_weight=pooled.prior_weight,
                  sources=tuple((x.label, x.spread.df, x.spread.cv) for x in src), calibrating=calibrating,
                  prior=fallback if calibrating else None)


def _t(df: float, q: float) -> float:
    return float(_special.stdtrit(df, q)) if math.isfinite(df) else float(_special.ndtri(q))


def compare_starts(
    base: Sequence[float],
    head: Sequence[float],
    *,
    higher_is_better: bool,
    floor: float,
    alpha: float = 0.01,
    looks: int = 1,
    extra: Iterable[Spread | NoiseSource] = (),
    prior: Prior = DEFAULT_PRIOR,
    threshold: float | None = None,
    min_learned_df: float = MIN_LEARNED_DF,
    arms_label: str | None = None,
) -> StartComparison:
    """Compare two arms' start means (see the module docstring).

    ``base``/``head``: start means (> 0) of the two arms; either may be a
    single start (its noise then comes from the other arm, ``extra`` and
    the prior). ``extra``: further noise estimates (the baseline's starts,
    history). ``floor``: practical floor as a fraction (0.01 = 1 %).
    ``looks``: how many comparisons the sequential rule may make.
    ``threshold``: the largest drop a pass may admit (fraction; default the
    floor). ``prior``: the fallback while the box is calibrating
    (`learned_noise`).
    """
    b = _positive(base, "base start means")
    h = _positive(head, "head start means")
    if not b or not h:
        raise StatsError("each arm needs at least one start mean")
    if not 0 < alpha < 0.5:
        raise StatsError(f"alpha must be in (0, 0.5), got {alpha!r}")
    if isinstance(looks, bool) or not isinstance(looks, int) or looks < 1:
        raise StatsError(f"looks must be an integer >= 1, got {looks!r}")
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not math.isfinite(floor) or floor < 0:
        raise StatsError(f"floor must be a finite fraction >= 0, got {floor!r}")
    if threshold is None:
        threshold = floor
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not math.isfinite(threshold) \
            or threshold < floor:
        raise StatsError(f"threshold must be a finite fraction >= the floor ({floor!r}), got {threshold!r}")
    arms = NoiseSource(arms_label or "this run's arms",
                       Spread(*_sum_spreads([spread_of(b), spread_of(h)])))
    evidence = [arms] + [x if isinstance(x, NoiseSource) else NoiseSource("history", x) for x in extra]
    noise = learned_noise(evidence, prior, min_learned_df)
    yb = math.fsum(math.log(x) for x in b) / len(b)
    yh = math.fsum(math.log(x) for x in h) / len(h)
    d = yh - yb
    se = math.sqrt(noise.var * (1.0 / len(b) + 1.0 / len(h)))
    a = alpha / looks
    tq = _t(noise.df, 1.0 - a)
    sign = 1.0 if higher_is_better else -1.0
    delta = math.expm1(d)
    ci_low, ci_high = math.expm1(d - tq * se), math.expm1(d + tq * se)
    # effect on the log scale, + = better; compared with tolerances that are
    # fractions of the base, so both are mapped the same way (log1p).
    eff_log = sign * d
    effect = math.expm1(eff_log)
    tol = max(floor, -math.expm1(-tq * se))  # a drop of t*SE on the log scale, as a fraction
    if se > 0:
        p = float(_special.stdtr(noise.df, eff_log / se)) if math.isfinite(noise.df) else float(
            _special.ndtr(eff_log / se))
    else:
        p = 0.0 if eff_log < 0 else 1.0
    worse = -effect  # > 0 when head is worse
    worst = -math.expm1(eff_log - tq * se)  # the drop the interval cannot rule out
    if worse > tol:
        verdict = Verdict.REGRESSED
    elif effect > max(floor, math.expm1(tq * se)):
        verdict = Verdict.IMPROVED
    elif worst <= threshold:
        verdict = Verdict.PASS
    else:
        verdict = Verdict.INCONCLUSIVE
    return StartComparison(
        verdict=verdict, delta=delta, effect=effect, ci_low=ci_low, ci_high=ci_high, se=se, df=noise.df,
        tolerance=tol, floor=float(floor), p_value=p, alpha_look=a, n_base=len(b), n_head=len(h), noise=noise,
        worst=worst, threshold=float(threshold),
    )


def _sum_spreads(spreads: Sequence[Spread]) -> tuple[float, float]:
    """Two within-arm spreads as one pooled (var, df)."""
    df = math.fsum(x.df for x in spreads)
    return (math.fsum(x.df * x.var for x in spreads) / df if df > 0 else 0.0), df


def next_action(comparison: StartComparison, budget: Budget, minutes_used: float = 0.0,
                block_minutes: float = 0.0) -> str:
    """"more" (run ``budget.step(n)`` more starts per arm) while INCONCLUSIVE
    and the budget allows it; else "stop"."""
    if comparison.verdict is not Verdict.INCONCLUSIVE:
        return "stop"
    if max(comparison.n_base, comparison.n_head) >= budget.max_starts:
        return "stop"
    if budget.max_minutes is not None and minutes_used + block_minutes > budget.max_minutes:
        return "stop"
    return "more"


def abba_order(starts: int, arms: tuple[str, str] = ("base", "head")) -> tuple[str, ...]:
    """ABBA blocks: A B B A A B B A ... with ``starts`` starts per arm. A
    linear drift of the machine then falls equally on both arms."""
    if isinstance(starts, bool) or not isinstance(starts, int) or starts < 1:
        raise StatsError(f"starts per arm must be an integer >= 1, got {starts!r}")
    a, b = arms
    out: list[str] = []
    for i in range(starts):
        out += [a, b] if i % 2 == 0 else [b, a]
    return tuple(out)


def interleave(names: Sequence[str], starts: int) -> tuple[tuple[str, int], ...]:
    """Several configs, ``starts`` starts each, as (name, start index) in
    run order: forward, then backward, then forward ... (A B C C B A A B C),
    so slow drift of the machine does not fall on one config."""
    if isinstance(starts, bool) or not isinstance(starts, int) or starts < 1:
        raise StatsError(f"restarts must be an integer >= 1, got {starts!r}")
    order: list[tuple[str, int]] = []
    for i in range(starts):
        seq = list(names) if i % 2 == 0 else list(reversed(names))
        order += [(n, i) for n in seq]
    return tuple(order)


def starts_needed(cv: float, drop: float, alpha: float = 0.01, power: float = 0.95) -> float:
    """Starts per arm that two arms need to catch ``drop`` (fraction) with
    ``power`` at one-sided ``alpha``, between-start CV ``cv`` (normal
    approximation, known variance): 2 (z_{1-alpha} + z_power)^2 cv^2 / drop^2."""
    if not drop > 0:
        raise StatsError(f"drop must be > 0, got {drop!r}")
    z = float(_special.ndtri(1.0 - alpha)) + float(_special.ndtri(power))
    return 2.0 * z * z * cv * cv / (drop * drop)


def default_floor(metric: str) -> float:
    """The practical floor of a metric as a fraction (from stats.DEFAULT_FLOOR_PCT)."""
    if metric not in DEFAULT_FLOOR_PCT:
        raise StatsError(f"no default floor for metric {metric!r}")
    return DEFAULT_FLOOR_PCT[metric] / 100.0


def starts_to_decide(c: StartComparison, max_n: int = 1000) -> int | None:
    """Starts per arm that the measured noise says would decide an
    inconclusive comparison, if the effect stays where it is: enough for the
    interval to clear the threshold (pass) or zero (regressed). None when
    the noise is unknown or it would take more than ``max_n``."""
    cv = c.noise.measured_cv if c.noise.measured_cv is not None else c.noise.cv
    if not cv > 0:
        return None
    worse = -math.log1p(c.effect)  # log scale, + = worse
    thr = -math.log(1.0 - c.threshold) if c.threshold < 1 else math.inf
    margin = thr - worse if worse <= thr else worse  # room to pass, or distance from zero to show a drop
    if margin <= 0:
        return None
    z = float(_special.ndtri(1.0 - c.alpha_look))
    n = math.ceil(2.0 * (z * cv / margin) ** 2)
    return n if n <= max_n else None


def outlier_starts(means: Sequence[float], noise_cv: float, z: float = 4.0) -> list[int]:
    """Indices of start means more than ``z`` noise CVs from the median of
    the others (log scale): shown as outliers, never silently part of the
    noise. Needs 3 starts and a known noise."""
    ys = [math.log(x) for x in _positive(means, "start means")]
    if len(ys) < 3 or not noise_cv > 0:
        return []
    out = []
    for i, y in enumerate(ys):
        rest = sorted(ys[:i] + ys[i + 1:])
        k = len(rest)
        med = rest[k // 2] if k % 2 else 0.5 * (rest[k // 2 - 1] + rest[k // 2])
        if abs(y - med) > z * noise_cv:
            out.append(i)
    return out
