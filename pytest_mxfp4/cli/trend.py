"""Trend detection over the nightly history: change points per (hardware,
model, server config, metric) in the series of nightly means, found with
Apache Otava's E-divisive/Hunter analysis (`otava.analysis`) rather than a
home-made rule. The report names the first nightly after each change and its
image/ref, so a regression that crept in over a week is pinned to one night.

History file: JSON Lines, one nightly per line (`kind`: "pytest-mxfp4-nightly"):

    {"kind": "pytest-mxfp4-nightly", "schema": 1, "time": "2026-12-04T02:23:00Z",
     "run": "<url or id>", "ref": "<image tag / engine ref>", "git_sha": "...", "matrix": "...",
     "points": [{"hardware": "nvidia-gb10-sm121", "model": "gpt-oss-120b", "server": "upstream",
                 "metric": "tg32/tg_tps", "mean": 57.1, "n": 5, "higher_is_better": true}]}

    python -m pytest_mxfp4.cli.trend HISTORY.jsonl [--append RESULTS.json --ref R --run URL]
        [--report trend.md] [--json trend.json] [--recent 3] [--min-change-pct 1] [--max-pvalue 0.001]

Exit 1 when a *regression* change point begins within the last `--recent`
nightlies (an older one was reported on its own night), 2 on bad input.
No pytest, no network; Otava is installed by scripts/setup.sh (its analysis
needs only numpy and scipy).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from pytest_mxfp4.errors import PerfUserError

KIND = "pytest-mxfp4-nightly"
SCHEMA = 1


@dataclass(frozen=True)
class SeriesKey:
    hardware: str
    model: str
    server: str
    metric: str  # case/metric, e.g. tg32/tg_tps

    def label(self) -> str:
        return f"{self.hardware} · {self.model} · {self.server} · {self.metric}"


@dataclass(frozen=True)
class NightlyRef:
    index: int  # position in the history
    time: str
    run: str
    ref: str
    git_sha: str | None


@dataclass(frozen=True)
class Change:
    series: SeriesKey
    first_after: NightlyRef  # the first nightly measured after the change
    last_before: NightlyRef
    mean_before: float
    mean_after: float
    change_pct: float  # (after / before - 1) * 100
    pvalue: float
    regression: bool  # worse, given the metric's direction

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------
# History file


def read_history(path: Path | str) -> list[dict[str, Any]]:
    """Nightly records, oldest first. A missing file is an empty history."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for i, line in enumerate(p.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise PerfUserError(f"{p}:{i}: not JSON ({e.msg}); the history is one JSON object per line") from None
        if not isinstance(rec, dict) or rec.get("kind") != KIND:
            raise PerfUserError(f"{p}:{i}: not a nightly record (kind must be {KIND!r})")
        for key in ("time", "points"):
            if key not in rec:
                raise PerfUserError(f"{p}:{i}: missing key {key!r}")
        if not isinstance(rec["points"], list):
            raise PerfUserError(f"{p}:{i}: points: expected a list")
        for j, pt in enumerate(rec["points"]):
            for key in ("hardware", "model", "server", "metric", "mean"):
                if not isinstance(pt, dict) or key not in pt:
                    raise PerfUserError(f"{p}:{i}: points[{j}]: missing key {key!r}")
            if not isinstance(pt["mean"], (int, float)) or isinstance(pt["mean"], bool):
                raise PerfUserError(f"{p}:{i}: points[{j}].mean: expected a number, got {pt['mean']!r}")
        out.append(rec)
    return out


def append_history(path: Path | str, record: dict[str, Any]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def nightly_record(results_path: Path | str, *, ref: str = "", run: str = "", git_sha: str | None = None,
                   time: str | None = None) -> dict[str, Any]:
    """One history line from a (merged) nightly result file."""
    from pytest_mxfp4.formats.config import METRICS
    from pytest_mxfp4.formats.results import load

    session = load(results_path)
    hw = session.hardware_key or "unknown"
    points = []
    for r in session.metrics:
        if r.summary is None or r.error:
            continue
        rec = session.servers.get(r.server)
        model = rec.model if rec is not None else "?"
        points.append({"hardware": hw, "model": model, "server": r.server, "metric": r.key,
                       "mean": r.summary.mean, "n": r.summary.n,
                       "higher_is_better": METRICS[r.metric].higher_is_better})
    return {"kind": KIND, "schema": SCHEMA,
            "time": time or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "run": run, "ref": ref, "git_sha": git_sha or session.environment.git_sha,
            "matrix": session.matrix, "points": points}


# --------------------------------------------------------------------------
# Detection


def series(history: list[dict[str, Any]]) -> dict[SeriesKey, tuple[list[int], list[float], bool]]:
    """Per series: the history indices it was measured at, its means, and
    whether higher is better."""
    out: dict[SeriesKey, tuple[list[int], list[float], bool]] = {}
    for i, rec in enumerate(history):
        for pt in rec["points"]:
            key = SeriesKey(str(pt["hardware"]), str(pt["model"]), str(pt["server"]), str(pt["metric"]))
            idx, vals, _ = out.setdefault(key, ([], [], bool(pt.get("higher_is_better", True))))
            idx.append(i)
            vals.append(float(pt["mean"]))
    return out


def _ref(history: list[dict[str, Any]], i: int) -> NightlyRef:
    rec = history[i]
    return NightlyRef(index=i, time=str(rec.get("time", "")), run=str(rec.get("run", "")),
                      ref=str(rec.get("ref", "")), git_sha=rec.get("git_sha"))


def _otava():
    try:
        from otava.analysis import compute_change_points
    except ImportError:
        raise PerfUserError("trend detection needs Apache Otava: run scripts/setup.sh, or "
                            "pip install --no-deps apache-otava==0.8.0 (its analysis needs only numpy and scipy)") from None
    return compute_change_points


def detect(history: list[dict[str, Any]], *, max_pvalue: float = 0.001, min_change_pct: float = 1.0,
           window: int = 50, last: int | None = None) -> list[Change]:
    """Change points in every series (its last `last` points, default all).
    A change must be significant at `max_pvalue` (Otava's t-test) and at
    least `min_change_pct` in size."""
    compute = _otava()
    changes: list[Change] = []
    for key, (idx, vals, higher) in sorted(series(history).items(), key=lambda kv: kv[0].label()):
        if last:
            idx, vals = idx[-last:], vals[-last:]
        if len(vals) < 4:
            continue
        cps, _ = compute(vals, window_len=window, max_pvalue=max_pvalue, min_magnitude=min_change_pct / 100.0)
        cps = _drop_one_night_segments(list(cps))
        for cp in cps:
            st = cp.stats
            if st.pvalue >= max_pvalue or st.change_magnitude() < min_change_pct / 100.0:
                continue
            pct = st.forward_change_percent()
            worse = pct < 0 if higher else pct > 0
            changes.append(Change(series=key, first_after=_ref(history, idx[cp.index]),
                                  last_before=_ref(history, idx[cp.index - 1]),
                                  mean_before=float(st.mean_1), mean_after=float(st.mean_2),
                                  change_pct=float(pct), pvalue=float(st.pvalue), regression=bool(worse)))
    return changes


def _drop_one_night_segments(cps: list) -> list:
    """Two change points one nightly apart enclose a single odd night, not a
    new level: keep the stronger of the two."""
    cps = sorted(cps, key=lambda c: c.index)
    i = 0
    while i + 1 < len(cps):
        if cps[i + 1].index - cps[i].index < 2:
            del cps[i if cps[i].stats.pvalue > cps[i + 1].stats.pvalue else i + 1]
        else:
            i += 1
    return cps


def recent(changes: Iterable[Change], history_len: int, nightlies: int) -> list[Change]:
    """Changes whose first nightly after the change is among the last `nightlies`."""
    return [c for c in changes if c.first_after.index >= history_len - nightlies]


# --------------------------------------------------------------------------
# Report


def _night(n: NightlyRef) -> str:
    bits = [n.time or f"#{n.index}"]
    if n.ref:
        bits.append(f"ref `{n.ref}`")
    if n.git_sha:
        bits.append(f"commit `{n.git_sha[:12]}`")
    if n.run:
        bits.append(n.run)
    return ", ".join(bits)


def render(changes: list[Change], history: list[dict[str, Any]], new: list[Change]) -> str:
    lines = ["## Trend (change-point detection, Apache Otava)", ""]
    n_series = len(series(history))
    lines.append(f"{len(history)} nightlies, {n_series} series (hardware · model · config · metric).")
    if not changes:
        lines += ["", "No change point."]
        return "\n".join(lines) + "\n"
    lines += ["", "| | series | change | before → after | first nightly after the change | p |",
              "|---|---|---|---|---|---|"]
    for c in sorted(changes, key=lambda c: (c not in new, not c.regression, c.first_after.index)):
        tag = ("🔴 new regression" if c.regression else "🟢 new improvement") if c in new else \
            ("regression" if c.regression else "improvement")
        lines.append(f"| {tag} | {c.series.label()} | {c.change_pct:+.1f}% | {c.mean_before:.4g} → {c.mean_after:.4g} "
                     f"| {_night(c.first_after)} | {c.pvalue:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pytest-mxfp4 trend", description="change points over the nightly history")
    ap.add_argument("history", help="history JSON Lines file (created if --append and missing)")
    ap.add_argument("--append", metavar="RESULTS.json", help="append this nightly's merged results first")
    ap.add_argument("--ref", default="", help="image tag / engine ref of the appended nightly")
    ap.add_argument("--run", default="", help="run URL or id of the appended nightly")
    ap.add_argument("--git-sha", default=None)
    ap.add_argument("--report", help="write the Markdown section here")
    ap.add_argument("--json", help="write the change points as JSON here")
    ap.add_argument("--recent", type=int, default=3, help="exit 1 for a regression beginning in the last N nightlies")
    ap.add_argument("--min-change-pct", type=float, default=1.0)
    ap.add_argument("--max-pvalue", type=float, default=0.001)
    ap.add_argument("--last", type=int, default=50, help="analyse the last N points of each series")
    args = ap.parse_args(argv)
    try:
        if args.append:
            append_history(args.history, nightly_record(args.append, ref=args.ref, run=args.run, git_sha=args.git_sha))
        history = read_history(args.history)
        changes = detect(history, max_pvalue=args.max_pvalue, min_change_pct=args.min_change_pct, last=args.last)
    except PerfUserError as e:
        print(f"pytest-mxfp4 trend: {e}", file=sys.stderr)
        return 2
    new = recent(changes, len(history), args.recent)
    page = render(changes, history, new)
    if args.report:
        Path(args.report).write_text(page)
    if args.json:
        Path(args.json).write_text(json.dumps({"nightlies": len(history), "changes": [c.to_dict() for c in changes],
                                               "new": [c.to_dict() for c in new]}, indent=2) + "\n")
    print(page, end="")
    return 1 if any(c.regression for c in new) else 0


if __name__ == "__main__":
    sys.exit(main())
