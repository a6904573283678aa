"""Several starts per server config: which start runs, which is left out,
and when a config (or an A/B pair of arms) is judged on its start means.

The controller holds the start state and asks the statistics layer's one
sequential rule (startstats.next_action) whether the budget's next block of
starts runs. It starts no server: the session measures each (start, case) and
hands it to `record_start`, so a simulated session drives the same path
(tests/test_one_rule.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from pytest_mxfp4.errors import PerfUserError
from pytest_mxfp4.formats.baselines import BaselineFile
from pytest_mxfp4.formats.config import Case, Matrix, ServerConfig
from pytest_mxfp4.formats.results import ABEntry, MetricResult, SecondOpinion, SessionResults, StartsRecord, StartWindow
from pytest_mxfp4.formats.samples import flag_counts
from pytest_mxfp4.stats.samples import StatsError


@dataclass
class StartController:
    """The start state of one session and the decisions taken on it."""

    matrix: Matrix
    results: SessionResults  # the session's: judged metrics and the starts record land in it
    # base config -> the baseline it is judged by (the session's: as loaded at its start, else the store's)
    baseline_of: Callable[[str], BaselineFile | None]
    restarts: int = 1  # every config started `restarts` times (run/ab.py)
    max_restarts: int | None = None  # the sequential budget: up to this many starts while inconclusive
    ab_overrides: tuple = ()  # with overrides each config is an A/B pair of arms
    external: bool = False  # the server was started elsewhere: one start, never restarted
    progress: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        from pytest_mxfp4.run.ab import head_config, plan_starts

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
        if self.external:
            self.max_starts = 1
        # the one sequential rule (startstats.next_action) runs against this budget
        self.budget = startstats.Budget(max_starts=self.max_starts, max_minutes=w.max_restart_minutes)
        # spare starts per arm, run only to replace a start disturbed while it measured
        self.spares = w.max_replacements if self.several_starts and not self.external else 0
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
        if self.several_starts:
            self.results.starts = StartsRecord(
                restarts=self.restarts, max_restarts=self.max_starts, replacements=self.spares,
                order=[f"{sl.server}#{sl.start}" for sl in self.slots],
                ab_head=[o.text() for o in self.ab_overrides])
        elif self.external:
            self.results.starts = StartsRecord(restarts=1, between_start="from the baseline history")
        if self.results.starts is not None:  # the record holds the controller's own lists, filled as it runs
            st = self.results.starts
            st.ab, st.preflight, st.windows = self.ab, self.preflight, self.windows
            st.start_errors, st.budget_notes = self.start_errors, self.budget_notes

    @property
    def several_starts(self) -> bool:
        """Starts are planned, checked for disturbance and judged here; else one plain start per config."""
        return self.max_starts > 1 or bool(self.ab_overrides)

    def note_disturbed(self, server: str, reason: str) -> None:
        self.disturbed.setdefault(server, []).append(reason)
        record = self.results.servers[server]
        if reason not in record.notes:
            record.notes.append(f"disturbed start: {reason}")

    def note_start_failed(self, server: str, start: int, why: str) -> None:
        self.start_errors.setdefault(server, []).append(f"start {start}: {why.splitlines()[0]}")

    def record_start(self, name: str, case: Case, start: int, run, disturbance: str | None = None
                     ) -> list[MetricResult]:
        """The controller's bookkeeping for one measured (start, case): keep
        its start means, leave it out if disturbed, and judge the config (or
        the A/B pair) once the look has its starts."""
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
                r = judge_metric(name, case, metric, values, None, self.matrix.gates.rule(case, metric), (), run)
                r.gate = "off"
                provisional.append(r)
        base = self.base_of.get(name, name)
        if self.ready_to_judge(base, case):
            return self.judge_group(base, case)
        return provisional

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
        tried = set(self.start_values.get((arm, case_id), {})) | _failed_starts(self.start_errors.get(arm, []))
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
        bf = self.baseline_of(base)
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
                floor = _floor_pct(self.matrix, case, metric)
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
                b_means, hist = _baseline_starts(bf, key)
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
                floor = _floor_pct(self.matrix, case, metric)
                b_means, hist = _baseline_starts(bf, key)
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


def _update(record, **values) -> None:
    """Set several fields of a record at once (each name must be one of its fields)."""
    for name, value in values.items():
        if not hasattr(record, name):
            raise AttributeError(f"{type(record).__name__} has no field {name!r}")
        setattr(record, name, value)


def _floor_pct(matrix: Matrix, case: Case, metric: str) -> float:
    """The gate's practical floor (%), else the metric's default (`Gates.rule`)."""
    floor = matrix.gates.rule(case, metric).floor_pct
    if floor is None:
        raise PerfUserError(f"{matrix.path}: metric {metric!r} of case {case.id} has no default floor; "
                            f"give one under gates.floors")
    return floor


def _baseline_starts(bf: BaselineFile | None, key: str) -> tuple[list[float], tuple]:
    """(the baseline's start means, (between-start CV, df) of its history)."""
    if bf is None or key not in bf.metrics:
        return [], ()
    return bf.metrics[key].start_evidence()


def _failed_starts(errors: list[str]) -> set[int]:
    """The start numbers of a config's "start N: why" failure lines."""
    out = set()
    for line in errors:
        try:
            out.add(int(line.split(":", 1)[0].split()[1]))
        except (IndexError, ValueError):
            pass
    return out
