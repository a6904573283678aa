"""Words for speculative decoding: did acceptance move with tg?

A tg drop with an acceptance drop is a drafter / prompt / sampling change; a
tg drop at equal acceptance is the target's own decode (kernels). Each tg
verdict of a spec-decode case gets one sentence that says which, from the
acceptance metric's own verdict (`accept_pct`, judged like any metric) on the
same comparison: head vs base arm of an A/B, or this run vs the baseline.

Plain values in, a string out; the terminal, the page and the PR comment use
the same sentence.
"""

from __future__ import annotations

from dataclasses import dataclass

ACCEPT_METRIC = "accept_pct"
LENGTH_METRIC = "accept_len"
TG_METRIC = "tg_tps"


@dataclass(frozen=True)
class Acceptance:
    """The acceptance side of one comparison. The verdict is the mean
    acceptance length's where it was judged (it is >= 1 by definition, and
    what tg scales with: tokens per target step), else the rate's (a rate of
    exactly 0 has no log-ratio: its own verdict is then an error)."""

    before: float | None  # acceptance rate, base arm / baseline mean, %
    after: float | None  # acceptance rate, head arm / this run, %
    delta_pct: float | None  # relative change of the judged metric, %
    verdict: str | None  # its verdict: pass | regressed | improved | inconclusive | ...
    length_before: float | None = None  # mean acceptance length, tokens per step
    length_after: float | None = None
    judged: str = ACCEPT_METRIC  # which metric the verdict is


_USABLE = ("pass", "regressed", "improved", "inconclusive")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1f}%"


def _len(a: Acceptance) -> str:
    if a.length_after is None:
        return ""
    if a.length_before is None:
        return f", mean acceptance length {a.length_after:.2f}"
    return f", mean acceptance length {a.length_before:.2f} → {a.length_after:.2f}"


def sentence(tg_verdict: str | None, acc: Acceptance | None) -> str | None:
    """What acceptance did beside a tg verdict; None where the case drafted nothing."""
    if acc is None or acc.after is None:
        return None
    if acc.verdict not in _USABLE:
        return f"acceptance {_pct(acc.after)}{_len(acc)} (not compared)"
    moved = (f"acceptance {_pct(acc.before)} → {_pct(acc.after)}{_len(acc)}"
             + (f" (Δ {acc.delta_pct:+.1f}% {'length' if acc.judged == LENGTH_METRIC else 'rate'}, {acc.verdict})"
                if acc.delta_pct is not None else f" ({acc.verdict})"))
    if tg_verdict == "regressed":
        if acc.verdict == "regressed":
            return f"tg fell WITH acceptance: {moved}: a drafter, prompt or sampling change, not (only) the kernels"
        if acc.verdict == "pass":
            return f"tg fell at EQUAL acceptance: {moved}: the target's own decode is slower (kernels), not the drafter"
        if acc.verdict == "improved":
            return f"tg fell although acceptance rose: {moved}: the target's own decode is slower (kernels)"
        return f"tg fell; whether acceptance moved is not decided yet: {moved}"
    if acc.verdict == "regressed":
        return f"acceptance fell: {moved} (tg {tg_verdict})"
    return moved


def _pick(rate: tuple, length: tuple) -> tuple:
    """(delta, verdict, judged) of the length where it was judged, else of the rate."""
    return (length if length[1] in _USABLE else rate)


def from_ab(entries, server: str, case: str) -> Acceptance | None:
    """The acceptance side of an A/B from its per-metric entries (formats.results.ABEntry)."""
    by = {e.metric: e for e in entries if e.server == server and e.case == case}
    e = by.get(ACCEPT_METRIC)
    if e is None:
        return None
    el = by.get(LENGTH_METRIC)

    def mean(xs):
        return sum(xs) / len(xs) if xs else None

    delta, verdict, judged = _pick((e.delta_pct, e.verdict, ACCEPT_METRIC),
                                   (el.delta_pct, el.verdict, LENGTH_METRIC) if el is not None else
                                   (None, None, LENGTH_METRIC))
    return Acceptance(mean(e.base_starts), mean(e.head_starts), delta, verdict,
                      mean(el.base_starts) if el is not None else None,
                      mean(el.head_starts) if el is not None else None, judged)


def from_results(results, server: str, case_id: str) -> Acceptance | None:
    """The acceptance side of this run vs its baseline, from MetricResults."""
    by = {r.metric: r for r in results if r.server == server and r.case.id == case_id}
    r = by.get(ACCEPT_METRIC)
    if r is None or r.summary is None:
        return None
    rl = by.get(LENGTH_METRIC)

    def side(x, name):
        if x is None:
            return None, None, name
        return (x.comparison.delta_pct if x.comparison else None), x.verdict.value, name

    delta, verdict, judged = _pick(side(r, ACCEPT_METRIC), side(rl, LENGTH_METRIC))
    before = r.baseline.mean if r.baseline else None
    if before is None and "@" in server:  # an A/B head arm whose rate was not judged: the base arm's rate
        base = next((x for x in results if x.server == server.split("@")[0] and x.case.id == case_id
                     and x.metric == ACCEPT_METRIC and x.summary is not None), None)
        before = base.summary.mean if base else None
    return Acceptance(before, r.summary.mean, delta, verdict,
                      rl.baseline.mean if rl is not None and rl.baseline else None,
                      rl.summary.mean if rl is not None and rl.summary else None, judged)
