"""Number formatting shared by the text reports (kept out of the result objects)."""

from __future__ import annotations

import math


def num(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    s = f"{v:.0f}" if a >= 1000 else f"{v:.1f}" if a >= 100 else f"{v:.2f}"
    return s


def pct(v: float | None, signed: bool = True) -> str:
    if v is None:
        return "-"
    return f"{v:+.1f}%" if signed else f"{v:.1f}%"


def frac_pct(frac: float | None) -> str:
    """0.0123 -> '1.23%' ('-' where unknown or not finite)."""
    return f"{100 * frac:.2f}%" if frac is not None and math.isfinite(frac) else "-"


def day(iso: str) -> str:
    """'2026-12-04T13:52:51+00:00' -> '2026-12-04' (as given if not a date; '-' if empty)."""
    return iso[:10] if len(iso) >= 10 and iso[4:5] == "-" else (iso or "-")


def when(iso: str) -> str:
    """'2026-12-04T13:52:51+00:00' -> '2026-12-04 13:52:51' ('-' if unknown)."""
    return iso.replace("T", " ")[:19] if iso else "-"


# A concurrent case's numbers are of two kinds; the reports always say which.
PER_STREAM = "per stream"
AGGREGATE = "aggregate"


def scope(case, metric: str) -> str:
    """'per stream' / 'aggregate' for a concurrent case's metric, '' otherwise."""
    if getattr(case, "concurrency", 1) <= 1:
        return ""
    return AGGREGATE if metric == "agg_tps" else PER_STREAM


def spread(values: list[float]) -> str:
    """'p50 12.3, p99 45.6' of per-stream samples ('' with fewer than 2)."""
    from pytest_mxfp4.stats.samples import percentile

    if len(values) < 2:
        return ""
    return f"p50 {num(percentile(values, 50))}, p99 {num(percentile(values, 99))}"
