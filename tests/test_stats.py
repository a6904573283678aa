"""Known-answer tests of pytest_mxfp4.stats.samples.

Expected t statistics, degrees of freedom and p-values are computed here by
hand (plain Python sums, the Welch-Satterthwaite formula, and the Student t
CDF through the regularized incomplete beta function), never through
scipy.stats.ttest_ind_from_stats, which the module itself uses.
"""

from __future__ import annotations

import importlib.util
import io
import math
import statistics
import sys
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path

import pytest
from scipy.special import betainc

from pytest_mxfp4.stats import samples as stats
from pytest_mxfp4.stats.samples import (
    DEFAULT_FLOOR_PCT,
    BaselineStats,
    ComparePolicy,
    Comparison,
    StatsError,
    Summary,
    Verdict,
    compare,
    decide,
    next_step,
    noise_se_pct,
    policy_for,
)

ROOT = Path(__file__).resolve().parents[1]

# Baseline of 10 samples: mean exactly 100, sum of squares 28 -> var 28/9.
BASE = [100.0, 102.0, 98.0, 101.0, 99.0, 100.0, 103.0, 97.0, 100.0, 100.0]
BASE_MEAN = 100.0
BASE_VAR = 28.0 / 9.0


# -- hand formulas ----------------------------------------------------------


def mean_var(xs):
    n = len(xs)
    m = sum(xs) / n
    return m, sum((x - m) ** 2 for x in xs) / (n - 1)


def t_cdf(t: float, df: float) -> float:
    """Student t CDF via I_x(df/2, 1/2), x = df / (df + t^2)."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t < 0 else 1.0 - tail


def t_quantile(q: float, df: float) -> float:
    lo, hi = 0.0, 1000.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def welch_by_hand(cur, base):
    mc, vc = mean_var(cur)
    mb, vb = mean_var(base)
    a, b = vc / len(cur), vb / len(base)
    t = (mc - mb) / math.sqrt(a + b)
    df = (a + b) ** 2 / (a * a / (len(cur) - 1) + b * b / (len(base) - 1))
    return t, df, math.sqrt(a + b)


def pol(metric="tg_tps", **kw) -> ComparePolicy:
    return policy_for(metric, **kw)


# -- Summary ----------------------------------------------------------------


def test_summary_known_values():
    s = Summary.from_samples([4, 1, 3, 2])
    assert (s.n, s.mean, s.median, s.min, s.max) == (4, 2.5, 2.5, 1.0, 4.0)
    assert s.stdev == pytest.approx(math.sqrt(5.0 / 3.0), rel=1e-12)
    assert s.cv == pytest.approx(math.sqrt(5.0 / 3.0) / 2.5, rel=1e-12)
    odd = Summary.from_samples((x for x in [5.0, 1.0, 3.0]))  # any iterable
    assert odd.median == 3.0 and odd.stdev == pytest.approx(2.0)


def test_summary_single_sample_and_zero_mean_cv():
    one = Summary.from_samples([31.6])
    assert one.n == 1 and one.stdev == 0.0 and one.cv == 0.0 and one.median == 31.6
    assert Summary.from_samples([0.0, 0.0]).cv == 0.0
    assert Summary.from_samples([-1.0, 1.0]).cv == math.inf
    assert Summary.from_samples([-2.0, -4.0]).cv == pytest.approx(math.sqrt(2) / 3)


@pytest.mark.parametrize(
    "samples, message",
    [
        ([1.0, float("nan"), 2.0], r"tg_tps: sample 2 of 3 is NaN"),
        ([1.0, float("inf")], r"tg_tps: sample 2 of 2 is \+inf"),
        ([float("-inf")], r"tg_tps: sample 1 of 1 is -inf"),
        ([], r"tg_tps: no samples"),
        ("31.6", r"tg_tps: expected a sequence of numbers"),
        ([1.0, "fast"], r"tg_tps: sample 2 of 2 is not a number"),
        ([True, 1.0], r"tg_tps: sample 1 of 2 is a bool"),
    ],
)
def test_summary_rejects_bad_samples_naming_the_metric(samples, message):
    with pytest.raises(StatsError, match=message):
        Summary.from_samples(samples, metric="tg_tps")


def test_stats_error_is_value_error_and_unnamed_metric_message():
    assert issubclass(StatsError, ValueError)
    with pytest.raises(StatsError, match=r"^sample 1 of 1 is NaN$"):
        Summary.from_samples([float("nan")])


# -- BaselineStats ----------------------------------------------------------


def test_baseline_from_samples_and_from_summary():
    b = BaselineStats.from_samples(iter(BASE), history_cv=[0.02, 0.01, 0.5])
    assert b.n == 10 and b.mean == BASE_MEAN
    assert b.stdev == pytest.approx(math.sqrt(BASE_VAR), rel=1e-12)
    assert b.samples == tuple(BASE)
    assert b.history_noise == 0.02  # median: one wild run does not move it
    s = BaselineStats.from_summary(100.0, 1.5, 10)
    assert s.samples is None and s.history_cv == () and s.history_noise is None
    assert s.cv == pytest.approx(0.015)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mean=float("nan"), stdev=1.0, n=3), "baseline mean must be a finite number"),
        (dict(mean=1.0, stdev=-1.0, n=3), "baseline stdev must be >= 0"),
        (dict(mean=1.0, stdev=0.0, n=0), "baseline n must be an integer >= 1"),
        (dict(mean=1.0, stdev=0.0, n=3, samples=(1.0, 1.0)), "n=3 but 2 samples"),
        (dict(mean=1.0, stdev=0.0, n=1, history_cv=(float("nan"),)), "history_cv value 1 of 1 is NaN"),
        (dict(mean=1.0, stdev=0.0, n=1, history_cv=(-0.1,)), "history_cv values must be >= 0"),
    ],
)
def test_baseline_validation(kwargs, message):
    with pytest.raises(StatsError, match=message):
        BaselineStats(**kwargs)


def test_baseline_constructors_name_the_metric():
    with pytest.raises(StatsError, match="pp_tps: sample 3 of 3 is NaN"):
        BaselineStats.from_samples([1.0, 2.0, float("nan")], metric="pp_tps")
    with pytest.raises(StatsError, match="pp_tps: baseline stdev must be >= 0"):
        BaselineStats.from_summary(2209.1, -97.25, 10, metric="pp_tps")
    with pytest.raises(StatsError, match=r"tg_tps: history_cv value 2 of 2 is \+inf"):
        BaselineStats.from_summary(31.6, 0.06, 10, history_cv=[0.002, float("inf")], metric="tg_tps")


# -- Welch t-test, known answers -------------------------------------------


def test_welch_regression_known_answer():
    cur = [95.0, 96.0, 94.0]
    t, df, se = welch_by_hand(cur, BASE)
    # by hand: t = -5 / sqrt(1/3 + 28/90), df ~ 6.26
    assert t == pytest.approx(-5 / math.sqrt(1 / 3 + 28 / 90))
    assert df == pytest.approx(6.263, abs=1e-3)
    p = t_cdf(t, df)
    policy = pol(floor_pct=1.0)
    c = compare(cur, BaselineStats.from_samples(BASE), higher_is_better=True, policy=policy)
    assert c.verdict is Verdict.REGRESSED
    assert c.delta_pct == pytest.approx(-5.0) and c.effect_pct == pytest.approx(-5.0)
    assert c.p_value == pytest.approx(p, rel=1e-6)
    assert p < 0.001
    # 98 % CI (two-sided 1 - 2 alpha) of the change
    q = t_quantile(1 - policy.alpha, df)
    assert c.ci_low_pct == pytest.approx(-5.0 - q * se, rel=1e-6)
    assert c.ci_high_pct == pytest.approx(-5.0 + q * se, rel=1e-6)
    assert c.ci_high_pct < 0
    # tolerance by hand: current sd floored by the baseline CV, rho = 0.2
    sc = max(1.0, math.sqrt(BASE_VAR) / 100 * 95)
    sb = math.sqrt(BASE_VAR)
    rho = policy.rho
    se_noise = math.sqrt(sc**2 * (rho + (1 - rho) / 3) + sb**2 * (rho + (1 - rho) / 10))
    assert c.tolerance_pct == pytest.approx(max(1.0, policy.k * se_noise), rel=1e-9)
    assert (c.n_current, c.n_baseline) == (3, 10)
    assert "worse" in c.reason and "significant" in c.reason


def test_welch_not_significant_known_answer():
    cur = [99.0, 101.5, 98.0]
    t, df, _ = welch_by_hand(cur, BASE)
    c = compare(cur, BaselineStats.from_samples(BASE), higher_is_better=True, policy=pol())
    assert c.p_value == pytest.approx(t_cdf(t, df), rel=1e-6)
    assert c.p_value > 0.1
    assert c.ci_low_pct < 0 < c.ci_high_pct
    assert c.verdict is Verdict.PASS


def test_summary_only_baseline_gives_same_answer_as_samples():
    cur = [95.0, 96.0, 94.0]
    a = compare(cur, BaselineStats.from_samples(BASE), higher_is_better=True, policy=pol())
    b = compare(
        cur,
        BaselineStats.from_summary(BASE_MEAN, math.sqrt(BASE_VAR), 10),
        higher_is_better=True,
        policy=pol(),
    )
    assert a.verdict is b.verdict
    for f in ("delta_pct", "p_value", "ci_low_pct", "ci_high_pct", "tolerance_pct"):
        assert getattr(a, f) == pytest.approx(getattr(b, f), rel=1e-9)


def test_single_current_sample_uses_prediction_test():
    cur = [97.0]
    # pooled test with n_c = 1: t = d / (s_b sqrt(1 + 1/n_b)), df = n_b - 1
    t = (97.0 - 100.0) / (math.sqrt(BASE_VAR) * math.sqrt(1 + 1 / 10))
    c = compare(cur, BaselineStats.from_samples(BASE), higher_is_better=True, policy=pol())
    assert c.p_value == pytest.approx(t_cdf(t, 9), rel=1e-6)
    q = t_quantile(0.99, 9)
    half = q * math.sqrt(BASE_VAR) * math.sqrt(1 + 1 / 10)
    assert c.ci_low_pct == pytest.approx(-3.0 - half, rel=1e-6)
    assert c.n_current == 1


def test_single_baseline_sample_uses_current_variance():
    cur = [95.0, 96.0, 94.0]
    t = (95.0 - 100.0) / (1.0 * math.sqrt(1 / 3 + 1))  # current sd 1, df = 2
    c = compare(cur, BaselineStats.from_summary(100.0, 0.0, 1), higher_is_better=True, policy=pol())
    assert c.p_value == pytest.approx(t_cdf(t, 2), rel=1e-6)


# -- zero variance, n = 1 on both sides -------------------------------------


def test_zero_variance_both_sides():
    base = BaselineStats.from_summary(100.0, 0.0, 10)
    same = compare([100.0] * 3, base, higher_is_better=True, policy=pol())
    assert same.verdict is Verdict.PASS and same.p_value == 1.0
    assert (same.delta_pct, same.ci_low_pct, same.ci_high_pct) == (0.0, 0.0, 0.0)
    worse = compare([97.0] * 3, base, higher_is_better=True, policy=pol())
    assert worse.verdict is Verdict.REGRESSED and worse.p_value == 0.0
    assert worse.ci_low_pct == worse.ci_high_pct == pytest.approx(-3.0)
    assert worse.tolerance_pct == 1.0  # no noise at all: the floor
    small = compare([99.5] * 3, base, higher_is_better=True, policy=pol())
    assert small.verdict is Verdict.PASS and small.p_value == 0.0  # exact, but tiny
    better = compare([103.0] * 3, base, higher_is_better=True, policy=pol())
    assert better.verdict is Verdict.IMPROVED


def test_zero_variance_baseline_noisy_current_is_one_sample_t():
    cur = [97.0, 98.0, 96.0]
    t = -3.0 / math.sqrt(1.0 / 3.0)  # Welch df collapses to n_c - 1 = 2
    c = compare(cur, BaselineStats.from_summary(100.0, 0.0, 10), higher_is_better=True, policy=pol())
    assert c.p_value == pytest.approx(t_cdf(t, 2), rel=1e-6)


def test_single_samples_both_sides():
    lone = BaselineStats.from_summary(100.0, 0.0, 1)
    c = compare([97.0], lone, higher_is_better=True, policy=pol())
    assert c.verdict is Verdict.INCONCLUSIVE
    assert c.p_value is None and c.ci_low_pct is None
    assert "no variance estimate" in c.reason
    # with history the noise is known: z-test with sd = h * mean on each side
    hist = BaselineStats.from_summary(100.0, 0.0, 1, history_cv=[0.01])
    c = compare([97.0], hist, higher_is_better=True, policy=pol())
    z = -3.0 / (1.0 * math.sqrt(2.0))
    assert c.p_value == pytest.approx(0.5 * math.erfc(-z / math.sqrt(2)), rel=1e-9)
    far = compare([90.0], hist, higher_is_better=True, policy=pol())
    assert far.verdict is Verdict.REGRESSED


# -- verdicts ---------------------------------------------------------------


def test_every_verdict_is_reachable():
    base = BaselineStats.from_samples(BASE)
    quiet = BaselineStats.from_summary(100.0, 0.05, 10)
    seen = {
        compare([100.0, 100.5, 99.5], base, higher_is_better=True, policy=pol()).verdict,
        compare([95.0, 96.0, 94.0], base, higher_is_better=True, policy=pol()).verdict,
        compare([105.0, 106.0, 104.0], base, higher_is_better=True, policy=pol()).verdict,
        compare([90.0, 100.0, 95.0], base, higher_is_better=True, policy=pol(k=0.0)).verdict,
        compare([1.0], None, higher_is_better=True, policy=pol()).verdict,
        compare([1.0], BaselineStats.from_summary(0.0, 0.0, 3), higher_is_better=True, policy=pol()).verdict,
        compare([99.5, 99.51, 99.49], quiet, higher_is_better=True, policy=pol()).verdict,
    }
    produced = set(Verdict) - {Verdict.ERROR}
    assert seen == produced
    # ERROR is for callers (a measurement that failed); compare raises instead
    assert Verdict("error") is Verdict.ERROR and Verdict.ERROR == "error"
    with pytest.raises(StatsError, match="tg_tps: sample 1 of 1 is NaN"):
        compare([float("nan")], base, higher_is_better=True, policy=pol())
    with pytest.raises(StatsError, match="tg_tps: no samples"):
        compare([], base, higher_is_better=True, policy=pol())


def test_significant_but_within_floor_passes():
    quiet = BaselineStats.from_summary(100.0, 0.05, 10)
    c = compare([99.5, 99.51, 99.49], quiet, higher_is_better=True, policy=pol())
    assert c.p_value < 0.01 and c.verdict is Verdict.PASS
    assert "within" in c.reason


def test_beyond_tolerance_not_significant_is_inconclusive():
    c = compare([90.0, 100.0, 95.0], BaselineStats.from_samples(BASE), higher_is_better=True, policy=pol(k=0.0))
    assert c.tolerance_pct == 1.0 and c.effect_pct == pytest.approx(-5.0)
    assert c.p_value > 0.01 and c.verdict is Verdict.INCONCLUSIVE
    assert "not significant" in c.reason


def test_beyond_floor_within_noise_tolerance_is_inconclusive():
    # same data with k = 3: the noise of 3 samples widens the tolerance past 5 %
    c = compare([90.0, 100.0, 95.0], BaselineStats.from_samples(BASE), higher_is_better=True, policy=pol())
    assert c.tolerance_pct > 5.0 > DEFAULT_FLOOR_PCT["tg_tps"]
    assert c.verdict is Verdict.INCONCLUSIVE
    assert "floor" in c.reason


def test_improvement_not_significant_is_pass():
    c = compare([110.0, 100.0, 105.0], BaselineStats.from_samples(BASE), higher_is_better=True, policy=pol(k=0.0))
    assert c.effect_pct == pytest.approx(5.0) and c.p_value > 0.01
    assert c.verdict is Verdict.PASS and "good news" in c.reason


def test_no_baseline_and_incomparable():
    c = compare([1.0, 2.0], None, higher_is_better=True, policy=pol())
    assert c.verdict is Verdict.NO_BASELINE and c.n_baseline == 0 and c.delta_pct is None
    z = compare([1.0], BaselineStats.from_summary(0.0, 0.0, 3), higher_is_better=True, policy=pol())
    assert z.verdict is Verdict.INCOMPARABLE and "mean is 0" in z.reason


# -- direction --------------------------------------------------------------


MS_BASE = [555.0 + d for d in (0, 2, -2, 1, -1, 0, 3, -3, 0, 0)]


def test_lower_is_better_direction():
    b = BaselineStats.from_samples(MS_BASE)
    policy = pol("e2e_ttft_ms")
    slower = compare([600.0, 601.0, 599.0], b, higher_is_better=False, policy=policy)
    assert slower.delta_pct == pytest.approx(100 * 45 / 555)  # numerically bigger
    assert slower.effect_pct == pytest.approx(-slower.delta_pct)  # but worse
    assert slower.verdict is Verdict.REGRESSED
    faster = compare([500.0, 501.0, 499.0], b, higher_is_better=False, policy=policy)
    assert faster.effect_pct > 0 and faster.verdict is Verdict.IMPROVED
    # the same numbers as a throughput are the other way round
    assert compare([600.0, 601.0, 599.0], b, higher_is_better=True, policy=policy).verdict is Verdict.IMPROVED
    # one-sided p in the direction of the change, by hand
    t, df, _ = welch_by_hand([600.0, 601.0, 599.0], MS_BASE)
    assert slower.p_value == pytest.approx(1 - t_cdf(t, df), rel=1e-6, abs=1e-15)


# -- robust noise -----------------------------------------------------------


def test_noise_se_reduces_to_pooled_form():
    c = 0.02
    se = noise_se_pct(100.0, 2.0, 3, 100.0, 2.0, 10, None, rho=0.0)
    assert se == pytest.approx(100 * c * math.sqrt(1 / 10 + 1 / 3))
    # rho > 0: more samples cannot shrink it below c * sqrt(2 rho)
    big = noise_se_pct(100.0, 2.0, 10**9, 100.0, 2.0, 10**9, None, rho=0.2)
    assert big == pytest.approx(100 * c * math.sqrt(0.4), rel=1e-6)


def test_lucky_quiet_baseline_cannot_make_gate_hair_trigger():
    quiet = BaselineStats.from_summary(100.0, 0.1, 10)
    with_history = BaselineStats.from_summary(100.0, 0.1, 10, history_cv=[0.03, 0.028, 0.001, 0.035, 0.03])
    policy = pol("pp_tps")
    cur = [94.0, 94.2, 93.8]  # 6 % slower, quiet run
    a = compare(cur, quiet, higher_is_better=True, policy=policy)
    b = compare(cur, with_history, higher_is_better=True, policy=policy)
    assert a.verdict is Verdict.REGRESSED and a.tolerance_pct == 5.0
    h = 0.03  # median history CV
    se = math.sqrt((h * 94.0) ** 2 * (0.2 + 0.8 / 3) + (h * 100.0) ** 2 * (0.2 + 0.8 / 10))
    assert b.tolerance_pct == pytest.approx(3 * se, rel=1e-9)
    assert b.verdict is Verdict.INCONCLUSIVE  # usual 3 % noise: 6 % is not clear yet


def test_outlier_in_baseline_is_set_aside():
    base = [100.0 + 0.1 * d for d in (0, 2, -2, 1, -1, 0, 3, -3, 0)] + [80.0]
    b = BaselineStats.from_samples(base)
    c = compare([100.0, 100.1, 99.9], b, higher_is_better=True, policy=pol())
    assert c.dropped_baseline == 1 and c.dropped_current == 0 and c.n_baseline == 10
    clean_mean = sum(base[:9]) / 9
    assert c.delta_pct == pytest.approx(100 * (100.0 - clean_mean) / clean_mean)
    assert c.verdict is Verdict.PASS and "outlier" in c.reason


def test_small_current_run_is_never_screened():
    c = compare([100.0, 100.1, 80.0], BaselineStats.from_samples(BASE), higher_is_better=True, policy=pol())
    assert c.dropped_current == 0
    assert c.verdict is Verdict.INCONCLUSIVE  # the suspicious sample asks for more samples


# -- policy -----------------------------------------------------------------


def test_default_floors():
    assert set(DEFAULT_FLOOR_PCT) == {"tg_tps", "pp_tps", "ttfr_ms", "est_ppt_ms", "e2e_ttft_ms",
                                      "accept_pct", "accept_len", "agg_tps"}  # every metric of config.METRICS has one
    from pytest_mxfp4.formats.config import METRICS

    assert set(METRICS) == set(DEFAULT_FLOOR_PCT)
    assert DEFAULT_FLOOR_PCT["tg_tps"] >= 0.8  # +0.8 % tg32 is parity
    assert DEFAULT_FLOOR_PCT["tg_tps"] < 1.5
    for m in ("pp_tps", "ttfr_ms", "est_ppt_ms", "e2e_ttft_ms", "agg_tps"):
        assert DEFAULT_FLOOR_PCT[m] > DEFAULT_FLOOR_PCT["tg_tps"]
    # N streams' aggregate holds their prefills and scheduling: looser than one stream's tg
    assert DEFAULT_FLOOR_PCT["agg_tps"] < DEFAULT_FLOOR_PCT["pp_tps"]


def test_policy_for():
    p = policy_for("pp_tps", max_runs=9)
    assert (p.floor_pct, p.max_runs, p.metric, p.alpha, p.confirm_regressions) == (5.0, 9, "pp_tps", 0.01, True)
    assert policy_for("custom", floor_pct=2.5).floor_pct == 2.5
    with pytest.raises(StatsError, match="no default floor for metric 'custom'"):
        policy_for("custom")
    with pytest.raises(StatsError, match="unknown policy field 'flor_pct'"):
        policy_for("tg_tps", flor_pct=1)
    for bad in (dict(floor_pct=-1.0), dict(floor_pct=1.0, alpha=0.5), dict(floor_pct=1.0, k=-1.0),
                dict(floor_pct=1.0, max_runs=0), dict(floor_pct=1.0, rho=1.0), dict(floor_pct=float("nan"))):
        with pytest.raises(StatsError):
            ComparePolicy(**bad)


# -- next_step and the sequential protocol ----------------------------------


def _c(verdict: Verdict) -> Comparison:
    return Comparison(verdict, 0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 3, 10, "")


def test_next_step_transitions():
    p = pol(max_runs=15)
    assert next_step(_c(Verdict.INCONCLUSIVE), 3, p) == "more"
    assert next_step(_c(Verdict.INCONCLUSIVE), 14, p) == "more"
    assert next_step(_c(Verdict.INCONCLUSIVE), 15, p) == "stop"
    assert next_step(_c(Verdict.REGRESSED), 3, p) == "confirm"
    assert next_step(_c(Verdict.REGRESSED), 3, replace(p, confirm_regressions=False)) == "stop"
    assert next_step(_c(Verdict.REGRESSED), 15, p) == "stop"
    for v in (Verdict.PASS, Verdict.IMPROVED, Verdict.NO_BASELINE, Verdict.ERROR, Verdict.INCOMPARABLE):
        assert next_step(_c(v), 3, p) == "stop"


def _scripted(values):
    it = iter(values)
    return lambda k: [next(it) for _ in range(k)]


TG_BASE = BaselineStats.from_samples([31.6 + 0.06 * d for d in (0, 1, -1, 0.5, -0.5, 0, 1.5, -1.5, 0, 0)])


def test_decide_confirms_a_real_regression_with_fresh_samples():
    slow = [31.6 * 0.98 + 0.03 * d for d in (0, 1, -1, 0.5, -0.5, 0, 1, -1)]
    c, samples = decide(_scripted(slow), TG_BASE, higher_is_better=True, policy=pol())
    assert c.verdict is Verdict.REGRESSED
    assert len(samples) == stats.MIN_RUNS + stats.CONFIRM_RUNS == 5


def test_decide_does_not_fail_on_a_transient_first_look():
    transient = [31.0, 31.02, 30.98] + [31.6 + 0.03 * d for d in (0, 1, -1, 0.5, -0.5, 0, 1, -1, 0, 1, -1, 0)]
    first = compare(transient[:3], TG_BASE, higher_is_better=True, policy=pol())
    assert first.verdict is Verdict.REGRESSED  # alone, the first look would fail
    c, samples = decide(_scripted(transient), TG_BASE, higher_is_better=True, policy=pol())
    assert c.verdict is not Verdict.REGRESSED
    assert 5 <= len(samples) <= 15


def test_decide_without_confirmation_and_sequential_more():
    slow = [31.6 * 0.98] * 3
    c, samples = decide(_scripted(slow), TG_BASE, higher_is_better=True, policy=pol(confirm_regressions=False))
    assert c.verdict is Verdict.REGRESSED and len(samples) == 3
    noisy = [31.6, 28.0, 31.6] + [31.6 + 0.03 * d for d in (0, 1, -1, 0.5, -0.5, 0, 1, -1, 0, 1, -1, 0)]
    c, samples = decide(_scripted(noisy), TG_BASE, higher_is_better=True, policy=pol())
    assert len(samples) > 3  # inconclusive first look asked for more
    assert c.verdict is Verdict.PASS


def test_decide_stops_inconclusive_at_max_runs():
    wild = [31.6, 28.0] * 20
    c, samples = decide(_scripted(wild), TG_BASE, higher_is_better=True, policy=pol(max_runs=6))
    assert len(samples) == 6 and c.verdict is Verdict.INCONCLUSIVE


# -- the gate-quality simulation ---------------------------------------------


def _gate_quality():
    spec = importlib.util.spec_from_file_location("gate_quality", ROOT / "benchmarks" / "gate_quality.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gate_quality", mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return sys.modules["gate_quality"]


def test_simulation_meets_tg32_goals():
    gq = _gate_quality()
    cells = gq.run_cells(["tg32"], (0.0, 0.015), trials_aa=1000, trials=400, seed=7, workers=1)
    aa, reg = cells[("tg32", 0.0)], cells[("tg32", 0.015)]
    assert aa.trials == 1000 and reg.trials == 400
    assert aa.rate("ours") <= 0.01
    assert reg.rate("ours") >= 0.95
    assert statistics.median(aa.runs) <= 5 and statistics.median(reg.runs) <= 5
    # the comparison is meaningful: Bencher-style limits on within-run noise alarm far more
    assert aa.rate("bencher") > aa.rate("ours")


def test_simulation_a_a_rate_for_every_metric():
    gq = _gate_quality()
    labels = [m.label for m in gq.NOISE]
    cells = gq.run_cells(labels, (0.0,), trials_aa=600, trials=0, seed=11, workers=1)
    for lb in labels:
        assert cells[(lb, 0.0)].rate("ours") <= 0.01, lb


def test_simulation_cli_quick_prints_table():
    gq = _gate_quality()
    out = io.StringIO()
    with redirect_stdout(out):
        rc = gq.main(["--quick", "--trials", "30", "--trials-aa", "60", "--workers", "1"])
    text = out.getvalue()
    assert rc in (0, 1)
    needles = ("A/A FA", "MDE95", "ours (seq+confirm)", "fixed 5% mean", "asv 1.1 + MWU", "Bencher t 0.99", "Goals")
    for needle in needles:
        assert needle in text
    assert text.count("ours (seq+confirm)") == len(gq.NOISE)
