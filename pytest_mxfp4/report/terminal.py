"""The terminal summary: server x metric with mean ± sd, CV, baseline, Δ%,
verdict, gate and targets."""

from __future__ import annotations

from ..results import SessionResults
from .format import num, pct

HEADERS = ("server", "metric", "mean ± sd", "CV", "n", "baseline", "Δ", "verdict", "gate", "target")


def rows(session: SessionResults) -> list[tuple[str, ...]]:
    out = []
    for r in session.results:
        s, b, c = r.summary, r.baseline, r.comparison
        mean_sd = f"{num(s.mean)} ± {num(s.stdev)} {r.unit}" if s else "-"
        verdict = r.verdict.value + (" (confirmed)" if r.confirmed and r.verdict.value == "regressed" else "")
        targets = ", ".join(f"{t.engine} {num(t.value)}" for t in r.targets) or ""
        out.append((
            r.server, r.key, mean_sd, pct(s.cv * 100, signed=False) if s else "-", str(s.n if s else 0),
            num(b.mean) if b else "-", pct(c.delta_pct) if c else "-", verdict, r.gate, targets,
        ))
    return out


def render(session: SessionResults) -> list[str]:
    table = [HEADERS, *rows(session)]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for rec in session.servers.values():
        if rec.skipped:
            lines.append(f"skipped {rec.name}: {rec.skipped}")
        elif rec.error:
            lines.append(f"error   {rec.name}: {rec.error.splitlines()[0]}")
    for r in session.results:
        if r.error:
            lines.append(f"error   {r.server} {r.key}: {r.error}")
        elif r.incomparable:
            lines.append(f"incomparable {r.server} {r.key}: {r.incomparable}")
        elif r.comparison and r.verdict.value in ("regressed", "inconclusive"):
            lines.append(f"{r.verdict.value:<8} {r.server} {r.key}: {r.comparison.reason}")
        if r.flagged_samples:
            lines.append(f"note    {r.server} {r.key}: {r.flagged_samples} flagged sample(s) replaced")
    return lines
