"""Two-level statistics (pytest_mxfp4.stats.starts): known answers worked by hand.

t quantiles used below (from tables): t(4, 0.99) = 3.7469, t(4, 0.95) = 2.1318,
t(8, 0.995) = 3.3554; z(0.99) = 2.3263, z(0.95) = 1.6449, z(0.90) = 1.2816.
"""

import math

import pytest

from pytest_mxfp4.stats import starts as ss
from pytest_mxfp4.stats.samples import StatsError, Verdict

E = math.exp
NO_PRIOR = ss.Prior(cv=0.0, df=0.0)


def test_starts_needed_is_the_31_5_bound():
    # 2 * (2.3263 + 1.6449)^2 = 31.54; with 90 % power 2 * (2.3263 + 1.2816)^2 = 26.03
    assert ss.starts_needed(0.05, 0.05) == pytest.approx(31.54, abs=0.01)
    assert ss.starts_needed(0.05, 0.05, power=0.90) == pytest.approx(26.03, abs=0.01)
    # CV 2 %, a 1 % drop: 31.54 * 4 = 126 starts per arm
    assert ss.starts_needed(0.02, 0.01) == pytest.approx(126.2, abs=0.1)


def test_spread_of_log_means():
    # logs 0, 0.1, 0.2: mean 0.1, variance (0.01 + 0 + 0.01) / 2 = 0.01, df 2
    s = ss.spread_of([E(0.0), E(0.1), E(0.2)])
    assert s.var == pytest.approx(0.01)
    assert s.df == 2
    assert s.cv == pytest.approx(0.1)
    assert ss.spread_of([123.0]) == ss.Spread(0.0, 0.0)  # one start: no information


def test_pooled_spread_shrinks_toward_the_prior():
    # (1 * 0.1^2 + 2 * 0.01 + 1 * 0.04) / (1 + 2 + 1) = 0.07 / 4 = 0.0175
    p = ss.pooled_spread([ss.Spread(0.01, 2), ss.Spread(0.04, 1)], ss.Prior(cv=0.1, df=1))
    assert p.var == pytest.approx(0.0175)
    assert p.df == 4 and p.df_data == 3
    assert p.prior_weight == pytest.approx(0.25)
    # only the prior
    assert ss.pooled_spread([], ss.Prior(0.03, 2)).cv == pytest.approx(0.03)
    with pytest.raises(StatsError, match="no between-start noise"):
        ss.pooled_spread([ss.Spread(0.0, 0.0)], NO_PRIOR)


def test_history_cv_enters_like_a_group_of_starts():
    h = ss.spread_from_cv(0.05, 3)
    assert h.var == pytest.approx(0.0025) and h.df == 3
    with pytest.raises(StatsError):
        ss.spread_from_cv(-0.1, 3)


BASE = [E(0.0), E(0.1), E(0.2)]  # logs mean 0.1, var 0.01
HEAD = [E(-0.3), E(-0.2), E(-0.1)]  # logs mean -0.2, var 0.01


def test_compare_starts_hand_worked():
    # pooled var 0.01 (df 4), se = 0.1 * sqrt(2/3) = 0.081650, d = -0.3
    c = ss.compare_starts(BASE, HEAD, higher_is_better=True, floor=0.01, prior=NO_PRIOR)
    assert c.se == pytest.approx(0.0816497, rel=1e-5)
    assert c.df == 4
    assert c.delta == pytest.approx(E(-0.3) - 1)  # -25.92 %
    # t(4, .99) * se = 0.30594 > 0.3: not significant at 1 %, but beyond the floor
    assert c.tolerance == pytest.approx(1 - E(-3.7469 * 0.0816497), rel=1e-4)
    assert c.verdict is Verdict.INCONCLUSIVE
    assert c.ci_low == pytest.approx(E(-0.3 - 3.7469 * 0.0816497) - 1, rel=1e-4)
    assert c.ci_high == pytest.approx(E(-0.3 + 3.7469 * 0.0816497) - 1, rel=1e-3)
    # p = P(t4 < -0.3 / 0.0816497 = -3.6742): between 0.01 and 0.025
    assert 0.01 < c.p_value < 0.025
    # at 5 %: t(4, .95) * se = 0.17407 < 0.3 -> regressed
    c5 = ss.compare_starts(BASE, HEAD, higher_is_better=True, floor=0.01, alpha=0.05, prior=NO_PRIOR)
    assert c5.verdict is Verdict.REGRESSED
    assert c5.tolerance == pytest.approx(1 - E(-2.1318 * 0.0816497), rel=1e-4)


def test_swapped_arms_improve_and_times_flip_the_sign():
    c = ss.compare_starts(HEAD, BASE, higher_is_better=True, floor=0.01, alpha=0.05, prior=NO_PRIOR)
    assert c.verdict is Verdict.IMPROVED
    assert c.delta == pytest.approx(E(0.3) - 1)
    # for a time (lower is better) the head being 35 % bigger is a regression
    t = ss.compare_starts(HEAD, BASE, higher_is_better=False, floor=0.01, alpha=0.05, prior=NO_PRIOR)
    assert t.verdict is Verdict.REGRESSED
    assert t.effect == pytest.approx(E(-0.3) - 1)


def test_within_the_floor_passes_and_aa_passes():
    # an A/A whose starts scatter by 10 %: the point is 0, but the interval
    # admits a 26 % drop, so the pass is not earned
    same = ss.compare_starts(BASE, BASE, higher_is_better=True, floor=0.01, prior=NO_PRIOR)
    assert same.verdict is Verdict.INCONCLUSIVE and same.delta == 0.0
    assert same.worst == pytest.approx(1 - E(-3.7469 * 0.0816497), rel=1e-4) and same.threshold == 0.01
    tight = [100.0, 100.02, 99.98]
    assert ss.compare_starts(tight, tight, higher_is_better=True, floor=0.01, prior=NO_PRIOR).verdict is Verdict.PASS
    # 0.5 % worse with a tiny spread: significant but within the 1 % floor -> pass
    b = [100.0, 100.01, 99.99]
    h = [99.5, 99.51, 99.49]
    c = ss.compare_starts(b, h, higher_is_better=True, floor=0.01, prior=NO_PRIOR)
    assert c.verdict is Verdict.PASS
    assert c.p_value < 1e-6


def test_single_start_each_takes_its_noise_from_the_prior_and_extra():
    # var 0.02^2 from the prior (df 4); se = 0.02 * sqrt(2) = 0.028284; t(4,.99)*se = 0.10598
    pr = ss.Prior(cv=0.02, df=4)
    c90 = ss.compare_starts([100.0], [90.0], higher_is_better=True, floor=0.01, prior=pr)
    assert c90.verdict is Verdict.INCONCLUSIVE  # ln 0.9 = -0.10536, just inside
    c85 = ss.compare_starts([100.0], [85.0], higher_is_better=True, floor=0.01, prior=pr)
    assert c85.verdict is Verdict.REGRESSED  # ln 0.85 = -0.1625
    assert c90.noise.calibrating and c90.noise.prior == pr
    # history as extra: 4 df measured on this box -> the noise is learned from it
    # alone (the prior drops out): df 4, t(4, .995) = 4.6041 at 2 looks
    ch = ss.compare_starts([100.0], [90.0], higher_is_better=True, floor=0.01, prior=pr, looks=2,
                           extra=[ss.spread_from_cv(0.02, 4)])
    assert ch.df == 4 and ch.alpha_look == pytest.approx(0.005) and not ch.noise.calibrating
    assert ch.tolerance == pytest.approx(1 - E(-4.6041 * 0.0282843), rel=1e-4)
    with pytest.raises(StatsError, match="no between-start noise"):
        ss.compare_starts([100.0], [90.0], higher_is_better=True, floor=0.01, prior=NO_PRIOR)


@pytest.mark.parametrize("base,head,msg", [
    ([], [1.0], "at least one start"),
    ([1.0, 0.0], [1.0], "must be > 0"),
    ([1.0, float("nan")], [1.0], "not a finite number"),
    ([1.0, True], [1.0], "not a finite number"),
])
def test_bad_start_means_are_named(base, head, msg):
    with pytest.raises(StatsError, match=msg):
        ss.compare_starts(base, head, higher_is_better=True, floor=0.01)


def test_bad_parameters():
    with pytest.raises(StatsError, match="alpha"):
        ss.compare_starts([1.0], [1.0], higher_is_better=True, floor=0.01, alpha=0.7)
    with pytest.raises(StatsError, match="looks"):
        ss.compare_starts([1.0], [1.0], higher_is_better=True, floor=0.01, looks=0)
    with pytest.raises(StatsError, match="floor"):
        ss.compare_starts([1.0], [1.0], higher_is_better=True, floor=-0.1)
    with pytest.raises(StatsError, match="prior cv"):
        ss.Prior(cv=-1, df=1)
    with pytest.raises(StatsError, match="max_starts"):
        ss.Budget(max_starts=0)


def test_sequential_rule_and_budget():
    inc = ss.compare_starts(BASE, HEAD, higher_is_better=True, floor=0.01, prior=NO_PRIOR)
    assert inc.verdict is Verdict.INCONCLUSIVE
    assert ss.next_action(inc, ss.Budget(max_starts=4)) == "more"
    assert ss.next_action(inc, ss.Budget(max_starts=3)) == "stop"  # 3 starts per arm already
    b = ss.Budget(max_starts=6, max_minutes=10)
    assert ss.next_action(inc, b, minutes_used=8, block_minutes=1.5) == "more"
    assert ss.next_action(inc, b, minutes_used=9, block_minutes=1.5) == "stop"
    assert b.looks(3) == 2  # 3, then 6 starts per arm (one extension block)
    assert b.step(3) == 3 and b.step(6) == 0
    one = ss.Budget(max_starts=6, block=1)
    assert one.looks(3) == 4 and one.step(5) == 1  # 3, 4, 5, 6
    assert ss.Budget(max_starts=7, block=3).looks(3) == 3  # 3, 6, 7
    tight = [100.0, 100.02, 99.98]
    ok = ss.compare_starts(tight, tight, higher_is_better=True, floor=0.01, prior=NO_PRIOR)
    assert ok.verdict is Verdict.PASS and ss.next_action(ok, ss.Budget(max_starts=10)) == "stop"
    wide = ss.compare_starts(BASE, BASE, higher_is_better=True, floor=0.01, prior=NO_PRIOR)
    assert ss.next_action(wide, ss.Budget(max_starts=10)) == "more"  # an unearned pass asks for starts


def test_orders():
    assert ss.abba_order(2) == ("base", "head", "head", "base")
    assert ss.abba_order(3, ("A", "B")) == ("A", "B", "B", "A", "A", "B")
    assert ss.interleave(["a", "b"], 2) == (("a", 0), ("b", 0), ("b", 1), ("a", 1))
    assert ss.interleave(["a"], 3) == (("a", 0), ("a", 1), ("a", 2))
    with pytest.raises(StatsError, match="restarts"):
        ss.interleave(["a"], 0)


def test_start_summaries():
    s = ss.summarize_start([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.stdev) == (3, 2.0, 1.0)
    assert s.cv == 0.5
    assert ss.start_means([[1.0, 3.0], [4.0]]) == (2.0, 4.0)
    with pytest.raises(StatsError, match="start 1: no samples"):
        ss.start_means([[1.0], []])


def test_default_floor_from_the_policy_table():
    assert ss.default_floor("tg_tps") == pytest.approx(0.01)
    with pytest.raises(StatsError):
        ss.default_floor("nope")


def test_learned_noise_replaces_the_prior_once_the_box_has_measured_itself():
    # a quiet GPU: start means scatter by 0.2 %, the stated prior says 3 %
    quiet = ss.NoiseSource("arms", ss.Spread(0.002 ** 2, 4))
    learned = ss.learned_noise([quiet], ss.Prior(0.03, 2))
    assert learned.cv == pytest.approx(0.002) and not learned.calibrating and learned.prior_weight == 0
    assert learned.sources == (("arms", 4, pytest.approx(0.002)),)
    # the rule before: the prior always pooled in (3 % worth 2 df): CV 1.7 %, the figure the H100 run reported
    old = ss.learned_noise([quiet], ss.Prior(0.03, 2), min_df=math.inf)
    assert old.cv == pytest.approx(math.sqrt((2 * 0.03 ** 2 + 4 * 0.002 ** 2) / 6)) and old.calibrating
    assert old.measured_cv == pytest.approx(0.002)
    # one df is not enough to stand alone: calibrating, the prior stands in
    thin = ss.learned_noise([ss.NoiseSource("arms", ss.Spread(0.002 ** 2, 1))], ss.Prior(0.03, 2))
    assert thin.calibrating and thin.df == 3


def test_quiet_box_gets_a_tight_interval_and_catches_a_small_drop():
    base = [219.0, 219.4, 218.7]
    aa = ss.compare_starts(base, [218.9, 219.3, 219.1], higher_is_better=True, floor=0.01, looks=2)
    assert aa.verdict is Verdict.PASS and aa.ci_low > -0.015 and aa.ci_high < 0.015
    slow = ss.compare_starts(base, [x * 0.975 for x in [218.9, 219.3, 219.1]], higher_is_better=True,
                             floor=0.01, looks=2)
    assert slow.verdict is Verdict.REGRESSED


def test_wide_aa_from_a_noisy_cpu_is_never_a_pass():
    # the trial from the issue: one start at 304 tok/s against ~600, point +13 %
    base = [304.0, 590.0, 600.0]
    head = [598.0, 605.0, 592.0]
    c = ss.compare_starts(base, head, higher_is_better=True, floor=0.01, looks=2)
    assert c.verdict is Verdict.INCONCLUSIVE and c.worst > 0.3
    # an explicit max_regression is the threshold a pass must rule out
    c15 = ss.compare_starts([600.0, 590.0, 605.0], [598.0, 604.0, 596.0], higher_is_better=True,
                            floor=0.01, threshold=0.15, looks=2)
    assert c15.verdict is Verdict.PASS and c15.worst <= 0.15
    with pytest.raises(StatsError, match="threshold"):
        ss.compare_starts(base, head, higher_is_better=True, floor=0.05, threshold=0.01)


def test_starts_to_decide_from_the_measured_noise():
    base = [100.0, 101.0, 99.0]
    c = ss.compare_starts(base, [99.6, 100.6, 98.6], higher_is_better=True, floor=0.01, prior=NO_PRIOR)
    assert c.verdict is Verdict.INCONCLUSIVE
    n = ss.starts_to_decide(c)
    assert n is not None and n > 3
    k = math.ceil(1.3 * n / 3)  # the same effect with (a little more than) the starts it named decides it
    more = ss.compare_starts(base * k, [99.6, 100.6, 98.6] * k, higher_is_better=True, floor=0.01, prior=NO_PRIOR)
    assert more.verdict is Verdict.PASS


def test_outlier_starts_are_named():
    assert ss.outlier_starts([600.0, 598.0, 304.0, 602.0], 0.01) == [2]
    assert ss.outlier_starts([600.0, 598.0, 602.0], 0.01) == []
    assert ss.outlier_starts([600.0, 300.0], 0.01) == []  # needs 3 starts
