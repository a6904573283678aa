"""Trend plots from the baselines' history: one PNG per (config, metric).

Each history entry is one baseline update (mean ± sd of that run). The
shaded band is the baseline band: mean ± k·sd of the history means (the
run-to-run spread); with fewer than two entries, the latest run's own
sample sd is used. matplotlib is optional (`pip install 'pytest-mxfp4[plot]'`)
and rendered with the Agg backend only, never an interactive one.
"""

from __future__ import annotations

import math
import re
import statistics
from datetime import datetime
from pathlib import Path

from pytest_mxfp4.formats.baselines import BaselineFile, HistoryEntry, model_slug
from pytest_mxfp4.errors import PerfUserError

BAND_K = 2.0


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PerfUserError("trend plots need matplotlib, which is not installed: "
                            "pip install 'pytest-mxfp4[plot]'") from None
    return Figure, FigureCanvasAgg


def _date(s: str) -> datetime | None:
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except (TypeError, ValueError):
        return None


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-") or "x"


def plot_path(out_dir: Path, bf: BaselineFile, key: str) -> Path:
    case, _, metric = key.partition("/")
    name = f"{_slug(bf.hardware_key)}--{_slug(model_slug(bf.model))}--{_slug(bf.server)}--{_slug(case)}-{_slug(metric)}.png"
    return Path(out_dir) / name


def band(entries: list[HistoryEntry], k: float = BAND_K) -> tuple[float, float, float]:
    """(centre, low, high) of the baseline band for these history entries."""
    means = [e.mean for e in entries]
    centre = statistics.fmean(means)
    sd = statistics.stdev(means) if len(means) > 1 else entries[-1].stdev
    return centre, centre - k * sd, centre + k * sd


def trend_plots(baselines: list[BaselineFile], out_dir: str | Path, k: float = BAND_K) -> list[Path]:
    """Write one PNG per metric per config into `out_dir`; returns the paths.
    A metric without history is drawn from its stored mean ± sd (one point)."""
    Figure, FigureCanvasAgg = _matplotlib()
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PerfUserError(f"{out}: cannot create the plots directory ({e.strerror})") from None
    written = []
    for bf in baselines:
        for key, m in bf.metrics.items():
            entries = list(m.history) or [HistoryEntry(bf.updated, m.mean, m.stdev, m.n)]
            dates = [_date(e.date) for e in entries]
            use_dates = all(d is not None for d in dates)
            xs = dates if use_dates else list(range(1, len(entries) + 1))
            centre, lo, hi = band(entries, k)
            fig = Figure(figsize=(7.0, 3.6), dpi=110)
            FigureCanvasAgg(fig)
            ax = fig.add_subplot(1, 1, 1)
            ax.axhspan(lo, hi, color="tab:blue", alpha=0.15, lw=0,
                       label=f"baseline band: mean ± {k:g}·sd" + (" of history" if len(entries) > 1 else " (one run)"))
            ax.axhline(centre, color="tab:blue", lw=1, ls="--", alpha=0.7, label="band centre")
            ax.errorbar(xs, [e.mean for e in entries], yerr=[e.stdev for e in entries], fmt="o-", color="tab:blue",
                        ecolor="tab:gray", capsize=3, ms=4, lw=1.2, label="run mean ± sd")
            ax.axhline(m.mean, color="tab:green", lw=1, label=f"current baseline {m.mean:.4g} {m.unit}".rstrip())
            ax.set_title(f"{bf.server} · {key}  ({bf.hardware_key})", fontsize=10)
            ax.set_ylabel(m.unit or key.partition("/")[2])
            ax.set_xlabel("baseline update" if use_dates else "update #")
            span = max(hi - lo, abs(centre) * 0.002, 1e-9)
            ymin = min(lo, *(e.mean - e.stdev for e in entries)) - 0.25 * span
            ymax = max(hi, *(e.mean + e.stdev for e in entries)) + 0.25 * span
            if math.isfinite(ymin) and math.isfinite(ymax) and ymax > ymin:
                ax.set_ylim(ymin, ymax)
            if use_dates:
                from datetime import timedelta

                from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

                locator = AutoDateLocator(minticks=3, maxticks=8)
                ax.xaxis.set_major_locator(locator)
                ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
                first, last = min(xs), max(xs)
                if last - first < timedelta(days=2):  # one update (or one day): don't let the axis span years
                    ax.set_xlim(first - timedelta(days=2), last + timedelta(days=2))
            else:
                ax.set_xlim(0.5, len(entries) + 0.5)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7, loc="best")
            fig.tight_layout()
            path = plot_path(out, bf, key)
            fig.savefig(path, format="png")
            written.append(path)
    return written
