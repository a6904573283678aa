"""Statistics for the performance gate: summaries, baselines and the verdict.

Everything here is a small frozen value object or a pure function. Numbers
stay numbers: nothing is rounded or formatted for display, except the one
human sentence in `Comparison.reason`.

Units
-----
* A CV (coefficient of variation, `Summary.cv`, `BaselineStats.history_cv`)
  is a *fraction*: stdev / |mean|, so 0.002 means 0.2 %.
* Every field or argument whose name ends in ``_pct`` is in *percent*.

The decision (`compare`)
------------------------
Let ``effect`` be the relative change of the current mean against the
baseline mean, signed so that positive is better (for ms metrics a smaller
number is better). A regression needs BOTH

1. statistical evidence: a one-sided Welch t-test (from summary statistics,
   so a baseline stored as mean/stdev/n works) says the current mean is worse
   at level ``alpha``; and
2. practical size: ``-effect`` exceeds the tolerance
   ``max(floor_pct, k * SE_noise)``, where ``SE_noise`` is the standard error
   of the relative difference of the two means computed from a *robust* noise
   level (see `noise_se_pct`).

Worse than the floor but within a noise-widened tolerance (possible only
while ``k * SE_noise > floor_pct``) -> INCONCLUSIVE as well: a regression
beyond the floor can be neither shown nor ruled out yet, and more samples
shrink SE_noise. (Without this zone a noisy metric would PASS a 5 %
regression on 3 samples because 3 samples cannot resolve 5 %.)
Within the floor -> PASS, whether significant or not (real, but too small to
matter). Beyond tolerance but not significant -> INCONCLUSIVE (take more
samples). Significant and beyond tolerance the good way -> IMPROVED. An
improvement beyond tolerance that is not significant is a PASS: no runs are
spent to confirm good news.

The sequential protocol (`next_step`, `decide`)
------------------------------------------------
Start with `MIN_RUNS` samples. INCONCLUSIVE -> "more": add one sample and
compare again, up to ``policy.max_runs``. A first-look REGRESSED ->
"confirm": measure `CONFIRM_RUNS` fresh samples, append them and compare
again with ``confirm_regressions=False``; only a regression that survives
the fresh samples fails. `decide` runs exactly this loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from enum import Enum


__all__ = [
    "StatsError",
    "percentile",
    "Summary",
    "BaselineStats",
    "Verdict",
    "ComparePolicy",
    "DEFAULT_FLOOR_PCT",
    "DEFAULT_K",
    "DEFAULT_RHO",
    "MIN_RUNS",
    "CONFIRM_RUNS",
    "OUTLIER_Z",
    "policy_for",
    "Comparison",
    "compare",
    "next_step",
    "decide",
    "noise_se_pct",
]


class StatsError(ValueError):
    """Samples or parameters that statistics cannot be computed from
    (NaN, inf, no samples, negative stdev ...). The message names the metric
    when one was given."""


def _where(metric: str) -> str:
    return f"{metric}: " if metric else ""


def cv(mean: float, stdev: float) -> float:
    """Coefficient of variation, stdev / |mean|, as a fraction: the one
    definition every module uses. When mean == 0 it is undefined: 0.0 if
    stdev is also 0 (no spread at all), else +inf. Callers that want "no CV"
    for n < 2 say so at the call site."""
    if mean == 0:
        return 0.0 if stdev == 0 else math.inf
    return stdev / abs(mean)


def _median_sorted(xs: Sequence[float]) -> float:
    n = len(xs)
    mid = n // 2
    return float(xs[mid]) if n % 2 else (xs[mid - 1] + xs[mid]) / 2.0


def _finite_floats(samples: Iterable[float], metric: str, what: str = "sample") -> tuple[float, ...]:
    if isinstance(samples, (str, bytes)):
        raise StatsError(f"{_where(metric)}expected a sequence of numbers, got the string {samples!r}")
    try:
        items = list(samples)
    except TypeError:
        raise StatsError(f"{_where(metric)}expected a sequence of numbers, got {samples!r}") from None
    out = []
    for i, x in enumerate(items, 1):
        if isinstance(x, bool):
            raise StatsError(f"{_where(metric)}{what} {i} of {len(items)} is a bool ({x!r}), not a number")
        try:
            v = float(x)
        except (TypeError, ValueError):
            raise StatsError(f"{_where(metric)}{what} {i} of {len(items)} is not a number: {x!r}") from None
        if math.isnan(v):
            raise StatsError(f"{_where(metric)}{what} {i} of {len(items)} is NaN")
        if math.isinf(v):
            raise StatsError(f"{_where(metric)}{what} {i} of {len(items)} is {'+' if v > 0 else '-'}inf")
        out.append(v)
    return tuple(out)


# --------------------------------------------------------------------------
# Summary


@dataclass(frozen=True)
class Summary:
    """Descriptive statistics of one run's samples.

    ``stdev`` is the sample standard deviation (ddof=1); it is 0.0 for n=1,
    where it cannot be estimated (callers that need to know check ``n``).
    """

    n: int
    mean: float
    stdev: float
    median: float
    min: float
    max: float

    @property
    def cv(self) -> float:
        """See `cv`."""
        return cv(self.mean, self.stdev)

    @classmethod
    def from_samples(cls, samples: Iterable[float], metric: str = "") -> Summary:
        """Summarise finite samples; NaN, inf, non-numbers or no samples raise
        `StatsError` naming ``metric``."""
        xs = _finite_floats(samples, metric)
        n = len(xs)
        if n == 0:
            raise StatsError(f"{_where(metric)}no samples")
        mean = math.fsum(xs) / n
        if n > 1:
            var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1)
            stdev = math.sqrt(var)
        else:
            stdev = 0.0
        s = sorted(xs)
        return cls(n=n, mean=mean, stdev=stdev, median=_median_sorted(s), min=s[0], max=s[-1])


# --------------------------------------------------------------------------
# Baseline


@dataclass(frozen=True)
class BaselineStats:
    """What a stored baseline knows about one metric.

    ``samples`` (when kept) allows outlier screening; a baseline stored only as
    mean/stdev/n is compared through summary statistics. ``history_cv`` holds
    the CVs (fractions) of past runs of this metric; their median is a robust
    noise level that one unusually quiet run cannot lower.
    """

    mean: float
    stdev: float
    n: int
    samples: tuple[float, ...] | None = None
    history_cv: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for name in ("mean", "stdev"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise StatsError(f"baseline {name} must be a finite number, got {v!r}")
        if self.stdev < 0:
            raise StatsError(f"baseline stdev must be >= 0, got {self.stdev!r}")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise StatsError(f"baseline n must be an integer >= 1, got {self.n!r}")
        if self.samples is not None:
            xs = _finite_floats(self.samples, "", "baseline sample")
            if len(xs) != self.n:
                raise StatsError(f"baseline has n={self.n} but {len(xs)} samples")
            object.__setattr__(self, "samples", xs)
        hist = _finite_floats(self.history_cv, "", "history_cv value")
        if any(c < 0 for c in hist):
            raise StatsError(f"history_cv values must be >= 0, got {hist!r}")
        object.__setattr__(self, "history_cv", hist)

    @property
    def cv(self) -> float:
        """See `cv`."""
        return cv(self.mean, self.stdev)

    @property
    def history_noise(self) -> float | None:
        """Median of ``history_cv`` (fraction), or None without history."""
        if not self.history_cv:
            return None
        return _median_sorted(sorted(self.history_cv))

    @classmethod
    def from_samples(
        cls, samples: Iterable[float], history_cv: Iterable[float] = (), metric: str = ""
    ) -> BaselineStats:
        xs = _finite_floats(samples, metric)
        s = Summary.from_samples(xs, metric)
        return cls._make(metric, mean=s.mean, stdev=s.stdev, n=s.n, samples=xs, history_cv=history_cv)

    @classmethod
    def from_summary(
        cls, mean: float, stdev: float, n: int, history_cv: Iterable[float] = (), metric: str = ""
    ) -> BaselineStats:
        """A baseline known only by its summary (e.g. copied from a results
        page). With n=1 the stdev only serves as a noise level."""
        return cls._make(metric, mean=mean, stdev=stdev, n=n, samples=None, history_cv=history_cv)

    @classmethod
    def _make(cls, metric: str, history_cv: Iterable[float], **kw) -> BaselineStats:
        try:
            hist = tuple(history_cv) if not isinstance(history_cv, (str, bytes)) else history_cv
            return cls(history_cv=hist, **kw)
        except StatsError as e:
            if metric:
                raise StatsError(f"{metric}: {e}") from None
            raise


# --------------------------------------------------------------------------
# Noise of one run against its history


class NoiseState(str, Enum):
    LOW_VS_HISTORY = "low-vs-history"  # suspiciously quiet: a warm state, a cache?
    HIGH_VS_HISTORY = "high-vs-history"  # noisier than usual
    LOW_VS_PEERS = "low-vs-peers"  # no history; quiet next to the same metric's other cases


# "Suspiciously low CV": under this fraction of the metric's history median
# CV (needs >= NOISE_HISTORY_MIN past runs) ...
LOW_CV_VS_HISTORY = 0.25
NOISE_HISTORY_MIN = 3
# ... or, without history, under this fraction of the median CV of the same
# metric's other cases in the same config (needs >= 2 of them).
LOW_CV_VS_PEERS = 0.2
HIGH_CV_VS_HISTORY = 3.0  # "noisier than usual"


def noise_state(run_cv: float, history_cvs: Iterable[float], peer_cvs: Iterable[float] = ()
                ) -> tuple[NoiseState | None, float | None]:
    """Is this run's CV out of line with its history (or, without history,
    with its peers)? Returns the state and the median it was held against."""
    hist = sorted(h for h in history_cvs if math.isfinite(h))
    if len(hist) >= NOISE_HISTORY_MIN:
        med = _median_sorted(hist)
        if med > 0 and run_cv < LOW_CV_VS_HISTORY * med:
            return NoiseState.LOW_VS_HISTORY, med
        if med > 0 and run_cv > HIGH_CV_VS_HISTORY * med:
            return NoiseState.HIGH_VS_HISTORY, med
        return None, med
    peers = sorted(p for p in peer_cvs if p is not None and math.isfinite(p))
    if len(peers) >= 2:
        med = _median_sorted(peers)
        if med > 0 and run_cv < LOW_CV_VS_PEERS * med:
            return NoiseState.LOW_VS_PEERS, med
        return None, med
    return None, None


# --------------------------------------------------------------------------
# Policy


class Verdict(str, Enum):
    PASS = "pass"
    IMPROVED = "improved"
    REGRESSED = "regressed"
    INCONCLUSIVE = "inconclusive"
    NO_BASELINE = "no-baseline"
    ERROR = "error"  # not produced by compare(); for callers (a failed measurement)
    INCOMPARABLE = "incomparable"


# Calibrated by `python3 benchmarks/gate_quality.py --calibrate` (the sweep
# is in benchmarks/README.md). The binding case is prefill whose sessions
# switch between a quiet (0.3 %) and a noisy (2-7 %) regime: with k = 3 and
# rho = 0.2 its A/A false-alarm rate is ~0.5 %, every other metric is below
# 0.2 %. Smaller k or rho push that case over 1 %; larger ones only lose
# power (k = 3.5: pp512 needs an 18 % regression for 95 % detection instead
# of 15 %). rho = 0.2 is also what the results page shows for pp2048 in its
# noisy state: run means 4200-4500 (sd ~3.5 %) against a within-run CV of
# ~7.7 %, i.e. a between-run variance ~1/4 of the within-run one.
DEFAULT_K = 3.0
DEFAULT_RHO = 0.2

# Practical-significance floors in percent, per metric name.
#  * tg_tps 1.0: the user treats +0.8 % tg32 as parity, so the floor must be
#    >= 0.8 %; 1.0 % leaves margin over that parity band and still detects a
#    1.5 % tg32 regression with > 95 % probability at CV 0.2 %.
#  * prefill throughput and the prefill-dominated latencies 5.0: the results
#    page reports 2-7 % run-to-run swings of prefill (prefix caching, warm-up);
#    a smaller floor turns that session-level drift into false alarms.
#  * agg_tps 2.0 (N concurrent streams, tokens / wall): its wall holds the
#    N prefills and the engine's scheduling of them, not decode alone, so it
#    moves more than one stream's tg; 2 % is the smallest aggregate change
#    a serving user acts on (vLLM bench reports it to 0.1 tok/s).
DEFAULT_FLOOR_PCT: dict[str, float] = {
    "tg_tps": 1.0,
    "agg_tps": 2.0,
    "pp_tps": 5.0,
    "ttfr_ms": 5.0,
    "est_ppt_ms": 5.0,
    "e2e_ttft_ms": 5.0,
    # speculative decoding: acceptance moves with the prompt text sample to
    # sample; 2 % keeps one odd prompt from reading as a drafter change
    "accept_pct": 2.0,
    "accept_len": 2.0,
}

MIN_RUNS = 3  # samples of the first look
CONFIRM_RUNS = 2  # fresh samples measured to confirm a first-look regression
OUTLIER_Z = 5.0  # screening fence, in robust standard deviations


@dataclass(frozen=True)
class ComparePolicy:
    """How `compare` decides. ``floor_pct`` in percent; ``alpha`` one-sided;
    ``k`` multiplies the noise standard error; ``metric`` only names the
    metric in messages."""

    floor_pct: float
    alpha: float = 0.01
    k: float = DEFAULT_K
    max_runs: int = 15
    confirm_regressions: bool = True
    rho: float = DEFAULT_RHO
    metric: str = ""

    def __post_init__(self) -> None:
        w = _where(self.metric)
        for name in ("floor_pct", "alpha", "k", "rho"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise StatsError(f"{w}policy {name} must be a finite number, got {v!r}")
        if self.floor_pct < 0:
            raise StatsError(f"{w}policy floor_pct must be >= 0, got {self.floor_pct!r}")
        if not 0 < self.alpha < 0.5:
            raise StatsError(f"{w}policy alpha must be in (0, 0.5), got {self.alpha!r}")
        if self.k < 0:
            raise StatsError(f"{w}policy k must be >= 0, got {self.k!r}")
        if not 0 <= self.rho < 1:
            raise StatsError(f"{w}policy rho must be in [0, 1), got {self.rho!r}")
        if isinstance(self.max_runs, bool) or not isinstance(self.max_runs, int) or self.max_runs < 1:
            raise StatsError(f"{w}policy max_runs must be an integer >= 1, got {self.max_runs!r}")


def policy_for(metric: str, **overrides) -> ComparePolicy:
    """The default policy of ``metric`` (a key of `DEFAULT_FLOOR_PCT`), with
    any `ComparePolicy` field overridden. An unknown metric needs an explicit
    ``floor_pct``."""
    fields = {f for f in ComparePolicy.__dataclass_fields__}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise StatsError(f"{_where(metric)}unknown policy field {unknown[0]!r}; allowed: {', '.join(sorted(fields))}")
    if "floor_pct" not in overrides and metric not in DEFAULT_FLOOR_PCT:
        raise StatsError(
            f"no default floor for metric {metric!r} (known: {', '.join(DEFAULT_FLOOR_PCT)}); pass floor_pct="
        )
    args = {"floor_pct": DEFAULT_FLOOR_PCT.get(metric, 0.0), "metric": metric}
    args.update(overrides)
    return ComparePolicy(**args)


# --------------------------------------------------------------------------
# Comparison


@dataclass(frozen=True)
class Comparison:
    """The outcome of `compare`.

    delta_pct: current mean vs baseline mean in percent, + = numerically bigger.
    effect_pct: the same change signed so that + = better.
    ci_low_pct/ci_high_pct: two-sided (1 - 2*alpha) confidence interval of
        delta_pct (the interval that matches the one-sided test at alpha).
    p_value: one-sided p-value in the direction the mean moved (1.0 when the
        means are identical); None when no variance could be estimated.
    tolerance_pct: the practical tolerance the effect was held against.
    n_current/n_baseline: samples measured; dropped_*: of those, how many the
        outlier screen set aside.
    """

    verdict: Verdict
    delta_pct: float | None
    effect_pct: float | None
    ci_low_pct: float | None
    ci_high_pct: float | None
    p_value: float | None
    tolerance_pct: float | None
    n_current: int
    n_baseline: int
    reason: str
    dropped_current: int = 0
    dropped_baseline: int = 0
    why: Why | None = None  # which branch of the rule decided (None: read from an old file)
    method: str = ""  # the test used, e.g. "Welch t-test"
    p_worse: float | None = None  # one-sided p-value of "worse"

    @classmethod
    def without_estimate(cls, verdict: Verdict, why: Why, n_current: int, n_baseline: int,
                         metric: str = "") -> Comparison:
        """A comparison that could not estimate a change (no or zero baseline)."""
        c = cls(verdict, None, None, None, None, None, None, n_current, n_baseline, "", why=why)
        return replace(c, reason=explain(c, policy_for(metric) if metric in DEFAULT_FLOOR_PCT
                                         else ComparePolicy(floor_pct=0.0, metric=metric)))


def _screen(xs: tuple[float, ...], noise_cv: float) -> tuple[tuple[float, ...], int]:
    """Set aside samples that lie more than OUTLIER_Z robust standard
    deviations from the median (robust sd = max(1.4826 * MAD, noise_cv *
    |median|)): at most one below 20 samples, n // 10 above. Runs of fewer
    than 5 samples are never screened: there a suspicious sample inflates the
    variance, the verdict comes out INCONCLUSIVE and more samples are taken,
    so an intermittent slowdown is never hidden on a thin sample."""
    n = len(xs)
    if n < 5:
        return xs, 0
    max_drop = max(1, n // 10)
    s = sorted(xs)
    med = _median_sorted(s)
    mad = _median_sorted(sorted(abs(x - med) for x in xs))
    scale = max(1.482602218505602 * mad, noise_cv * abs(med))
    if scale <= 0:
        return xs, 0
    fence = OUTLIER_Z * scale
    far = sorted((abs(x - med), i) for i, x in enumerate(xs) if abs(x - med) > fence)
    drop = {i for _, i in far[-max_drop:]} if far else set()
    if not drop:
        return xs, 0
    return tuple(x for i, x in enumerate(xs) if i not in drop), len(drop)


def _moments(xs: tuple[float, ...]) -> tuple[float, float]:
    n = len(xs)
    m = math.fsum(xs) / n
    s = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return m, s


def noise_se_pct(
    mean_c: float,
    sd_c: float,
    n_c: int,
    mean_b: float,
    sd_b: float,
    n_b: int,
    history: float | None,
    rho: float = 0.0,
) -> float:
    """Standard error (percent of the baseline mean) of the difference of the
    two session means, computed from a *robust* noise level per side:

        sd_b' = max(sd_b, h * |mean_b|)
        sd_c' = max(sd_c, h * |mean_c|, cv_b * |mean_c|)
        SE^2  = sd_c'^2 * (rho + (1 - rho) / n_c)
              + sd_b'^2 * (rho + (1 - rho) / n_b)        (then / |mean_b|)

    h is the median history CV, so one lucky-quiet run (the baseline, or a
    3-sample current run) cannot shrink the tolerance below the noise this
    metric usually shows; a side with n=1 has sd 0 and takes its noise from
    these floors (a lone baseline value also from the current CV).

    rho is the intra-session correlation: samples of one session share its
    warm-up, prefix-cache and clock state, so the variance of a session mean
    is sd^2 * (rho + (1 - rho) / n), not sd^2 / n, and more samples cannot
    make two sessions agree better than ``sd * sqrt(2 * rho)``. With rho = 0
    and equal CVs c this is exactly the pooled form c * sqrt(1/n_b + 1/n_c);
    with unequal CVs it is the Welch standard error, which the pooled form
    underestimates when the smaller sample is the noisier one.
    """
    h = history or 0.0
    cv_b = sd_b / abs(mean_b) if mean_b else 0.0
    sb = max(sd_b, h * abs(mean_b))
    if n_b == 1 and mean_c:
        sb = max(sb, sd_c / abs(mean_c) * abs(mean_b))
    sc = max(sd_c, h * abs(mean_c), cv_b * abs(mean_c))
    var = sc * sc * (rho + (1.0 - rho) / n_c) + sb * sb * (rho + (1.0 - rho) / n_b)
    return 100.0 * math.sqrt(var) / abs(mean_b)


def _welch(
    m_c: float, s_c: float, n_c: int, m_b: float, s_b: float, n_b: int, alpha: float, history: float | None
) -> tuple[float | None, float | None, float | None, float | None, str]:
    """One-sided p-values (current < baseline, current > baseline) and the
    half-width of the two-sided (1-2 alpha) CI of the difference of means.

    Returns (p_less, p_greater, half_width, df, method). p values are None
    when no variance can be estimated at all.
    """
    diff = m_c - m_b
    if n_c >= 2 and n_b >= 2:
        # Welch: unequal variances, Welch-Satterthwaite degrees of freedom.
        a, b = s_c * s_c / n_c, s_b * s_b / n_b
        se2 = a + b
        if se2 > 0:
            df = se2 * se2 / (a * a / (n_c - 1) + b * b / (n_b - 1))
            method = "Welch t-test"
        else:
            df = None
    elif n_c + n_b >= 3:
        # One side has a single sample, so only the other side's variance can
        # be estimated: the pooled (Student) test then is the prediction test
        # "is the lone value drawn from the other side's distribution?".
        pooled = ((n_c - 1) * s_c * s_c + (n_b - 1) * s_b * s_b) / (n_c + n_b - 2)
        se2 = pooled * (1.0 / n_c + 1.0 / n_b)
        df = float(n_c + n_b - 2) if se2 > 0 else None
        method = "pooled t-test (one side has n=1)"
    else:
        se2 = 0.0
        df = None
        method = ""
    # scipy.special is imported here, not at module level, and scipy.stats
    # not at all (0.5 s): the offline tools import this module, and Student's
    # t CDF (stdtr) is all the test needs.
    from scipy import special as _special

    if df is not None:
        p_less = float(_special.stdtr(df, diff / math.sqrt(se2)))
        p_greater = 1.0 - p_less
        half = float(_special.stdtrit(df, 1.0 - alpha)) * math.sqrt(se2)
        return p_less, p_greater, half, df, method
    if n_c == 1 and n_b == 1:
        if history:
            # Two single values: the only noise estimate is the history.
            se = history * abs(m_b) * math.sqrt(2.0)
            z = diff / se
            p_less = float(_special.ndtr(z))
            half = float(_special.ndtri(1.0 - alpha)) * se
            return p_less, 1.0 - p_less, half, math.inf, "z-test on history noise (n=1 on both sides)"
        return None, None, None, None, "no variance estimate (n=1 on both sides, no history)"
    # Zero observed variance on both sides: any difference is exact.
    method = "zero variance on both sides"
    if diff < 0:
        return 0.0, 1.0, 0.0, None, method
    if diff > 0:
        return 1.0, 0.0, 0.0, None, method
    return 1.0, 1.0, 0.0, None, method


def _fmt_p(p: float) -> str:
    return f"p={p:.2g}" if p >= 1e-4 else "p<0.0001"


class Why(str, Enum):
    """Which branch of the decision rule produced a verdict (the words for
    it are `explain`'s)."""

    NO_BASELINE = "no-baseline"
    ZERO_BASELINE = "zero-baseline"
    SIGNIFICANT_WORSE = "significant-worse"  # beyond tolerance and significant
    NOT_SIGNIFICANT_WORSE = "not-significant-worse"  # beyond tolerance, not significant
    WITHIN_NOISE = "within-noise"  # beyond the floor, inside the noise tolerance
    SIGNIFICANT_BETTER = "significant-better"
    WITHIN_TOLERANCE = "within-tolerance"
    NOT_SIGNIFICANT_BETTER = "not-significant-better"


def decide_verdict(effect: float, tol: float, floor: float, p_worse: float | None, p_value: float | None,
                   alpha: float) -> tuple[Verdict, Why]:
    """The decision rule (module docstring) on numbers already computed:
    `effect` signed so that + is better, `tol` >= `floor` in percent."""
    if effect < -tol:
        if p_worse is not None and p_worse < alpha:
            return Verdict.REGRESSED, Why.SIGNIFICANT_WORSE
        return Verdict.INCONCLUSIVE, Why.NOT_SIGNIFICANT_WORSE
    if effect < -floor:
        # tol > floor here: the noise, not the floor, sets the tolerance, so
        # a regression beyond the floor can neither be shown nor ruled out.
        return Verdict.INCONCLUSIVE, Why.WITHIN_NOISE
    if effect > tol and p_value is not None and p_value < alpha:
        return Verdict.IMPROVED, Why.SIGNIFICANT_BETTER
    if abs(effect) <= tol:
        return Verdict.PASS, Why.WITHIN_TOLERANCE
    return Verdict.PASS, Why.NOT_SIGNIFICANT_BETTER


def compare(
    current: Sequence[float],
    baseline: BaselineStats | None,
    *,
    higher_is_better: bool,
    policy: ComparePolicy,
) -> Comparison:
    """Compare the current samples of one metric with its baseline.

    Raises `StatsError` for unusable current samples (NaN, inf, none). See
    the module docstring for the decision rule.
    """
    metric = policy.metric
    cur_all = _finite_floats(current, metric)
    n_cur = len(cur_all)
    if n_cur == 0:
        raise StatsError(f"{_where(metric)}no samples")
    if baseline is None:
        return Comparison.without_estimate(Verdict.NO_BASELINE, Why.NO_BASELINE, n_cur, 0, metric)
    if baseline.mean == 0:
        return Comparison.without_estimate(Verdict.INCOMPARABLE, Why.ZERO_BASELINE, n_cur, baseline.n, metric)

    hist = baseline.history_noise
    # Outlier screen (only sides with >= 5 samples; see _screen).
    cur, drop_c = _screen(cur_all, hist or 0.0)
    if baseline.samples is not None:
        base, drop_b = _screen(baseline.samples, hist or 0.0)
        m_b, s_b = _moments(base) if drop_b else (baseline.mean, baseline.stdev)
        n_b = len(base)
    else:
        drop_b, m_b, s_b, n_b = 0, baseline.mean, baseline.stdev, baseline.n
    m_c, s_c = _moments(cur)
    n_c = len(cur)

    scale = abs(m_b)
    delta = 100.0 * (m_c - m_b) / scale
    effect = delta if higher_is_better else -delta
    tol = max(policy.floor_pct, policy.k * noise_se_pct(m_c, s_c, n_c, m_b, s_b, n_b, hist, policy.rho))

    p_less, p_greater, half, _df, method = _welch(m_c, s_c, n_c, m_b, s_b, n_b, policy.alpha, hist)
    p_worse = p_value = ci_lo = ci_hi = None
    if p_less is not None:
        p_worse = p_less if higher_is_better else p_greater
        p_better = p_greater if higher_is_better else p_less
        p_value = 1.0 if m_c == m_b else (p_worse if effect < 0 else p_better)
        ci_lo = delta - 100.0 * half / scale
        ci_hi = delta + 100.0 * half / scale
    verdict, why = decide_verdict(effect, tol, policy.floor_pct, p_worse, p_value, policy.alpha)
    c = Comparison(verdict=verdict, delta_pct=delta, effect_pct=effect, ci_low_pct=ci_lo, ci_high_pct=ci_hi,
                   p_value=p_value, tolerance_pct=tol, n_current=n_cur, n_baseline=baseline.n, reason="",
                   dropped_current=drop_c, dropped_baseline=drop_b, why=why, method=method, p_worse=p_worse)
    return replace(c, reason=explain(c, policy))


def explain(c: Comparison, policy: ComparePolicy) -> str:
    """One sentence for a `Comparison`: the size of the change, its interval,
    and which part of the rule decided."""
    label = policy.metric or "metric"
    if c.why is Why.NO_BASELINE:
        return f"{label}: no baseline to compare with."
    if c.why is Why.ZERO_BASELINE:
        return f"{label}: baseline mean is 0, so a percent change is undefined."
    dropped = ""
    if c.dropped_current or c.dropped_baseline:
        parts = []
        if c.dropped_current:
            parts.append(f"{c.dropped_current} of {c.n_current} current")
        if c.dropped_baseline:
            parts.append(f"{c.dropped_baseline} of {c.n_baseline} baseline")
        dropped = f" ({' and '.join(parts)} sample(s) set aside as outliers)"
    level = 100.0 * (1.0 - 2.0 * policy.alpha)
    ci = f" ({level:g}% CI {c.ci_low_pct:+.2f}% .. {c.ci_high_pct:+.2f}%)" if c.ci_low_pct is not None else ""
    if c.effect_pct == 0:
        size = f"{label} is the same as baseline{ci}"
    else:
        word = "better" if c.effect_pct > 0 else "worse"
        size = f"{label} is {abs(c.effect_pct):.2f}% {word} than baseline{ci}"
    ptxt = _fmt_p(c.p_value) if c.p_value is not None else "p unknown"
    tol, alpha = c.tolerance_pct, policy.alpha
    n_used = c.n_current - c.dropped_current
    if c.why in (Why.SIGNIFICANT_WORSE, Why.SIGNIFICANT_BETTER):
        return f"{size}, beyond the {tol:.2f}% tolerance and significant ({ptxt} < {alpha:g}){dropped}."
    if c.why is Why.NOT_SIGNIFICANT_WORSE:
        why = c.method if c.p_worse is None else f"{ptxt} >= {alpha:g}"
        return f"{size}, beyond the {tol:.2f}% tolerance but not significant ({why}){dropped}."
    if c.why is Why.WITHIN_NOISE:
        return (f"{size}: beyond the {policy.floor_pct:g}% floor but within the {tol:.2f}% noise "
                f"tolerance of {n_used} sample(s) ({ptxt}){dropped}.")
    if c.why is Why.WITHIN_TOLERANCE:
        return f"{size}, within the {tol:.2f}% tolerance{dropped}."
    return (f"{size}, beyond the {tol:.2f}% tolerance but not significant ({ptxt}); "
            f"good news is not re-measured{dropped}.")


def next_step(comparison: Comparison, n_current: int, policy: ComparePolicy) -> str:
    """What to do after `compare`:

    "more"    INCONCLUSIVE and fewer than ``policy.max_runs`` samples: measure
              one more sample and compare all samples again.
    "confirm" REGRESSED, ``policy.confirm_regressions`` and room left under
              ``max_runs``: measure `CONFIRM_RUNS` fresh samples, append them
              and compare again with ``replace(policy,
              confirm_regressions=False)``; the regression stands only if it
              survives (that comparison may itself ask for "more").
    "stop"    anything else: the verdict is final (an INCONCLUSIVE at
              max_runs stays inconclusive; a regression at max_runs is final).
    """
    room = n_current < policy.max_runs
    if comparison.verdict is Verdict.INCONCLUSIVE and room:
        return "more"
    if comparison.verdict is Verdict.REGRESSED and policy.confirm_regressions and room:
        return "confirm"
    return "stop"


def decide(
    measure: Callable[[int], Sequence[float]],
    baseline: BaselineStats | None,
    *,
    higher_is_better: bool,
    policy: ComparePolicy,
    initial_runs: int = MIN_RUNS,
    confirm_runs: int = CONFIRM_RUNS,
) -> tuple[Comparison, tuple[float, ...]]:
    """Run the sequential protocol of `next_step`. ``measure(k)`` returns k
    new samples. Returns the final comparison and every sample measured."""
    if initial_runs < 1 or confirm_runs < 1:
        raise StatsError(f"{_where(policy.metric)}initial_runs and confirm_runs must be >= 1")
    samples = list(measure(initial_runs))
    pol = policy
    while True:
        c = compare(samples, baseline, higher_is_better=higher_is_better, policy=pol)
        step = next_step(c, len(samples), pol)
        if step == "stop":
            return c, tuple(samples)
        if step == "more":
            samples.extend(measure(1))
        else:  # confirm
            samples.extend(measure(min(confirm_runs, max(1, pol.max_runs - len(samples)))))
            pol = replace(pol, confirm_regressions=False)


def percentile(samples: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between order
    statistics (numpy's default): p50 is the median; with n samples, p99
    lies between the two largest. No samples raise `StatsError`."""
    xs = sorted(_finite_floats(samples, f"p{q:g}"))
    if not xs:
        raise StatsError(f"p{q:g}: no samples")
    if not 0 <= q <= 100:
        raise StatsError(f"percentile {q!r} is not within 0..100")
    pos = (len(xs) - 1) * q / 100.0
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)
