"""How good is the regression gate? A seeded Monte-Carlo of many nightly runs.

For each metric's noise model (taken from the results page, see NOISE below)
it simulates a baseline session of 10 samples, the CVs of 9 earlier runs plus
the baseline's own (the ``history_cv``), and a current session whose true
value is worse by a chosen regression. Every gate sees the same samples
(common random numbers), so differences between gates are differences of
rule, not of luck.

Gates
-----
ours       pytest_mxfp4.stats: Welch t-test + practical tolerance, sequential
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

from pytest_mxfp4 import stats  # noqa: E402

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


if __name__ == "__main__":
    sys.exit(main())
